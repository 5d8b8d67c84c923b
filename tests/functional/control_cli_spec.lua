-- control_cli_spec.lua: sluice rerun --from (here and through a running
-- serve), sluice cancel (directly and through a running serve), and a child
-- run killed with its parent.
local H = require "helper"
local json = require "sluice.json"

describe("control from the command line", function()
  local dir, store, marks
  before_each(function()
    dir = H.tmpdir()
    store = dir .. "/store"
    marks = dir .. "/marks"
    os.execute("mkdir -p '" .. dir .. "/p'")
  end)

  local function mark_step(name)
    return ([[step(%q, function() local f = io.open(%q, "a"); f:write(%q, "\n"); f:close(); return %q end)]])
      :format(name, marks, name, name)
  end

  it("rerun --from executes exactly the steps from that point", function()
    local f = H.write(dir .. "/p/abc.lua", ([[
pipeline("abc", function(input)
  local a = %s
  local b = %s
  local c = %s
  return a .. b .. c .. input.x
end)]]):format(mark_step("a"), mark_step("b"), mark_step("c")))
    local code, out = H.sluice({ "run", f, "--id", "orig", "--input", '{"x": "!"}', "--store", store })
    assert.are.equal(0, code)
    assert.are.equal('"abc!"\n', out)
    local err
    code, out, err = H.sluice({ "rerun", "orig", "--from", "b", "--id", "again", "--store", store })
    assert.are.equal(0, code, err)
    assert.are.equal('"abc!"\n', out)
    assert.are.same({ "a", "b", "c", "b", "c" }, H.lines(marks))
    local _, st = H.sluice({ "status", "again", "--json", "--store", store })
    assert.are.equal("completed", json.decode(st).status)
    code, _, err = H.sluice({ "rerun", "orig", "--from", "zzz", "--store", store })
    assert.are.equal(2, code)
    assert.matches("run orig has no step 'zzz'; its steps: a, b, c", err)
  end)

  it("rerun --from goes to the serve that owns the store", function()
    local f = H.write(dir .. "/p/abc.lua", ([[
pipeline("abc", function(input)
  local a = %s
  local b = %s
  return a .. b .. input.x
end)]]):format(mark_step("a"), mark_step("b")))
    local code, out, err = H.sluice({ "run", f, "--id", "orig", "--input", '{"x": "?"}', "--store", store })
    assert.are.equal(0, code, err)
    local s = H.spawn({ "serve", dir .. "/p", "--store", store })
    H.wait_until(function() return table.concat(s.err):find("armed") end, "serve to start", 10000, 10)
    code, out, err = H.sluice({ "rerun", "orig", "--from", "b", "--id", "again", "--store", store })
    assert.are.equal(0, code, err)
    assert.are.equal('"ab?"\n', out)
    assert.matches("rerun of orig from step 'b' is run again, in sluice serve %(pid " .. s.pid .. "%)", err)
    assert.is_truthy(table.concat(s.err):find("run again pipeline=abc completed", 1, true))
    assert.are.same({ "a", "b", "b" }, H.lines(marks))
    code, _, err = H.sluice({ "rerun", "orig", "--from", "zzz", "--store", store })
    assert.are.equal(2, code)
    assert.matches("run orig has no step 'zzz'; its steps: a, b", err)
    s:kill("sigterm")
    assert.are.equal(0, (s:wait()))
  end)

  it("cancel marks a stopped run cancelled, and through serve stops a sleeping one", function()
    local f = H.write(dir .. "/p/nap.lua", [[
pipeline("nap", function()
  step("before", function() return 1 end)
  sleep("60s")
  step("after", function() return 2 end)
end)]])
    local p = H.spawn({ "run", f, "--id", "n1", "--store", store })
    H.wait_until(function()
      local code, out = H.sluice({ "status", "n1", "--json", "--store", store })
      return code == 0 and json.decode(out).status == "sleeping"
    end, "n1 to sleep", 10000, 20)
    p:kill("sigkill")
    p:wait()
    -- nobody executes n1 now: the store is changed directly
    local code, out, err = H.sluice({ "cancel", "n1", "--store", store })
    assert.are.equal(0, code, err)
    assert.are.equal("cancelled n1\n", out)
    -- a serve resumes nothing cancelled; a new sleeping run is cancelled through it
    local s = H.spawn({ "serve", dir .. "/p", "--store", store })
    H.wait_until(function() return table.concat(s.err):find("armed") end, "serve to start", 10000, 10)
    s:kill("sigterm")
    s:wait()
    -- the whole log, once serve has stopped: resumed runs log when they start
    assert.is_nil(table.concat(s.err):find("run n1"))
    local p2 = H.spawn({ "run", f, "--id", "n2", "--store", store })
    H.wait_until(function()
      local c, o = H.sluice({ "status", "n2", "--json", "--store", store })
      return c == 0 and json.decode(o).status == "sleeping"
    end, "n2 to sleep", 10000, 20)
    p2:kill("sigkill")
    p2:wait()
    local s2 = H.spawn({ "serve", dir .. "/p", "--store", store })
    H.wait_until(function() return table.concat(s2.err):find("run n2 pipeline=nap started") end, "n2 resumed", 10000, 10)
    code, out, err = H.sluice({ "cancel", "n2", "--store", store })
    assert.are.equal(0, code, err)
    H.wait_until(function()
      local c, o = H.sluice({ "status", "n2", "--json", "--store", store })
      return c == 0 and json.decode(o).status == "cancelled"
    end, "n2 cancelled through serve", 20000, 20)
    s2:kill("sigterm")
    assert.are.equal(0, (s2:wait()))
    assert.truthy(table.concat(s2.err):find("run n2 pipeline=nap cancelled"), table.concat(s2.err))
    local _, st = H.sluice({ "status", "n2", "--json", "--store", store })
    local doc = json.decode(st)
    assert.are.equal("cancelled", doc.status)
    for _, st in ipairs(doc.steps) do assert.are_not.equal("after", st.id) end
  end)

  it("a child run killed with its parent is neither lost nor duplicated", function()
    H.write(dir .. "/p/family.lua", ([[
pipeline("kid", function(input)
  %s
  sleep("1s")
  %s
  return input.n * 2
end)
pipeline("mom", function()
  local r = call("kid", { n = 21 })
  %s
  return r
end)]]):format(mark_step("kid-start"), mark_step("kid-end"), mark_step("mom-end")))
    local p = H.spawn({ "run", dir .. "/p/family.lua", "--pipeline", "mom", "--id", "m1", "--store", store })
    -- killed while the child sleeps: its first step is stored (a kill inside
    -- a step would run that step again, at-least-once)
    H.wait_until(function()
      local code, out = H.sluice({ "status", "m1/call@1", "--json", "--store", store })
      local doc = code == 0 and json.decode(out)
      return doc and doc.status == "sleeping"
    end, "the child to sleep", 10000, 5)
    p:kill("sigkill")
    p:wait()
    local s = H.spawn({ "serve", dir .. "/p", "--store", store })
    H.wait_until(function() return table.concat(s.err):find("run m1 pipeline=mom completed") end, "m1 to complete", 10000, 10)
    s:kill("sigterm")
    s:wait()
    assert.are.same({ "kid-start", "kid-end", "mom-end" }, H.lines(marks))
    local _, st = H.sluice({ "status", "m1", "--json", "--store", store })
    assert.are.equal(42, json.decode(st).result)
  end)
end)
