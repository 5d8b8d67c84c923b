--- sluice.api.runs: runs over HTTP.
---   POST /runs/{pipeline}          body = input -> 202 {run_id, status: "pending"}
---        ?wait=30s                 200 with the run if it ended by then, else 202
---        Idempotency-Key: K        the same key (per namespace and pipeline) is the same run, 200
---   GET  /runs/{id}                the run with its steps and progress
---   GET  /runs/{id}/step?id=STEP   one step with its stored value, decoded
---   GET  /runs?pipeline=&status=&namespace=&since=&limit=&before=   newest first, {runs, next}
---   GET  /runs/last?pipeline=P     the newest finished run of P
---   POST /runs/{id}/cancel         202 {status: "cancelling"}; 409 if it has ended
---   POST /runs/{id}/rerun {"from"} 202 with the new run id
--- Pipeline names and run ids may contain "/": POST /runs/a/b starts the
--- pipeline "a/b" if one is loaded, else .../cancel and .../rerun act on
--- the run before them. A run created here is committed as pending (with
--- its idempotency key and its namespace's daily count, in one commit)
--- before the 202, then runs in the background; a restart resumes it.
local http = require "sluice.router"
local clock = require "sluice._clock"
local codec = require "sluice._codec"
local ids = require "sluice._ids"
local json = require("sluice._codec").edge -- responses: JSON at the edge
local sched = require "sluice.sched"
local engine = require "sluice.engine"
local duration = require "sluice.duration"
local quota = require "sluice.quota"
local store = require "sluice._store"
local uv = require "luv"

local M = {}

local NULL = json.null
local STATUSES = { pending = true, running = true, sleeping = true, waiting = true, completed = true,
  failed = true, cancelled = true }
local FINISHED = { completed = true, failed = true, cancelled = true }
local MAX_WAIT_MS = 300000

local function ctx() return require("sluice.api").ctx end

local function trigger_of(r)
  if type(r.trigger) == "table" then return r.trigger end
  if r.trigger == "event" then return { kind = "event", by = type(r.input) == "table" and r.input.name or NULL } end
  if r.schedule then return { kind = "schedule", by = r.schedule } end
  if r.parent then return { kind = "child", by = r.parent } end
  if r.pipeline:find("^consume:") then return { kind = "event", by = r.pipeline:sub(9) } end
  return { kind = "cli", by = NULL }
end

local function or_null(v) if v == nil then return NULL end return v end

--- The API's view of a run record (steps added by the caller).
function M.view(r)
  local e = r.error
  return {
    run_id = r.id, pipeline = r.pipeline, namespace = r.namespace or quota.DEFAULT_NS, status = r.status,
    input = or_null(r.input), result = or_null(r.result),
    error = e and { message = or_null(e.message), step = or_null(e.step), traceback = or_null(e.traceback),
      reason = e.reason } or NULL,
    created_at = or_null(r.created_at), started_at = or_null(r.started_at), finished_at = or_null(r.finished_at),
    duration_ms = or_null(r.duration_ms), attempt = r.attempt or 0, trigger = trigger_of(r),
    source_hash = or_null(r.source_hash), rerun_of = r.rerun_of, rerun_from = r.rerun_from,
  }
end

local function with_steps(doc, id)
  local steps = json.array({})
  local done = 0
  for i, s in ipairs(engine.get_steps(id)) do
    if s.status == "completed" then done = done + 1 end
    steps[i] = {
      id = s.id, status = s.status, attempts = s.attempts, started_at = clock.iso(s.started_us),
      duration_ms = s.duration_us / 1000, size = s.size or 0,
      error = s.error and s.error.message or NULL,
    }
  end
  doc.steps = steps
  doc.progress = { steps_done = done, steps_seen = #steps }
  return doc
end

-- the run if this request may see it (its namespace), else nil
local function visible_run(req, id)
  local r = engine.get_run(id)
  if not r then return nil end
  if req.key and (r.namespace or quota.DEFAULT_NS) ~= req.namespace then return nil end
  return r
end

local function no_run(id)
  http.fail(404, "run_not_found", ("no run %s"):format(id))
end

-- whether pipeline p is visible in namespace ns
local function pipeline_visible(p, req)
  local list = p.opts and p.opts.namespaces
  if not list or not req.key then return true end
  for _, ns in ipairs(list) do
    if ns == req.namespace then return true end
  end
  return false
end
M.pipeline_visible = pipeline_visible

---------------------------------------------------------------------------
-- waiting for a run's end

local ending = {} -- run id -> functions to call when the run launched here ends

--- Waits up to ms for run id to end; returns its record (ended or not).
local function wait_end(id, ms)
  local me = coroutine.running()
  local done, timer = false, nil
  local function finish()
    if done then return end
    done = true
    if timer and not timer:is_closing() then timer:close() end
    sched.wake(me)
  end
  if ending[id] then
    table.insert(ending[id], finish)
  elseif engine.active[id] then
    table.insert(engine.active[id].waiters, finish)
  else
    return engine.get_run(id)
  end
  timer = uv.new_timer()
  timer:start(math.max(1, math.floor(ms)), 0, finish)
  sched.wait()
  return engine.get_run(id)
end

--- Starts run id (committed as pending) of pipeline p in the background.
--- on_end runs when it ends.
function M.launch(p, id, on_end)
  ending[id] = {}
  ctx().launch(p, nil, id, nil, function()
    local list = ending[id] or {}
    ending[id] = nil
    if on_end then on_end() end
    for _, f in ipairs(list) do f() end
  end)
end

local function wait_param(req)
  local w = req.query.wait
  if not w then return nil end
  local ok, ms = pcall(duration.ms, tonumber(w) or w, "wait")
  if not ok then http.fail(400, "invalid_field", tostring(ms):gsub("^[^\n]-:%d+: ", ""), { field = "wait" }) end
  return math.min(ms, MAX_WAIT_MS)
end

-- 200 with the run if it has ended within wait_ms, else 202
local function answer(id, wait_ms, created)
  if wait_ms and wait_ms > 0 then
    local r = wait_end(id, wait_ms)
    if r and FINISHED[r.status] then return 200, with_steps(M.view(r), id) end
    return 202, { run_id = id, status = r and r.status or "pending" }
  end
  if created then return 202, { run_id = id, status = "pending" } end
  local r = engine.get_run(id)
  return 200, r and M.view(r) or { run_id = id, status = "pending" }
end

---------------------------------------------------------------------------
-- starting runs

--- Creates a run of p over the API and starts it in the background: the
--- namespace's quota admits it (or a 429 is raised), its pending record
--- commits with its daily count. opts: id, fields (added to the record),
--- namespace (default the request's), idempotency (the request's key),
--- extra = function(b) adding other writes to the batch that creates it.
--- Returns the run id.
function M.create(req, p, input, opts)
  opts = opts or {}
  local ns = opts.namespace or req.namespace
  local now = clock.now()
  local id = opts.id or ids.new_id()
  if p.params then
    -- declared params (lua/params.lua): checked, defaulted, templates rendered
    -- for this run, before the quota counts it
    local v, perr, why = require("sluice.params").apply(p, input, { id = id, pipeline = p.name, created_us = now, namespace = ns })
    if not v then http.fail(400, why.code, perr, why.field and { field = why.field }) end
    input = v
  end
  local count, release = quota.admit_run(ns)
  local rec = {
    id = id, pipeline = p.name, input = input, status = "pending", attempt = 0,
    created_at = clock.iso(now), created_us = now, namespace = ns,
    trigger = { kind = "http", by = req.key and req.key.name or NULL },
  }
  for k, v in pairs(opts.fields or {}) do rec[k] = v end
  -- the admission is given back whatever fails from here: a record the
  -- store refuses (raises) or a batch that does not commit
  local built, b = pcall(function()
    local b = store.batch():put_run(rec, { new = true })
    count(b) -- the namespace's daily count, with the run it admits
    if opts.extra then opts.extra(b) end
    if opts.idempotency then b:put_idempotency(req.namespace, p.name, opts.idempotency, id) end
    -- several hosts: this one executes it, leased in the commit that creates it
    if engine.leases then engine.leases.hold_new(id, b) end
    return b
  end)
  if not built then
    if engine.leases then engine.leases.forget(id) end
    release(false)
    error(b, 0)
  end
  local ok, msg = b:commit()
  if not ok then
    if engine.leases then engine.leases.forget(id) end
    release(false)
    error(("creating run %s: %s"):format(id, msg), 0)
  end
  M.launch(p, id, release)
  return id
end

-- idempotency key -> the requests waiting, while a creation with it commits
-- here: they answer with the run the store names once it has committed (or
-- failed, the key then another host's), never with an id that may lose
local inflight = {}

local function settle(ikey)
  while inflight[ikey] do
    local me = coroutine.running()
    table.insert(inflight[ikey], function() sched.wake(me) end)
    sched.wait()
  end
end

local function start_run(req, p)
  local wait_ms = wait_param(req)
  local idem = req.headers["idempotency-key"]
  local ikey
  if idem then
    if #idem > 200 then http.fail(400, "invalid_field", "Idempotency-Key must be at most 200 bytes", { field = "Idempotency-Key" }) end
    ikey = req.namespace .. "\0" .. p.name .. "\0" .. idem -- of inflight only
    repeat
      settle(ikey)
      local id, err = store.get_idempotency(req.namespace, p.name, idem)
      if err then error(("reading the Idempotency-Key: %s"):format(err), 0) end
      if id then
        local status, doc = answer(id, wait_ms, false)
        return status == 202 and 202 or 200, doc
      end
    until not inflight[ikey] -- (the read yields on PostgreSQL: another request may have begun)
  end
  local input = req:json("the input")
  if engine.stopping then http.fail(503, "stopping", "the server is shutting down; retry on the next start", { headers = "Retry-After: 5\r\n" }) end
  local id = ids.new_id()
  if ikey then inflight[ikey] = {} end
  local ok, err = pcall(M.create, req, p, input, { id = id, idempotency = idem })
  if not ok and idem then
    -- another host (on PostgreSQL) committed the key first: its run is the
    -- answer, as it would have been had this request come a moment later
    local other = store.get_idempotency(req.namespace, p.name, idem)
    if other and other ~= id then id, ok = other, "theirs" end
  end
  if ikey then
    local waiting = inflight[ikey]
    inflight[ikey] = nil
    for _, wake in ipairs(waiting) do wake() end
  end
  if not ok then error(err, 0) end
  if ok == "theirs" then
    local status, doc = answer(id, wait_ms, false)
    return status == 202 and 202 or 200, doc
  end
  return answer(id, wait_ms, true)
end

local function cancel(req, id)
  local r = visible_run(req, id)
  if not r then no_run(id) end
  if FINISHED[r.status] then
    http.fail(409, "run_finished", ("run %s is already %s"):format(id, r.status), { run_status = r.status })
  end
  local ok, why = engine.cancel(id)
  if not ok then http.fail(409, "run_finished", why) end
  return 202, { run_id = id, status = "cancelling" }
end

local function rerun(req, id)
  local r = visible_run(req, id)
  if not r then no_run(id) end
  local body = req:object("the body")
  if type(body.from) ~= "string" or body.from == "" then
    http.fail(400, "missing_field", 'from is required: {"from": "<step id>"}, the first step to execute again', { field = "from" })
  end
  local p = engine.pipelines[r.pipeline]
  if not p then
    http.fail(409, "pipeline_not_loaded", ("pipeline '%s' of run %s is not loaded by this serve"):format(r.pipeline, id))
  end
  local count, release = quota.admit_run(req.namespace)
  local pok, new_id, err = pcall(engine.prepare_rerun, id, body.from, nil,
    { trigger = { kind = "http", by = req.key and req.key.name or NULL } }, count)
  if not (pok and new_id) then release(false) end
  if not pok then error(new_id, 0) end
  if not new_id then http.fail(400, "invalid_field", err, { field = "from" }) end
  M.launch(p, new_id, release)
  return 202, { run_id = new_id, status = "pending", rerun_of = id }
end

local function loaded_names()
  local names = {}
  for name in pairs(engine.pipelines) do names[#names + 1] = name end
  table.sort(names)
  if #names > 20 then
    local n = #names
    for i = 21, n do names[i] = nil end
    names[21] = ("... %d more"):format(n - 20)
  end
  return table.concat(names, ", ")
end

http.route("POST", "/runs/{rest...}", function(req)
  local rest = req.params.rest
  local p = engine.pipelines[rest]
  if p and pipeline_visible(p, req) then return start_run(req, p) end
  local id = rest:match("^(.+)/cancel$")
  if id then return cancel(req, id) end
  id = rest:match("^(.+)/rerun$")
  if id then return rerun(req, id) end
  http.fail(404, "pipeline_not_found", ("no pipeline named '%s' (loaded: %s)"):format(rest, loaded_names()))
end, { role = "runner" })

---------------------------------------------------------------------------
-- reading runs

local function namespace_param(req)
  local ns = req.query.namespace
  if not ns or ns == req.namespace then return req.namespace end
  if req.key then
    http.fail(403, "forbidden", ("key '%s' belongs to namespace %s and may not list namespace %s"):format(
      req.key.name, req.namespace, ns))
  end
  return ns
end

http.route("GET", "/runs/last", function(req)
  local pipeline = req.query.pipeline
  if not pipeline or pipeline == "" then
    http.fail(400, "missing_field", "pipeline is required: GET /runs/last?pipeline=NAME", { field = "pipeline" })
  end
  local ns = namespace_param(req)
  local before
  for _ = 1, 10 do
    local runs, nxt, skipped = store.runs({ namespace = ns, pipeline = pipeline, before = before, limit = 100 })
    if not runs then error(("listing runs: %s"):format(nxt), 0) end
    if skipped[1] then error(skipped[1], 0) end
    for _, r in ipairs(runs) do
      if FINISHED[r.status] then return 200, with_steps(M.view(r), r.id) end
    end
    if not nxt then break end
    before = nxt
  end
  http.fail(404, "run_not_found", ("pipeline '%s' has no finished run"):format(pipeline))
end)

-- One step with its whole stored value. The step id is a query parameter:
-- run ids and step ids may both hold "/" (child runs "m1/call@1", map items
-- "id#1"), so no split of a path between them would be unambiguous.
local function step_doc(req, id)
  local r = visible_run(req, id)
  if not r then no_run(id) end
  local sid = req.query.id
  local s, err = store.get_step(id, sid)
  if err then error(("reading step '%s' of run %s: %s"):format(sid, id, err), 0) end
  if not s then http.fail(404, "step_not_found", ("run %s has no step '%s'"):format(id, sid), { step_id = sid }) end
  local v = s.value
  if v == nil then v = NULL end
  local completed = s.status == "completed"
  return 200, {
    run_id = id, step_id = sid, status = s.status, attempts = s.attempts, size = s.size or 0,
    value = completed and v or NULL,
    error = not completed and type(v) == "table" and or_null(v.message) or NULL,
  }
end

-- registered before GET /runs/{id...}, which would take ".../step" as part
-- of the run id; without ?id= the path is a run whose id ends in "/step"
http.route("GET", "/runs/{id...}/step", function(req)
  local id = req.params.id
  if req.query.id == nil then
    local whole = id .. "/step"
    local r = visible_run(req, whole)
    if r then return 200, with_steps(M.view(r), whole) end
    http.fail(400, "missing_field", "id is required: GET /runs/{run}/step?id=STEP", { field = "id" })
  end
  return step_doc(req, id)
end)

http.route("GET", "/runs/{id...}", function(req)
  local id = req.params.id
  local r = visible_run(req, id)
  if not r then
    -- GET /runs/{id}/logs: what the run's steps logged (stdlib/sluice/log.lua)
    local of = id:match("^(.+)/logs$")
    if of and visible_run(req, of) then return 200, { run_id = of, logs = require("sluice.log").read(of) } end
    no_run(id)
  end
  local doc = with_steps(M.view(r), id)
  if not FINISHED[r.status] then
    -- whether the host executing it lives (on PostgreSQL: its lease, whichever machine it is on)
    local alive, host = require("sluice.liveness").run_alive(r)
    doc.host_alive, doc.host_id = or_null(alive), host
  end
  return 200, doc
end)

http.route("GET", "/runs", function(req)
  local q = req.query
  local limit = http.int_param(q, "limit", 50, 1000)
  if q.status and not STATUSES[q.status] then
    http.fail(400, "invalid_field", ("status must be one of pending, running, sleeping, waiting, completed, failed, cancelled; got %s"):format(q.status),
      { field = "status" })
  end
  local since_us
  if q.since then
    local t, err = clock.parse_time(q.since)
    if not t then http.fail(400, "invalid_field", "since must be an ISO 8601 time: " .. tostring(err), { field = "since" }) end
    local frac = q.since:match("^[^.]*T[%d:]+%.(%d+)") or ""
    since_us = t * 1000000 + math.tointeger(tonumber((frac .. "000000"):sub(1, 6)))
  end
  local runs, nxt, skipped = store.runs({ namespace = namespace_param(req), pipeline = q.pipeline ~= "" and q.pipeline or nil,
    status = q.status, before = q.before, since_us = since_us, limit = limit })
  if not runs and skipped == "EINVAL" then http.fail(400, "invalid_field", (nxt:gsub("^EINVAL: ", "")), { field = "before" }) end
  if not runs then error(("listing runs: %s"):format(nxt), 0) end
  if skipped[1] then error(skipped[1], 0) end
  local out = json.array({})
  for i, r in ipairs(runs) do out[i] = M.view(r) end
  return 200, { runs = out, next = nxt or NULL }
end)

return M
