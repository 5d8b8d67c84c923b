-- bench/stream.lua: the durable stream benchmark of issue 4, in-process, inside the host.
--
--   sluice bench/stream.lua MODE [ARGS] [--store DIR] [--tag TAG] [--out DIR]
--
-- Every event: type "ev", one of 100 stream keys "k:0".."k:99" (round robin),
-- data = a 100-byte string (the Redis side's XADD field value is 100 bytes too).
-- Durability: sluice has one tier, fsync before ack (an LMDB write transaction
-- committed with its default durable flags by the writer thread's group commit).
--
-- MODE
--   emit C [TOTAL=200000] [SECS=6]   C emitter tasks (sched.spawn), each looping
--                                    `emit` and awaiting its own ack, until TOTAL
--                                    events or SECS seconds: events/s, ack latency
--                                    p50/p99 (hrtime around each emit), writer commits
--   many B [TOTAL=2000000] [C=1] [SECS=6]
--                                    C tasks each looping `emit_many` of B events
--                                    (each awaiting its ack): events/s
--   read [N=1000000] [LIMIT=1000]    fills N events with emit_many(1000) (untimed),
--                                    then reads them all back into Lua tables, paging
--                                    with `after`: (a) the wildcard "k:*" (merges the
--                                    100 keys, the log scan), (b) each key "k:i" in turn
--                                    (the per-key index path); events/s of each.
--                                    A --store DIR already holding N events is not filled again
--
-- The store is a fresh directory: --store DIR, else a new mktemp -d under
-- $TMPDIR (or /tmp), removed at the end. Each measurement prints one JSON line
-- and appends it to bench/out/stream.jsonl (and to $SESSION_OUT if set).
local uv = require "luv"
local storage = require "sluice._store"
local json = require "sluice.json"
local sched = require "sluice.sched"
local stream = require "sluice.stream"

local here = (arg and arg[0] or "bench/stream.lua"):match("^(.*)/[^/]*$") or "."
local root = here .. "/.."

local lib = dofile(here .. "/lib.lua")
local pos, opts = lib.args(arg, { store = true, tag = true, out = true })
local mode = pos[1]
if not mode then
  io.stderr:write("usage: sluice bench/stream.lua emit C [TOTAL] [SECS] | many B [TOTAL] [C] [SECS] | read [N] [LIMIT]\n")
  os.exit(2)
end

local sh, git_rev, proc_status = lib.sh, function() return lib.git_rev(root) end, lib.proc_status

-- CPU ms of the loop thread (tid = pid) and of the other threads (the writer)
local function thread_cpu()
  local f = io.open("/proc/self/stat")
  local pid = f and f:read("n")
  if f then f:close() end
  local loop, others = 0, 0
  local p = pid and io.popen("ls /proc/" .. pid .. "/task 2>/dev/null")
  if not p then return { loop = 0, others = 0 } end
  for tid in p:lines() do
    local g = io.open("/proc/" .. pid .. "/task/" .. tid .. "/stat")
    if g then
      local st = g:read("a")
      g:close()
      local fields = {}
      for x in st:sub(st:find(")", 1, true) + 2):gmatch("%S+") do fields[#fields + 1] = x end
      local ms = (tonumber(fields[12]) + tonumber(fields[13])) * 10
      if tonumber(tid) == pid then loop = loop + ms else others = others + ms end
    end
  end
  p:close()
  return { loop = loop, others = others }
end

local pct, r1, r3, latency = lib.pct, lib.r1, lib.r3, lib.latency

local function out(t)
  t.bench = "sluice.stream"
  t.session = os.getenv("BENCH_SESSION")
  t.mode = t.mode or mode
  t.at = os.date("!%Y-%m-%dT%H:%M:%SZ")
  t.rev = git_rev()
  t.tag = opts.tag
  t.durability = "fsync before ack (the only tier)"
  t.payload_B, t.keys = 100, 100
  t.hwm_kB = proc_status().VmHWM
  local line = json.encode(t)
  io.stdout:write(line, "\n")
  io.stdout:flush()
  local outdir = opts.out or (here .. "/out")
  os.execute("mkdir -p '" .. outdir .. "'")
  for _, path in ipairs({ outdir .. "/stream.jsonl", os.getenv("SESSION_OUT") or false }) do
    local f = path and io.open(path, "a")
    if f then
      f:write(line, "\n")
      f:close()
    end
  end
end

-- the store
local store = lib.store(opts.store, "stream")
local open_store = store.open
local store_kB
local function close_store() store_kB = store.close() end

local function stats()
  local s = storage.stats()
  return { commits = s.commits, batches = s.batches, ops = s.ops }
end
local function stats_diff(a, b)
  local d = {}
  for k, v in pairs(b) do d[k] = v - a[k] end
  return d
end

local together = lib.run_tasks

local PAYLOAD = string.rep("x", 100)
local KEYS = {}
for i = 1, 100 do KEYS[i] = "k:" .. (i - 1) end

local modes = {}

function modes.emit(c, total, secs)
  c, total, secs = tonumber(c) or 1, tonumber(total) or 200000, tonumber(secs) or 6
  open_store()
  local emit = stream.emit
  local hr = uv.hrtime
  local lat, n = {}, 0
  local t0 = hr()
  local deadline = t0 + math.floor(secs * 1e9)
  local list = {}
  for w = 1, c do
    list[w] = function()
      while true do
        local i = n + 1
        if i > total then return end
        n = i
        local a = hr()
        if a > deadline then n = n - 1 return end
        emit("ev", KEYS[i % 100 + 1], PAYLOAD)
        lat[#lat + 1] = (hr() - a) / 1e6
      end
    end
  end
  local s0, cpu0 = stats(), thread_cpu()
  t0 = hr()
  together(list)
  local wall = (hr() - t0) / 1e9
  local sd, cpu1 = stats_diff(s0, stats()), thread_cpu()
  assert(#lat == n, "every emit acked")
  assert(stream.last_seq() == n, "log holds every event")
  close_store()
  out({
    emitters = c, events = n, secs = r3(wall), events_per_s = r1(n / wall), ack = latency(lat),
    writer = sd, events_per_commit = sd.commits > 0 and r1(n / sd.commits) or nil,
    commits_per_s = r1(sd.commits / wall),
    cpu = { loop_ms = cpu1.loop - cpu0.loop, other_threads_ms = cpu1.others - cpu0.others,
            loop_us_per_event = r3((cpu1.loop - cpu0.loop) * 1000 / n),
            loop_busy_pct = r1((cpu1.loop - cpu0.loop) / (wall * 10)) },
    store_kB = store_kB,
  })
end

function modes.many(b, total, c, secs)
  b, total, c, secs = tonumber(b) or 1000, tonumber(total) or 2000000, tonumber(c) or 1, tonumber(secs) or 6
  open_store()
  local emit_many = stream.emit_many
  local hr = uv.hrtime
  -- one batch list per task, reused (emit_many does not keep it)
  local n, lat = 0, {}
  local t0 = hr()
  local deadline
  local list = {}
  for w = 1, c do
    local batch = {}
    for j = 1, b do batch[j] = { "ev", KEYS[(j - 1) % 100 + 1], PAYLOAD } end
    list[w] = function()
      while true do
        if n + b > total then return end
        local a = hr()
        if a > deadline then return end
        n = n + b
        local ids = emit_many(batch)
        lat[#lat + 1] = (hr() - a) / 1e6
        assert(#ids == b)
      end
    end
  end
  local s0, cpu0 = stats(), thread_cpu()
  t0 = hr()
  deadline = t0 + math.floor(secs * 1e9)
  together(list)
  local wall = (hr() - t0) / 1e9
  local sd, cpu1 = stats_diff(s0, stats()), thread_cpu()
  assert(stream.last_seq() == n, "log holds every event")
  close_store()
  out({
    batch = b, emitters = c, events = n, secs = r3(wall), events_per_s = r1(n / wall),
    ack_per_batch = latency(lat), writer = sd, commits_per_s = r1(sd.commits / wall),
    events_per_commit = sd.commits > 0 and r1(n / sd.commits) or nil,
    cpu = { loop_ms = cpu1.loop - cpu0.loop, other_threads_ms = cpu1.others - cpu0.others,
            loop_busy_pct = r1((cpu1.loop - cpu0.loop) / (wall * 10)) },
    store_kB = store_kB,
  })
end

function modes.read(n, limit)
  n, limit = tonumber(n) or 1000000, tonumber(limit) or 1000
  limit = math.tointeger(limit)
  open_store()
  local hr = uv.hrtime
  -- fill (not timed as a read; reported for information)
  local t0 = hr()
  local batch = {}
  for i = 1, 1000 do batch[i] = { "ev", KEYS[(i - 1) % 100 + 1], PAYLOAD } end
  -- a --store DIR that already holds n events (an earlier fill) is read as it is
  local have = stream.last_seq()
  if have ~= 0 and have ~= n then error(("the store holds %d events, not %d"):format(have, n)) end
  if have == 0 then
    for _ = 1, n // 1000 do stream.emit_many(batch) end
  end
  local fill_s = (hr() - t0) / 1e9
  collectgarbage()
  local read = stream.read

  -- (a) the wildcard over the 100 keys, in append order
  local got, pages, bytes = 0, 0, 0
  local after
  local cpu0 = thread_cpu()
  t0 = hr()
  while true do
    local evs, info = read({ stream = "k:*", after = after, limit = limit })
    pages = pages + 1
    local m = #evs
    got = got + m
    if m > 0 then bytes = bytes + #evs[m].data end
    after = info.next
    if m < limit then break end
  end
  local wild_s = (hr() - t0) / 1e9
  local cpu1 = thread_cpu()
  assert(got == n, ("wildcard read %d of %d events"):format(got, n))
  collectgarbage()

  -- (b) each key in turn through the per-key index
  local got2, pages2 = 0, 0
  local cpu2 = thread_cpu()
  t0 = hr()
  for k = 1, 100 do
    local aft
    while true do
      local evs, info = read({ stream = KEYS[k], after = aft, limit = limit })
      pages2 = pages2 + 1
      got2 = got2 + #evs
      aft = info.next
      if #evs < limit then break end
    end
  end
  local key_s = (hr() - t0) / 1e9
  local cpu3 = thread_cpu()
  assert(got2 == n, ("per-key read %d of %d events"):format(got2, n))
  close_store()
  out({
    events = n, limit = limit, fill_s = r3(fill_s), fill_events_per_s = r1(n / fill_s),
    wildcard = { secs = r3(wild_s), events_per_s = r1(n / wild_s), pages = pages,
                 loop_cpu_ms = cpu1.loop - cpu0.loop },
    per_key = { secs = r3(key_s), events_per_s = r1(n / key_s), pages = pages2,
                loop_cpu_ms = cpu3.loop - cpu2.loop },
    store_kB = store_kB,
  })
end

local f = modes[mode]
if not f then
  io.stderr:write("unknown mode " .. tostring(mode) .. "\n")
  os.exit(2)
end
f(table.unpack(pos, 2))
