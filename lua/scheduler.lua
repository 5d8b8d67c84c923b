--- sluice.scheduler: fires the schedules defined with `every` on the loop.
---
--- Each schedule's next and last fire are in the store ("schedules"). A
--- fire at scheduled time T creates the run "<schedule name>@<T in ISO 8601
--- UTC>" in the same commit that moves the schedule past T, so a crash or a
--- restart around a fire never runs that fire twice: the run id exists, and
--- an unfinished run is resumed like any other. Due times live in one binary
--- heap under one loop timer: O(log n) per fire however many schedules.
local host = require "sluice.host"
local json = require "sluice.codec" -- store records: exact
local every = require "sluice.every"
local uv = require "luv"

local M = {}

-- binary heap of {due, seq, sched}, ordered by due then seq
local heap, seq = {}, 0

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
local log = function(...) io.stderr:write(host.iso(host.now()), " ", string.format(...), "\n") end
M.log = log

local function record(sched)
  return json.encode({
    name = sched.name, pipeline = sched.pipeline, spec = sched.spec:canonical(), kind = sched.spec.kind,
    expr = sched.spec.expr, step_s = sched.spec.step_s, days = sched.spec.days, at_s = sched.spec.at_s,
    tz = sched.tz, catch_up = sched.catch_up, overlap = sched.overlap, jitter_ms = sched.jitter_ms,
    next_at = sched.next_at and host.utc(sched.next_at), last_at = sched.last_at and host.utc(sched.last_at),
    runs = sched.runs, enabled = sched.enabled,
  })
end
M.record = record

local function next_after(sched, t)
  local n, err = every.next_fire(sched.spec, t, sched.tz)
  if n == nil then
    log("schedule %s: %s; it will not fire", sched.name, err)
    return nil
  end
  return n or nil
end

local arm

-- fires sched for scheduled time t (Unix seconds). Missed fires being
-- caught up queue behind each other whatever the overlap policy: they are
-- what catch_up asked to run.
local function fire(sched, t, catching_up)
  if sched.enabled == false then return end
  if sched.active > 0 and sched.overlap ~= "allow" then
    if sched.overlap == "skip" and not catching_up then
      log("schedule %s: skipped the fire of %s: its previous run is still running (overlap = skip)",
        sched.name, host.utc(t))
      return
    end
    sched.queue[#sched.queue + 1] = t
    return
  end
  local id = sched.name .. "@" .. host.utc(t)
  local function go()
    if stopped then return end
    sched.active = sched.active + 1
    sched.runs = (sched.runs or 0) + 1
    sched.last_at = t
    M.start_run(sched, id, { "schedules", sched.name, record(sched) }, function()
      sched.active = sched.active - 1
      if sched.active == 0 and #sched.queue > 0 then
        fire(sched, table.remove(sched.queue, 1))
      end
    end)
  end
  if sched.jitter_ms > 0 then
    local j = uv.new_timer()
    j:start(math.random(0, math.floor(sched.jitter_ms)), 0, function()
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
  return host.now() // 1000000
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
    local sched = item[3]
    if sched.next_at == item[1] then -- else superseded
      local t = item[1]
      sched.next_at = next_after(sched, t)
      fire(sched, t)
      if sched.next_at then push(sched.next_at, sched) end
    end
  end
  arm()
end

arm = function()
  if stopped or not heap[1] then return end
  local ms = (heap[1][1] - host.now() / 1e6) * 1000
  uv.update_time()
  timer:start(math.max(0, math.ceil(ms)), 0, on_timer)
end

--- Starts every defined schedule. start_run(sched, run_id, extra_ops,
--- on_end) is the host's way to start a run of sched.pipeline; extra_ops
--- must be committed with the run's creation. Returns the number started.
function M.start(start_run)
  M.start_run = start_run
  timer = timer or uv.new_timer()
  local now = now_s()
  local fresh = {}
  local n = 0
  for _, name in ipairs(every.order) do
    local sched = every.defined[name]
    sched.active, sched.queue = sched.active or 0, sched.queue or {}
    local raw = host.get("schedules", name)
    local stored = raw and json.decode(raw)
    local spec_changed = stored and stored.spec ~= sched.spec:canonical()
    if stored then
      sched.runs = stored.runs or 0
      sched.last_at = stored.last_at and host.parse_time(stored.last_at)
      sched.enabled = stored.enabled ~= false
    else
      sched.runs, sched.enabled = 0, true
    end
    local next_at = (stored and not spec_changed and stored.next_at) and host.parse_time(stored.next_at)
    if next_at and next_at <= now and sched.catch_up ~= "none" then
      -- fires missed while the host was down
      local missed = {}
      local t = next_at
      while t and t <= now and #missed < 10000 do
        missed[#missed + 1] = t
        t = next_after(sched, t)
      end
      if t and t <= now then t = next_after(sched, now) end -- more than 10000 missed
      if sched.catch_up == "latest" then missed = { missed[#missed] } end
      log("schedule %s: catching up %d missed fire(s) (catch_up = %s)", name, #missed, sched.catch_up)
      sched.next_at = t
      for _, mt in ipairs(missed) do fire(sched, mt, true) end
    elseif next_at and next_at > now then
      sched.next_at = next_at
    else
      sched.next_at = next_after(sched, now)
      fresh[#fresh + 1] = sched
    end
    if sched.next_at then push(sched.next_at, sched) end
    n = n + 1
  end
  -- persist the next fire of new schedules, 1000 to a commit so that 100,000
  -- new schedules never hold all their records in memory at once
  for first = 1, #fresh, 1000 do
    local ops = {}
    for i = first, math.min(first + 999, #fresh) do
      local sched = fresh[i]
      ops[#ops + 1], ops[#ops + 2], ops[#ops + 3] = "schedules", sched.name, record(sched)
    end
    local ok, err = host.commit(ops)
    if not ok then error("storing schedules: " .. tostring(err), 0) end
  end
  arm()
  return n
end

--- Stops firing (the host is shutting down).
function M.stop()
  stopped = true
  if timer and not timer:is_closing() then timer:close() end
end

return M
