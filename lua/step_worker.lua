--- sluice.step_worker: runs a step's body, inline or, with a timeout, in a
--- worker task the step can stop waiting for (sluice.engine_steps).
local clock = require "sluice._clock"
local vm = require "sluice._vm"
local sched = require "sluice.sched"
local guard = require "sluice._guard"
local uv = require "luv"

local M = {}

-- (ok, ...) of xpcall -> ok, number of results, first result (or the error),
-- without packing the results into tables on every step
local function first_result(ok, ...)
  if not ok then return false, 0, (...) end
  return true, select("#", ...), (...)
end

local function ms_text(ms)
  if ms >= 1000 then return ("%gs"):format(ms / 1000) end
  return ("%gms"):format(ms)
end

-- Step bodies with a timeout run in worker tasks, so that the step can stop
-- waiting for them: at the timeout, or when the run is stopped (stop_run
-- abandons br.job). A worker is a task with its own guard (sluice.guard) and
-- timer, reused from one step to the next: making them costs more than the
-- step. The engine's own code on a worker is kept to a few instructions: a
-- guarded coroutine pays the hook on every one. An abandoned worker can no
-- longer call the engine, and its guard freezes its user code: a body that
-- never yields is stopped by the guard's hook, one that waits never runs on
-- when it is woken.
local idle_workers, n_idle, MAX_IDLE = {}, 0, 256

-- The error of a step that timed out (its metatable tells it from an error
-- a body raises).
local Timeout = {}
Timeout.__index = Timeout
Timeout.__tostring = function(e) return e.message end

-- A worker carries its one job in its own fields (fn, args, timeout_ms, me:
-- the step's task; settled, waiting, ok, n, res): a busy host runs many.
local GO = {} -- the value call_step resumes a parked worker with

-- The outcome of w's job; wakes the step if it waits for it.
local function finish(w, ok, n, res)
  if w.settled then return end
  w.settled, w.ok, w.n, w.res = true, ok, n, res
  if w.waiting then sched.wake(w.me) end
end

local function retire(w)
  w.dead = true
  w.timer:close()
  w.guard:release() -- a no-op once killed: its coroutines stay frozen
end

-- The step stops waiting for w's body, which has not ended.
local function abandon(w, err)
  if w.settled then return end
  sched.set_context(w.co, { abandoned = true })
  w.guard:kill(err)
  retire(w)
  finish(w, false, 0, err)
end

local function worker_main(w)
  while true do
    local args = w.args
    finish(w, first_result(xpcall(w.fn, sched.traceback, table.unpack(args, 1, args.n))))
    if w.dead then return end
    -- call_step resumes it with its next job (cheaper than sched.wait); a
    -- stray resume (a coroutine kept from an earlier body) is ignored
    w.parked = true
    repeat until coroutine.yield() == GO
    w.parked = false
  end
end

local function worker_ended(ok, err)
  if not ok then
    io.stderr:write("sluice: internal error in a step worker: ", tostring(err.traceback or err.message), "\n")
  end
end

local function on_timeout(w)
  abandon(w, setmetatable({ code = "ETIMEOUT", message = "timed out after " .. ms_text(w.timeout_ms) }, Timeout))
end

-- Calls fn with args; returns true, number of results, first result, or
-- false, 0, error table. With a timeout, fn runs in a worker task.
local function call_step(br, fn, args, timeout_ms)
  if not timeout_ms then
    if args.n == 0 then return first_result(xpcall(fn, sched.traceback)) end
    return first_result(xpcall(fn, sched.traceback, table.unpack(args, 1, args.n)))
  end
  -- the body may run until the step's timeout, or the run's if that is sooner
  local limit = timeout_ms
  local deadline_us = br.run.record.deadline_us
  if deadline_us then limit = math.max(0, math.min(limit, (deadline_us - clock.now()) / 1000)) end
  local t0 = clock.hrtime()
  local w
  while n_idle > 0 do
    w = idle_workers[n_idle]
    idle_workers[n_idle], n_idle = nil, n_idle - 1
    -- one that woke the step it ran for may not have parked yet
    if w.parked and w.guard:rearm(limit) then break end
    retire(w)
    w = nil
  end
  if w then
    w.fn, w.args, w.timeout_ms, w.me, w.settled, w.waiting = fn, args, timeout_ms, coroutine.running(), false, false
    sched.set_context(w.co, br)
    vm.resume(w.co, GO)
  else
    w = { fn = fn, args = args, timeout_ms = timeout_ms, me = coroutine.running(), settled = false,
      waiting = false, ok = false, n = 0, res = false, dead = false, parked = false,
      guard = guard.new(limit), timer = uv.new_timer(), co = false }
    w.on_timeout = function() on_timeout(w) end
    w.co = sched.spawn_guarded(br, w.guard, worker_main, worker_ended, w)
  end
  if not w.settled then
    br.job = w
    -- the timeout counts from the start of the body, which may have run a while
    uv.update_time()
    w.timer:start(math.max(1, math.floor(timeout_ms - (clock.hrtime() - t0) / 1e6 + 0.5)), 0, w.on_timeout)
    w.waiting = true
    sched.wait()
    br.job = nil
    if not w.dead then w.timer:stop() end
  end
  local ok, n, res = w.ok, w.n, w.res
  w.fn, w.args, w.me, w.res = nil, nil, nil, false
  -- back to the pool, unless it was abandoned or coroutines the body made
  -- joined its guard (they lose the hook now, not at the next deadline)
  if not w.dead then
    if n_idle < MAX_IDLE and w.guard:rearm(nil) then
      sched.set_context(w.co, nil)
      n_idle = n_idle + 1
      idle_workers[n_idle] = w
    else
      retire(w)
    end
  end
  if not ok then return false, 0, res end
  return true, n, res
end

M.call_step, M.abandon, M.Timeout = call_step, abandon, Timeout

return M
