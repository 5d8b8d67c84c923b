--- sluice.repl_helpers: the functions a REPL session offers, each with its
--- one-line help() entry. The inspection helpers read the store (they work
--- offline too, from a read-only store); the others act through the host
--- the REPL is connected to (serve, or a foreground sluice run) and say so
--- when there is none. Listings reuse what the CLI shows (sluice.cli's
--- run_summary, status_doc, list_schedules; engine.list_runs; stream.read
--- and positions); actions reuse the control socket's request kinds
--- (sluice.control handlers), called in-process.
--- Lists come back as plain arrays shown as tables of columns
--- (sluice.pretty rows): #runs{status = "failed"} counts, runs{}[1].id works.
local clock = require "sluice._clock"
local idgen = require "sluice._ids"
local engine = require "sluice.engine"
local store = require "sluice._store"
local errors = require "sluice.errors"
local pretty = require "sluice.pretty"
local codec = require "sluice._codec"
local sched = require "sluice.sched"
local uv = require "luv"

local M = {}

local PREVIEW = 200 -- bytes of a step's result that run(id) shows

local function round(x, digits)
  local m = 10 ^ (digits or 2)
  return math.floor(x * m + 0.5) / m
end

-- {name, signature, text, live}: the order help() lists them in
local DOCS = {
  { "help", "help([name])", "this list, or one helper's entry" },
  { "runs", "runs{pipeline=, status=, limit=20}", "runs newest first, filtered" },
  { "run", "run(id)", "one run with its steps and their results (truncated)" },
  { "step", "step(run_id, step_id)", "the full stored result of one step (nil, error of a failed one)" },
  { "events", "events(stream, {after=, from=, limit=100})", "the events of a stream key or prefix (orders:*)" },
  { "consumers", "consumers()", "stream consumers with their checkpoint and lag" },
  { "schedules", "schedules()", "schedules with their next and last fire, enabled or paused" },
  { "hosts", "hosts()", "the serve hosts sharing a PostgreSQL store, with their leases (sluice hosts)" },
  { "tail", "tail(stream)", "prints the stream's new events as they come, until Ctrl-C" },
  { "pipelines", "pipelines()", "the pipelines the host has loaded", true },
  { "trigger", "trigger(name, input, {wait=false})", "starts a run of a schedule or pipeline now: its id, or its record with wait=true", true },
  { "cancel", "cancel(id)", "cancels a run (it stops at its next step boundary, sleep or wait)", true },
  { "rerun", "rerun(id, {from=, wait=false})", "a new run reusing the steps before `from`: its id, or its record with wait=true", true },
  { "pause", "pause(schedule)", "stops a schedule firing, durably (a restart keeps it paused)", true },
  { "resume", "resume(schedule)", "lets a paused schedule fire again", true },
  { "reload", "reload([file])", "loads the serve's pipeline files again now (a file's entry, or all)", true },
  { "stats", "stats()", "writer batches and commit latency, loop lag, memory, runs active", true },
}

local function check_opts(what, opts, allowed)
  if opts == nil then return {} end
  if type(opts) ~= "table" then error(("%s: options must be a table, got %s"):format(what, type(opts)), 3) end
  for k in pairs(opts) do
    if not allowed[k] then
      local names = {}
      for n in pairs(allowed) do names[#names + 1] = n end
      table.sort(names)
      error(("%s: unknown option '%s' (known: %s)"):format(what, tostring(k), table.concat(names, ", ")), 3)
    end
  end
  return opts
end

local function check_string(what, field, v)
  if type(v) ~= "string" or v == "" then
    error(("%s: %s must be a non-empty string, got %s"):format(what, field, type(v)), 3)
  end
  return v
end

local function check_limit(what, v, default)
  if v == nil then return default end
  if math.type(v) ~= "integer" or v < 1 then
    error(("%s: limit must be a positive integer, got %s"):format(what, tostring(v)), 3)
  end
  return v
end

-- a control request kind called in-process: its answer, or its failure
-- raised as the message (the kinds check the host's role and state)
local function request(s, kind, req)
  req.kind = kind
  local ok, res = pcall(require("sluice.control").handlers[kind], req, { host = s.host, progress = function() end })
  if ok then return res or {} end
  if type(res) == "table" and res.control_code then error(res.message, 0) end
  error(res, 0)
end

--- The helpers of session s ({live=, host=, write=, stopped=}): a table of
--- name -> function, each an entry point (errors name the user's line).
function M.new(s)
  local H = {}
  local out = {} -- H's functions as entry points: what the session sees
  local cli = require "sluice.cli"
  local stream = require "sluice.stream"

  local function live(what)
    if not s.live then
      error(("%s: no live host: sluice repl opened %s read-only (start sluice serve for the helpers that act)")
        :format(what, store.dir()), 3)
    end
    if s.host.role ~= "serve" and what ~= "cancel()" and what ~= "stats()" then
      error(("%s: the store is held by sluice %s (pid %d), not by a serve: it takes no %s")
        :format(what, s.host.role, math.tointeger(uv.os_getpid()), what), 3)
    end
  end

  function H.help(name)
    if name ~= nil then
      if type(name) == "function" then
        for k, f in pairs(out) do if f == name then name = k end end
      end
      for _, d in ipairs(DOCS) do
        if d[1] == name then
          s:write(("%s  %s%s\n"):format(d[2], d[3], d[4] and not s.live and " (needs a live host)" or ""))
          return
        end
      end
      error(("help: no helper '%s'"):format(tostring(name)), 2)
    end
    local w = 0
    for _, d in ipairs(DOCS) do w = math.max(w, #d[2]) end
    for _, d in ipairs(DOCS) do
      s:write(("%-" .. w .. "s  %s%s\n"):format(d[2], d[3], d[4] and not s.live and " (needs a live host)" or ""))
    end
    s:write(s.live and "Globals you set stay for this session; _G is the host's own.\n"
      or "Offline: the store is read-only; start sluice serve and reconnect for the rest.\n")
  end

  function H.runs(opts)
    opts = check_opts("runs", opts, { pipeline = true, status = true, limit = true })
    local list, skipped = engine.list_runs({ pipeline = opts.pipeline, status = opts.status,
      limit = check_limit("runs", opts.limit, 20) })
    for _, msg in ipairs(skipped or {}) do s:write("(skipped: " .. msg .. ")\n") end
    for i, r in ipairs(list) do list[i] = cli.run_summary(r) end
    return pretty.rows(list, { "id", "pipeline", "status", "created_at", "duration_ms", "error" })
  end

  function H.run(id)
    check_string("run", "the run id", id)
    local r = engine.get_run(id)
    if not r then error(("run: no run %s in %s"):format(id, store.dir()), 2) end
    local steps = engine.get_steps(id)
    local doc = cli.status_doc(r, steps)
    for i, st in ipairs(steps) do
      if st.status == "completed" then
        local ok, text = pcall(codec.edge.encode, st.result == nil and codec.null or st.result)
        if not ok then
          doc.steps[i].result = "(cannot show: " .. tostring(text) .. ")"
        elseif #text > PREVIEW then
          doc.steps[i].result = ("%s... (%d bytes: step(%q, %q) shows all)"):format(text:sub(1, PREVIEW), #text, id, st.id)
        else
          doc.steps[i].result = st.result
        end
      end
    end
    return doc
  end

  function H.step(run_id, step_id)
    check_string("step", "the run id", run_id)
    check_string("step", "the step id", step_id)
    if not engine.get_run(run_id) then error(("step: no run %s in %s"):format(run_id, store.dir()), 2) end
    local ids = {}
    for _, st in ipairs(engine.get_steps(run_id)) do
      if st.id == step_id then
        if st.status == "completed" then return st.result end
        return nil, st.error
      end
      ids[#ids + 1] = st.id
    end
    error(("step: run %s has no step '%s'; its steps: %s"):format(run_id, step_id,
      #ids > 0 and table.concat(ids, ", ") or "none"), 2)
  end

  function H.events(name, opts)
    check_string("events", "the stream", name)
    opts = check_opts("events", opts, { after = true, from = true, limit = true })
    local evs, info = stream.read({ stream = name, after = opts.after, from = opts.from,
      limit = check_limit("events", opts.limit, 100) })
    if info.trimmed then s:write("(events before the retention horizon were trimmed)\n") end
    if info.hint then s:write("(" .. info.hint .. ")\n") end
    return pretty.rows(evs, { "id", "ts", "type", "stream", "data" })
  end

  function H.consumers()
    return pretty.rows(stream.positions(), { "name", "pattern", "after", "lag", "updated_at" })
  end

  function H.schedules()
    return pretty.rows(cli.list_schedules(), { "name", "spec", "tz", "next_at", "last_at", "runs", "enabled" })
  end

  -- read from the store, as `sluice hosts`: every host's, not this one's only
  function H.hosts()
    if not store.remote() then
      error("hosts: an LMDB store has one host, which its lock ensures; several hosts share a PostgreSQL store", 0)
    end
    local list, err = require("sluice._hosts").list(600)
    if not list then error("hosts: " .. tostring(err), 0) end
    local rows = {}
    for i, h in ipairs(list) do
      rows[i] = { id = h.id, machine = h.name, pid = h.pid, alive = h.alive, runs = (h.leases or {}).run or 0,
        leases = table.concat(h.named or {}, ", "), here = h.id == require("sluice.hosts").id or nil }
    end
    return pretty.rows(rows, { "id", "machine", "pid", "alive", "runs", "leases", "here" })
  end

  function H.tail(name)
    check_string("tail", "the stream", name)
    -- the last event now (read from the store: offline, another process
    -- appends, and each read transaction sees its commits)
    local last, err = store.events_last()
    if not last then error("tail: " .. tostring(err), 0) end
    local after = stream.id_of(last)
    s:write(("(tail %s: new events as they come; Ctrl-C stops)\n"):format(name))
    while not s:stopped() do
      local evs, info = stream.read({ stream = name, after = after, limit = 1000 }, true)
      for _, e in ipairs(evs) do
        s:write(("%s  %s  %-12s %-16s %s\n"):format(e.id, e.ts, e.type, e.stream, codec.edge.encode(e.data)))
      end
      after = info.next or after
      if #evs < 1000 then sched.sleep_ms(200) end
    end
  end

  function H.pipelines()
    live("pipelines()")
    local list = {}
    for name, p in pairs(engine.pipelines) do
      list[#list + 1] = { name = name, file = p.file, hash = p.hash, site = p.site }
    end
    table.sort(list, function(a, b) return a.name < b.name end)
    return pretty.rows(list, { "name", "file", "hash" })
  end

  function H.trigger(name, input, opts)
    live("trigger()")
    check_string("trigger", "the schedule or pipeline name", name)
    opts = check_opts("trigger", opts, { wait = true, id = true })
    local every = require "sluice.every"
    if every.defined[name] then
      if opts.id then error("trigger: a schedule's run id is <schedule>@manual-<time>; id= is for pipelines", 2) end
      local res = request(s, "trigger", { schedule = name, input = input, input_given = input ~= nil, wait = opts.wait })
      return opts.wait and res.run or res.id
    end
    local p = engine.pipelines[name]
    if not p then
      local names = {}
      for n in pairs(engine.pipelines) do names[#names + 1] = n end
      table.sort(names)
      error(("trigger: no schedule or pipeline named '%s' in this serve (pipelines: %s; schedules: %s)")
        :format(name, #names > 0 and table.concat(names, ", ") or "none",
          #every.order > 0 and table.concat(every.order, ", ") or "none"), 2)
    end
    local id = opts.id or idgen.new_id()
    if opts.wait then
      local rec, err = s.host.execute(p, input, id, { fields = { trigger = "repl" } })
      if not rec then error("trigger: " .. tostring(err), 2) end
      return rec
    end
    s.host.start(p, input, id, { fields = { trigger = "repl" } })
    return id
  end

  function H.cancel(id)
    live("cancel()")
    check_string("cancel", "the run id", id)
    return request(s, "cancel", { id = id })
  end

  function H.rerun(id, opts)
    live("rerun()")
    check_string("rerun", "the run id", id)
    opts = check_opts("rerun", opts, { from = true, wait = true, id = true })
    check_string("rerun", "from (the step to run again from)", opts.from)
    if opts.wait then return request(s, "rerun", { id = id, from = opts.from, new_id = opts.id }).run end
    local orig = engine.get_run(id)
    if not orig then error(("rerun: no run %s in %s"):format(id, store.dir()), 2) end
    local p = engine.pipelines[orig.pipeline]
    if not p then error(("rerun: pipeline '%s' of run %s is not loaded by this serve"):format(orig.pipeline, id), 2) end
    local new_id, err = engine.prepare_rerun(id, opts.from, opts.id)
    if not new_id then error("rerun: " .. err, 2) end
    s.host.start(p, nil, new_id)
    return new_id
  end

  local function set_enabled(what, name, on)
    live(what .. "()")
    check_string(what, "the schedule name", name)
    local sc, err = require("sluice.scheduler").save(name, on)
    if not sc then
      local every = require "sluice.every"
      error(("%s: %s (schedules: %s)"):format(what, err, #every.order > 0 and table.concat(every.order, ", ") or "none"), 3)
    end
    return { name = name, enabled = on, next_at = sc.next_at and clock.utc(sc.next_at) or nil }
  end
  function H.pause(name) return set_enabled("pause", name, false) end
  function H.resume(name) return set_enabled("resume", name, true) end

  function H.reload(file)
    live("reload()")
    if file ~= nil then check_string("reload", "the file", file) end
    -- serve reloads every file of its directory (as sluice reload and
    -- SIGHUP do); with a file, its entry is the answer
    local files = request(s, "reload", {}).files or {}
    local list = {}
    for _, f in ipairs(files) do
      if file == nil or f.file == file or f.file:sub(-#file - 1) == "/" .. file then list[#list + 1] = f end
    end
    if file and #list == 0 then
      local names = {}
      for i, f in ipairs(files) do names[i] = f.file end
      error(("reload: no file %s in this serve's directory (its files: %s)")
        :format(file, #names > 0 and table.concat(names, ", ") or "none"), 2)
    end
    return pretty.rows(list, { "file", "old_hash", "new_hash", "ms", "changes", "unchanged", "error" })
  end

  function H.stats()
    live("stats()")
    local w = store.stats()
    local writer = { commits = w.commits, batches = w.batches, ops = w.ops, map_grows = w.grows }
    if w.commits > 0 then writer.batches_per_commit = round(w.batches / w.commits) end
    if w.commit_us_sum and w.commits > 0 then
      writer.commit_ms_mean = round(w.commit_us_sum / w.commits / 1000, 3)
    else
      writer.commit_ms_mean = "(not measured by this build's writer)"
    end
    local steps = 0
    for _ in pairs(engine.active) do steps = steps + 1 end
    return {
      pid = math.tointeger(uv.os_getpid()), role = s.host.role,
      writer = writer,
      loop = M.loop_lag(),
      memory = { lua_mb = round(collectgarbage("count") / 1024), rss_mb = round(uv.resident_set_memory() / 1048576) },
      runs = { active = steps, steps_executing = engine.executing },
    }
  end

  if s.live then M.loop_lag() end
  for k, f in pairs(H) do out[k] = errors.entry(f) end
  return out
end

---------------------------------------------------------------------------
-- loop lag: a probe timer every 100 ms, from the first stats() on

local probe, lag_now, lag_max, lag_since

--- {now_ms, max_ms, since}: how late the loop ran a 100 ms timer, now
--- and at worst since the first call (a step or an evaluation that does
--- not yield shows here).
function M.loop_lag()
  if not probe then
    probe = uv.new_timer()
    lag_now, lag_max, lag_since = 0, 0, clock.iso(clock.now())
    local due = uv.hrtime() + 100e6
    probe:start(100, 100, function()
      local now = uv.hrtime()
      lag_now = math.max(0, (now - due) / 1e6)
      if lag_now > lag_max then lag_max = lag_now end
      due = now + 100e6
    end)
    probe:unref() -- it never keeps the process alive
  end
  return { lag_ms_now = round(lag_now), lag_ms_max = round(lag_max), since = lag_since }
end

return M
