--- sluice.engine_runs: the life of a run (DESIGN §1-2): execute (start or
--- resume) with its timeout and concurrency key, cancel, rerun, recorded
--- failures, and child runs (`call`, `start`).
local clock = require "sluice._clock"
local codec = require "sluice._codec"
local idgen = require "sluice._ids"
local idset = require "sluice._idset"
local store = require "sluice._store"
local sched = require "sluice.sched"
local duration = require "sluice.duration"
local errors = require "sluice.errors"
local liveness = require "sluice.liveness"
local registry = require "sluice.registry"
local guard = require "sluice._guard"
local uv = require "luv"
local M = require "sluice.engine_core"

local StepError = M.StepError
local store_error = errors.store
local active = M.active
local FINAL = M.FINAL

-- the stored steps of a run that resumes, for its replay (engine_steps)
local function load_steps(run)
  local rs, msg, code = store.replay_steps(run.id)
  if not rs then return nil, msg, code end
  run.replay = rs
  return true
end

-- concurrency keys: key -> {count=, queue={}}
local slots = {}

-- Takes a slot of the run's concurrency key, waiting (status "pending",
-- first come first served) while `limit` runs of the key execute.
local function acquire_slot(run, key, limit, fresh)
  local s = slots[key]
  if not s then
    s = { count = 0, queue = {} }
    slots[key] = s
  end
  if s.count >= limit then
    local rec = run.record
    rec.status = "pending"
    local b = store.batch():put_run(rec, { new = fresh })
    if fresh and run.hold then run.hold(b) end
    local ok, msg, code = b:commit()
    if not ok and fresh and run.hold then M.leases.forget(run.id) end
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

-- One execution of M.execute; returns LOST, why, the run's id when the
-- store lost a commit or a read of it (M.store_lost), having left the run
-- as it is.
-- waiters: of this run's executions so far, to get its final record.
local LOST = {}
local function execute_once(p, input, id, opts, waiters)
  opts = opts or {}
  local existing
  -- executing in this process already: wait for that execution, never
  -- run it twice (a child resumed by serve and by its parent's call)
  local function join(a)
    table.move(waiters, 1, #waiters, #a.waiters + 1, a.waiters) -- they wait for it too
    for i = #waiters, 1, -1 do waiters[i] = nil end
    local me = coroutine.running()
    a.waiters[#a.waiters + 1] = function(rec) sched.wake(me, rec) end
    return sched.wait()
  end
  if id then
    local ok, err = check_run_id(id)
    if not ok then return nil, err, "usage" end
    if active[id] then return join(active[id]) end
    existing = M.get_run(id)
  end
  local function ended(r) return r.status == "completed" or r.status == "cancelled" end
  if existing then
    if existing.pipeline ~= p.name then
      return nil, ("run %s belongs to pipeline '%s', not '%s'"):format(id, existing.pipeline, p.name), "usage"
    end
    if ended(existing) then return existing end
  end
  -- several hosts: the run executes where its lease is; one that had to
  -- wait for it reads the run again (it went on elsewhere meanwhile)
  if M.leases then
    id = id or idgen.new_id()
    -- a new run's lease is taken in the commit that creates it (run.hold);
    -- after a commit that failed (another host created it meanwhile?) the
    -- lease is waited for here first
    if (existing or opts.again) and M.leases.take(id) then
      existing = M.get_run(id)
      if existing and ended(existing) then
        M.leases.ended(id, existing)
        return existing
      end
    end
  end
  -- the reads above may have yielded (PostgreSQL): another task of this
  -- process may have started the run meanwhile
  if id and active[id] then return join(active[id]) end
  local now = clock.now()
  id = id or idgen.new_id()
  if not existing and p.params then
    -- declared parameters: checked and defaulted before the run exists
    local v, perr = require("sluice.params").apply(p, input, { id = id, pipeline = p.name, created_us = now,
      namespace = opts.fields and opts.fields.namespace })
    if not v then return nil, perr, "usage" end
    input = v
  end
  local rec = existing
  if not rec then
    rec = { id = id, pipeline = p.name, input = input, created_at = clock.iso(now), created_us = now, attempt = 0 }
    for k, v in pairs(opts.fields or {}) do rec[k] = v end
  end
  if not existing and input ~= nil then
    local _, ierr = codec.try_encode(input, "input")
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
    id = id, pipeline = p, record = rec, seen = idset.new(), site_fns = {},
    executed = 0, interrupts = {}, children = {},
  }
  if not existing and M.leases then
    run.hold = function(b) M.leases.hold_new(id, b) end
  end
  local entry = { run = run, waiters = waiters }
  active[id] = entry
  -- lost: why the store lost a commit; the waiters wait for the execution again
  local function release(result, lost)
    active[id] = nil
    idset.clear(run.seen) -- its ids are malloc'd: back now, not when the run is collected
    if M.leases then M.leases.ended(id, result) end
    if run.guard then run.guard:release() end
    if run.slot then run.slot.release() end
    if run.deadline_timer and not run.deadline_timer:is_closing() then run.deadline_timer:close() end
    if lost then return LOST, lost, id end
    for i, w in ipairs(waiters) do
      waiters[i] = nil
      w(result)
    end
  end

  -- a concurrency key over its limit: wait in "pending", first come first served
  if rec.concurrency_key then
    local ok, err = pcall(acquire_slot, run, rec.concurrency_key, popts.concurrency.limit or 1, not existing, now)
    if not ok then
      if type(err) == "table" and err.store and M.store_lost(err.code) then return release(nil, err.message) end
      release(nil)
      error(err, 0)
    end
    if run.stop then
      -- cancelled while pending
      rec.status, rec.finished_at = "cancelled", clock.iso(clock.now())
      local cok, cmsg, ccode = store.batch():put_run(rec):commit()
      release(rec)
      if not cok then store_error("cancelling run " .. id, cmsg, ccode) end
      return rec
    end
    existing = existing or run.created
    now = clock.now()
  end

  rec.status, rec.started_at, rec.finished_at, rec.error = "running", clock.iso(now), nil, nil
  rec.file, rec.source_hash = p.file, p.hash
  rec.attempt = (rec.attempt or 0) + 1
  local b = store.batch():put_run(rec, { new = not existing })
  if opts.extra then opts.extra(b) end
  if not existing and run.hold then run.hold(b) end
  local ok, msg, code = b:commit()
  if not ok and not existing and run.hold then M.leases.forget(id) end
  if ok and existing then
    ok, msg, code = load_steps(run)
    if not ok then msg = "loading the steps: " .. tostring(msg) end
  end
  if not ok then
    if M.store_lost(code) then return release(nil, ("starting it: %s"):format(msg)) end
    release(nil)
    store_error("starting run " .. id, msg, code)
  end

  -- the run's timeout counts from its creation, across restarts
  if rec.deadline_us then
    local left_ms = (rec.deadline_us - clock.now()) / 1000
    local msg_t = ("run timed out after %s"):format(popts.timeout or "its timeout")
    if left_ms <= 0 then
      run.stop = { reason = "timeout", message = msg_t }
    else
      -- user code of the run that never yields is stopped at the deadline
      run.guard = guard.new(left_ms, M.stop_error("timeout", msg_t))
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
  -- the store lost a commit: no final record (what it holds may be ahead of
  -- what this execution knows); the run executes again from it
  if run.stop and run.stop.reason == "lost" then return release(nil, run.stop.message) end
  -- so did a read the run needed (a child's record, say): the same
  if not run_ok and not run.stop and type(run_res) == "table" and run_res.store and M.store_lost(run_res.code) then
    return release(nil, tostring(run_res.message))
  end
  if run.stop then run_ok, run_res = false, M.stop_error(run.stop.reason, run.stop.message) end
  local done = clock.now()
  rec.finished_at = clock.iso(done)
  rec.duration_ms = (done - now) / 1000
  if run_ok then
    local _, rerr = codec.try_encode(run_res, "result")
    if rerr then
      run_ok, run_res = false, { message = ("pipeline '%s' returned a value that cannot be stored: %s"):format(p.name, rerr) }
    end
  end
  if run_ok then
    rec.status, rec.result = "completed", run_res
  elseif run.stop and run.stop.reason == "cancelled" then
    rec.status = "cancelled"
    rec.error = { code = "ECANCELLED", message = run.stop.message, reason = "cancelled" }
  else
    local e = type(run_res) == "table" and run_res or { message = tostring(run_res) }
    rec.status = "failed"
    rec.error = { code = e.code, message = e.message or tostring(e), step = e.step, traceback = e.traceback,
      reason = run.stop and run.stop.reason or e.reason }
  end
  -- the final record, again while the store loses it (the same record:
  -- writing it twice is writing it once)
  local delay = 100
  repeat
    local fin = store.batch():put_run(rec)
    -- what the caller commits with the completion (a consumer's checkpoint)
    if rec.status == "completed" and opts.finish then opts.finish(rec, fin) end
    ok, msg, code = fin:commit()
    local again = not ok and M.store_lost(code) and not M.stopping
    if again then
      io.stderr:write(("sluice: run %s: finishing it: %s; writing its final record again\n"):format(id, msg))
      sched.sleep_ms(delay)
      delay = math.min(delay * 2, 5000)
    end
  until not again
  release(rec)
  if not ok then store_error("finishing run " .. id, msg, code) end
  -- the replay set counts the steps replayed, in C or by the Lua step
  rec.replayed, rec.executed = run.replay and store.replay_count(run.replay) or 0, run.executed
  return rec
end

--- Executes (or resumes) a run of pipeline p and waits for it to end.
--- Must be called from a coroutine the host can resume.
--- Returns the final run record, or nil, message, "usage" when the request
--- itself is wrong (a run id of another pipeline, say).
--- When the store loses a commit or a read of the run (M.store_lost), the
--- run executes again from what the store holds, once it answers (a read
--- waits for the connection), while it does not; a host that is stopping
--- leaves the run as it is instead (it resumes at the next start).
---@param p table pipeline handle
---@param input any
---@param id string?
---@param opts table? {extra = function(b) adding other record types' writes
---  to the sluice._store batch of the run's start (a schedule's record),
---  fields = {k = v} stored in a new run record (schedule, trigger),
---  finish = function(rec, b) adding records to the store batch b committed
---  with the run's completion (not called when it fails; must not raise)}
function M.execute(p, input, id, opts)
  local waiters = {}
  local res = table.pack(execute_once(p, input, id, opts, waiters))
  local delay, why = 100, res[2]
  id = id or res[3] -- of a new run: the id it was given
  while res[1] == LOST do
    if M.stopping then
      for _, w in ipairs(waiters) do w(nil) end
      store_error(("run %s: %s; the host is stopping: the run resumes at the next start"):format(id, why),
        "EIO", "EIO")
    end
    io.stderr:write(("sluice: run %s: %s; executing it again from its stored steps\n"):format(id, why))
    sched.sleep_ms(delay)
    delay = math.min(delay * 2, 5000)
    local again = setmetatable({ again = true }, { __index = opts })
    local ok, e = pcall(function() res = table.pack(execute_once(p, input, id, again, waiters)) end)
    if ok then
      why = res[2]
    elseif type(e) == "table" and e.store and M.store_lost(e.code) then
      res, why = { LOST, n = 1 }, tostring(e.message) -- the store does not answer yet
    else
      for _, w in ipairs(waiters) do w(nil) end
      error(e, 0)
    end
  end
  for _, w in ipairs(waiters) do w(res[1]) end -- of an execution that ended early (usage)
  return table.unpack(res, 1, res.n)
end

--- Records a run that could not start (its pipeline is unknown, say) as
--- failed with `message`, unless a run with that id exists.
function M.record_failure(id, pipeline_name, input, message)
  if M.get_run(id) then return end
  local now = clock.now()
  local rec = { id = id, pipeline = pipeline_name, status = "failed", attempt = 1, input = input,
    created_at = clock.iso(now), created_us = now, finished_at = clock.iso(now), error = { message = message } }
  local ok, msg, code = store.batch():put_run(rec, { new = true }):commit()
  if not ok then store_error("recording run " .. id, msg, code) end
end

local function store_cancel(r)
  r.status, r.finished_at = "cancelled", clock.iso(clock.now())
  r.error = { code = "ECANCELLED", message = "cancelled", reason = "cancelled" }
  local ok, msg, code = store.batch():put_run(r):commit()
  if not ok then store_error("cancelling run " .. r.id, msg, code) end
end

--- cancel(run_id): stops the run at its next step boundary, sleep or wait
--- (finished steps stay), status "cancelled", and its child runs with it.
--- A run not executing in this process is marked cancelled in the store;
--- with several hosts (M.leases) so is one executing here, before it is
--- stopped: a cancel acknowledged is stored, so it holds if this host
--- dies before the run's next step boundary (another host resumes the run
--- then), and a host that lost its lease (the fence refuses its write)
--- acknowledges none. A run that reaches its end before the cancel takes
--- effect ends as it ended (the store keeps an end over a later cancel,
--- host/store_pg_runs.c). Returns true, or nil and why not.
function M.cancel(run_id)
  registry.forbid_at_load("cancel", 2)
  if type(run_id) ~= "string" then
    error(("cancel: the run id must be a string, got %s"):format(type(run_id)), 2)
  end
  local a = active[run_id]
  if a then
    local st = a.run.record.status
    -- (a run writing its final record is not cancelled over it)
    if M.leases and st ~= "completed" and st ~= "failed" and st ~= "cancelled" then
      -- the stored record (put_run takes those only), not the one the run
      -- goes on writing until it stops. Meanwhile the cancel pass of
      -- lua/hosts.lua leaves the run alone: stopped there, a `sluice run`
      -- would exit before the caller here had its answer
      local run = a.run
      run.cancelling = true
      local ended
      local ok, e = pcall(function()
        local r = M.get_run(run_id)
        -- the read yielded: the run may have reached its end meanwhile, and
        -- its final record (queued or committed) stays (store_pg_runs.c)
        ended = FINAL[run.record.status] and run.record.status
        if not ended and r and not FINAL[r.status] then store_cancel(r) end
      end)
      run.cancelling = nil
      if not ok then error(e, 0) end
      if ended then return nil, ("run %s is already %s"):format(run_id, ended) end
      a = active[run_id] -- the store yielded: the run may have ended meanwhile
    end
    if a then M.stop_run(a.run, "cancelled", "cancelled") end
    return true
  end
  local r = M.get_run(run_id)
  if not r then return nil, "no run " .. tostring(run_id) end
  if r.status == "completed" or r.status == "failed" or r.status == "cancelled" then
    return nil, ("run %s is already %s"):format(run_id, r.status)
  end
  store_cancel(r)
  -- its unfinished children, found by their parent field
  for _, c in ipairs(M.unfinished_runs()) do
    if c.parent == run_id then M.cancel(c.id) end
  end
  return true
end

--- rerun(run_id, from_step, new_id?): a new run of the same pipeline and
--- input that reuses the stored results of every step that started before
--- from_step in the original run and executes the rest (Temporal's reset,
--- DBOS's fork). fields are added to the new run record (its trigger, say);
--- extra(b), if given, adds other writes to the batch that creates it.
--- Returns the new run's id, or nil and why not.
function M.prepare_rerun(run_id, from_step, new_id, fields, extra)
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
  new_id = new_id or idgen.new_id()
  local ok, err = check_run_id(new_id)
  if not ok then return nil, err end
  if M.get_run(new_id) then return nil, ("run %s exists already: pass another --id"):format(new_id) end
  local now = clock.now()
  local rec = { id = new_id, pipeline = r.pipeline, input = r.input, status = "pending", attempt = 0,
    created_at = clock.iso(now), created_us = now, rerun_of = run_id, rerun_from = from_step, namespace = r.namespace }
  for k, v in pairs(fields or {}) do rec[k] = v end
  local reuse = {}
  for i = 1, cut - 1 do
    if steps[i].status == "completed" then reuse[#reuse + 1] = steps[i].id end
  end
  local b = store.batch():put_run(rec, { new = true }):copy_steps(run_id, new_id, reuse)
  if extra then extra(b) end -- other record types' writes (a quota count) with the new run
  local cok, msg, code = b:commit()
  if not cok then store_error("creating run " .. new_id, msg, code) end
  return new_id, r
end

---------------------------------------------------------------------------
-- child runs

local function resolve_pipeline(what, p)
  if type(p) == "string" then
    local h = M.pipelines[p]
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
  local br = M.current_branch(what, 3)
  local parent = br.run
  local child_id = M.memo(what, function()
    local id = opts.id or (parent.id .. "/" .. what .. "@" .. (br.name == "" and "" or br.name .. "/") .. br.pos)
    local now = clock.now()
    if p.params then
      local perr
      input, perr = require("sluice.params").apply(p, input, { id = id, pipeline = p.name, created_us = now })
      if not input then error(("%s '%s': %s"):format(what, p.name, perr), 0) end
    end
    local rec = { id = id, pipeline = p.name, input = input, status = "pending", attempt = 0,
      created_at = clock.iso(now), created_us = now, parent = parent.id, namespace = parent.record.namespace }
    local enc, err = codec.try_encode(rec, "child", true)
    if not enc then error(("%s '%s': the input cannot be stored: %s"):format(what, p.name, err), 0) end
    if M.get_run(id) then return id end -- an explicit id that exists: reuse it
    return id, function(b) b:put_run(rec, { new = true }) end
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
    error(errors.new("ECHILD", ("child run %s of pipeline '%s' %s: %s"):format(
      child_id, h.name, rec.status, rec.error and rec.error.message or "?"), { step = "call" }, StepError), 2)
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

return M
