--- sluice.engine_steps: durable steps and their replay (DESIGN §2): `step`
--- with retries and timeouts, the internal steps of sleep/emit/send/wait_for
--- (`memo`), `sleep`, `parallel` branches, `ctx`, and stopping a run.
---
--- A run executes its pipeline function from the top every time it starts
--- or resumes. Each `step` is memoized per (run, step id): the first time its
--- function runs and its result is committed through the writer before
--- `step` returns; later, the stored result is returned and the function
--- does not run. Steps are also recorded by position within their branch
--- (the main function is branch "", each function given to `parallel` its
--- own branch), so a resume whose code calls steps in another order fails
--- loudly instead of handing a stored result to the wrong step.
local clock = require "sluice._clock"
local store = require "sluice._store"
local sched = require "sluice.sched"
local duration = require "sluice.duration"
local errors = require "sluice.errors"
local registry = require "sluice.registry"
local guard = require "sluice._guard"
local logs = require "sluice.log"
local step_options = require "sluice.step_options"
local worker = require "sluice.step_worker"
local uv = require "luv"
local site = require("sluice._step").site
local idset = require("sluice._idset")
local seen_get, seen_put = idset.get, idset.put
local M = require "sluice.engine_core"

local type, find, running = type, string.find, coroutine.running
local contexts = sched.contexts -- coroutine -> branch context: sched.context() without its call
local take = store.replay_take  -- rs:take without the method lookup
local StepError = M.StepError
local store_error = errors.store
local call_step, abandon, Timeout = worker.call_step, worker.abandon, worker.Timeout

local function park()
  -- never woken: the process is about to exit
  sched.wait()
end

-- Raises the error that ends a stopped run at a step boundary (cancel or
-- run timeout). The run's final status comes from run.stop whatever user
-- code does with the error.
local function stopped(run)
  error(M.stop_error(run.stop.reason, run.stop.message), 0)
end

local function branch_label(name)
  return name == "" and "main" or name
end

local function site_text(fn, line)
  local src = fn and debug.getinfo(fn, "S")
  return (src and src.short_src or "?") .. ":" .. (line or 0)
end

-- the first Lua frame at or above `level` (1: the caller of caller_of): a
-- function of the API is behind a C entry point (sluice.errors), maybe
-- called through pcall
local function caller_of(level)
  level = level + 1
  local info = debug.getinfo(level, "Slf")
  while info and info.what == "C" do
    level = level + 1
    info = debug.getinfo(level, "Slf")
  end
  return info
end

-- Step ids are unique within a run. Where each executed step was called
-- from is kept as one integer per id in run.seen, function index * 2^24 +
-- line (the functions in a per-run list, usually one or two), turned into
-- "file:line" only for the error (run.seen is a sluice._idset: an id costs
-- its bytes there, where a Lua table's key kept its string alive); a
-- replayed step's second use is told by its record (rs:take: "twice"):
-- looking up its call site would cost more than the rest of its replay, and
-- the error then says the first use was a replayed step.
local function check_unique(run, id, level)
  local first = seen_get(run.seen, id)
  if first then
    local info = caller_of(level + 1)
    local where = site_text(run.site_fns[first >> 24], first & 0xffffff)
    error(("step id '%s' is used twice in run %s: at %s and at %s; step ids must be unique within a run")
      :format(id, run.id, where, site_text(info.func, info.currentline)), level + 1)
  end
end

-- (site: caller_of's function and line without debug.getinfo's table and
-- strings, a fifth of an executed step's CPU)
local function note_site(run, id, level)
  local fn, line = site(level + 1)
  if not fn then -- no Lua frame above: "?:0"
    seen_put(run.seen, id, 0)
    return
  end
  local fns = run.site_fns
  local i = fns[fn]
  if not i then
    i = #fns + 1
    fns[i], fns[fn] = fn, i
  end
  seen_put(run.seen, id, (i << 24) | (line & 0xffffff))
end

-- A record operation's message without its code ("EINVAL: result.f: ...").
local function without_code(msg) return (tostring(msg):gsub("^%u+: ", "")) end

-- The replay of a step-like call at (br, pos) with this id takes its
-- record from the run's stored steps (run.replay: sluice._store
-- replay_steps, rs:take, called inline by step and memo): true and the
-- stored result when the step completed before; nil or false when it is to
-- run (not recorded, or recorded failed); else what refuses the replay,
-- raised here: a recorded history with another id here or this id
-- elsewhere fails the run (run.fatal); an id whose record was replayed
-- already is used twice.
local function refuse_replay(run, br, pos, id, r, a, b, level)
  if r == "twice" then
    local info = caller_of(level + 1)
    error(("step id '%s' is used twice in run %s: at a replayed step and at %s; step ids must be unique within a run")
      :format(id, run.id, site_text(info.func, info.currentline)), level + 1)
  end
  if r == "corrupt" then error(("corrupt result of step '%s': %s"):format(id, a), 0) end
  if r == "here" then
    run.fatal = errors.new("EDIVERGED", (
      "run %s diverged from its recorded history: at position %d of branch %s the recorded step is '%s' " ..
      "but the code now calls step '%s' (the pipeline changed, or code between steps is not deterministic); " ..
      "resume it with the code that started it, or start a new run"):format(
        run.id, pos, branch_label(br.name), a, id), { step = id }, StepError)
  else -- "elsewhere"
    run.fatal = errors.new("EDIVERGED", (
      "run %s diverged from its recorded history: step '%s' was recorded at position %d of branch %s " ..
      "but the code now calls it at position %d of branch %s; resume it with the code that started it, " ..
      "or start a new run"):format(run.id, id, b, branch_label(a), pos, branch_label(br.name)),
      { step = id }, StepError)
  end
  error(run.fatal, level + 1)
end

-- the branch of the running coroutine, or a clear error naming the caller
-- (`what`, e.g. "map") raised at `level` above this function's caller
local function current_branch(what, level)
  local br = sched.context()
  if not br or not br.run then
    registry.forbid_at_load(what, level + 1)
    error(("%s called outside a run: call it inside a pipeline function"):format(what), level + 1)
  end
  if br.abandoned then
    error(("%s called from a step that timed out and was abandoned"):format(what), level + 1)
  end
  return br
end

--- The branch context of the running coroutine ({run=, name=, pos=,
--- in_step=, attempt=}); raises "<what> called outside a run" otherwise, at
--- `level` (default 2) as the local current_branch does (a tail call).
function M.current_branch(what, level)
  return current_branch(what, level or 2)
end

--- A new branch of parent's run. `name` must be deterministic and unique
--- within the run (replay matches steps by branch name and position).
--- Run fn in it with require("sluice.sched").spawn(branch, fn, on_done).
function M.new_branch(parent, name)
  return { run = parent.run, name = (parent.name == "" and "" or parent.name .. "/") .. name, pos = 0 }
end

local NO_ARGS = { n = 0 } -- the arguments of most steps: none

--- Step ids are stored in keys "<run id>\0<step id>" (run ids: at most 200
--- bytes) that must fit LMDB's 511-byte keys.
local MAX_STEP_ID = 255
M.MAX_STEP_ID = MAX_STEP_ID

--- What is wrong with a step id that is not a non-empty string of at most
--- MAX_STEP_ID bytes without NUL ("step", "map", "dag: node" say whose).
function M.bad_step_id(what, id)
  if type(id) ~= "string" then
    return ("%s: the id must be a non-empty string, got %s"):format(what, type(id))
  end
  if id == "" then return ("%s: the id must be a non-empty string, got \"\""):format(what) end
  if #id > M.MAX_STEP_ID then
    return ("%s: the id is %d bytes long (%q...); ids are at most %d bytes"):format(
      what, #id, id:sub(1, 32), M.MAX_STEP_ID)
  end
  return ("%s: the id %q must not contain NUL bytes"):format(what, id)
end

local function step_failure(run, id, cause, attempts)
  local message
  local timeout = getmetatable(cause) == Timeout
  if timeout then -- "step 's' timed out after 1s"
    message = ("step '%s' %s%s"):format(id, cause.message, attempts > 1 and (" (%d attempts)"):format(attempts) or "")
  else
    message = ("step '%s' failed%s: %s"):format(id,
      attempts > 1 and (" after %d attempts"):format(attempts) or "", cause.message or tostring(cause))
  end
  return errors.new(timeout and "ETIMEOUT" or "ESTEP", message, {
    step = id, run = run.id, attempts = attempts,
    traceback = cause.traceback, reason = timeout and "timeout" or nil,
  }, StepError)
end

--- Raises the store failure of a write (or read) the run needs; one that
--- lost its outcome (M.store_lost) stops the whole run first, as "lost".
function M.run_store_error(run, what, msg, code)
  if M.store_lost(code) then
    M.stop_run(run, "lost", ("%s: %s"):format(what, tostring(msg)))
    stopped(run)
  end
  store_error(what, msg, code)
end

local function commit_step(run, b, id)
  -- the lines the step logged commit with its record (stdlib/sluice/log.lua)
  local ok, msg, code = logs.add(b, run, id)
  if not ok then M.run_store_error(run, ("step '%s': reading the logs of run %s"):format(id, run.id), msg, code) end
  ok, msg, code = b:commit()
  if not ok then M.run_store_error(run, ("step '%s': storing its result"):format(id), msg, code) end
end

-- Steps in flight, for `sluice status` in another process. Writing a record
-- when every step starts would cost a commit (an fsync) per step; instead
-- the branch executing a step is marked here (fields on its context, no
-- table per step), and a sweep every 250 ms publishes a "running" step
-- record for each step that has run 500 ms or more, without waiting for it
-- to be durable. The step's own result record replaces it (the writer
-- commits in queue order, and a step leaves the set before it queues its
-- result). Short steps cost nothing and are never shown; the replay loader
-- ignores "running" records, so they change nothing on resume.
local inflight = {} -- branch context -> true while it executes a step
local sweep_timer
local SHOW_AFTER_US = 500000

local function publish_inflight()
  local now, b = clock.now(), store.batch()
  for br in pairs(inflight) do
    local run = br.run
    if br.flight_shown ~= br.flight_attempt and now - br.flight_started >= SHOW_AFTER_US and M.active[run.id] then
      br.flight_shown = br.flight_attempt
      b:put_step(run.id, br.name, br.flight_pos, br.flight_id, "running", br.flight_attempt, br.flight_started, 0)
    end
  end
  if b:count() == 0 then return end
  local ok, msg = b:commit()
  -- only visibility is lost: the step's own commit reports a failing store
  if not ok and not M.stopping then io.stderr:write("sluice: recording the steps in flight: ", tostring(msg), "\n") end
end

local function flight_begin(br, id, pos, started)
  br.flight_id, br.flight_pos, br.flight_started, br.flight_attempt, br.flight_shown = id, pos, started, 1, nil
  inflight[br] = true
  if not sweep_timer then
    sweep_timer = uv.new_timer()
    sweep_timer:start(250, 250, function()
      -- a task of its own: it reads the set and queues its commit in one go,
      -- so no step can settle in between
      if next(inflight) then sched.go({}, publish_inflight) end
    end)
    sweep_timer:unref() -- never what keeps the process alive
  end
end

-- A step stops executing: once, from step, or from stop_run when the body
-- never returns (it ran on the branch's own task, which a stop freezes).
local function step_settled(br)
  if not br.executing then return end
  br.executing = false
  inflight[br] = nil
  M.executing = M.executing - 1
  if M.stopping and M.executing == 0 and M.on_idle then M.on_idle() end
end

local function check_step_opts(id, opts)
  for k in pairs(opts) do
    if not step_options.known[k] then
      error(("step '%s': unknown option '%s' (known: retries, backoff, timeout)"):format(id, tostring(k)), 3)
    end
  end
  step_options.check(("step '%s'"):format(id), opts)
end

-- step(id, [opts,] fn, ...) with the arguments after b packed in extra
-- (nil: none): a function of fixed arity, as a vararg one copies its frame
-- at each call (M.step3 is the global step's way in for up to three
-- arguments). Called in tail position, so the caller's frame is the one
-- caller_of finds at the levels below.
local function do_step(id, a, b, extra)
  local br = contexts[running()]
  if not br or not br.run or br.abandoned then
    current_branch(("step(%q)"):format(tostring(id)), 2) -- raises the right error
  end
  if type(id) ~= "string" or id == "" or #id > MAX_STEP_ID or find(id, "\0", 1, true) then
    error(M.bad_step_id("step", id), 2)
  end
  local opts, fn
  if type(a) == "table" then
    opts, fn = a, b
    check_step_opts(id, opts)
  else
    fn = a
  end
  if type(fn) ~= "function" then
    error(("step '%s': expected a function, got %s"):format(id, type(fn)), 2)
  end
  if br.in_step then
    error(("step '%s' called inside step '%s': steps do not nest; call it from the pipeline function")
      :format(id, br.in_step), 2)
  end
  local run = br.run
  if run.stop then stopped(run) end
  br.pos = br.pos + 1
  local pos = br.pos
  if seen_get(run.seen, id) then check_unique(run, id, 2) end

  -- replay: the history recorded for this branch position must match
  local rs = run.replay
  if rs then
    local r, a2, b2 = take(rs, id, br.name, pos)
    if r == true then return a2 end -- counted by rs (engine_runs: rec.replayed)
    if r then refuse_replay(run, br, pos, id, r, a2, b2, 2) end
  end
  note_site(run, id, 2)

  -- execute, with retries
  if M.stopping then park() end
  -- several hosts: one that may have lost its lease (lua/hosts.lua) starts
  -- no step; the run stops as lost and executes again once this host holds
  -- its lease (it renewed late), or stays with the host that took it over
  if M.leases and M.leases.lapsed() then
    M.stop_run(run, "lost", ("step '%s' not started: this host's lease may have lapsed (no renewal in time)"):format(id))
    stopped(run)
  end
  local args = NO_ARGS
  if opts then
    if extra then args = extra end
  elseif extra then
    args = table.pack(b, table.unpack(extra, 1, extra.n))
  elseif b ~= nil then
    args = { n = 1, b }
  end
  local max_attempts = 1 + (opts and opts.retries or 0)
  local timeout_ms = opts and opts.timeout and duration.ms(opts.timeout) or M.step_timeout_ms
  local started = clock.now()
  local attempt = 0
  M.executing = M.executing + 1
  flight_begin(br, id, pos, started)
  br.executing = true
  while true do
    attempt = attempt + 1
    br.in_step, br.attempt, br.flight_attempt = id, attempt, attempt
    local ok, nres, res = call_step(br, fn, args, timeout_ms)
    br.in_step, br.attempt = nil, nil
    -- cancelled or timed out meanwhile: the step stays unfinished (no record)
    if run.stop then
      step_settled(br)
      stopped(run)
    end
    local retryable = true
    if ok then
      if nres > 1 then
        ok, retryable, res = false, false, { message = ("returned %d values; return one value (a table if you need several)"):format(nres) }
      else
        local value = res
        -- the value is encoded once, straight into the batch
        local b = store.batch()
        local put, eerr = b:put_step(run.id, br.name, pos, id, "completed", attempt, started, clock.now() - started, value)
        if not put then
          ok, retryable, res = false, false, { message = "returned a value that cannot be stored: " .. without_code(eerr) }
        else
          inflight[br] = nil
          local cok, cerr = pcall(commit_step, run, b, id)
          step_settled(br)
          if not cok then error(cerr, 0) end
          run.executed = run.executed + 1
          if M.on_step then M.on_step(run.pipeline.name, attempt, clock.now() - started, true) end
          return value
        end
      end
    end
    if not retryable or attempt >= max_attempts then
      local err = step_failure(run, id, res, attempt)
      inflight[br] = nil
      local b = store.batch()
      assert(b:put_step(run.id, br.name, pos, id, "failed", attempt, started, clock.now() - started,
        { code = err.code, message = err.message, traceback = err.traceback }))
      local cok, cerr = pcall(commit_step, run, b, id)
      step_settled(br)
      if not cok then error(cerr, 0) end
      if M.on_step then M.on_step(run.pipeline.name, attempt, clock.now() - started, false) end
      error(err, 0)
    end
    if M.interruptible_wait(run, step_options.backoff_ms(opts.backoff, attempt)) then
      step_settled(br)
      stopped(run)
    end
    if M.stopping then -- the host shuts down: no new attempt starts
      step_settled(br)
      park()
    end
  end
end

--- step(id, [opts,] fn, ...): durable, memoized per (run, id).
function M.step(id, a, b, ...)
  if select("#", ...) == 0 then return do_step(id, a, b) end
  return do_step(id, a, b, table.pack(...))
end

--- M.step for a call of at most three arguments (errors.entry's fast path).
function M.step3(id, a, b)
  return do_step(id, a, b)
end

--- Waits up to ms (nil: until woken) unless the run is stopped meanwhile;
--- returns true if it was interrupted by a stop.
function M.interruptible_wait(run, ms, register)
  local me = coroutine.running()
  local done = false
  local timer
  local function finish(interrupted)
    if done then return end
    done = true
    if timer and not timer:is_closing() then timer:close() end
    run.interrupts[me] = nil
    sched.wake(me, interrupted)
  end
  run.interrupts[me] = function() finish(true) end
  if ms then
    timer = uv.new_timer()
    uv.update_time()
    timer:start(math.max(0, math.floor(ms + 0.5)), 0, function() finish(false) end)
  end
  if register then register(function() finish(false) end) end
  return sched.wait()
end

--- memo(kind, produce): a durable internal step of the running run at the
--- next position of its branch, with id "<kind>@<branch position>" (for
--- sleep, emit, send, wait_for). The first time, produce() returns the value
--- to store and, optionally, a function add(b) that adds more records to the
--- store batch b committed with the step record (an emitted event and the
--- record that it was emitted commit together, so replay never emits
--- twice); add(b, run_id, step_id) may name the step's record. On
--- PostgreSQL, where the commit allocates the positions of events and sends,
--- produce's third value committed(first_event, first_send) gives the value
--- once they are known (the record gets them in the same commit:
--- b:step_positions). Later, the stored value is returned. Returns value,
--- replayed.
function M.memo(kind, produce, level)
  level = (level or 1) + 1
  local br = current_branch(kind, level)
  if br.in_step then
    error(("%s called inside step '%s': call it from the pipeline function"):format(kind, br.in_step), level)
  end
  local run = br.run
  if run.stop then stopped(run) end
  br.pos = br.pos + 1
  local pos = br.pos
  local id = kind .. "@" .. (br.name == "" and "" or br.name .. "/") .. pos
  local rs = run.replay
  if rs then
    local r, a, b = take(rs, id, br.name, pos)
    if r == true then return a, true end -- counted by rs
    if r then refuse_replay(run, br, pos, id, r, a, b, level) end
  end
  if M.stopping then park() end
  local started = clock.now()
  local value, add, committed = produce()
  local b = store.batch()
  local put, eerr = b:put_step(run.id, br.name, pos, id, "completed", 1, started, clock.now() - started, value)
  if not put then error(("%s: %s"):format(kind, without_code(eerr)), level) end
  if add then add(b, run.id, id) end
  local ok, msg, code = b:commit()
  if not ok then M.run_store_error(run, ("%s: storing it"):format(kind), msg, code) end
  if committed then value = committed(msg, code) end -- true, first event, first send
  run.executed = run.executed + 1
  return value, false
end

--- Writes the run's record with a new status (sleeping, waiting, running).
--- A stopped run's record is its final one: the engine's code on a frozen
--- task (a sleep whose own record was being written when the stop came)
--- ends here instead of writing over it (the record, the run's result and
--- the store: on LMDB, or with a timeout, nothing else keeps it).
function M.set_status(run, status)
  if run.stop then stopped(run) end
  if run.record.status == status then return end
  run.record.status = status
  local ok, msg, code = store.batch():put_run(run.record):commit()
  if not ok then M.run_store_error(run, "run " .. run.id .. ": setting status " .. status, msg, code) end
end

--- sleep(duration): durable. The wake time is stored the first time; after
--- a restart the run sleeps only what remains; a finished sleep replays at
--- once. The run's status is "sleeping" meanwhile.
function M.sleep(d)
  local ms = duration.ms(d, "sleep")
  local wake_us = M.memo("sleep", function() return clock.now() + math.floor(ms * 1000) end, 2)
  local left_ms = (wake_us - clock.now()) / 1000
  if left_ms > 0 then
    local run = M.current_branch("sleep").run
    M.set_status(run, "sleeping")
    local interrupted = M.interruptible_wait(run, left_ms)
    if interrupted then stopped(run) end
    M.set_status(run, "running")
  end
end

--- stop_run(run, reason, message): stops a run executing in this process
--- now, and its child runs with it. Steps in flight are abandoned (they
--- stay unfinished: a rerun executes them again); sleeps and waits are
--- interrupted; the user code of the run never runs again: a guard freezes
--- its tasks where they are (the engine's own code on them completes, so
--- child runs and records end properly). The run's end does not wait for
--- them: execute returns at once.
function M.stop_run(run, reason, message)
  if run.stop then return end
  run.stop = { reason = reason, message = message }
  local err = M.stop_error(reason, message)
  local g = run.guard
  if not g then
    g = guard.new(nil)
    run.guard = g
  end
  local branches = {}
  sched.each_task(function(co, ctx)
    if ctx.run == run then
      g:attach(co)
      branches[ctx] = true
    end
  end)
  g:kill(err)
  for br in pairs(branches) do
    if br.job then
      abandon(br.job, err) -- the body runs in a worker: the step returns the stop
    else
      step_settled(br) -- the body (if any) runs on the branch's task, frozen with it
    end
  end
  for _, f in pairs(run.interrupts) do f() end
  -- a run lost by the store executes again, and finds its children as they are
  if reason ~= "lost" then
    for child in pairs(run.children) do M.cancel(child) end
  end
  if run.main then run.main:settle(false, err) end
end

--- parallel(f1, f2, ...): runs the functions as concurrent branches of this
--- run and returns their results in order. If any fails, the others finish
--- (their steps stay stored) and the first error in argument order is raised.
function M.parallel(...)
  local br = current_branch("parallel", 2)
  if br.in_step then
    error(("parallel called inside step '%s': call it from the pipeline function"):format(br.in_step), 2)
  end
  local fns = table.pack(...)
  for i = 1, fns.n do
    if type(fns[i]) ~= "function" then
      error(("parallel: argument %d is a %s, expected a function"):format(i, type(fns[i])), 2)
    end
  end
  br.pos = br.pos + 1
  local tasks = {}
  for i = 1, fns.n do
    tasks[i] = sched.go(M.new_branch(br, br.pos .. "." .. i), fns[i])
  end
  -- every branch ends before anything is raised: their steps stay stored
  local results, first_err = {}, nil
  for i = 1, fns.n do
    local ok, res = tasks[i]:await()
    if ok then results[i] = res elseif first_err == nil then first_err = res end
  end
  if first_err ~= nil then error(first_err, 0) end
  return table.unpack(results, 1, fns.n)
end

--- ctx(): the running run id, pipeline, step id and attempt (for
--- idempotency keys to other systems).
function M.ctx()
  local br = current_branch("ctx", 2)
  return {
    run_id = br.run.id, pipeline = br.run.pipeline.name,
    step_id = br.in_step, attempt = br.attempt, branch = br.name,
    namespace = br.run.record.namespace or store.DEFAULT_NS,
  }
end


return M
