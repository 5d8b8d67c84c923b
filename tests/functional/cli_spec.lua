-- cli_spec.lua: sluice as a user runs it: real processes, a real store in a
-- temp dir, real SIGKILL. Exit codes, messages that name the file, line or
-- field, resume by --id, inspection while another process writes.
local H = require "helper"
local json = require "sluice.json"

local function pipeline_file(dir, name, body)
  return H.write(dir .. "/" .. name, body)
end

describe("sluice run", function()
  local dir, store
  before_each(function()
    dir = H.tmpdir()
    store = dir .. "/store"
  end)

  it("prints the result as JSON and exits 0", function()
    local f = pipeline_file(dir, "add.lua", [[
pipeline("add", function(input)
  local a = step("a", function() return input.x + 1 end)
  return { sum = step("b", function() return a * 2 end), big = 9007199254740993 }
end)]])
    local code, out, err = H.sluice({ "run", f, "--input", '{"x": 20}', "--store", store })
    assert.are.equal(0, code, err)
    assert.are.same({ sum = 42, big = 9007199254740993 }, json.decode(out))
  end)

  it("with --id of a completed run prints the stored result and runs nothing", function()
    local marks = dir .. "/marks"
    local f = pipeline_file(dir, "once.lua", ([[
pipeline("once", function()
  return step("mark", function()
    local f = io.open(%q, "a"); f:write("ran\n"); f:close()
    return "stored"
  end)
end)]]):format(marks))
    local code, out = H.sluice({ "run", f, "--id", "r1", "--store", store })
    assert.are.equal(0, code)
    code, out = H.sluice({ "run", f, "--id", "r1", "--store", store })
    assert.are.equal(0, code)
    assert.are.equal('"stored"\n', out)
    assert.are.equal(1, #H.lines(marks))
  end)

  it("exits 1 naming the step and how to resume when the pipeline fails", function()
    local f = pipeline_file(dir, "fail.lua", [[
pipeline("fail", function()
  step("fine", function() return 1 end)
  step("broken", function() error("the source is down") end)
end)]])
    local code, out, err = H.sluice({ "run", f, "--id", "f1", "--store", store })
    assert.are.equal(1, code)
    assert.are.equal("", out)
    assert.matches("run f1 of pipeline 'fail' failed in step 'broken'", err)
    assert.matches("fail.lua:3: the source is down", err)
    assert.matches("resume with: sluice run .*fail.lua %-%-id f1", err)
  end)

  it("exits 2 with file:line on a syntax error", function()
    local f = pipeline_file(dir, "bad.lua", "pipeline('x', function()\n  step('a', function() return 1 end\nend)\n")
    local code, _, err = H.sluice({ "run", f, "--store", store })
    assert.are.equal(2, code)
    assert.matches("bad.lua:3: ", err)
  end)

  it("exits 2 listing the pipelines when --pipeline is unknown or missing", function()
    local f = pipeline_file(dir, "two.lua", [[
pipeline("alpha", function() return 1 end)
pipeline("beta", function() return 2 end)]])
    local code, _, err = H.sluice({ "run", f, "--pipeline", "gamma", "--store", store })
    assert.are.equal(2, code)
    assert.matches("pipeline 'gamma' is not defined in .*two.lua; defined: alpha, beta", err)
    code, _, err = H.sluice({ "run", f, "--store", store })
    assert.are.equal(2, code)
    assert.matches("defines 2 pipelines %(alpha, beta%)", err)
    local out
    code, out = H.sluice({ "run", f, "--pipeline", "beta", "--store", store })
    assert.are.equal(0, code)
    assert.are.equal("2\n", out)
  end)

  it("exits 2 naming the position when --input is not JSON", function()
    local f = pipeline_file(dir, "in.lua", "pipeline('p', function(i) return i end)")
    local code, _, err = H.sluice({ "run", f, "--input", '{"a": 1,, }', "--store", store })
    assert.are.equal(2, code)
    assert.matches("%-%-input is not valid JSON: line 1, column %d+", err)
  end)

  H.lmdb_it("LMDB files in the store directory")("exits 2 when the store is not an LMDB environment", function()
    local f = pipeline_file(dir, "p.lua", "pipeline('p', function() return 1 end)")
    os.execute("mkdir -p '" .. store .. "'")
    H.write(store .. "/data.mdb", string.rep("not lmdb ", 1000))
    local code, _, err = H.sluice({ "run", f, "--store", store })
    assert.are.equal(2, code)
    assert.matches("not a sluice store", err)
  end)

  it("has --help on every command", function()
    for _, cmd in ipairs({ "run", "runs", "status" }) do
      local code, out = H.sluice({ cmd, "--help" })
      assert.are.equal(0, code, cmd)
      assert.matches("usage: sluice " .. cmd, out)
    end
    local code, out = H.sluice({ "--help" })
    assert.are.equal(0, code)
    assert.matches("commands:", out)
    code = H.sluice({ "nonsense" })
    assert.are.equal(2, code)
  end)

  it("fails a resume whose file changed a step id, naming run, position and ids", function()
    local f = dir .. "/div.lua"
    local gate = dir .. "/gate"
    local src = [[
pipeline("div", function()
  step("extract", function() return 1 end)
  step("%s", function() return 2 end)
  if io.open(%q) == nil then error("gate closed") end
end)]]
    H.write(f, src:format("transform", gate))
    local code = H.sluice({ "run", f, "--id", "d1", "--store", store })
    assert.are.equal(1, code)
    H.write(f, src:format("transform_v2", gate))
    H.write(gate, "open")
    local err
    code, _, err = H.sluice({ "run", f, "--id", "d1", "--store", store })
    assert.are.equal(1, code)
    assert.matches("run d1 diverged from its recorded history: at position 2 of branch main the recorded step is 'transform' but the code now calls step 'transform_v2'", err)
  end)
end)

describe("inspection", function()
  it("lists runs and shows steps, as tables and as JSON, while a writer runs", function()
    local dir = H.tmpdir()
    local store = dir .. "/store"
    local gate = dir .. "/gate"
    local f = H.write(dir .. "/slow.lua", ([[
local uv = require "luv"
pipeline("slow", function()
  step("first", function() return { n = 1 } end)
  step("wait", function()
    -- hold the run open until the test opens the gate
    local co = coroutine.running()
    local t = uv.new_timer()
    t:start(5, 5, function()
      if io.open(%q) then t:close(); coroutine.resume(co) end
    end)
    coroutine.yield()
  end)
  return "ok"
end)]]):format(gate))
    local writer = H.spawn({ "run", f, "--id", "live", "--store", store })
    H.wait_until(function()
      local code, out = H.sluice({ "status", "live", "--json", "--store", store })
      return code == 0 and json.decode(out).steps[1] ~= nil
    end, "the first step to be visible to a reader", 10000, 20)
    local code, out, err = H.sluice({ "runs", "--store", store })
    assert.are.equal(0, code)
    assert.matches("live%s+slow%s+running", out)
    -- a second writer is refused, naming the one that holds the store
    code, _, err = H.sluice({ "run", f, "--id", "second", "--store", store })
    assert.are.equal(2, code)
    assert.matches("held by another sluice process %(sluice run, pid " .. writer.pid .. "%)", err)
    H.write(gate, "open")
    code = writer:wait()
    assert.are.equal(0, code)
    code, out = H.sluice({ "status", "live", "--store", store })
    assert.are.equal(0, code)
    assert.matches("status%s+completed", out)
    assert.matches("first%s+completed%s+1", out)
    assert.matches("source [0-9a-f]+", out)
    code, out = H.sluice({ "runs", "--json", "--status", "completed", "--store", store })
    local doc = json.decode(out)
    assert.are.equal("live", doc.runs[1].id)
    code, out = H.sluice({ "status", "nope", "--store", store })
    assert.are.equal(2, code)
  end)
end)

describe("crash", function()
  it("resumes a 2,000-step run killed with SIGKILL at random moments", function()
    local dir = H.tmpdir()
    local store = dir .. "/store"
    local log = dir .. "/log"
    local f = H.write(dir .. "/crash.lua", ([[
pipeline("crash", function(input)
  local sum = 0
  for i = 1, input.n do
    sum = sum + step("s" .. i, function()
      local f = io.open(%q, "a")
      f:write(i, "\n")
      f:close()
      return i
    end)
  end
  return sum
end)]]):format(log))
    local n = 2000
    local args = { "run", f, "--id", "crash1", "--input", '{"n": 2000}', "--store", store }
    math.randomseed(os.time())
    local kills, code, out, err = 0
    for _ = 1, 4 do
      local before = #H.lines(log)
      local target = before + math.random(50, 350)
      local p = H.spawn(args)
      H.wait_until(function() return p.exited or #H.lines(log) >= target end,
        "the run to reach step " .. target, 30000, 2)
      p:kill("sigkill")
      local c, signal = p:wait()
      if signal == 9 then kills = kills + 1 end
      if c == 0 and signal == 0 then break end
    end
    assert.is_true(kills >= 2, "the run was killed fewer than 2 times")
    code, out, err = H.sluice(args)
    assert.are.equal(0, code, err)
    assert.are.equal(tostring(n * (n + 1) // 2) .. "\n", out)
    local seen, dups = {}, 0
    for _, l in ipairs(H.lines(log)) do
      local i = tonumber(l)
      if seen[i] then dups = dups + 1 end
      seen[i] = true
    end
    for i = 1, n do assert.is_true(seen[i], "step " .. i .. " never ran") end
    assert.is_true(dups <= kills, ("%d steps ran twice after %d kills"):format(dups, kills))
  end)
end)

