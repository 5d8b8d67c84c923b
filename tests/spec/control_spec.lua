-- control_spec.lua: run timeouts, cancel (during a step, a sleep, a wait,
-- while pending), concurrency keys, child runs (call, start), in the host
-- on a real store.
local H = require "helper"
local store = require "sluice._store"
local engine = require "sluice.engine"
local sched = require "sluice.sched"
local uv = require "luv"

assert(store.open(H.store_target()))


-- starts engine.execute in a task; returns a function that waits for its record
local function go(p, input, id)
  local task = sched.go({}, engine.execute, p, input, id)
  return function()
    local ok, r = task:await()
    assert(ok, r and (r.traceback or r.message))
    return r
  end
end

describe("run timeout", function()
  it("fails the run with reason timeout at the next step boundary", function()
    local ran = 0
    local p = pipeline("timeboxed", function()
      for i = 1, 50 do
        step("s" .. i, function() ran = ran + 1; H.sleep(30) end)
      end
    end, { timeout = "100ms" })
    local rec = engine.execute(p, nil, "tb1")
    assert.are.equal("failed", rec.status)
    assert.are.equal("timeout", rec.error.reason)
    assert.matches("run timed out after 100ms", rec.error.message)
    -- steps of at least 30 ms: at most 4 start within 100 ms (how many
    -- do depends on the machine's load, so no lower bound but one)
    assert.is_true(ran >= 1 and ran <= 5, ran .. " steps ran")
  end)

  it("cuts a sleep short", function()
    local p = pipeline("sleepy_timeout", function() sleep("30s") end, { timeout = "50ms" })
    local t0 = uv.hrtime()
    local rec = engine.execute(p, nil, "tb2")
    assert.are.equal("timeout", rec.error.reason)
    assert.is_true((uv.hrtime() - t0) / 1e6 < 2000)
  end)
end)

describe("cancel", function()
  it("abandons the step in flight at once, runs no further step, keeps finished steps", function()
    local ran, fired = {}, false
    local p = pipeline("cancel_step", function()
      step("zero", function() ran[#ran + 1] = "zero" end)
      step("one", function()
        ran[#ran + 1] = "one"
        -- a body waiting on a luv timer
        local co = coroutine.running()
        local t = uv.new_timer()
        t:start(1500, 0, function() t:close(); fired = true; coroutine.resume(co) end)
        coroutine.yield()
        ran[#ran + 1] = "one woke"
      end)
      step("two", function() ran[#ran + 1] = "two" end)
    end)
    local result = go(p, nil, "c1")
    H.wait_until(function() return ran[2] == "one" end, "step one", 5000, 2)
    assert.is_true(cancel("c1"))
    local rec = result()
    assert.is_false(fired, "the cancel waited for the step")
    assert.are.equal("cancelled", rec.status)
    assert.are.equal("ECANCELLED", rec.error.code)
    assert.are.equal("ECANCELLED", engine.get_run("c1").error.code)
    local steps = {}
    for _, st in ipairs(engine.get_steps("c1")) do
      -- "one" stays unfinished (at most shown as in flight): a rerun runs it again
      if st.status ~= "running" then steps[#steps + 1] = st end
    end
    assert.are.equal(1, #steps)
    assert.are.equal("zero", steps[1].id)
    assert.are.equal("completed", steps[1].status)
    -- the abandoned body does not go on when its timer fires
    H.wait_until(function() return fired end, "the body's timer", 5000, 10)
    assert.are.same({ "zero", "one" }, ran)
    -- a cancelled run stays cancelled
    assert.are.equal("cancelled", engine.execute(p, nil, "c1").status)
    assert.are.same({ "zero", "one" }, ran)
  end)

  it("interrupts a sleep and a wait", function()
    local p1 = pipeline("cancel_sleep", function() sleep("30s") end)
    local p2 = pipeline("cancel_wait", function() wait_for("never", { timeout = "30s" }) end)
    local r1, r2 = go(p1, nil, "cs1"), go(p2, nil, "cw1")
    H.wait_until(function()
      local a, b = engine.get_run("cs1"), engine.get_run("cw1")
      return a and b and a.status == "sleeping" and b.status == "waiting"
    end, "sleeping and waiting", 5000, 5)
    cancel("cs1")
    cancel("cw1")
    assert.are.equal("cancelled", r1().status)
    assert.are.equal("cancelled", r2().status)
  end)

  it("reaches child runs", function()
    local child = pipeline("sleepy_child", function() sleep("30s") end)
    local parent = pipeline("parent_of_sleepy", function() return call(child, {}) end)
    local r = go(parent, nil, "par1")
    H.wait_until(function()
      local c = engine.get_run("par1/call@1")
      return c and c.status == "sleeping"
    end, "the child to sleep", 5000, 5)
    cancel("par1")
    assert.are.equal("cancelled", r().status)
    assert.are.equal("cancelled", engine.get_run("par1/call@1").status)
  end)

  it("marks a run that is not executing here as cancelled", function()
    local ok, err = cancel("no-such-run")
    assert.is_nil(ok)
    assert.matches("no run no%-such%-run", err)
  end)
end)

describe("concurrency key", function()
  it("with limit 1 serialises runs of the same key, in arrival order", function()
    local inflight, max, order = 0, 0, {}
    local p = pipeline("keyed", function(input)
      step("work", function()
        inflight = inflight + 1
        max = math.max(max, inflight)
        order[#order + 1] = input.n
        H.sleep(20)
        inflight = inflight - 1
      end)
      return input.n
    end, { concurrency = { key = function(input) return input.account end, limit = 1 } })
    local waits = {}
    for i = 1, 4 do waits[i] = go(p, { account = "a", n = i }, "k" .. i) end
    local other = go(p, { account = "b", n = 99 }, "k99")
    H.wait_until(function() local r = engine.get_run("k4"); return r and r.status == "pending" end, "k4 to queue", 5000, 2)
    for i = 1, 4 do assert.are.equal("completed", waits[i]().status) end
    assert.are.equal("completed", other().status)
    assert.are.same({ 1, 99, 2, 3, 4 }, { order[1], order[2], order[3], order[4], order[5] })
    assert.are.equal(2, max) -- one of account a and one of account b
  end)
end)

describe("child runs", function()
  it("call waits for the child's result and replay does not start it again", function()
    local child_runs = 0
    local child = pipeline("child_sum", function(input)
      return step("sum", function() child_runs = child_runs + 1; return input.a + input.b end)
    end)
    local fail = true
    local parent = pipeline("parent_sum", function()
      local s = call(child, { a = 2, b = 3 })
      if fail then error("after the call") end
      return s * 10
    end)
    assert.are.equal("failed", engine.execute(parent, nil, "ps1").status)
    fail = false
    local rec = engine.execute(parent, nil, "ps1")
    assert.are.equal(50, rec.result)
    assert.are.equal(1, child_runs)
    assert.are.equal("ps1", engine.get_run("ps1/call@1").parent)
  end)

  it("a failing child raises in the parent", function()
    local child = pipeline("child_fails", function() error("child broke") end)
    local parent = pipeline("parent_of_failing", function() return call("child_fails", nil, { id = "cf-child" }) end)
    local rec = engine.execute(parent, nil, "pf1")
    assert.are.equal("failed", rec.status)
    assert.matches("child run cf%-child of pipeline 'child_fails' failed: .*child broke", rec.error.message)
    assert.is_truthy(child)
  end)

  it("start returns the child's id at once and the child runs on its own", function()
    local child = pipeline("bg_child", function() H.sleep(30); return "bg" end)
    local parent = pipeline("bg_parent", function() return start(child, {}) end)
    local rec = engine.execute(parent, nil, "bgp")
    assert.are.equal("bgp/start@1", rec.result)
    H.wait_until(function()
      local c = engine.get_run("bgp/start@1")
      return c and c.status == "completed"
    end, "the child to complete", 5000, 5)
    assert.are.equal("bg", engine.get_run("bgp/start@1").result)
  end)
end)
