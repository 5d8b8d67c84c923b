--- sluice.serve: the long-lived host. Loads every .lua file of a directory,
--- resumes the unfinished runs of the store, fires schedules, logs one line
--- per run start and end, and on SIGINT/SIGTERM stops starting steps, lets
--- the running ones finish within a grace period and exits 0; whatever was
--- cut off resumes at the next start. One serve per store (a lock file).
local host = require "sluice.host"
local json = require "sluice.json"
local engine = require "sluice.engine"
local every = require "sluice.every"
local scheduler = require "sluice.scheduler"
local sched = require "sluice.sched"
local events = require "sluice.events"
local stream = require "sluice.stream"
local errors = require "sluice.errors"
local uv = require "luv"

local M = {}
local log = scheduler.log

--- Every .lua file under dir, sorted, recursively.
local function lua_files(dir, out)
  out = out or {}
  local req, err = uv.fs_scandir(dir)
  if not req then return nil, err end
  local names = {}
  while true do
    local name, kind = uv.fs_scandir_next(req)
    if not name then break end
    names[#names + 1] = { name, kind }
  end
  table.sort(names, function(a, b) return a[1] < b[1] end)
  for _, e in ipairs(names) do
    local path = dir .. "/" .. e[1]
    if e[2] == "directory" then
      lua_files(path, out)
    elseif e[1]:match("%.lua$") then
      out[#out + 1] = path
    end
  end
  return out
end
M.lua_files = lua_files

local active = 0 -- runs started by this host and not ended

-- Starts a run in its own task; on_end() runs when it ends.
local function launch(p, input, id, exec_opts, on_end)
  active = active + 1
  local t0 = host.now()
  sched.spawn({}, function()
    log("run %s pipeline=%s started", id, p.name)
    local rec, err = engine.execute(p, input, id, exec_opts)
    local ms = (host.now() - t0) / 1000
    if not rec then
      log("run %s pipeline=%s not started: %s", id, p.name, err)
    elseif rec.status == "completed" then
      log("run %s pipeline=%s completed in %.1fms", id, p.name, ms)
    else
      local e = rec.error or {}
      log("run %s pipeline=%s %s in %.1fms%s: %s", id, p.name, rec.status, ms,
        e.step and (" in step '" .. e.step .. "'") or "", (e.message or "?"):gsub("\n.*", ""))
    end
  end, function(ok, err)
    active = active - 1
    if not ok then
      log("run %s pipeline=%s: host error: %s", id, p.name, errors.describe(err))
    end
    if on_end then on_end() end
  end)
end

-- The body of a request file, which is removed: each is handled once.
local function take(path)
  local f = io.open(path)
  local body = f and f:read("a")
  if f then f:close() end
  os.remove(path)
  return body
end

-- Requests other processes put in <store>/requests/ (written aside and
-- renamed, so a file seen here is whole): "run.<hex id>" holds
-- {pipeline, input, id} from sluice run; "cancel.<hex id>" a run id.
local function handle_requests(req_dir, served_dir)
  local files = uv.fs_scandir(req_dir)
  if not files then return end
  while true do
    local name = uv.fs_scandir_next(files)
    if not name then break end
    local path = req_dir .. "/" .. name
    if name:match("^run%.%x+$") then
      local body = take(path)
      local req = body and host.decode(body)
      local p = type(req) == "table" and req.id and engine.pipelines[req.pipeline]
      if p then
        launch(p, req.input, req.id)
      elseif type(req) == "table" and req.id then
        -- the waiting sluice run reads the reason from the run's record
        local msg = ("pipeline '%s' is not loaded by this serve (it serves %s)"):format(tostring(req.pipeline), served_dir)
        log("run %s: %s", req.id, msg)
        sched.spawn({}, engine.record_failure, function(ok, e)
          if not ok then log("run %s: %s", req.id, e.message) end
        end, req.id, req.pipeline, req.input, msg)
      end
    elseif name:match("^cancel%.%x+$") then
      local id = take(path)
      if id then
        sched.spawn({}, function()
          local ok, why = engine.cancel(id)
          log("cancel %s: %s", id, ok and "requested" or why)
        end, function(ok, e) if not ok then log("cancel %s: %s", id, e.message) end end)
      end
    end
  end
end

---@param opts table {dir=, store=, grace_ms=}
function M.run(opts)
  local ok, err = host.open(opts.store)
  if not ok then return nil, err end
  ok, err = host.lock(opts.store .. "/writer.lock", "serve")
  if not ok then return nil, err .. ": one process writes a store at a time (read-only commands still work)" end

  local files, ferr = lua_files(opts.dir)
  if not files then return nil, ("cannot read %s: %s"):format(opts.dir, ferr) end
  local loaded = 0
  for _, f in ipairs(files) do
    local defined, lerr = engine.load_file(f)
    if defined then
      loaded = loaded + 1
    else
      log("not loaded: %s", lerr)
    end
  end
  -- schedules may name a pipeline of a file loaded after theirs
  for _, msg in ipairs(every.drop_unresolved(engine.pipelines)) do log("not loaded: %s", msg) end
  log("serving %s: %d of %d files loaded, %d pipelines, %d schedules, store %s (pid %d)",
    opts.dir, loaded, #files, (function() local n = 0; for _ in pairs(engine.pipelines) do n = n + 1 end; return n end)(),
    #every.order, opts.store, uv.os_getpid())

  for _, r in ipairs(engine.unfinished_runs()) do
    local p = engine.pipelines[r.pipeline]
    if p then
      local s = r.schedule and every.defined[r.schedule]
      if s then s.active = (s.active or 0) + 1 end
      launch(p, nil, r.id, nil, function() if s then s.active = s.active - 1 end end)
    else
      log("run %s: pipeline '%s' is not defined in %s; left as it is", r.id, r.pipeline, opts.dir)
    end
  end

  -- events sent with send(): each matching on() handler gets a run
  sched.spawn({}, events.run_dispatcher, function(ok2, e)
    if not ok2 then log("event dispatcher stopped: %s", errors.describe(e)) end
  end, function(p, id) launch(p, nil, id) end, log)
  -- stream consumers
  for _, name in ipairs(stream.consumer_order) do
    local c = stream.consumers[name]
    sched.spawn({}, stream.run_consumer, function(ok2, e)
      if not ok2 then log("consumer %s stopped: %s", name, errors.describe(e)) end
    end, c, log)
  end

  -- requests from other processes (sluice run, sluice cancel)
  local req_timer = uv.new_timer()
  req_timer:start(250, 250, function() handle_requests(opts.store .. "/requests", opts.dir) end)

  -- retention: a pass at start and every 10 s
  local trim_timer
  if #stream.retention_rules > 0 then
    local function pass()
      sched.spawn({}, stream.trim_once, function(ok2, res)
        if not ok2 then log("retention: %s", errors.describe(res))
        elseif res > 0 then log("retention: removed %d events", res) end
      end)
    end
    pass()
    trim_timer = uv.new_timer()
    trim_timer:start(10000, 10000, pass)
  end

  local t_sched = host.hrtime()
  local armed = scheduler.start(function(s, id, extra_ops, on_end)
    local p = engine.pipelines[s.pipeline]
    if not p then
      log("schedule %s: pipeline '%s' is not defined; fire skipped", s.name, s.pipeline)
      return on_end()
    end
    if engine.get_run(id) then
      return on_end() -- this fire already has its run (resumed above if unfinished)
    end
    launch(p, s.input, id, { extra_ops = extra_ops, fields = { schedule = s.name } }, on_end)
  end)
  log("%d schedules armed in %.1fms", armed, (host.hrtime() - t_sched) / 1e6)

  -- graceful stop
  local me = coroutine.running()
  local finished = false
  local grace_timer
  local function finish(why)
    if finished then return end
    finished = true
    if why then log("%s", why) end
    sched.wake(me)
  end
  local function on_signal(signame)
    if engine.stopping then
      return finish(("second %s: exiting now; unfinished runs resume at the next start"):format(signame))
    end
    engine.stopping = true
    scheduler.stop()
    req_timer:close()
    if trim_timer then trim_timer:close() end
    if events.dispatcher then events.dispatcher.stop() end
    for _, c in pairs(stream.consumers) do if c.stop then c.stop() end end
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
  local signals = {}
  for _, name in ipairs({ "sigint", "sigterm" }) do
    local h = uv.new_signal()
    h:start(name, function() on_signal(name:upper()) end)
    signals[#signals + 1] = h
  end
  sched.wait()
  for _, h in ipairs(signals) do h:close() end
  if grace_timer then grace_timer:close() end
  return true
end

return M
