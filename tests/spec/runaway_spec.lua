-- runaway_spec.lua: Lua that never yields, in the host on a real store: a
-- step's timeout stops a busy body (pcall and handler tricks included),
-- retries apply, a run's timeout bounds a busy pipeline body, cancel reaches
-- a step that waits or spins, other runs go on while a step spins, and no
-- hook is set when nothing asks for one.
local H = require "helper"
local store = require "sluice._store"
local engine = require "sluice.engine"
local sched = require "sluice.sched"
local guard = require "sluice._guard"
local uv = require "luv"

assert(store.open(H.store_target()))

local n = 0
local function define(fn, opts)
  n = n + 1
  return pipeline("runaway_" .. n, fn, opts)
end

-- starts engine.execute in a task; returns a function that waits for its record
local function go(p, input, id)
  local task = sched.go({}, engine.execute, p, input, id)
  return function()
    local ok, r = task:await()
    assert(ok, r and (r.traceback or r.message))
    return r
  end
end

local function ms_since(t0) return (uv.hrtime() - t0) / 1e6 end

describe("a step's timeout on a body that never yields", function()
  it("fails the step with reason timeout", function()
    local p = define(function()
      return step("s", { timeout = "300ms" }, function() while true do end end)
    end)
    local t0 = uv.hrtime()
    local rec = engine.execute(p, nil, "spin1")
    assert.is_true(ms_since(t0) < 3000, "the busy step was not stopped at its timeout")
    assert.are.equal("failed", rec.status)
    assert.are.equal("timeout", rec.error.reason)
    assert.are.equal("s", rec.error.step)
    assert.are.equal("step 's' timed out after 300ms", rec.error.message)
    local st = engine.get_steps("spin1")[1]
    assert.are.equal("failed", st.status)
  end)

  local tricks = {
    ["pcall in a loop"] = function()
      while true do pcall(function() while true do end end) end
    end,
    ["xpcall with a handler that loops"] = function()
      while true do xpcall(function() error("x") end, function() while true do end end) end
    end,
    ["a handler that loops on the hook's own error"] = function()
      while true do xpcall(function() while true do end end, function() while true do end end) end
    end,
    ["a sort comparator that loops under pcall"] = function()
      local t = {}
      for i = 1, 50 do t[i] = i end
      while true do pcall(table.sort, t, function() while true do pcall(function() while true do end end) end end) end
    end,
    ["a nested coroutine"] = function()
      while true do pcall(coroutine.wrap(function() while true do end end)) end
    end,
    ["a to-be-closed variable that loops"] = function()
      local _ <close> = setmetatable({}, { __close = function() while true do end end })
      while true do end
    end,
    ["removing the hook"] = function()
      pcall(debug.sethook)
      while true do end
    end,
  }
  for name, body in pairs(tricks) do
    it("is not swallowed by " .. name, function()
      local p = define(function() return step("s", { timeout = "200ms" }, body) end)
      local t0 = uv.hrtime()
      local rec = engine.execute(p, nil, "trick " .. name)
      assert.is_true(ms_since(t0) < 3000, "not stopped")
      assert.are.equal("timeout", rec.error.reason)
    end)
  end

  it("refuses debug.sethook inside a guarded step", function()
    local p = define(function()
      return step("s", { timeout = "5s" }, function()
        local ok, err = pcall(debug.sethook)
        return { ok = ok, err = tostring(err) }
      end)
    end)
    local rec = engine.execute(p, nil, "sethook")
    assert.is_false(rec.result.ok)
    assert.matches("bounded by a timeout", rec.result.err)
  end)

  it("applies the step's retries, each attempt with its own timeout", function()
    local attempts = 0
    local p = define(function()
      return step("s", { timeout = "100ms", retries = 2, backoff = "1ms" }, function()
        attempts = attempts + 1
        if attempts < 3 then while true do end end
        return "third time"
      end)
    end)
    local rec = engine.execute(p, nil, "retry1")
    assert.are.equal("completed", rec.status)
    assert.are.equal("third time", rec.result)
    assert.are.equal(3, engine.get_steps("retry1")[1].attempts)

    local q = define(function()
      return step("s", { timeout = "100ms", retries = 1, backoff = "1ms" }, function() while true do end end)
    end)
    rec = engine.execute(q, nil, "retry2")
    assert.are.equal("timeout", rec.error.reason)
    assert.are.equal("step 's' timed out after 100ms (2 attempts)", rec.error.message)
    assert.are.equal(2, engine.get_steps("retry2")[1].attempts)
  end)

  it("tells a body's own error from a timeout", function()
    local p = define(function()
      return step("s", { timeout = "5s" }, function() error({ message = "mine", timeout = true }) end)
    end)
    local rec = engine.execute(p, nil, "own-error")
    assert.is_nil(rec.error.reason)
    assert.matches("step 's' failed: mine", rec.error.message)
  end)

  it("never runs the stopped body again", function()
    local count = 0
    local p = define(function()
      return step("s", { timeout = "100ms" }, function() while true do count = count + 1 end end)
    end)
    assert.are.equal("timeout", engine.execute(p, nil, "frozen").error.reason)
    local seen = count
    H.sleep(200) -- loop iterations in which a body left in the ready list would run
    assert.are.equal(seen, count)
  end)

  it("does not let a body that waits past its timeout go on when woken", function()
    local fired, after = false, false
    local p = define(function()
      return step("s", { timeout = "50ms" }, function()
        local co = coroutine.running()
        local t = uv.new_timer()
        t:start(300, 0, function() t:close(); fired = true; coroutine.resume(co) end)
        coroutine.yield()
        after = true
      end)
    end)
    assert.are.equal("timeout", engine.execute(p, nil, "late-wake").error.reason)
    H.wait_until(function() return fired end, "the body's timer", 5000, 10)
    assert.is_false(after)
  end)

  it("leaves a coroutine the body made alone after the step", function()
    local saved
    local p = define(function()
      step("make", { timeout = "100ms" }, function()
        saved = coroutine.create(function()
          while true do
            local x = 0
            for i = 1, 50000 do x = x + i end -- enough instructions for the hook to fire
            coroutine.yield(x)
          end
        end)
        return select(2, coroutine.resume(saved))
      end)
      -- later, past that step's timeout, in a step without one
      H.sleep(200)
      return step("use", function() return select(2, coroutine.resume(saved)) end)
    end)
    local rec = engine.execute(p, nil, "saved-co")
    assert.are.equal("completed", rec.status, rec.error and rec.error.message)
    assert.are.equal(1250025000, rec.result)
  end)

  it("lets other runs go on while it spins", function()
    local spin = define(function()
      return step("s", { timeout = "30s" }, function() while true do end end)
    end)
    local quick = define(function()
      local a = step("a", function() return 1 end)
      return a + step("b", function() return 2 end)
    end)
    local spinning = go(spin, nil, "spin-long")
    local rec = engine.execute(quick, nil, "quick1")
    assert.are.equal(3, rec.result)
    assert.is_truthy(engine.active["spin-long"], "the other run waited for the busy step")
    cancel("spin-long")
    assert.are.equal("cancelled", spinning().status)
  end)

  it("stops a coroutine.wrap inside the body", function()
    local p = define(function()
      return step("s", { timeout = "200ms" }, function()
        coroutine.wrap(function() while true do end end)()
      end)
    end)
    assert.are.equal("timeout", engine.execute(p, nil, "wrap").error.reason)
  end)
end)

describe("the default step timeout (--step-timeout)", function()
  after_each(function() engine.step_timeout_ms = nil end)

  it("bounds a step that sets none, not one that sets its own", function()
    engine.step_timeout_ms = 150
    local p = define(function() return step("s", function() while true do end end) end)
    local rec = engine.execute(p, nil, "default1")
    assert.are.equal("timeout", rec.error.reason)
    assert.are.equal("step 's' timed out after 150ms", rec.error.message)
    local q = define(function()
      return step("own", { timeout = "5s" }, function() H.sleep(400); return "mine" end)
    end)
    assert.are.equal("mine", engine.execute(q, nil, "default2").result)
  end)
end)

describe("a run's timeout", function()
  it("stops a busy pipeline body between steps", function()
    local p = define(function()
      step("first", function() return 1 end)
      while true do pcall(function() while true do end end) end
    end, { timeout = "300ms" })
    local t0 = uv.hrtime()
    local rec = engine.execute(p, nil, "busy-body")
    assert.is_true(ms_since(t0) < 3000)
    assert.are.equal("failed", rec.status)
    assert.are.equal("timeout", rec.error.reason)
    assert.matches("run timed out after 300ms", rec.error.message)
  end)

  it("stops a busy step that has no timeout of its own", function()
    local p = define(function()
      return step("s", function() while true do end end)
    end, { timeout = "300ms" })
    local rec = engine.execute(p, nil, "busy-step-run-timeout")
    assert.are.equal("timeout", rec.error.reason)
  end)

  it("stops busy parallel branches", function()
    local p = define(function()
      parallel(function() while true do end end, function() step("x", function() while true do end end) end)
    end, { timeout = "300ms" })
    local rec = engine.execute(p, nil, "busy-parallel")
    assert.are.equal("timeout", rec.error.reason)
  end)
end)

describe("cancel", function()
  -- a step body waiting on a luv timer (fired: the timer ran, woke: the body
  -- went on after it)
  local function waiting_body(state)
    return function()
      local co = coroutine.running()
      local t = uv.new_timer()
      t:start(1500, 0, function()
        t:close()
        state.fired = true
        coroutine.resume(co)
      end)
      coroutine.yield()
      state.woke = true
    end
  end

  it("ends a run waiting in a step on a luv timer at once", function()
    local state = {}
    local p = define(function() step("wait", waiting_body(state)) end)
    local result = go(p, nil, "cancel-timer")
    H.wait_until(function() return engine.active["cancel-timer"] and engine.executing > 0 end, "the step", 5000, 2)
    assert.is_true(cancel("cancel-timer"))
    local rec = result()
    assert.is_nil(state.fired, "cancel waited for the step")
    assert.are.equal("cancelled", rec.status)
    for _, st in ipairs(engine.get_steps("cancel-timer")) do
      assert.are.equal("running", st.status) -- shown while in flight; never finished
    end
    H.wait_until(function() return state.fired end, "the body's timer", 5000, 10)
    assert.is_nil(state.woke, "the abandoned body went on")
  end)

  it("ends a run whose step (with a timeout) waits, at once", function()
    local state = {}
    local p = define(function() step("wait", { timeout = "30s" }, waiting_body(state)) end)
    local result = go(p, nil, "cancel-timeout-step")
    H.wait_until(function() return engine.executing > 0 end, "the step", 5000, 2)
    cancel("cancel-timeout-step")
    assert.are.equal("cancelled", result().status)
    assert.is_nil(state.fired, "cancel waited for the step")
    H.wait_until(function() return state.fired end, "the body's timer", 5000, 10)
    assert.is_nil(state.woke, "the abandoned body went on")
  end)

  it("stops a busy step (with a timeout) of a cancelled run", function()
    local p = define(function()
      step("s", { timeout = "30s" }, function() while true do end end)
    end)
    local result = go(p, nil, "cancel-busy")
    H.wait_until(function() return engine.executing > 0 end, "the step", 5000, 2)
    local t0 = uv.hrtime()
    -- cancel reaches it from a timer: the busy step lets the loop run
    local t = uv.new_timer()
    t:start(100, 0, function() t:close(); cancel("cancel-busy") end)
    local rec = result()
    assert.are.equal("cancelled", rec.status) -- not its 30 s timeout
    assert.is_true(ms_since(t0) < 10000)
  end)

  it("cancels parallel branches that wait in steps", function()
    local p = define(function()
      parallel(function() step("a", function() H.sleep(2000) end) end,
        function() step("b", { timeout = "30s" }, function() H.sleep(2000) end) end)
    end)
    local result = go(p, nil, "cancel-parallel")
    H.wait_until(function() return engine.executing >= 2 end, "both steps", 5000, 2)
    cancel("cancel-parallel")
    assert.are.equal("cancelled", result().status)
    assert.are.equal(0, engine.executing)
  end)
end)

describe("the hook", function()
  it("is not set on steps when no timeout applies", function()
    local p = define(function()
      return step("s", function() return debug.gethook() == nil and guard.of(coroutine.running()) == nil end)
    end)
    local live = guard.live()
    assert.is_true(engine.execute(p, nil, "nohook").result)
    -- none left behind; the guards of runs cancelled above may be released
    -- meanwhile (their frozen tasks end on their own timers, and a
    -- PostgreSQL store's commits take long enough to see it)
    assert.is_true(guard.live() <= live, ("%d guards live after, %d before"):format(guard.live(), live))
  end)
end)
