--- sluice.api.schedules: schedules over HTTP.
---   GET    /schedules                 every schedule, from code and from the store
---   POST   /schedules                 {name, pipeline, cron | every, tz?, input?, enabled?}
---   PUT    /schedules/{name}          {enabled} (and cron, every, tz, input for API schedules)
---   DELETE /schedules/{name}          an API schedule
---   POST   /schedules/{name}/trigger  a run now: "<name>@manual-<time>"
--- A schedule created here is held in the store (its schedule record
--- carries source = "api" with its definition), loaded by serve at start
--- like the ones in code, and belongs to the namespace of the key that
--- created it. Changing the spec of a schedule defined in code is a 409:
--- the file is where it lives.
local http = require "sluice.router"
local clock = require "sluice._clock"
local cron = require "sluice._cron"
local store = require "sluice._store"
local json = require("sluice._codec").edge -- responses: JSON at the edge
local engine = require "sluice.engine"
local every = require "sluice.every"
local scheduler = require "sluice.scheduler"
local duration = require "sluice.duration"
local quota = require "sluice.quota"

local M = {}

local NULL = json.null

local CRON_FIELDS = { minute = 1, hour = 2, ["day-of-month"] = 3, month = 4, ["day-of-week"] = 5 }

-- a spec from {cron=} or {every=}, or a 400 naming the field and where in it
local function spec_from(body)
  if body.cron ~= nil and body.every ~= nil then
    http.fail(400, "invalid_field", "give cron or every, not both", { field = "cron" })
  end
  if body.cron ~= nil then
    if type(body.cron) ~= "string" then http.fail(400, "invalid_field", "cron must be a string such as \"0 2 * * *\"", { field = "cron" }) end
    local canonical, err = cron.canonical(body.cron)
    if not canonical then
      local extra = { field = "cron" }
      local fname = err:match("^(%S+) field:")
      local idx = fname and CRON_FIELDS[fname]
      if idx then
        extra.position = idx
        -- the byte where that field starts in the expression
        local n, at = 0, nil
        for pos in body.cron:gmatch("()%S+") do
          n = n + 1
          if n == idx then at = pos break end
        end
        extra.offset = at and at - 1 or nil
      end
      http.fail(400, "invalid_cron", ("cron %q: %s"):format(body.cron, err), extra)
    end
    return every.spec_of({ kind = "cron", expr = canonical }), body.cron
  end
  if body.every ~= nil then
    local ok, ms = pcall(duration.ms, body.every, "every")
    if not ok or ms < 1000 or ms % 1000 ~= 0 then
      http.fail(400, "invalid_field", ("every must be a whole number of seconds (at least 1) such as \"15m\", got %s")
        :format(json.encode(body.every)), { field = "every" })
    end
    return every.spec_of({ kind = "interval", step_s = ms // 1000 }), tostring(body.every)
  end
  http.fail(400, "missing_field", 'give cron ("0 2 * * *") or every ("15m")', { field = "cron" })
end

local function check_tz(tz)
  if tz == nil then return end
  local ok, err = type(tz) == "string" and cron.tz_check(tz)
  if not ok then http.fail(400, "invalid_field", "tz: " .. tostring(err or "must be a string"), { field = "tz" }) end
end

--- The API's view of a schedule: its definition (every.defined) and the
--- state of its fires (the scheduler's slot).
local followed = {} -- name -> the fire state of an API schedule another host fires, as M.follow last read it

function M.view(s)
  local spec = s.spec
  local slot = scheduler.slot(s.name) or followed[s.name] or {}
  local enabled = slot.enabled ~= false
  local interval_ms = spec.kind == "interval" and spec.step_s * 1000 or spec.kind == "days" and spec.days * 86400000 or nil
  return {
    name = s.name, pipeline = s.pipeline, spec = s.spec_text or spec:canonical(), canonical = spec:canonical(),
    tz = s.tz or "UTC", kind = spec.kind == "cron" and "cron" or "interval", interval_ms = interval_ms or NULL,
    enabled = enabled, next_run_at = enabled and slot.next_at and clock.utc(slot.next_at) or NULL,
    -- the next 5 fires from now (what the dashboard and `sluice schedules --json` show)
    next_fires = enabled and json.array(every.next_fires(spec, clock.now() // 1000000, s.tz, 5)) or json.array({}),
    last_run_at = slot.last_at and clock.utc(slot.last_at) or NULL, runs = slot.runs or 0, source = s.source or "code",
    namespace = s.namespace or NULL, site = s.site, catch_up = s.catch_up, overlap = s.overlap,
    input = s.source == "api" and s.input or nil,
  }
end

-- whether the request may see schedule s
local function visible(req, s)
  if s.source == "api" then
    return not req.key or (s.namespace or quota.DEFAULT_NS) == req.namespace
  end
  local p = engine.pipelines[s.pipeline]
  return not p or require("sluice.api.runs").pipeline_visible(p, req)
end

local function find(req, name)
  local s = every.defined[name]
  if not s or not visible(req, s) then
    http.fail(404, "schedule_not_found", ("no schedule named '%s'"):format(name))
  end
  return s
end

-- changes go to the scheduler once it has armed every schedule
local function check_started()
  local api = require "sluice.api"
  if not (api.ctx and api.ctx.ready) then
    http.fail(503, "starting", "the server is still starting; retry in a moment", { headers = "Retry-After: 1\r\n" })
  end
end

-- Changes made here, for M.follow: a read of the store begun at tick t0
-- may miss a change committed here at tick t0 or later (math.huge: one is
-- committing), so it leaves that schedule as it is here
local ticks, changed = 0, {}
local function changing(name, fn, ...)
  changed[name] = math.huge
  local ok, err = pcall(fn, ...)
  ticks = ticks + 1
  changed[name] = ticks
  if not ok then error(err, 0) end
end

local function save_here(name, enabled)
  if scheduler.slot(name) then
    local ok, err = scheduler.save(name, enabled)
    if not ok then error(err, 0) end
    return
  end
  -- not armed here: another host fires the schedules (several hosts on a
  -- PostgreSQL store) and learns of this record within a second (M.follow)
  local s = every.defined[name]
  if not (s and require("sluice.hosts").active) then return end
  if s.source ~= "api" then
    -- the firing host reads the records of API schedules only
    http.fail(409, "not_firing_here", ("schedule '%s' is defined in code and fired by another host (the one "
      .. "holding the schedules lease: see `sluice hosts`); pause or resume it through that host's API"):format(name))
  end
  local stored, rerr = store.schedule(name)
  if rerr then error(("reading schedule %s: %s"):format(name, rerr), 0) end
  local ok, err = store.batch():put_schedule(name, scheduler.unarmed_record(s, stored, enabled)):commit()
  if not ok then error(("storing schedule %s: %s"):format(name, err), 0) end
end

-- stores the schedule's record (and pauses or resumes it if enabled is a
-- boolean): the scheduler's one path, also the REPL's
local function save(name, enabled)
  changing(name, save_here, name, enabled)
end

-- definitions made here belong to no file: straight into the live tables
-- (sluice.registry), which reloads of files leave alone
local function register(s)
  every.defined[s.name] = s
  every.order[#every.order + 1] = s.name
end

local function unregister(name)
  every.defined[name] = nil
  for i, n in ipairs(every.order) do
    if n == name then table.remove(every.order, i) break end
  end
end

local function api_schedule(fields)
  return {
    name = fields.name, pipeline = fields.pipeline, spec = fields.spec, spec_text = fields.spec_text,
    input = fields.input, tz = fields.tz, catch_up = fields.catch_up or "latest", overlap = fields.overlap or "skip",
    jitter_ms = 0, source = "api", namespace = fields.namespace,
  }
end

local function diff(kind, a, b)
  local d = { added = {}, removed = {}, changed = {}, kept = {} }
  if kind == "changed" then d.changed[1] = { old = a, new = b } else d[kind][1] = a end
  return d
end

--- Registers the schedule created over the API whose stored record is rec
--- (the scheduler's pass over the records at start offers each one); a
--- record of another source, or of a name defined in code, is left alone.
--- Returns whether it registered one.
function M.adopt(rec)
  if type(rec) ~= "table" or rec.source ~= "api" then return false end
  if every.defined[rec.name] then
    if every.defined[rec.name].source == "api" then return false end -- registered already (M.follow)
    http.log("schedule %s in the store (created over the API) is also defined in code; the code's is used", rec.name)
    return false
  end
  every.record_defaults(rec)
  register(api_schedule({
    name = rec.name, pipeline = rec.pipeline, spec = every.spec_of(rec), spec_text = rec.spec_text,
    input = rec.input, tz = rec.tz, catch_up = rec.catch_up, overlap = rec.overlap, namespace = rec.namespace,
  }))
  return true
end

--- Registers every schedule created over the API that the store holds
--- (M.adopt of each record); returns how many.
function M.load_stored()
  local n = 0
  local after
  repeat
    local page, last = store.schedules(after, 1000)
    if not page then error("loading the schedules created over the API: " .. last, 0) end
    after = last
    for _, rec in ipairs(page) do
      if M.adopt(rec) then n = n + 1 end
    end
  until not after
  return n
end

-- the API schedule a stored record defines (every.record_defaults applied)
local function from_record(rec)
  return api_schedule({
    name = rec.name, pipeline = rec.pipeline, spec = every.spec_of(rec), spec_text = rec.spec_text,
    input = rec.input, tz = rec.tz, catch_up = rec.catch_up, overlap = rec.overlap, namespace = rec.namespace,
  })
end

local codec = require "sluice._codec"
local function enc(v) return v == nil and "" or (codec.try_encode(v, "input")) end

local function same(a, b)
  return a.pipeline == b.pipeline and a.spec:canonical() == b.spec:canonical() and a.tz == b.tz
    and a.catch_up == b.catch_up and a.overlap == b.overlap and a.namespace == b.namespace
    and a.spec_text == b.spec_text and enc(a.input) == enc(b.input)
end

-- Makes API schedule rec (a stored record, with its name) the one here:
-- registered if new, its definition swapped if changed, paused or resumed
-- as stored. The scheduler arms, re-arms or drops it if it fires here.
local function follow_record(rec)
  every.record_defaults(rec)
  local s = every.defined[rec.name]
  if not s then
    if M.adopt(rec) then scheduler.apply(diff("added", every.defined[rec.name])) end
  elseif s.source == "api" then
    local new = from_record(rec)
    if not same(s, new) then
      every.defined[rec.name] = new
      scheduler.apply(diff("changed", s, new))
    end
  else
    return -- a schedule of the same name in code wins (M.adopt said so at start)
  end
  scheduler.follow_enabled(rec.name, rec.enabled ~= false)
end

local function follow_removed(name)
  local s = every.defined[name]
  if s and s.source == "api" then
    unregister(name)
    scheduler.apply(diff("removed", s))
    http.log("schedule %s: deleted on another host", name)
  end
end

--- Several hosts on a PostgreSQL store: follows the schedules created,
--- changed or deleted over the API of any host, reading them from the
--- store every poll_ms until stopped() (only they: the store flags them),
--- so that every host lists them and the one firing schedules fires them
--- (once: the fire's run id is unique). A change made here and committing
--- meanwhile is not undone by a read that began before it.
function M.follow(poll_ms, stopped)
  local H = require "sluice._hosts"
  local seen, said = {}, false -- seen: names read from the store
  while not stopped() do
    ticks = ticks + 1
    local t0 = ticks
    local list, err = H.api_schedules()
    if not list then
      if not said then http.log("reading the schedules created over the API: %s; retrying", err) end
      said = true
    else
      said = false
      local present = {}
      for _, row in ipairs(list) do
        local rec, name = row.record, row.name
        if type(rec) == "table" and rec.source == "api" then
          present[name] = true
          followed[name] = { enabled = rec.enabled ~= false, runs = rec.runs or 0,
            next_at = rec.next_at and clock.parse_time(rec.next_at) or nil,
            last_at = rec.last_at and clock.parse_time(rec.last_at) or nil }
          if not (changed[name] and changed[name] >= t0) then
            seen[name] = true
            rec.name = name
            local ok, e = pcall(follow_record, rec)
            if not ok then http.log("schedule %s (stored by another host): %s", name, tostring(e)) end
          end
        end
      end
      for name in pairs(seen) do
        if not present[name] and not (changed[name] and changed[name] >= t0) then
          seen[name], followed[name] = nil, nil
          local ok, e = pcall(follow_removed, name)
          if not ok then http.log("schedule %s (deleted by another host): %s", name, tostring(e)) end
        end
      end
    end
    require("sluice.sched").sleep_ms(poll_ms)
  end
end

--- Whether API schedule s is still as the store holds it, before the host
--- firing schedules fires it (several hosts): if another host deleted or
--- changed it since the last M.follow read, that is followed now and the
--- fire is skipped (the changed schedule fires by its new definition).
--- Returns true and the row version read (the fire's record is written
--- over that version only), or false.
function M.current(s)
  -- with the row version the fire writes over (PostgreSQL: the fire's
  -- compare-and-set, lua/scheduler.lua)
  local rec, version = store.schedule_version(s.name)
  if rec == nil then error(("schedule %s: reading its record: %s"):format(s.name, version), 0) end
  if not rec or rec.source ~= "api" then
    follow_removed(s.name)
    return false
  end
  rec.name = s.name
  every.record_defaults(rec)
  if not same(s, from_record(rec)) or rec.enabled == false then
    follow_record(rec)
    return false
  end
  return true, version
end

http.route("GET", "/schedules", function(req)
  local out = json.array({})
  for _, name in ipairs(every.order) do
    local s = every.defined[name]
    if s and visible(req, s) then out[#out + 1] = M.view(s) end
  end
  return 200, { schedules = out }
end)

http.route("POST", "/schedules", function(req)
  check_started()
  local body = req:object("the schedule")
  local name = body.name
  if type(name) ~= "string" or not name:match("^[%w][%w_.:@/-]*$") or #name > 200 then
    http.fail(400, "invalid_field", "name must be 1 to 200 letters, digits and _ . : @ / - (starting with a letter or digit)",
      { field = "name" })
  end
  if every.defined[name] then
    http.fail(409, "schedule_exists", ("a schedule named '%s' exists already"):format(name))
  end
  local p = type(body.pipeline) == "string" and engine.pipelines[body.pipeline]
  if not p or not require("sluice.api.runs").pipeline_visible(p, req) then
    http.fail(400, "invalid_field", ("pipeline: no pipeline named %s is loaded"):format(json.encode(body.pipeline)), { field = "pipeline" })
  end
  if body.enabled ~= nil and type(body.enabled) ~= "boolean" then
    http.fail(400, "invalid_field", "enabled must be true or false", { field = "enabled" })
  end
  local spec, text = spec_from(body)
  check_tz(body.tz)
  local earlier, rerr = store.schedule(name)
  if rerr then error(("reading schedule %s: %s"):format(name, rerr), 0) end
  if earlier then
    -- the record of a schedule removed from code: its fires stay counted
    http.log("schedule %s: created over the API over the record of an earlier schedule", name)
  end
  local s = api_schedule({ name = name, pipeline = p.name, spec = spec, spec_text = text, input = body.input,
    tz = body.tz, namespace = req.namespace })
  register(s)
  scheduler.apply(diff("added", s))
  local ok, err = pcall(save, name, body.enabled == false and false or nil)
  if not ok then
    unregister(name)
    scheduler.apply(diff("removed", s))
    error(err, 0)
  end
  return 201, M.view(s)
end, { role = "admin" })

http.route("PUT", "/schedules/{name...}", function(req)
  check_started()
  local s = find(req, req.params.name)
  local body = req:object("the change")
  local spec_change = body.cron ~= nil or body.every ~= nil or body.tz ~= nil or body.input ~= nil
  if spec_change and s.source ~= "api" then
    http.fail(409, "defined_in_code", ("schedule '%s' is defined in code (%s): edit the file to change its spec, tz or input")
      :format(s.name, s.site or "its pipeline file"))
  end
  if body.enabled ~= nil and type(body.enabled) ~= "boolean" then
    http.fail(400, "invalid_field", "enabled must be true or false", { field = "enabled" })
  end
  if spec_change then
    local new = setmetatable({}, getmetatable(s)) -- the defaults of a definition (every.Schedule)
    for k, v in pairs(s) do new[k] = v end
    if body.cron ~= nil or body.every ~= nil then new.spec, new.spec_text = spec_from(body) end
    if body.tz ~= nil then
      check_tz(body.tz)
      new.tz = body.tz
    end
    if body.input ~= nil then new.input = body.input end
    every.defined[s.name] = new
    scheduler.apply(diff("changed", s, new)) -- re-armed from now if the timing changed
    s = new
  end
  save(s.name, body.enabled)
  return 200, M.view(s)
end, { role = "admin" })

http.route("DELETE", "/schedules/{name...}", function(req)
  check_started()
  local s = find(req, req.params.name)
  if s.source ~= "api" then
    http.fail(409, "defined_in_code", ("schedule '%s' is defined in code (%s): remove it from the file")
      :format(s.name, s.site or "its pipeline file"))
  end
  changing(s.name, function()
    local ok, msg = store.batch():delete_schedule(s.name):commit()
    if not ok then error(("deleting schedule %s: %s"):format(s.name, msg), 0) end
  end)
  unregister(s.name)
  scheduler.apply(diff("removed", s))
  return 200, { deleted = s.name }
end, { role = "admin" })

http.route("POST", "/schedules/{name...}/trigger", function(req)
  local s = find(req, req.params.name)
  local p = engine.pipelines[s.pipeline]
  if not p then
    http.fail(409, "pipeline_not_loaded", ("pipeline '%s' of schedule '%s' is not loaded"):format(s.pipeline, s.name))
  end
  local base = s.name .. "@manual-" .. clock.iso(clock.now())
  local id, n = base, 1
  while engine.get_run(id) do
    n = n + 1
    id = base .. "-" .. n
  end
  require("sluice.api.runs").create(req, p, s.input, {
    id = id, namespace = s.namespace or req.namespace, fields = { schedule = s.name },
  })
  return 202, { run_id = id, status = "pending", schedule = s.name }
end, { role = "runner" })

return M
