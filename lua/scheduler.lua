--- sluice.scheduler: fires the schedules defined with `every` on the loop.
---
--- Each schedule's next and last fire are in its store record. A
--- fire at scheduled time T creates the run "<schedule name>@<T in ISO 8601
--- UTC>" in the same commit that moves the schedule past T, so a crash or a
--- restart around a fire never runs that fire twice: the run id exists, and
--- an unfinished run is resumed like any other. Due times live in one binary
--- heap (host/l_fireq.c) under one loop timer: O(log n) per fire however
--- many schedules.
---
--- What fires is a slot per schedule name, armed while the name has a live
--- definition (every.defined, from every.lua through the registry), and
--- the state of its fires (next and last fire, runs in flight, queued fires). A reload swaps
--- the definition: a changed spec re-arms from the later of now and the last
--- fire, so a fire already recorded never fires again; a removed schedule's
--- slot loses its definition and stops firing.
local clock = require "sluice._clock"
local store = require "sluice._store"
local fireq = require "sluice._fireq"
local every = require "sluice.every"
local registry = require "sluice.registry"
local uv = require "luv"

local M = {}

-- The fire state of every schedule name ever armed here is a slot of q
-- (host/l_fireq.c: next and last fire, runs, runs in flight, enabled,
-- armed, and the heap of next fires), by id; the live definition of an
-- armed slot is its name's in every.defined (def(id); none: removed), and
-- queued fires are queues[id] (rare, so sparse). No Lua table per schedule,
-- nor an entry in one: 100,000 schedules arm in a few MB.
local q = fireq.new()
local queues = {}
local defined = every.defined

-- the live definition of slot id, or nil
local function live_def(id)
  return q:armed(id) and defined[q:name(id)] or nil
end

local timer
local stopped = false
local log = require("sluice.log").host -- printf-style, in the --log-format of serve
M.log = log

-- the stored record of slot id (sluice._store encodes it): what differs
-- from the defaults only (every.record_defaults puts them back), so that
-- 100,000 records stay small on disk and in the page cache
local REC_FIELDS = { "pipeline", "spec", "next_at", "enabled", "last_at", "runs", "tz", "catch_up", "overlap",
  "jitter_ms", "source", "namespace", "spec_text", "input" }
-- (into: a table to fill instead of a new one, emptied first: storing
-- 100,000 records at start makes no table each)
local function record(id, into, d)
  d = d or live_def(id)
  local next_at, last_at, runs, _, enabled = q:state(id)
  local rec = into or {}
  if into then
    for i = 1, #REC_FIELDS do into[REC_FIELDS[i]] = nil end
  end
  rec.pipeline, rec.spec, rec.next_at, rec.enabled = d.pipeline, d.spec:canonical(), next_at and clock.utc(next_at), enabled
  if last_at then rec.last_at = clock.utc(last_at) end
  if runs > 0 then rec.runs = runs end
  if d.tz then rec.tz = d.tz end
  if d.catch_up ~= "latest" then rec.catch_up = d.catch_up end
  if d.overlap ~= "skip" then rec.overlap = d.overlap end
  if d.jitter_ms > 0 then rec.jitter_ms = d.jitter_ms end
  -- schedules created over the HTTP API (lua/api/schedules.lua) keep their definition here
  if d.source then
    rec.source, rec.namespace, rec.spec_text = d.source, d.namespace, d.spec_text
    if d.source == "api" then rec.input = d.input end
  end
  return rec
end

local function next_after(id, t, d)
  d = d or live_def(id)
  local n, err = every.next_fire(d.spec, t, d.tz)
  if n == nil then
    log("schedule %s: %s; it will not fire", d.name, err)
    return nil
  end
  return n or nil
end

local arm

-- fires slot id for scheduled time t (Unix seconds). Missed fires being
-- caught up queue behind each other whatever the overlap policy: they are
-- what catch_up asked to run.
local function fire(id, t, catching_up)
  local def = live_def(id)
  if not def then return end
  local _, _, _, active, enabled = q:state(id)
  if not enabled then return end
  if active > 0 and def.overlap ~= "allow" then
    if def.overlap == "skip" and not catching_up then
      log("schedule %s: skipped the fire of %s: its previous run is still running (overlap = skip)",
        def.name, clock.utc(t))
      return
    end
    local queue = queues[id] or {}
    queues[id] = queue
    queue[#queue + 1] = t
    return
  end
  local id_text = def.name .. "@" .. clock.utc(t)
  local function go()
    local live = live_def(id)
    if stopped or not live then return end -- removed by a reload meanwhile (jitter)
    q:add_active(id, 1)
    local _, last_at, runs = q:state(id)
    q:set_runs(id, runs + 1)
    if not last_at or t > last_at then q:set_last(id, t) end
    local rec = record(id)
    -- added to the batch that starts the run: the fire and the record
    -- that moves the schedule past it are durable together. With a
    -- version (the host read the record just before: several hosts on
    -- PostgreSQL) the record is written only if nobody changed it since: a
    -- pause, a change or a delete another host committed during the fire
    -- stays, the fire's run is created all the same (once: its id), and
    -- this host follows the change at its next look at the store
    local function extra(b, version) b:put_schedule(live.name, rec, version) end
    M.start_run(live, id_text, extra, function()
      if q:add_active(id, -1) == 0 then
        local queue = queues[id]
        if queue and #queue > 0 then
          local nt = table.remove(queue, 1)
          if #queue == 0 then queues[id] = nil end
          fire(id, nt)
        end
      end
    end)
  end
  if def.jitter_ms > 0 then
    local j = uv.new_timer()
    j:start(math.random(0, math.floor(def.jitter_ms)), 0, function()
      j:close()
      go()
    end)
  else
    go()
  end
end

-- Unix seconds from the same clock arm() uses: os.time() reads the kernel's
-- coarse clock, which lags by milliseconds, so the timer would fire, find
-- nothing due yet and spin until it caught up
local function now_s()
  return clock.now() // 1000000
end

-- Due fires are started at most SLICE per timer callback: starting 10,000
-- runs in one callback held the loop for half a second, so commits already
-- queued and running steps waited behind the burst. The timer is re-armed
-- at once (arm() computes 0 ms) for the rest.
local SLICE = 256

local function on_timer()
  local now = now_s()
  local started = 0
  while started < SLICE do
    local t, id = q:top()
    if not t or t > now then break end
    started = started + 1
    -- only armed slots are in the heap (a removed one leaves it)
    q:set_next(id, next_after(id, t))
    fire(id, t)
  end
  arm()
end

arm = function()
  local t = q:top()
  if stopped or not t then return end
  local ms = (t - clock.now() / 1e6) * 1000
  uv.update_time()
  timer:start(math.max(0, math.ceil(ms)), 0, on_timer)
end

-- A list of slot ids as ranges: {first, last, first, last, ...}. The ids
-- of 100,000 schedules new to the store are consecutive (made in definition
-- order): two numbers instead of a 1.6 MB list while their first fires
-- wait to be stored.
local function add_id(ranges, id)
  local n = #ranges
  if n > 0 and ranges[n] == id - 1 then
    ranges[n] = id
  else
    ranges[n + 1], ranges[n + 2] = id, id
  end
end

-- the ids of ranges, in order
local function each_id(ranges)
  local k, id = -1, nil
  return function()
    if id and id < ranges[k + 1] then
      id = id + 1
      return id
    end
    k = k + 2
    id = ranges[k]
    return id
  end
end

-- Arms slot id, whose def is new to this process (at start, or added by a
-- reload), from its stored state (stored false: it has no record; else
-- spec, the canonical text the record has, next_at and last_at in Unix
-- seconds or nil, runs, enabled): catches up the fires missed while no
-- host fired it, or computes its first fire (then it is added to fresh,
-- ranges of ids (add_id) whose records the caller stores).
local function arm_slot(id, def, stored, spec, next_at, last_at, runs, enabled, now, fresh)
  if not stored then
    runs, last_at, enabled = 0, nil, true
  elseif spec ~= def.spec:canonical() then
    next_at = nil -- the spec changed: re-armed from now
  end
  if next_at and next_at <= now and def.catch_up ~= "none" and enabled then
    q:arm(id, nil, last_at, runs, enabled)
    -- fires missed while the host was down
    local missed = {}
    local t = next_at
    while t and t <= now and #missed < 10000 do
      missed[#missed + 1] = t
      t = next_after(id, t, def)
    end
    if t and t <= now then t = next_after(id, now, def) end -- more than 10000 missed
    if def.catch_up == "latest" then missed = { missed[#missed] } end
    log("schedule %s: catching up %d missed fire(s) (catch_up = %s)", def.name, #missed, def.catch_up)
    q:set_next(id, t)
    for _, mt in ipairs(missed) do fire(id, mt, true) end
  elseif next_at and next_at > now then
    q:arm(id, next_at, last_at, runs, enabled)
  else
    q:arm(id, next_after(id, math.max(now, last_at or now), def), last_at, runs, enabled)
    add_id(fresh, id)
  end
end

-- arm_slot from a stored record (nil: none)
local function arm_record(id, def, rec, now, fresh)
  if not rec then return arm_slot(id, def, false, nil, nil, nil, 0, true, now, fresh) end
  arm_slot(id, def, true, rec.spec, rec.next_at and clock.parse_time(rec.next_at), rec.last_at and clock.parse_time(rec.last_at),
    rec.runs or 0, rec.enabled ~= false, now, fresh)
end

-- the stored record of schedule name (nil: none), or raises
local function stored_record(name)
  local stored, err = store.schedule(name)
  if err then error(("schedule %s: reading its record: %s"):format(name, err), 0) end
  return stored
end

-- The store's pages that a pass read (or a commit's writer thread did) are
-- dropped from the process's resident set after each page of 1000 records
-- (store.release_pages, ~0.2 ms): 100,000 records kept 7.5 to 11.5 MB of
-- data.mdb counted in serve's RSS, and every 8 pages still 3.5 MB (the
-- kernel maps 16 pages around each one read). A failure only leaves them
-- counted: said, not raised.
local function release_pages()
  local ok, err = store.release_pages()
  if not ok then log("schedules: %s", err) end
end

-- stores the records of the slots in ranges (add_id; a removed one: deletes
-- it), 1000 to a commit so that 100,000 new schedules never hold all their
-- records in memory at once
local function save_all(ranges)
  local rec = {} -- every record is encoded into the batch at once: one table for all
  local ids = each_id(ranges)
  local id = ids()
  while id do
    local b = store.batch()
    for _ = 1, 1000 do
      if not id then break end
      local d = live_def(id)
      if d then b:put_schedule(d.name, record(id, rec, d)) else b:delete_schedule(q:name(id)) end
      id = ids()
    end
    local ok, err = b:commit()
    if not ok then error("storing schedules: " .. tostring(err), 0) end
    collectgarbage("step", 256) -- the records encoded are garbage now
    release_pages()
  end
end

--- Counts a run of schedule `name` resumed by the host (its overlap
--- policy sees it); returns the function to call when it ends.
function M.track(name)
  local id = q:id(name)
  q:add_active(id, 1)
  return function() q:add_active(id, -1) end
end

--- Follows a registry swap (sluice.registry diff.schedules): a removed
--- schedule stops firing (its record goes), an added one is armed, a
--- changed one fires by its new definition, re-armed when its spec or time
--- zone changed.
function M.apply(d)
  if not M.start_run or stopped then return end
  local now = now_s()
  local dirty = {}
  for _, s in ipairs(d.removed) do
    local id = q:id(s.name)
    queues[id] = nil
    q:disarm(id)
    add_id(dirty, id)
  end
  -- kept and changed ones are armed: every.defined has their new definition
  for _, pair in ipairs(d.changed) do
    local id = q:id(pair.new.name)
    if registry.timing_changed(pair.old, pair.new) then
      local _, last_at = q:state(id)
      q:set_next(id, next_after(id, math.max(now, last_at or now)))
    end
    add_id(dirty, id)
  end
  for _, s in ipairs(d.added) do
    arm_record(q:id(s.name), s, stored_record(s.name), now, dirty)
  end
  arm()
  if #dirty > 0 then
    require("sluice.sched").spawn({}, save_all, function(ok, err)
      if not ok then log("schedules: %s", err.message) end
    end, dirty)
  end
end

--- Starts every defined schedule. start_run(def, run_id, extra, on_end)
--- is the host's way to start a run of def.pipeline; extra(b) adds the
--- schedule's record to the batch that starts the run (sluice._store), and
--- must be called for it. adopt(record), if given, sees each stored
--- record with a source first (the HTTP API registers the schedules it
--- created: lua/api/schedules.lua). Returns the number started.
--- From then on the scheduler follows the registry's swaps.
function M.start(start_run, adopt)
  M.start_run = start_run
  timer = timer or uv.new_timer()
  local now = now_s()
  local fresh = {}
  local n = 0
  -- the stored states in one pass, a page at a time (a read each, seven
  -- values a record in one list: no table per record), not one read per
  -- schedule
  local after
  local page = {}
  q:reserve(q:count() + #every.order)
  repeat
    local count, last = store.schedule_states(after, 1000, page)
    if not count then error("reading the schedules: " .. tostring(last), 0) end
    after = last
    for k = 1, 7 * count, 7 do
      local name = page[k]
      if adopt and page[k + 6] then
        local rec = stored_record(name) -- the HTTP API's schedule: its whole record
        if rec then adopt(rec) end
      end
      local def = defined[name]
      if def then
        local id = q:id(name)
        if not q:armed(id) then
          arm_slot(id, def, true, page[k + 1], page[k + 2] or nil, page[k + 3] or nil, page[k + 4], page[k + 5], now, fresh)
          n = n + 1
        end
      end
    end
    release_pages()
  until not after
  for _, name in ipairs(every.order) do
    local id = q:id(name)
    if not q:armed(id) then
      arm_slot(id, defined[name], false, nil, nil, nil, 0, true, now, fresh)
      n = n + 1
    end
  end
  registry.subscribe(function(d) M.apply(d.schedules) end)
  arm()
  -- the first fires of schedules new to the store are stored after arming,
  -- in the background (as M.apply does): a fire meanwhile stores its own
  -- record with its run, and a crash before they are stored only means
  -- they are computed again at the next start, as they were here
  if #fresh > 0 then
    require("sluice.sched").spawn({}, save_all, function(ok, err)
      -- stopped meanwhile: the writer refuses what is left; the next start
      -- computes those first fires again
      if not ok and not stopped then log("schedules: %s", type(err) == "table" and err.message or tostring(err)) end
    end, fresh)
  end
  return n
end

--- The fire state of schedule `name` ({name, def, next_at, last_at, runs,
--- enabled, active}) once the scheduler armed it, else nil (a snapshot).
function M.slot(name)
  local id = q:find(name)
  local def = id and live_def(id)
  if not def then return nil end
  local next_at, last_at, runs, active, enabled = q:state(id)
  return { name = name, def = def, next_at = next_at, last_at = last_at, runs = runs, active = active,
    enabled = enabled }
end

--- Stores schedule `name`'s record now, after a change of its
--- definition (the HTTP API) and, when enabled is a boolean, pauses
--- (false) or resumes (true) it, durably: its record in the store says so,
--- and serve keeps it paused across restarts and reloads. A paused
--- schedule's fires are skipped (none is caught up when it resumes). The
--- one path of the REPL's pause/resume and of PUT /schedules. Returns its
--- slot ({name, next_at, ...}), or nil and why not (the slot is as before).
function M.save(name, enabled)
  local id = q:find(name)
  if not (id and live_def(id)) then return nil, ("no schedule '%s'"):format(name) end
  local _, _, _, _, was = q:state(id)
  if enabled ~= nil then q:set_enabled(id, enabled) end
  local ok, err = store.batch():put_schedule(name, record(id)):commit()
  if not ok then
    q:set_enabled(id, was)
    return nil, ("storing schedule %s: %s"):format(name, err)
  end
  if enabled ~= nil then log("schedule %s: %s", name, enabled and "resumed" or "paused") end
  return M.slot(name)
end

--- The record to store for definition d on a host that does not fire the
--- schedules (several hosts share a PostgreSQL store and another holds
--- their lease: lua/api/schedules.lua), over the stored record (nil: none):
--- the fire state stays the stored one's (a changed spec drops its next
--- fire: the firing host re-arms it), enabled (a boolean) pauses or resumes.
function M.unarmed_record(d, stored, enabled)
  local rec = { pipeline = d.pipeline, spec = d.spec:canonical() }
  if stored then
    if stored.spec == rec.spec then rec.next_at = stored.next_at end
    rec.last_at, rec.runs = stored.last_at, stored.runs
  end
  if enabled == nil then enabled = not stored or stored.enabled ~= false end
  rec.enabled = enabled
  if d.tz then rec.tz = d.tz end
  if d.catch_up ~= "latest" then rec.catch_up = d.catch_up end
  if d.overlap ~= "skip" then rec.overlap = d.overlap end
  if d.jitter_ms > 0 then rec.jitter_ms = d.jitter_ms end
  if d.source then
    rec.source, rec.namespace, rec.spec_text = d.source, d.namespace, d.spec_text
    if d.source == "api" then rec.input = d.input end
  end
  return rec
end

--- Pauses (false) or resumes (true) schedule `name` here as another host
--- stored it, without storing anything (lua/api/schedules.lua follows the
--- store). Nothing when it is not armed here.
function M.follow_enabled(name, enabled)
  local id = q:find(name)
  if not (id and live_def(id)) then return end
  local _, _, _, _, was = q:state(id)
  if was ~= enabled then
    q:set_enabled(id, enabled)
    log("schedule %s: %s on another host", name, enabled and "resumed" or "paused")
  end
end

--- Stops firing (the host is shutting down).
function M.stop()
  stopped = true
  if timer and not timer:is_closing() then timer:close() end
end

return M
