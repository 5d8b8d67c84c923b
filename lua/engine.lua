--- sluice.engine: pipelines, runs, durable steps, replay, retries and
--- parallel branches (DESIGN §1-2).
---
--- A run executes its pipeline function from the top every time it starts
--- or resumes. Each `step` is memoized per (run, step id): the first time its
--- function runs and its result is committed through the writer before
--- `step` returns; later, the stored result is returned and the function
--- does not run. Steps are also recorded by position within their branch
--- (the main function is branch "", each function given to `parallel` its
--- own branch), so a resume whose code calls steps in another order fails
--- loudly instead of handing a stored result to the wrong step.
local host = require "sluice.host"
local json = require "sluice.codec" -- store records: exact
local sched = require "sluice.sched"
local duration = require "sluice.duration"
local errors = require "sluice.errors"
local liveness = require "sluice.liveness"
local registry = require "sluice.registry"
local runs_index = require "sluice.runs_index"
local guard = require "sluice.guard"
local logs = require "sluice.log"
local uv = require "luv"

local M = {}

local pipelines = registry.live.pipelines -- name -> handle, of every file (sluice.registry)
M.pipelines = pipelines

--- Set by a host that is shutting down: no step starts any more; a run
--- reaching a step that would execute parks there (it stays "running" in
--- the store and resumes at the next start). M.executing counts steps whose
--- function runs now; M.on_idle() is called when it drops to 0 while
--- stopping.
M.stopping = false
M.executing = 0
M.on_idle = nil
--- Set by the HTTP API's metrics: on_step(pipeline_name, attempts, us, ok)
--- after each executed step.
M.on_step = nil

--- The timeout (ms) of steps that set none (serve/run --step-timeout); nil:
--- such steps run unbounded.
M.step_timeout_ms = nil

local stopped -- defined below: raises the stop error of a run
local acquire_slot -- defined below: concurrency keys

local function park()
  -- never woken: the process is about to exit
  sched.wait()
end

local Pipeline = {}
Pipeline.__index = Pipeline
Pipeline.__tostring = function(p) return "pipeline " .. p.name end

--- The error raised when a step fails; a run that ends with it records the
--- step id.
local StepError = {}
StepError.__index = StepError
StepError.__tostring = function(e) return e.message end
M.StepError = StepError

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
-- from is kept as one integer per id, function index * 2^24 + line (the
-- functions in a per-run list, usually one or two), turned into "file:line"
-- only for the error; a replayed step keeps only `true`: looking up its call
-- site would cost more than the rest of its replay, and the error then says
-- the first use was a replayed step.
local function check_unique(run, id, level)
  local first = run.seen[id]
  if first then
    local info = caller_of(level + 1)
    local where = first == true and "a replayed step"
      or site_text(run.site_fns[first >> 24], first & 0xffffff)
    error(("step id '%s' is used twice in run %s: at %s and at %s; step ids must be unique within a run")
      :format(id, run.id, where, site_text(info.func, info.currentline)), level + 1)
  end
end

local function note_site(run, id, level)
  local info = caller_of(level + 1)
  local fns = run.site_fns
  local i = fns[info.func]
  if not i then
    i = #fns + 1
    fns[i], fns[info.func] = info.func, i
  end
  run.seen[id] = (i << 24) | (info.currentline & 0xffffff)
end

-- The replay check of a step-like call at (br, pos) with this id: returns
-- the stored record if there is one; fails the run (run.fatal) if the
-- recorded history has another id here or this id elsewhere.
local function recorded(run, br, pos, id, level)
  local recorded_here = run.order[br.name]
  recorded_here = recorded_here and recorded_here[pos]
  local raw = run.raw[id]
  if recorded_here and recorded_here ~= id then
    run.fatal = setmetatable({ message = (
      "run %s diverged from its recorded history: at position %d of branch %s the recorded step is '%s' " ..
      "but the code now calls step '%s' (the pipeline changed, or code between steps is not deterministic); " ..
      "resume it with the code that started it, or start a new run"):format(
        run.id, pos, branch_label(br.name), recorded_here, id), step = id }, StepError)
    error(run.fatal, level + 1)
  end
  if raw and not recorded_here then
    local rec = host.step_fields(raw)
    run.fatal = setmetatable({ message = (
      "run %s diverged from its recorded history: step '%s' was recorded at position %d of branch %s " ..
      "but the code now calls it at position %d of branch %s; resume it with the code that started it, " ..
      "or start a new run"):format(run.id, id, rec.pos, branch_label(rec.branch), pos, branch_label(br.name)),
      step = id }, StepError)
    error(run.fatal, level + 1)
  end
  return raw
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

local function store_error(what, msg, code)
  error(("%s: %s (%s)"):format(what, tostring(msg), tostring(code)), 0)
end

--- The branch context of the running coroutine ({run=, name=, pos=,
--- in_step=, attempt=}); raises "<what> called outside a run" otherwise.
function M.current_branch(what)
  return current_branch(what, 2)
end

--- A new branch of parent's run. `name` must be deterministic and unique
--- within the run (replay matches steps by branch name and position).
--- Run fn in it with require("sluice.sched").spawn(branch, fn, on_done).
function M.new_branch(parent, name)
  return { run = parent.run, name = (parent.name == "" and "" or parent.name .. "/") .. name, pos = 0 }
end

---------------------------------------------------------------------------
-- definition

--- Defines a pipeline. Returns its handle.
---@param name string
---@param fn fun(input:any):any
---@param opts table?
function M.pipeline(name, fn, opts)
  if type(name) ~= "string" or name == "" then
    error("pipeline: the name must be a non-empty string", 2)
  end
  if type(fn) ~= "function" then
    error(("pipeline '%s': expected a function as second argument, got %s"):format(name, type(fn)), 2)
  end
  if opts ~= nil and type(opts) ~= "table" then
    error(("pipeline '%s': options must be a table, got %s"):format(name, type(opts)), 2)
  end
  if opts then M.check_pipeline_opts(name, opts) end
  local site = errors.where() or "?"
  -- the file being loaded (sluice.registry), or the live set
  local set = registry.target()
  local prev = set.pipelines[name]
  if prev then
    error(("pipeline '%s' is defined twice: at %s and at %s"):format(name, prev.site, site), 2)
  end
  local p = setmetatable({
    name = name, fn = fn, opts = opts or {}, site = site, params = opts and opts.params,
    file = set.file, hash = set.hash,
  }, Pipeline)
  set.pipelines[name] = p
  set.defined[#set.defined + 1] = p
  return p
end

-- a value as an error message shows it: strings quoted, so "8" is not 8
local function show(v)
  return type(v) == "string" and ("%q"):format(v) or tostring(v)
end

--- Options the HTTP API reads (lua/api/runs.lua, lua/api/ops.lua), each
--- with its check: raises (level 3: the pipeline call) when wrong.
M.api_options = {
  description = function(what, v)
    if type(v) ~= "string" then error(("%s: description must be a string"):format(what), 4) end
  end,
  parameters = function(what, v)
    if type(v) ~= "table" then error(("%s: parameters must be a table {name = \"string\" | {type=, required=}}"):format(what), 4) end
    for name, spec in pairs(v) do
      local t = type(spec) == "table" and spec.type or spec
      if type(name) ~= "string" or type(t) ~= "string" then
        error(("%s: parameters.%s must be a type name (string, number, integer, boolean, object, array) or {type=, required=}")
          :format(what, tostring(name)), 4)
      end
    end
  end,
  namespaces = function(what, v)
    if type(v) ~= "table" or #v == 0 then error(("%s: namespaces must be a list of namespace names"):format(what), 4) end
  end,
}

--- Checks pipeline options {timeout=, concurrency={key=, limit=}} at the
--- definition, not at the first run.
function M.check_pipeline_opts(name, opts)
  local what = ("pipeline '%s'"):format(name)
  for k in pairs(opts) do
    if k ~= "timeout" and k ~= "concurrency" and k ~= "params" and not M.api_options[k] then
      error(("%s: unknown option '%s' (known: timeout, concurrency, params, description, parameters, namespaces)")
        :format(what, tostring(k)), 2)
    end
    if M.api_options[k] then M.api_options[k](what, opts[k]) end
  end
  if opts.params ~= nil then require("sluice.params").check_spec(name, opts.params, 2) end
  if opts.timeout ~= nil then duration.ms(opts.timeout, what .. " timeout") end
  local c = opts.concurrency
  if c ~= nil then
    if type(c) ~= "table" then
      error(("%s: concurrency must be a table {key = function(input) ... end, limit = n}, got %s")
        :format(what, show(c)), 2)
    end
    for k in pairs(c) do
      if k ~= "key" and k ~= "limit" then
        error(("%s: unknown concurrency field '%s' (known: key, limit)"):format(what, tostring(k)), 2)
      end
    end
    if c.limit ~= nil and (math.type(c.limit) ~= "integer" or c.limit < 1) then
      error(("%s: concurrency.limit must be a positive integer, got %s"):format(what, show(c.limit)), 2)
    end
  end
end

--- The file being loaded, or nil.
function M.loading_file()
  return registry.loading_file()
end

--- Loads a pipeline file through the registry (stage, validate, swap: a
--- second load replaces the file's definitions). A syntax error is
--- "file:line: msg". Returns the pipelines it defines, in order.
---@return table? defined, string? err, string? kind  "syntax"|"runtime"|"io"|"invalid"
function M.load_file(path, opts)
  local d, err, kind, tb = registry.load(path, opts)
  if not d then return nil, tb or err, kind end
  return d.defined
end

---------------------------------------------------------------------------
-- steps

local step_opts = { retries = true, backoff = true, timeout = true }
local backoff_fields = { initial = true, factor = true, max = true, jitter = true }

--- Checks the step options retries, backoff and timeout of o (other keys
--- are the caller's: map and dag pass these on to their steps); `what`
--- names the owner ("step 'x'", "map 'x'", "dag: node 'x'").
function M.check_step_opts(what, o)
  local r = o.retries
  if r ~= nil and (math.type(r) ~= "integer" or r < 0) then
    error(("%s: retries must be an integer >= 0, got %s"):format(what, show(r)), 2)
  end
  if o.timeout ~= nil then duration.ms(o.timeout, what .. " timeout") end
  local b = o.backoff
  if type(b) == "table" then
    for k in pairs(b) do
      if not backoff_fields[k] then
        error(("%s: unknown backoff field '%s' (known: initial, factor, max, jitter)"):format(what, tostring(k)), 2)
      end
    end
    if b.initial ~= nil then duration.ms(b.initial, what .. " backoff.initial") end
    if b.max ~= nil then duration.ms(b.max, what .. " backoff.max") end
    if b.factor ~= nil and (type(b.factor) ~= "number" or not (b.factor >= 1 and b.factor < math.huge)) then
      error(("%s: backoff.factor must be a number >= 1, got %s"):format(what, show(b.factor)), 2)
    end
    if b.jitter ~= nil and (type(b.jitter) ~= "number" or not (b.jitter >= 0 and b.jitter <= 1)) then
      error(("%s: backoff.jitter must be a number from 0 to 1, got %s"):format(what, show(b.jitter)), 2)
    end
  elseif b ~= nil then
    if type(b) ~= "number" and type(b) ~= "string" then
      error(("%s: backoff must be a duration or a table {initial=, factor=, max=, jitter=}, got %s")
        :format(what, type(b)), 2)
    end
    duration.ms(b, what .. " backoff")
  end
end

local function check_step_opts(id, opts)
  for k in pairs(opts) do
    if not step_opts[k] then
      error(("step '%s': unknown option '%s' (known: retries, backoff, timeout)"):format(id, tostring(k)), 3)
    end
  end
  M.check_step_opts(("step '%s'"):format(id), opts)
end

-- delay before attempt n+1 after attempt n failed
local function backoff_ms(id, b, n)
  local initial, factor, max, jitter = 1000, 2, 300000, 0.2
  if type(b) == "number" or type(b) == "string" then
    initial = duration.ms(b, ("step '%s' backoff"):format(id))
  elseif type(b) == "table" then
    if b.initial ~= nil then initial = duration.ms(b.initial, ("step '%s' backoff.initial"):format(id)) end
    if b.max ~= nil then max = duration.ms(b.max, ("step '%s' backoff.max"):format(id)) end
    factor = b.factor or factor
    jitter = b.jitter or jitter
  elseif b ~= nil then
    error(("step '%s': backoff must be a duration or a table {initial=, factor=, max=, jitter=}"):format(id), 0)
  end
  local d = math.min(max, initial * factor ^ (n - 1))
  if jitter > 0 then d = d * (1 - jitter + 2 * jitter * math.random()) end
  return d
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
  abandon(w, setmetatable({ message = "timed out after " .. ms_text(w.timeout_ms) }, Timeout))
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
  if deadline_us then limit = math.max(0, math.min(limit, (deadline_us - host.now()) / 1000)) end
  local t0 = host.hrtime()
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
    host.resume(w.co, GO)
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
    w.timer:start(math.max(1, math.floor(timeout_ms - (host.hrtime() - t0) / 1e6 + 0.5)), 0, w.on_timeout)
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

local function step_failure(run, id, cause, attempts)
  local message
  local timeout = getmetatable(cause) == Timeout
  if timeout then -- "step 's' timed out after 1s"
    message = ("step '%s' %s%s"):format(id, cause.message, attempts > 1 and (" (%d attempts)"):format(attempts) or "")
  else
    message = ("step '%s' failed%s: %s"):format(id,
      attempts > 1 and (" after %d attempts"):format(attempts) or "", cause.message or tostring(cause))
  end
  return setmetatable({
    step = id, run = run.id, attempts = attempts, message = message,
    traceback = cause.traceback, reason = timeout and "timeout" or nil,
  }, StepError)
end

local function commit_step(run, key, value_json, id)
  -- the lines the step logged commit with its record (stdlib/sluice/log.lua)
  local ok, msg, code = host.commit(logs.ops(run, id, { "steps", key, value_json }))
  if not ok then store_error(("step '%s': storing its result"):format(id), msg, code) end
end

local function step_key(run, id)
  return run.id .. "\0" .. id
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
  local now, ops = host.now(), {}
  for br in pairs(inflight) do
    local run = br.run
    if br.flight_shown ~= br.flight_attempt and now - br.flight_started >= SHOW_AFTER_US and M.active[run.id] then
      br.flight_shown = br.flight_attempt
      ops[#ops + 1], ops[#ops + 2] = "steps", step_key(run, br.flight_id)
      ops[#ops + 1] = host.step_record("running", br.flight_attempt, br.flight_pos, br.flight_started, 0,
        br.flight_id, br.name)
    end
  end
  if #ops == 0 then return end
  local ok, msg = host.commit(ops)
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

--- step(id, [opts,] fn, ...): durable, memoized per (run, id).
function M.step(id, a, b, ...)
  local br = sched.context()
  if not br or not br.run or br.abandoned then
    current_branch(("step(%q)"):format(tostring(id)), 2) -- raises the right error
  end
  if type(id) ~= "string" or id == "" or #id > MAX_STEP_ID or id:find("\0", 1, true) then
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
  check_unique(run, id, 2)

  -- replay: the history recorded for this branch position must match
  local raw = recorded(run, br, pos, id, 2)
  if raw then
    local completed, value = host.step_result(raw)
    if completed then
      -- the record is not needed again (a second use of the id is caught
      -- by seen): let it go, so a long replay does not hold every result
      run.raw[id] = nil
      run.seen[id] = true
      run.replayed = run.replayed + 1
      return value
    end
  end
  note_site(run, id, 2)

  -- execute, with retries
  if M.stopping then park() end
  local args = NO_ARGS
  if opts then
    if select("#", ...) > 0 then args = table.pack(...) end
  elseif b ~= nil or select("#", ...) > 0 then
    args = table.pack(b, ...)
  end
  local max_attempts = 1 + (opts and opts.retries or 0)
  local timeout_ms = opts and opts.timeout and duration.ms(opts.timeout) or M.step_timeout_ms
  local started = host.now()
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
        local enc, eerr
        if value ~= nil then
          enc, eerr = host.encode(value, "result")
        end
        if eerr then
          ok, retryable, res = false, false, { message = "returned a value that cannot be stored: " .. eerr }
        else
          inflight[br] = nil
          local cok, cerr = pcall(commit_step, run, step_key(run, id),
            host.step_record("completed", attempt, pos, started, host.now() - started, id, br.name, enc), id)
          step_settled(br)
          if not cok then error(cerr, 0) end
          run.executed = run.executed + 1
          if M.on_step then M.on_step(run.pipeline.name, attempt, host.now() - started, true) end
          return value
        end
      end
    end
    if not retryable or attempt >= max_attempts then
      local err = step_failure(run, id, res, attempt)
      inflight[br] = nil
      local cok, cerr = pcall(commit_step, run, step_key(run, id),
        host.step_record("failed", attempt, pos, started, host.now() - started, id, br.name,
          json.encode({ message = err.message, traceback = err.traceback })), id)
      step_settled(br)
      if not cok then error(cerr, 0) end
      if M.on_step then M.on_step(run.pipeline.name, attempt, host.now() - started, false) end
      error(err, 0)
    end
    if M.interruptible_wait(run, backoff_ms(id, opts.backoff, attempt)) then
      step_settled(br)
      stopped(run)
    end
    if M.stopping then -- the host shuts down: no new attempt starts
      step_settled(br)
      park()
    end
  end
end

-- Raises the error that ends a stopped run at a step boundary (cancel or
-- run timeout). The run's final status comes from run.stop whatever user
-- code does with the error.
stopped = function(run)
  error(setmetatable({ message = run.stop.message, stopped = run.stop.reason }, StepError), 0)
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
--- to store and, optionally, more operations {db, key, value, ...} that are
--- committed in the same transaction as the step record (an emitted event
--- and the record that it was emitted commit together, so replay never
--- emits twice). Later, the stored value is returned. Returns value, replayed.
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
  local raw = recorded(run, br, pos, id, level)
  if raw then
    local completed, value = host.step_result(raw)
    if completed then
      run.replayed = run.replayed + 1
      return value, true
    end
  end
  if M.stopping then park() end
  local started = host.now()
  -- produce may also return a function that commits the batch itself (the
  -- stream builds its records in C and adds this step's record to them)
  local value, ops, committer = produce()
  local enc, eerr
  if value ~= nil then enc, eerr = host.encode(value, "result") end
  if eerr then error(("%s: %s"):format(kind, eerr), level) end
  local batch = { "steps", step_key(run, id),
    host.step_record("completed", 1, pos, started, host.now() - started, id, br.name, enc) }
  for _, v in ipairs(ops or {}) do batch[#batch + 1] = v end
  local ok, msg, code = (committer or host.commit)(batch)
  if not ok then store_error(("%s: storing it"):format(kind), msg, code) end
  run.executed = run.executed + 1
  return value, false
end

--- Writes the run's record with a new status (sleeping, waiting, running).
function M.set_status(run, status)
  if run.record.status == status then return end
  run.record.status = status
  local ok, msg, code = host.commit(runs_index.ops(run.record))
  if not ok then store_error("run " .. run.id .. ": setting status " .. status, msg, code) end
end

--- sleep(duration): durable. The wake time is stored the first time; after
--- a restart the run sleeps only what remains; a finished sleep replays at
--- once. The run's status is "sleeping" meanwhile.
function M.sleep(d)
  local ms = duration.ms(d, "sleep")
  local wake_us = M.memo("sleep", function() return host.now() + math.floor(ms * 1000) end, 2)
  local left_ms = (wake_us - host.now()) / 1000
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
  local err = setmetatable({ message = message, stopped = reason }, StepError)
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
  for child in pairs(run.children) do M.cancel(child) end
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
    namespace = br.run.record.namespace or runs_index.DEFAULT_NS,
  }
end

---------------------------------------------------------------------------
-- runs

local function load_steps(run)
  local raw, order, code = host.load_steps(run.id)
  if not raw then store_error("loading the steps of run " .. run.id, order, code) end
  run.raw, run.order = raw, order
end

-- A run record decoded, or nil and a message naming it.
local function decode_run(id, raw)
  local ok, r = pcall(json.decode, raw)
  if ok and type(r) == "table" then return r end
  return nil, ("the record of run %s in %s is corrupt (%s): the store was damaged or written by another program")
    :format(id, host.dir(), ok and "not a JSON object" or tostring(r))
end

--- Reads a run record, or nil. A record that does not decode raises an
--- error naming it (listings skip it: M.list_runs).
function M.get_run(id)
  local raw, err, code = host.get("runs", id)
  if err then store_error("reading run " .. id, err, code) end
  if not raw then return nil end
  local r, cerr = decode_run(id, raw)
  if not r then error(cerr, 0) end
  return runs_index.loaded(r)
end

--- Steps of a run as stored, in the order they started.
function M.get_steps(id)
  local keys, vals = host.scan("steps", id .. "\0")
  if not keys then store_error("reading the steps of run " .. id, vals) end
  local list = {}
  for i = 1, #vals do
    local rec, off = host.step_fields(vals[i])
    if off then
      local v = host.decode(vals[i], off)
      if rec.status == "completed" then rec.result = v else rec.error = v end
    end
    list[i] = rec
  end
  table.sort(list, function(a, b)
    if a.started_us ~= b.started_us then return a.started_us < b.started_us end
    return a.id < b.id
  end)
  return list
end

-- runs executing in this process: id -> {run=, waiters={}}
local active = {}
M.active = active

-- concurrency keys: key -> {count=, queue={}}
local slots = {}

-- Takes a slot of the run's concurrency key, waiting (status "pending",
-- first come first served) while `limit` runs of the key execute.
acquire_slot = function(run, key, limit, fresh)
  local s = slots[key]
  if not s then
    s = { count = 0, queue = {} }
    slots[key] = s
  end
  if s.count >= limit then
    local rec = run.record
    rec.status = "pending"
    local ops = runs_index.ops(rec, fresh and { "active_runs", run.id, "" } or nil)
    local ok, msg, code = host.commit(ops)
    if not ok then store_error("queueing run " .. run.id, msg, code) end
    run.created = fresh
    local me = coroutine.running()
    s.queue[#s.queue + 1] = me
    run.interrupts[me] = function()
      for i, co in ipairs(s.queue) do
        if co == me then table.remove(s.queue, i) break end
      end
      run.interrupts[me] = nil
      sched.wake(me)
    end
    sched.wait()
    run.interrupts[me] = nil
    if run.stop then return end
  end
  s.count = s.count + 1
  run.slot = {
    release = function()
      s.count = s.count - 1
      local nxt = table.remove(s.queue, 1)
      if nxt then sched.wake(nxt) end
    end,
  }
end

local function check_run_id(id)
  if type(id) ~= "string" or id == "" or #id > 200 or id:find("[%z\1-\31]") then
    return nil, ("run id %q must be 1 to 200 printable characters"):format(tostring(id))
  end
  return id
end

--- Executes (or resumes) a run of pipeline p and waits for it to end.
--- Must be called from a coroutine the host can resume.
--- Returns the final run record, or nil, message, "usage" when the request
--- itself is wrong (a run id of another pipeline, say).
---@param p table pipeline handle
---@param input any
---@param id string?
---@param opts table? {extra_ops = {db, key, value, ...} committed with the run's
---  start, fields = {k = v} stored in a new run record (schedule, trigger),
---  finish_ops = function(rec) -> {db, key, value, ...} committed with the run's
---  completion (not called when it fails; must not raise)}
function M.execute(p, input, id, opts)
  opts = opts or {}
  local existing
  if id then
    local ok, err = check_run_id(id)
    if not ok then return nil, err, "usage" end
    -- executing in this process already: wait for that execution, never
    -- run it twice (a child resumed by serve and by its parent's call)
    local a = active[id]
    if a then
      local me = coroutine.running()
      a.waiters[#a.waiters + 1] = function(rec) sched.wake(me, rec) end
      return sched.wait()
    end
    existing = M.get_run(id)
  end
  if existing then
    if existing.pipeline ~= p.name then
      return nil, ("run %s belongs to pipeline '%s', not '%s'"):format(id, existing.pipeline, p.name), "usage"
    end
    if existing.status == "completed" or existing.status == "cancelled" then return existing end
  end
  local now = host.now()
  id = id or host.new_id()
  if not existing and p.params then
    -- declared parameters: checked and defaulted before the run exists
    local v, perr = require("sluice.params").apply(p, input, { id = id, pipeline = p.name, created_us = now,
      namespace = opts.fields and opts.fields.namespace })
    if not v then return nil, perr, "usage" end
    input = v
  end
  local rec = existing
  if not rec then
    rec = { id = id, pipeline = p.name, input = input, created_at = host.iso(now), created_us = now, attempt = 0 }
    for k, v in pairs(opts.fields or {}) do rec[k] = v end
  end
  if not existing and input ~= nil then
    local _, ierr = host.encode(input, "input")
    if ierr then return nil, "the input cannot be stored: " .. ierr, "usage" end
  end
  local popts = p.opts or {}
  if not rec.deadline_us and popts.timeout then
    rec.deadline_us = rec.created_us + math.floor(duration.ms(popts.timeout, ("pipeline '%s' timeout"):format(p.name)) * 1000)
  end
  if rec.concurrency_key == nil and popts.concurrency then
    local c = popts.concurrency
    local k = type(c.key) == "function" and c.key(rec.input) or c.key or ""
    rec.concurrency_key = p.name .. ":" .. tostring(k)
  end

  rec.host = liveness.self() -- which process runs it: readers tell a killed one
  local run = {
    id = id, pipeline = p, record = rec, raw = {}, order = {}, seen = {}, site_fns = {},
    replayed = 0, executed = 0, interrupts = {}, children = {},
  }
  local entry = { run = run, waiters = {} }
  active[id] = entry
  local function release(result)
    active[id] = nil
    if run.guard then run.guard:release() end
    if run.slot then run.slot.release() end
    if run.deadline_timer and not run.deadline_timer:is_closing() then run.deadline_timer:close() end
    for _, w in ipairs(entry.waiters) do w(result) end
  end

  -- a concurrency key over its limit: wait in "pending", first come first served
  if rec.concurrency_key then
    local ok, err = pcall(acquire_slot, run, rec.concurrency_key, popts.concurrency.limit or 1, not existing, now)
    if not ok then
      release(nil)
      error(err, 0)
    end
    if run.stop then
      -- cancelled while pending
      rec.status, rec.finished_at = "cancelled", host.iso(host.now())
      local cok, cmsg, ccode = host.commit(runs_index.ops(rec, { "active_runs", id, false }))
      release(rec)
      if not cok then store_error("cancelling run " .. id, cmsg, ccode) end
      return rec
    end
    existing = existing or run.created
    now = host.now()
  end

  rec.status, rec.started_at, rec.finished_at, rec.error = "running", host.iso(now), nil, nil
  rec.file, rec.source_hash = p.file, p.hash
  rec.attempt = (rec.attempt or 0) + 1
  local ops = runs_index.ops(rec, { "active_runs", id, "" })
  for _, v in ipairs(opts.extra_ops or {}) do ops[#ops + 1] = v end
  local ok, msg, code = host.commit(ops)
  if not ok then
    release(nil)
    store_error("starting run " .. id, msg, code)
  end
  if existing then load_steps(run) end

  -- the run's timeout counts from its creation, across restarts
  if rec.deadline_us then
    local left_ms = (rec.deadline_us - host.now()) / 1000
    local msg_t = ("run timed out after %s"):format(popts.timeout or "its timeout")
    if left_ms <= 0 then
      run.stop = { reason = "timeout", message = msg_t }
    else
      -- user code of the run that never yields is stopped at the deadline
      run.guard = guard.new(left_ms, setmetatable({ message = msg_t, stopped = "timeout" }, StepError))
      run.deadline_timer = uv.new_timer()
      run.deadline_timer:start(math.ceil(left_ms), 0, function()
        run.deadline_timer:close()
        M.stop_run(run, "timeout", msg_t)
      end)
    end
  end

  run.main = sched.go({ run = run, name = "", pos = 0 }, p.fn, rec.input)
  local run_ok, run_res = run.main:await()

  -- the deadline stopped user code before the deadline's timer could run
  if not run.stop and run.guard and run.guard:killed() then
    run.stop = { reason = "timeout", message = ("run timed out after %s"):format(popts.timeout) }
  end
  if run.fatal then run_ok, run_res = false, run.fatal end
  if run.stop then run_ok, run_res = false, { message = run.stop.message, stopped = run.stop.reason } end
  local done = host.now()
  rec.finished_at = host.iso(done)
  rec.duration_ms = (done - now) / 1000
  if run_ok then
    local _, rerr = host.encode(run_res, "result")
    if rerr then
      run_ok, run_res = false, { message = ("pipeline '%s' returned a value that cannot be stored: %s"):format(p.name, rerr) }
    end
  end
  if run_ok then
    rec.status, rec.result = "completed", run_res
  elseif run.stop and run.stop.reason == "cancelled" then
    rec.status = "cancelled"
    rec.error = { message = run.stop.message, reason = "cancelled" }
  else
    local e = type(run_res) == "table" and run_res or { message = tostring(run_res) }
    rec.status = "failed"
    rec.error = { message = e.message or tostring(e), step = e.step, traceback = e.traceback,
      reason = run.stop and run.stop.reason or e.reason }
  end
  local fin = runs_index.ops(rec, { "active_runs", id, false })
  -- what the caller commits with the completion (a consumer's checkpoint)
  if rec.status == "completed" and opts.finish_ops then
    for _, v in ipairs(opts.finish_ops(rec)) do fin[#fin + 1] = v end
  end
  ok, msg, code = host.commit(fin)
  release(rec)
  if not ok then store_error("finishing run " .. id, msg, code) end
  rec.replayed, rec.executed = run.replayed, run.executed
  return rec
end

--- Records a run that could not start (its pipeline is unknown, say) as
--- failed with `message`, unless a run with that id exists.
function M.record_failure(id, pipeline_name, input, message)
  if M.get_run(id) then return end
  local now = host.now()
  local rec = { id = id, pipeline = pipeline_name, status = "failed", attempt = 1, input = input,
    created_at = host.iso(now), created_us = now, finished_at = host.iso(now), error = { message = message } }
  local ok, msg, code = host.commit(runs_index.ops(rec))
  if not ok then store_error("recording run " .. id, msg, code) end
end

--- cancel(run_id): stops the run at its next step boundary, sleep or wait
--- (finished steps stay), status "cancelled", and its child runs with it.
--- A run not executing in this process is marked cancelled in the store.
--- Returns true, or nil and why not.
function M.cancel(run_id)
  registry.forbid_at_load("cancel", 2)
  if type(run_id) ~= "string" then
    error(("cancel: the run id must be a string, got %s"):format(type(run_id)), 2)
  end
  local a = active[run_id]
  if a then
    M.stop_run(a.run, "cancelled", "cancelled")
    return true
  end
  local r = M.get_run(run_id)
  if not r then return nil, "no run " .. tostring(run_id) end
  if r.status == "completed" or r.status == "failed" or r.status == "cancelled" then
    return nil, ("run %s is already %s"):format(run_id, r.status)
  end
  r.status, r.finished_at = "cancelled", host.iso(host.now())
  r.error = { message = "cancelled", reason = "cancelled" }
  local ok, msg, code = host.commit(runs_index.ops(r, { "active_runs", run_id, false }))
  if not ok then store_error("cancelling run " .. run_id, msg, code) end
  -- its unfinished children, found by their parent field
  for _, c in ipairs(M.unfinished_runs()) do
    if c.parent == run_id then M.cancel(c.id) end
  end
  return true
end

--- rerun(run_id, from_step, new_id?): a new run of the same pipeline and
--- input that reuses the stored results of every step that started before
--- from_step in the original run and executes the rest (Temporal's reset,
--- DBOS's fork). fields are added to the new run record (its trigger, say).
--- Returns the new run's id, or nil and why not.
function M.prepare_rerun(run_id, from_step, new_id, fields)
  local r = M.get_run(run_id)
  if not r then return nil, "no run " .. run_id end
  local steps = M.get_steps(run_id)
  local cut
  for i, st in ipairs(steps) do
    if st.id == from_step then cut = i end
  end
  if not cut then
    local ids = {}
    for i, st in ipairs(steps) do ids[i] = st.id end
    return nil, ("run %s has no step '%s'; its steps: %s"):format(run_id, from_step, table.concat(ids, ", "))
  end
  new_id = new_id or host.new_id()
  local ok, err = check_run_id(new_id)
  if not ok then return nil, err end
  if M.get_run(new_id) then return nil, ("run %s exists already: pass another --id"):format(new_id) end
  local now = host.now()
  local rec = { id = new_id, pipeline = r.pipeline, input = r.input, status = "pending", attempt = 0,
    created_at = host.iso(now), created_us = now, rerun_of = run_id, rerun_from = from_step, namespace = r.namespace }
  for k, v in pairs(fields or {}) do rec[k] = v end
  local ops = runs_index.ops(rec, { "active_runs", new_id, "" })
  for i = 1, cut - 1 do
    local st = steps[i]
    if st.status == "completed" then
      local raw = host.get("steps", run_id .. "\0" .. st.id)
      ops[#ops + 1], ops[#ops + 2], ops[#ops + 3] = "steps", new_id .. "\0" .. st.id, raw
    end
  end
  local cok, msg, code = host.commit(ops)
  if not cok then store_error("creating run " .. new_id, msg, code) end
  return new_id, r
end

---------------------------------------------------------------------------
-- child runs

local function resolve_pipeline(what, p)
  if type(p) == "string" then
    local h = pipelines[p]
    if not h then error(("%s: no pipeline named '%s'"):format(what, p), 3) end
    return h
  end
  if type(p) ~= "table" or not p.fn then error(("%s: expected a pipeline or its name"):format(what), 3) end
  return p
end

-- Records the child's id (and its pending run record, in the same commit)
-- as an internal step of the parent, so replay never starts it twice.
local function child_run(what, p, input, opts)
  registry.forbid_at_load(what, 3)
  p = resolve_pipeline(what, p)
  if opts ~= nil and type(opts) ~= "table" then
    error(("%s '%s': options must be a table {id=}, got %s"):format(what, p.name, type(opts)), 3)
  end
  opts = opts or {}
  for k in pairs(opts) do
    if k ~= "id" then error(("%s '%s': unknown option '%s' (known: id)"):format(what, p.name, tostring(k)), 3) end
  end
  if opts.id ~= nil then
    local ok, err = check_run_id(opts.id)
    if not ok then error(("%s '%s': id: %s"):format(what, p.name, err), 3) end
  end
  local br = current_branch(what, 3)
  local parent = br.run
  local child_id = M.memo(what, function()
    local id = opts.id or (parent.id .. "/" .. what .. "@" .. (br.name == "" and "" or br.name .. "/") .. br.pos)
    local now = host.now()
    if p.params then
      local perr
      input, perr = require("sluice.params").apply(p, input, { id = id, pipeline = p.name, created_us = now })
      if not input then error(("%s '%s': %s"):format(what, p.name, perr), 0) end
    end
    local rec = { id = id, pipeline = p.name, input = input, status = "pending", attempt = 0,
      created_at = host.iso(now), created_us = now, parent = parent.id, namespace = parent.record.namespace }
    local enc, err = host.encode(rec, "child", true)
    if not enc then error(("%s '%s': the input cannot be stored: %s"):format(what, p.name, err), 0) end
    if host.get("runs", id) then return id end -- an explicit id that exists: reuse it
    return id, runs_index.ops(rec, { "active_runs", id, "" })
  end, 3)
  parent.children[child_id] = true
  return p, child_id
end

--- call(pipeline, input [, {id=}]): starts a child run and waits for its
--- result durably. A child that fails raises in the parent.
function M.call(p, input, opts)
  local h, child_id = child_run("call", p, input, opts)
  local rec, err = M.execute(h, nil, child_id)
  if not rec then error(("call '%s': %s"):format(h.name, err), 2) end
  if rec.status ~= "completed" then
    error(setmetatable({ message = ("child run %s of pipeline '%s' %s: %s"):format(
      child_id, h.name, rec.status, rec.error and rec.error.message or "?"), step = "call" }, StepError), 2)
  end
  return rec.result
end

--- start(pipeline, input [, {id=}]) -> child run id, without waiting.
function M.start(p, input, opts)
  local h, child_id = child_run("start", p, input, opts)
  sched.spawn({}, M.execute, function(ok, err)
    if not ok then
      io.stderr:write(("sluice: child run %s: %s\n"):format(child_id, errors.describe(err)))
    end
  end, h, nil, child_id)
  return child_id
end

--- The runs not yet completed, failed or cancelled, oldest first (from
--- the active_runs index, not the whole history).
function M.unfinished_runs()
  local keys = host.scan("active_runs", "")
  local out = {}
  for _, id in ipairs(keys or {}) do
    local r = M.get_run(id)
    if r and r.status ~= "completed" and r.status ~= "failed" and r.status ~= "cancelled" then
      out[#out + 1] = r
    end
  end
  -- oldest first: runs waiting on a concurrency key keep their turn
  table.sort(out, function(a, b) return (a.created_us or 0) < (b.created_us or 0) end)
  return out
end

--- Lists runs newest first; filters by pipeline and status. Returns the
--- list and the messages of the corrupt records it skipped.
function M.list_runs(filter)
  filter = filter or {}
  local limit = filter.limit or 20
  local out, skipped = {}, {}
  -- newest first in growing pages: the last few runs of a long history
  -- cost a few keys, not a scan of all of them
  local page, seen = limit, 0
  while true do
    local keys, kerr, kcode = host.scan("runs_by_time", "", true, page)
    if not keys then store_error("listing runs", kerr, kcode) end
    for i = seen + 1, #keys do
      local id = keys[i]:sub(9)
      local raw, err, code = host.get("runs", id)
      if err then store_error("reading run " .. id, err, code) end
      local r, cerr = nil, nil
      if raw then r, cerr = decode_run(id, raw) end
      if cerr then skipped[#skipped + 1] = cerr end
      if r and (not filter.pipeline or r.pipeline == filter.pipeline)
          and (not filter.status or r.status == filter.status) then
        out[#out + 1] = r
        if #out >= limit then return out, skipped end
      end
    end
    if #keys < page then return out, skipped end
    seen, page = #keys, page * 4
  end
end

--- Puts the pipeline API into the given environment (default _G).
--- Each function is installed behind an entry point (sluice.errors), so
--- that an error it raises names the user's line.
function M.install(env)
  env = env or _G
  local entry = errors.entry
  env.pipeline = entry(M.pipeline)
  env.step = entry(M.step)
  env.parallel = entry(M.parallel)
  env.ctx = entry(M.ctx)
  env.sleep = entry(M.sleep)
  env.call, env.start, env.cancel = entry(M.call), entry(M.start), entry(M.cancel)
  local events = require "sluice.events"
  env.send, env.on, env.wait_for = entry(events.send), entry(events.on), entry(events.wait_for)
  local stream = require "sluice.stream"
  env.emit, env.emit_many = entry(stream.emit), entry(stream.emit_many)
  env.read, env.consume = entry(stream.read), entry(stream.consume)
  env.retention = entry(stream.retention)
  env.every = require("sluice.every").every -- its builders are entry points themselves
  local flow = require "sluice.flow"
  env.map = entry(flow.map)
  env.dag = entry(flow.dag)
end

return M
