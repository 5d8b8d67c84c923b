-- bench/map.lua: throughput and memory of `map` (lua/flow.lua), run by hand
-- inside the host:
--
--   sluice bench/map.lua [N=100000] [CONCURRENCY=64] [--store DIR]
--
-- One run maps N trivial items (each a durable step, fsync'ed by group
-- commit: the default durability) with CONCURRENCY in flight, and reports
-- items/s, the writer's commits (items per commit shows the group commit),
-- the peak RSS (VmHWM) and the peak Lua heap. The run then fails on purpose
-- after the map, and its resume is timed: N items replayed from the store.
-- Prints one JSON line. The store is --store DIR or a fresh mktemp -d that
-- is removed at the end.
local uv = require "luv"
local storage = require "sluice._store"
local json = require "sluice.json"
local engine = require "sluice.engine"
local flow = require "sluice.flow"

local here = (arg and arg[0] or "bench/map.lua"):match("^(.*)/[^/]*$") or "."
local lib = dofile(here .. "/lib.lua")
local pos, opts = lib.args(arg, { store = true })
local N = tonumber(pos[1]) or 100000
local C = tonumber(pos[2]) or 64

local status_kB = lib.proc_status
local store = lib.store(opts.store, "bench-map")
store.open()

-- the Lua heap's peak, sampled on a loop timer while the map runs
local heap_peak = 0
local sampler = uv.new_timer()
sampler:start(0, 10, function()
  local kb = collectgarbage("count")
  if kb > heap_peak then heap_peak = kb end
end)
uv.unref(sampler)

local items = {}
for i = 1, N do items[i] = i end
local fail_after = true
local p = pipeline("bench_map", function()
  local r = map("item", items, function(x) return x end, { concurrency = C })
  if fail_after then error("bench: fail after the map so the run can be resumed") end
  return #r
end)

local mem0 = status_kB()
local s0 = storage.stats()
local t0 = uv.hrtime()
local rec = engine.execute(p, nil, "bench-map")
local ms = (uv.hrtime() - t0) / 1e6
local s1 = storage.stats()
local mem1 = status_kB()
assert(rec.status == "failed" and rec.executed == N,
  "the first execution should run every item: " .. tostring(rec.error and rec.error.message))

-- the resume: every item replayed from the store, none run
fail_after = false
collectgarbage()
local t1 = uv.hrtime()
local rec2 = engine.execute(p, nil, "bench-map")
local replay_ms = (uv.hrtime() - t1) / 1e6
assert(rec2.status == "completed" and rec2.replayed == N and rec2.executed == 0, "the replay ran items again")
local mem2 = status_kB()
sampler:stop()
sampler:close()

local commits = s1.commits - s0.commits
local r1 = lib.r1
io.stdout:write(json.encode({
  bench = "sluice.map", items = N, concurrency = C, durability = "fsync (default)",
  total_ms = r1(ms), items_per_s = r1(N / (ms / 1000)),
  writer = { commits = commits, items_per_commit = commits > 0 and r1(N / commits) or nil,
             commits_per_s = r1(commits / (ms / 1000)) },
  replay = { total_ms = r1(replay_ms), us_per_item = r1(replay_ms * 1000 / N) },
  mem = { rss_before_kB = mem0.VmRSS, rss_after_map_kB = mem1.VmRSS, rss_after_replay_kB = mem2.VmRSS,
          peak_rss_kB = mem2.VmHWM, lua_heap_peak_kB = math.floor(heap_peak) },
  peak_workers = flow.stats.peak_workers,
  at = os.date("!%Y-%m-%dT%H:%M:%SZ"),
}), "\n")

store.close()
