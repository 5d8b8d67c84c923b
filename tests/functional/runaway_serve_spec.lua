-- runaway_serve_spec.lua: a step that never yields, as an operator meets it:
-- it does not wedge `sluice serve` (later runs complete, it times out),
-- SIGTERM still ends serve within its grace, sluice cancel stops it at once,
-- after kill -9 the restarted serve times the resumed step out again,
-- --step-timeout bounds steps that set no timeout, and `sluice run` of a
-- busy step exits 1.
local H = require "helper"
local json = require "sluice.json"
local uv = require "luv"

local function status(store, id)
  local code, out = H.sluice({ "status", id, "--json", "--store", store })
  return code == 0 and json.decode(out) or nil
end

local function spin_run(store)
  local code, out = H.sluice({ "runs", "--json", "--pipeline", "on:spin", "--store", store })
  if code ~= 0 then return nil end
  return json.decode(out).runs[1]
end

describe("a step that never yields", function()
  local dir, store, marks, file
  before_each(function()
    dir = H.tmpdir()
    store = dir .. "/store"
    marks = dir .. "/marks"
    os.execute("mkdir -p '" .. dir .. "/p'")
  end)

  -- the handler's step spins; opts is the step's options as Lua source
  local function write(opts)
    file = H.write(dir .. "/p/spin.lua", ([[
on("spin", function()
  step("s", %s, function()
    local f = io.open(%q, "a"); f:write("spin\n"); f:close()
    while true do end
  end)
end)
pipeline("kick", function() send("spin", {}); return "sent" end)
pipeline("later", function() return step("x", function() return 42 end) end)
]]):format(opts, marks))
  end

  local function serve(...)
    local p = H.spawn({ "serve", dir .. "/p", "--store", store, ... })
    H.wait_until(function() return table.concat(p.err):find("serving") end, "serve to start", 10000, 10)
    return p
  end

  local function kick()
    local code, out, err = H.sluice({ "run", file, "--pipeline", "kick", "--store", store })
    assert.are.equal(0, code, err)
    assert.are.equal('"sent"\n', out)
    H.wait_until(function() return #H.lines(marks) >= 1 end, "the step to spin", 10000, 10)
  end

  local function stop(p)
    p:kill("sigterm")
    local code = p:wait(15000)
    assert.are.equal(0, code, table.concat(p.err))
  end

  it("does not wedge serve: later runs complete and the step times out", function()
    write('{ timeout = "6s" }')
    local p = serve()
    kick()
    -- while it spins: the busy step is preempted, other runs go on
    local code, out, err = H.sluice({ "run", file, "--pipeline", "later", "--store", store })
    assert.are.equal(0, code, err)
    assert.are.equal("42\n", out)
    assert.are.equal("running", spin_run(store).status, "the run waited for the busy step")
    H.wait_until(function()
      local r = spin_run(store)
      return r and r.status == "failed"
    end, "the busy run to fail", 15000, 50)
    local r = status(store, spin_run(store).id)
    assert.are.equal("timeout", r.error.reason)
    assert.are.equal("step 's' timed out after 6s", r.error.message)
    -- and serve still runs what comes next
    code, out = H.sluice({ "run", file, "--pipeline", "later", "--store", store })
    assert.are.equal(0, code)
    stop(p)
  end)

  it("SIGTERM ends serve within its grace while the step spins", function()
    write('{ timeout = "60s" }')
    local p = serve("--grace", "1s")
    kick()
    local t0 = uv.hrtime()
    p:kill("sigterm")
    local code, _, _, err = p:wait(15000)
    local ms = (uv.hrtime() - t0) / 1e6
    assert.are.equal(0, code, err)
    assert.is_true(ms < 5000, ("serve took %.0f ms to stop"):format(ms))
    assert.matches("cut off", err)
    -- the run was cut off, not failed: it resumes at the next start
    assert.are.equal("running", spin_run(store).status)
  end)

  it("after kill -9, the restarted serve times the resumed step out again", function()
    write('{ timeout = "2s" }')
    local p = serve()
    kick()
    p:kill("sigkill")
    p:wait()
    assert.are.equal("running", spin_run(store).status)
    local p2 = serve()
    H.wait_until(function() return #H.lines(marks) >= 2 end, "the step to run again", 10000, 10)
    local code, out = H.sluice({ "run", file, "--pipeline", "later", "--store", store })
    assert.are.equal(0, code)
    assert.are.equal("42\n", out)
    H.wait_until(function() return spin_run(store).status == "failed" end, "the resumed run to time out", 15000, 50)
    assert.are.equal("timeout", status(store, spin_run(store).id).error.reason)
    stop(p2)
  end)

  it("sluice cancel stops a busy step through serve at once", function()
    write('{ timeout = "60s" }')
    local p = serve()
    kick()
    local id = spin_run(store).id
    -- exit 0 only if the run ended cancelled within the wait
    local code, out, err = H.sluice({ "cancel", id, "--wait", "5s", "--store", store })
    assert.are.equal(0, code, err)
    assert.are.equal(("cancelled %s\n"):format(id), out)
    assert.are.equal("cancelled", spin_run(store).status)
    stop(p)
  end)

  it("serve --step-timeout bounds a step that sets no timeout", function()
    write("{}")
    local p = serve("--step-timeout", "500ms")
    kick()
    H.wait_until(function()
      local r = spin_run(store)
      return r and r.status == "failed"
    end, "the busy run to fail", 15000, 50)
    local r = status(store, spin_run(store).id)
    assert.are.equal("timeout", r.error.reason)
    assert.are.equal("step 's' timed out after 500ms", r.error.message)
    stop(p)
  end)

  it("sluice run of a busy step with a timeout exits 1, as with --step-timeout", function()
    local f = H.write(dir .. "/busy.lua", [[
pipeline("busy", function() return step("s", { timeout = "300ms" }, function() while true do end end) end)
pipeline("plain", function() return step("s", function() while true do end end) end)
]])
    local code, out, err = H.sluice({ "run", f, "--pipeline", "busy", "--store", store }, { timeout = 15000 })
    assert.are.equal(1, code)
    assert.are.equal("", out)
    assert.matches("step 's' timed out after 300ms", err)
    code, _, err = H.sluice({ "run", f, "--pipeline", "plain", "--step-timeout", "200ms", "--store", store },
      { timeout = 15000 })
    assert.are.equal(1, code)
    assert.matches("step 's' timed out after 200ms", err)
    code, _, err = H.sluice({ "run", f, "--pipeline", "plain", "--step-timeout", "soon", "--store", store })
    assert.are.equal(2, code)
    assert.matches("%-%-step%-timeout: \"soon\" is not a duration", err)
  end)
end)
