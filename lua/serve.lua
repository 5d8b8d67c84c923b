--- sluice.serve: the long-lived host. Loads every .lua file of a directory
--- and keeps it loaded (sluice.reload: a file that changes is reloaded; on
--- SIGHUP or `sluice reload` every file), resumes the unfinished runs of the
--- store, fires schedules, answers the control socket (sluice run's
--- hand-off, cancel, rerun, trigger, reload), logs one line per run start
--- and end, and on SIGINT/SIGTERM stops starting steps, lets the running
--- ones finish within a grace period and exits 0; whatever was cut off
--- resumes at the next start. One serve per store (the writer lock); a
--- foreground sluice run holding it is waited for.
local clock = require "sluice._clock"
local lock = require "sluice._lock"
local storage = require "sluice._store"
local json = require "sluice.json"
local engine = require "sluice.engine"
local every = require "sluice.every"
local scheduler = require "sluice.scheduler"
local sched = require "sluice.sched"
local events = require "sluice.events"
local stream = require "sluice.stream"
local errors = require "sluice.errors"
local control = require "sluice.control"
local reload = require "sluice.reload"
local hosts = require "sluice.hosts"
local uv = require "luv"

local M = {}
local log = scheduler.log

M.lua_files = reload.lua_files

local active = 0 -- runs started by this host and not ended

-- Starts a run in its own task; on_end(record | nil, err) runs when it ends.
local function launch(p, input, id, exec_opts, on_end)
  active = active + 1
  local t0 = clock.now()
  local rec, err
  sched.spawn({}, function()
    log("run %s pipeline=%s started", id, p.name)
    rec, err = engine.execute(p, input, id, exec_opts)
    local ms = (clock.now() - t0) / 1000
    if not rec then
      log("run %s pipeline=%s not started: %s", id, p.name, err)
    elseif rec.status == "completed" then
      log("run %s pipeline=%s completed in %.1fms", id, p.name, ms)
    else
      local e = rec.error or {}
      log("run %s pipeline=%s %s in %.1fms%s: %s", id, p.name, rec.status, ms,
        e.step and (" in step '" .. e.step .. "'") or "", (e.message or "?"):gsub("\n.*", ""))
    end
  end, function(ok, e)
    active = active - 1
    if not ok then
      log("run %s pipeline=%s: host error: %s", id, p.name, errors.describe(e))
      err = type(e) == "table" and e.message or tostring(e)
    end
    if on_end then on_end(rec, err) end
  end)
end

-- Launches a run and waits for its end (a control request's run); a run
-- executing already (resumed at start) is joined, never started twice.
local function execute(p, input, id, exec_opts)
  if engine.active[id] then return engine.execute(p, input, id, exec_opts) end
  local me = coroutine.running()
  local done, waiting, rec, err = false, false, nil, nil
  launch(p, input, id, exec_opts, function(r, e)
    done, rec, err = true, r, e
    if waiting then sched.wake(me) end
  end)
  if not done then
    waiting = true
    sched.wait()
  end
  return rec, err
end

local LOCK_WAIT_MS = 30000

-- Takes the writer lock as serve. A sluice run holding it is waited for
-- (bounded, said in the log): serve and run started together both work.
local function take_lock(store, state)
  local dok, derr = require("sluice.state_dir").ensure(store, state)
  if not dok then return nil, derr end
  local path = state .. "/writer.lock"
  local t0 = clock.hrtime()
  local said = false
  while true do
    local ok, err, _, role, pid = lock.take(path, "serve")
    if ok then return true end
    if role ~= "run" then
      return nil, err .. ": one process writes a store at a time (read-only commands still work)"
    end
    if (clock.hrtime() - t0) / 1e6 > LOCK_WAIT_MS then
      return nil, ("%s: sluice run (pid %d) still holds it after %ds; start serve when it has finished")
        :format(path, pid, LOCK_WAIT_MS // 1000)
    end
    if not said then
      said = true
      log("waiting up to %ds for sluice run (pid %d) to finish: it holds %s", LOCK_WAIT_MS // 1000, pid, path)
    end
    sched.sleep_ms(50)
  end
end

---@param opts table {dir=, store=, state= (its state dir: sluice.state_dir), grace_ms=, lease_ms=}
function M.run(opts)
  opts.state = opts.state or opts.store
  local ok, err = storage.open(opts.store)
  if not ok then return nil, err end
  err = require("sluice.pg_schema").unusable(storage)
  if err then return nil, err end
  ok, err = take_lock(opts.store, opts.state)
  if not ok then return nil, err end

  -- hot reload: watched before it is read, so that no change is missed
  local wok, werr = reload.watch(opts.dir, log)
  if not wok then log("%s: files that change are not reloaded (SIGHUP still reloads them)", werr) end
  local loaded, nfiles = reload.load_dir(opts.dir, log)
  if not loaded then return nil, nfiles end
  -- what loading left (a file defining 100,000 schedules: ~10 MB) is freed
  -- now, so that arming them reuses it instead of growing the process
  require("sluice._vm").trim()
  log("serving %s: %d of %d files loaded, %d pipelines, %d schedules, store %s (pid %d)",
    opts.dir, loaded, nfiles, (function() local n = 0; for _ in pairs(engine.pipelines) do n = n + 1 end; return n end)(),
    #every.order, storage.remote() and ("%s, state dir %s"):format(storage.dir(), opts.state) or opts.store,
    uv.os_getpid())

  -- several hosts on a PostgreSQL store (lua/hosts.lua): registered before
  -- anything can start a run; its claim passes resume the runs nobody
  -- holds, this host's unfinished ones among them
  local lost, finish_now
  local host_id, herr = hosts.start({
    lease_ms = opts.lease_ms, log = log, info = { dir = opts.dir }, state = opts.state,
    launch = function(r)
      local ended = r.schedule and scheduler.track(r.schedule)
      launch(engine.pipelines[r.pipeline], nil, r.id, nil, function() if ended then ended() end end)
    end,
    on_lost = function(msg)
      lost = msg
      engine.stopping = true
      if finish_now then finish_now(msg) end
    end,
  })
  if herr then return nil, herr end
  if host_id then
    log("host %s: lease %.1fs, sharing %s with the other hosts", host_id, hosts.lease / 1000, storage.dir())
  end

  -- the control socket: requests of other sluice processes
  -- a start that fails from here gives its leases back
  local function failed(e)
    hosts.deregister()
    return nil, e
  end
  local lok, lerr = control.listen(opts.state, {
    role = "serve", dir = opts.dir, execute = execute,
    start = function(p, input, id, exec_opts) launch(p, input, id, exec_opts) end,
    -- a pipeline of a file written a moment ago: loaded now, not after the debounce
    pipeline = function(name)
      if not engine.pipelines[name] then reload.sync() end
      return engine.pipelines[name]
    end,
    reload = reload.all,
  })
  if not lok then return failed(lerr) end

  -- the HTTP API (lua/api.lua): before the schedules, which include those created over it
  local api, aerr = require("sluice.api").start(opts, launch)
  if not api then return failed(aerr) end
  if host_id then -- the schedules created over the API of any host
    sched.spawn({}, require("sluice.api.schedules").follow, function(ok2, e)
      if not ok2 then log("following the schedules created over the API: %s", errors.describe(e)) end
    end, hosts.poll_ms, function() return engine.stopping end)
  end

  -- (with several hosts the claim passes resume them: those nobody holds)
  for _, r in ipairs(host_id and {} or engine.unfinished_runs()) do
    local p = engine.pipelines[r.pipeline]
    if p then
      local ended = r.schedule and scheduler.track(r.schedule)
      launch(p, nil, r.id, nil, function() if ended then ended() end end)
    else
      log("run %s: pipeline '%s' is not defined in %s; left as it is", r.id, r.pipeline, opts.dir)
    end
  end

  -- events sent with send(): each matching on() handler gets a run (one
  -- host dispatches at a time; another takes over when it goes)
  sched.spawn({}, function(...)
    if host_id and not hosts.hold("dispatch", "*") then return end
    return events.run_dispatcher(...)
  end, function(ok2, e)
    if not ok2 then
      log("event dispatcher stopped: %s", errors.describe(e))
      if host_id then hosts.release("dispatch", "*") end -- another host may do better
    end
  end, function(p, id) launch(p, nil, id) end, log)
  -- stream consumers, and those reloads add
  for _, name in ipairs(stream.consumer_order) do stream.start_consumer(stream.consumers[name], log) end
  stream.follow_registry(log)

  -- retention: a pass at start and every 10 s (of the rules live then)
  local function pass()
    if #stream.retention_rules == 0 then return end
    sched.spawn({}, stream.trim_once, function(ok2, res)
      if not ok2 then log("retention: %s", errors.describe(res))
      elseif res > 0 then log("retention: removed %d events", res) end
    end)
  end
  pass()
  local trim_timer = uv.new_timer()
  trim_timer:start(10000, 10000, pass)

  -- graceful stop. The handlers exist before "schedules armed" is logged and
  -- the API turns ready (nothing yields from here to there): a signal sent
  -- once serve says it is up never finds the default action (death).
  local me = coroutine.running()
  local finished = false
  local grace_timer
  local function finish(why)
    if finished then return end
    finished = true
    if why then log("%s", why) end
    sched.wake(me)
  end
  finish_now = finish
  if lost then finish(lost) end -- expired while starting
  local stopped_by
  local function stop(signame)
    if engine.stopping then
      return finish(("second %s: exiting now; unfinished runs resume at the next start"):format(signame))
    end
    engine.stopping = true
    stopped_by = signame
    control.stop_taking_work(("serve is stopping (%s): it takes no new runs"):format(signame))
    reload.stop()
    scheduler.stop()
    hosts.stop()
    trim_timer:close()
    if events.dispatcher then events.dispatcher.stop() end
    stream.stop_consumers()
    log("%s: no new steps start; waiting up to %.1fs for %d running step(s)", signame, opts.grace_ms / 1000,
      engine.executing)
    if engine.executing == 0 then return finish("stopped") end
    engine.on_idle = function() finish("stopped: every running step finished") end
    grace_timer = uv.new_timer()
    grace_timer:start(math.floor(opts.grace_ms), 0, function()
      finish(("stopped after the grace period: %d step(s) cut off, they run again at the next start")
        :format(engine.executing))
    end)
  end
  -- what each signal does: SIGHUP reloads every pipeline file
  local function hup(signame)
    if engine.stopping then return end
    log("%s: reloading every file of %s", signame, opts.dir)
    reload.all()
  end
  local on_signal = { sigint = stop, sigterm = stop, sighup = hup }
  local signals = {}
  for name, action in pairs(on_signal) do
    local h = uv.new_signal()
    h:start(name, function() action(name:upper()) end)
    signals[#signals + 1] = h
  end
  local function arm_schedules()
    local t_sched = clock.hrtime()
    local armed = scheduler.start(function(s, id, extra, on_end)
      local p = engine.pipelines[s.pipeline]
      if not p then
        log("schedule %s: pipeline '%s' is not defined; fire skipped", s.name, s.pipeline)
        return on_end()
      end
      -- a task: the scheduler fires from its timer, and a read of a
      -- PostgreSQL store waits
      sched.spawn({}, function()
        if engine.get_run(id) then
          return on_end() -- this fire already has its run (resumed above if unfinished)
        end
        -- several hosts: another may have deleted or changed it since the last look
        local fire = extra
        if host_id and s.source == "api" then
          local cur, version = require("sluice.api.schedules").current(s)
          if not cur then return on_end() end
          fire = function(b) extra(b, version) end -- written only over that version
        end
        launch(p, s.input, id, { extra = fire, fields = { schedule = s.name, namespace = s.namespace } }, on_end)
      end, function(ok2, e)
        if not ok2 then
          log("schedule %s: fire %s not started: %s", s.name, id, errors.describe(e))
          on_end()
        end
      end)
    end, require("sluice.api.schedules").adopt)
    log("%d schedules armed in %.1fms", armed, (clock.hrtime() - t_sched) / 1e6)
  end
  if not host_id then
    arm_schedules()
  else -- one host fires the schedules at a time
    sched.spawn({}, function() if hosts.hold("schedules", "*") and not engine.stopping then arm_schedules() end end,
      function(ok2, e) if not ok2 then log("schedules: %s", errors.describe(e)) end end)
  end
  api.ready()

  sched.wait()
  api.stop()
  for _, h in ipairs(signals) do h:close() end
  -- clients waiting on runs cut off here learn it now, and may take them over
  control.close(("serve stopped (%s)"):format(stopped_by or "?"))
  if grace_timer then grace_timer:close() end
  if lost then return nil, lost end
  -- its leases go with it: the other hosts claim its cut-off runs now
  local dok, derr = hosts.deregister()
  if not dok then log("%s", derr) end
  return true
end

return M
