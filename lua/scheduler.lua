--- sluice.scheduler: fires the schedules defined with `every` on the loop.
---
--- Each schedule's next and last fire are in its store record. A
--- fire at scheduled time T creates the run "<schedule name>@<T in ISO 8601
--- UTC>" in the same commit that moves the schedule past T, so a crash or a
--- restart around a fire never runs that fire twice: the run id exists, and
--- an unfinished run is resumed like any other. Due times live in one binary
--- heap under one loop timer: O(log n) per fire however many schedules.
---
--- What fires is a slot per schedule name, holding the live definition
--- (slot.def, from every.lua through the registry) and the state of its
--- fires (next and last fire, runs in flight, queued fires). A reload swaps
--- slot.def: a changed spec re-arms from the later of now and the last fire,
--- so a fire already recorded never fires again; a removed schedule's slot
--- loses its def and stops firing.
local clock = require "sluice._clock"
local store = require "sluice._store"
local every = require "sluice.every"
local registry = require "sluice.registry"
local uv = require "luv"

local M = {}

-- binary heap of {due, seq, slot}, ordered by due then seq
local heap, seq = {}, 0

local slots = {} -- schedule name -> {name=, def=, active=, queue=, runs=, last_at=, enabled=, next_at=}

local function slot_of(name)
  local slot = slots[name]
  if not slot then
    slot = { name = name, active = 0, queue = {} }
    slots[name] = slot
  end
  return slot
end

local function less(a, b)
  if a[1] ~= b[1] then return a[1] < b[1] end
  return a[2] < b[2]
end

local function push(due, sched)
  seq = seq + 1
  local item = { due, seq, sched }
  local i = #heap + 1
  heap[i] = item
  while i > 1 do
    local p = i // 2
    if not less(heap[i], heap[p]) then break end
    heap[i], heap[p] = heap[p], heap[i]
    i = p
  end
end

local function pop()
  local top = heap[1]
  local last = table.remove(heap)
  if #heap > 0 then
    heap[1] = last
    local i, n = 1, #heap
    while true do
      local l, r, m = 2 * i, 2 * i + 1, i
      if l <= n and less(heap[l], heap[m]) then m = l end
      if r <= n and less(heap[r], heap[m]) then m = r end
      if m == i then break end
      heap[i], heap[m] = heap[m], heap[i]
      i = m
    end
  end
  return top
end

local timer
local stopped = false
local log = require("sluice.log").host -- printf-style, in the --log-format of serve
M.log = log

-- the stored record of a slot (sluice._store encodes it)
local function record(slot)
  local d = slot.def
  return {
    name = d.name, pipeline = d.pipeline, spec = d.spec:canonical(), kind = d.spec.kind,
    expr = d.spec.expr, step_s = d.spec.step_s, days = d.spec.days, at_s = d.spec.at_s,
    tz = d.tz, catch_up = d.catch_up, overlap = d.overlap, jitter_ms = d.jitter_ms,
    next_at = slot.next_at and clock.utc(slot.next_at), last_at = slot.last_at and clock.utc(slot.last_at),
    runs = slot.runs, enabled = slot.enabled,
    -- schedules created over the HTTP API (lua/api/schedules.lua) keep their definition here
    source = d.source, namespace = d.namespace, spec_text = d.spec_text,
    input = d.source == "api" and d.input or nil,
  }
end

local function next_after(slot, t)
  local n, err = every.next_fire(slot.def.spec, t, slot.def.tz)
  if n == nil then
    log("schedule %s: %s; it will not fire", slot.name, err)
    return nil
  end
  return n or nil
end

local arm

-- fires sched for scheduled time t (Unix seconds). Missed fires being
-- caught up queue behind each other whatever the overlap policy: they are
-- what catch_up asked to run.
local function fire(slot, t, catching_up)
  local def = slot.def
  if slot.enabled == false or not def then return end
  if slot.active > 0 and def.overlap ~= "allow" then
    if def.overlap == "skip" and not catching_up then
      log("schedule %s: skipped the fire of %s: its previous run is still running (overlap = skip)",
        slot.name, clock.utc(t))
      return
    end
    slot.queue[#slot.queue + 1] = t
    return
  end
  local id = slot.name .. "@" .. clock.utc(t)
  local function go()
    if stopped or not slot.def then return end -- removed by a reload meanwhile (jitter)
    slot.active = slot.active + 1
    slot.runs = (slot.runs or 0) + 1
    if not slot.last_at or t > slot.last_at then slot.last_at = t end
    local rec = record(slot)
    -- added to the batch that starts the run: the fire and the record
    -- that moves the schedule past it are durable together
    local function extra(b) b:put_schedule(slot.name, rec) end
    M.start_run(slot.def, id, extra, function()
      slot.active = slot.active - 1
      if slot.active == 0 and #slot.queue > 0 then
        fire(slot, table.remove(slot.queue, 1))
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
  while heap[1] and heap[1][1] <= now and started < SLICE do
    started = started + 1
    local item = pop()
    local slot = item[3]
    if slot.def and slot.next_at == item[1] then -- else superseded or removed
      local t = item[1]
      slot.next_at = next_after(slot, t)
      fire(slot, t)
      if slot.next_at then push(slot.next_at, slot) end
    end
  end
  arm()
end

arm = function()
  if stopped or not heap[1] then return end
  local ms = (heap[1][1] - clock.now() / 1e6) * 1000
  uv.update_time()
  timer:start(math.max(0, math.ceil(ms)), 0, on_timer)
end

-- Arms a slot whose def is new to this process (at start, or added by a
-- reload) from its stored record: catches up the fires missed while no
-- host fired it, or computes its first fire (then it is added to fresh,
-- whose records the caller stores).
local function arm_slot(slot, now, fresh)
  local def = slot.def
  local stored, err = store.schedule(slot.name)
  if err then error(("schedule %s: reading its record: %s"):format(slot.name, err), 0) end
  local spec_changed = stored and stored.spec ~= def.spec:canonical()
  if stored then
    slot.runs = stored.runs or 0
    slot.last_at = stored.last_at and clock.parse_time(stored.last_at)
    slot.enabled = stored.enabled ~= false
  else
    slot.runs, slot.enabled = 0, true
  end
  local next_at = (stored and not spec_changed and stored.next_at) and clock.parse_time(stored.next_at)
  if next_at and next_at <= now and def.catch_up ~= "none" and slot.enabled then
    -- fires missed while the host was down
    local missed = {}
    local t = next_at
    while t and t <= now and #missed < 10000 do
      missed[#missed + 1] = t
      t = next_after(slot, t)
    end
    if t and t <= now then t = next_after(slot, now) end -- more than 10000 missed
    if def.catch_up == "latest" then missed = { missed[#missed] } end
    log("schedule %s: catching up %d missed fire(s) (catch_up = %s)", slot.name, #missed, def.catch_up)
    slot.next_at = t
    for _, mt in ipairs(missed) do fire(slot, mt, true) end
  elseif next_at and next_at > now then
    slot.next_at = next_at
  else
    slot.next_at = next_after(slot, math.max(now, slot.last_at or now))
    fresh[#fresh + 1] = slot
  end
  if slot.next_at then push(slot.next_at, slot) end
end

-- stores the records of slots (nil def: deletes it), 1000 to a commit so
-- that 100,000 new schedules never hold all their records in memory at once
local function save_all(list)
  for first = 1, #list, 1000 do
    local b = store.batch()
    for i = first, math.min(first + 999, #list) do
      local slot = list[i]
      if slot.def then b:put_schedule(slot.name, record(slot)) else b:delete_schedule(slot.name) end
    end
    local ok, err = b:commit()
    if not ok then error("storing schedules: " .. tostring(err), 0) end
  end
end

--- Counts a run of schedule `name` resumed by the host (its overlap
--- policy sees it); returns the function to call when it ends.
function M.track(name)
  local slot = slot_of(name)
  slot.active = slot.active + 1
  return function() slot.active = slot.active - 1 end
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
    local slot = slot_of(s.name)
    slot.def, slot.next_at, slot.queue = nil, nil, {}
    dirty[#dirty + 1] = slot
  end
  for _, pair in ipairs(d.kept) do slot_of(pair.new.name).def = pair.new end
  for _, pair in ipairs(d.changed) do
    local slot = slot_of(pair.new.name)
    slot.def = pair.new
    if registry.timing_changed(pair.old, pair.new) then
      slot.next_at = next_after(slot, math.max(now, slot.last_at or now))
      if slot.next_at then push(slot.next_at, slot) end
    end
    dirty[#dirty + 1] = slot
  end
  for _, s in ipairs(d.added) do
    local slot = slot_of(s.name)
    slot.def = s
    arm_slot(slot, now, dirty)
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
--- must be called for it. Returns the number started.
--- From then on the scheduler follows the registry's swaps.
function M.start(start_run)
  M.start_run = start_run
  timer = timer or uv.new_timer()
  local now = now_s()
  local fresh = {}
  local n = 0
  for _, name in ipairs(every.order) do
    local slot = slot_of(name)
    slot.def = every.defined[name]
    arm_slot(slot, now, fresh)
    n = n + 1
  end
  save_all(fresh)
  registry.subscribe(function(d) M.apply(d.schedules) end)
  arm()
  return n
end

--- The fire state of schedule `name` ({name, def, next_at, last_at, runs,
--- enabled, active}) once the scheduler armed it, else nil.
function M.slot(name)
  local slot = slots[name]
  return slot and slot.def and slot or nil
end

--- Stores schedule `name`'s record now, after a change of its
--- definition (the HTTP API) and, when enabled is a boolean, pauses
--- (false) or resumes (true) it, durably: its record in the store says so,
--- and serve keeps it paused across restarts and reloads. A paused
--- schedule's fires are skipped (none is caught up when it resumes). The
--- one path of the REPL's pause/resume and of PUT /schedules. Returns its
--- slot ({name, next_at, ...}), or nil and why not (the slot is as before).
function M.save(name, enabled)
  local slot = slots[name]
  if not (slot and slot.def) then return nil, ("no schedule '%s'"):format(name) end
  local was = slot.enabled
  if enabled ~= nil then slot.enabled = enabled end
  local ok, err = store.batch():put_schedule(name, record(slot)):commit()
  if not ok then
    slot.enabled = was
    return nil, ("storing schedule %s: %s"):format(name, err)
  end
  if enabled ~= nil then log("schedule %s: %s", name, enabled and "resumed" or "paused") end
  return slot
end

--- Stops firing (the host is shutting down).
function M.stop()
  stopped = true
  if timer and not timer:is_closing() then timer:close() end
end

return M
