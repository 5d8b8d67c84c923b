-- bench/replay.lua: the replay of a run's stored steps (issue 14), in-process.
--
--   sluice bench/replay.lua fill DIR [N=10000] [RUNS=5]
--   sluice bench/replay.lua replay DIR [N=10000] [RUNS=5] [--tag TAG]
--
-- fill: RUNS runs "replay-1".."replay-RUNS" of pipeline "replay", each with N
-- completed steps "s1".."sN" whose result is {i = i, ok = true}, written as the
-- engine writes them (b:put_step, one record per step) in one commit per run,
-- and the run record left "failed" (as after a crash, the run resumes).
-- replay: resumes each run with engine.execute: the pipeline calls the N steps
-- in order and every one returns its stored result (none runs). Prints one
-- JSON line per run and a summary line: the replay (loading the stored steps
-- and the pipeline's body: wall and process CPU per step), and the whole
-- engine.execute, which adds the run's start and finish commits (fsyncs).
-- bench/replay.sh runs this beside bench/floor/lmdb_scan.c (a bare cursor scan
-- of the same records in the same store) and interleaves binaries.
local uv = require "luv"
local storage = require "sluice._store"
local engine = require "sluice.engine"
local clock = require "sluice._clock"
local json = require "sluice.json"

local mode, dir = arg[1], arg[2]
local n, runs = math.tointeger(tonumber(arg[3] or 10000)), math.tointeger(tonumber(arg[4] or 5))
local tag
for i = 1, #arg do if arg[i] == "--tag" then tag = arg[i + 1] end end
if (mode ~= "fill" and mode ~= "replay") or not dir then
  io.stderr:write("usage: sluice bench/replay.lua fill|replay DIR [N] [RUNS] [--tag TAG]\n")
  os.exit(2)
end
assert(storage.open(dir))

-- the replay proper is the loading of the stored steps (whichever
-- sluice._store function the engine calls for it) and the pipeline's body;
-- the run's start and finish commits (two fsyncs) are timed apart
local cpu_us = function()
  local r = uv.getrusage()
  return (r.utime.sec + r.stime.sec) * 1e6 + r.utime.usec + r.stime.usec
end
local load_ns, load_cpu = 0, 0
for _, name in ipairs({ "replay_steps", "load_steps" }) do
  local f = storage[name]
  if f then
    storage[name] = function(...)
      local t0, c0 = uv.hrtime(), cpu_us()
      local a, b, c = f(...)
      load_ns, load_cpu = load_ns + (uv.hrtime() - t0), load_cpu + (cpu_us() - c0)
      return a, b, c
    end
  end
end
local calls = 0
local body_ns, body_cpu = 0, 0
local p = pipeline("replay", function()
  local t0, c0 = uv.hrtime(), cpu_us()
  local last
  for i = 1, n do
    last = step("s" .. i, function() calls = calls + 1; return { i = i, ok = true } end)
  end
  body_ns, body_cpu = uv.hrtime() - t0, cpu_us() - c0
  return last
end)

if mode == "fill" then
  for r = 1, runs do
    local id = "replay-" .. r
    local now = clock.now()
    local rec = { id = id, pipeline = "replay", status = "failed", attempt = 1, created_at = clock.iso(now),
      created_us = now, started_at = clock.iso(now), finished_at = clock.iso(now),
      error = { message = "bench: stopped after the last step" } }
    local b = storage.batch():put_run(rec, { new = true })
    for i = 1, n do
      assert(b:put_step(id, "", i, "s" .. i, "completed", 1, now + i, 5, { i = i, ok = true }))
    end
    assert(b:commit())
  end
  storage.close()
  return
end

local per, per_cpu, per_exec = {}, {}, {}
local r3 = function(x) return math.floor(x * 1000 + 0.5) / 1000 end
for r = 1, runs do
  collectgarbage()
  collectgarbage()
  load_ns, load_cpu = 0, 0
  local c0, t0 = cpu_us(), uv.hrtime()
  local rec = engine.execute(p, nil, "replay-" .. r)
  local exec_ms, exec_cpu_ms = (uv.hrtime() - t0) / 1e6, (cpu_us() - c0) / 1000
  assert(rec.status == "completed" and rec.replayed == n and rec.executed == 0 and calls == 0,
    "replay ran a step, or did not replay every one")
  assert(rec.result.i == n and rec.result.ok == true)
  local replay_ms, replay_cpu_ms = (load_ns + body_ns) / 1e6, (load_cpu + body_cpu) / 1000
  per[r], per_cpu[r], per_exec[r] = replay_ms, replay_cpu_ms, exec_ms
  io.stdout:write(json.encode({ bench = "sluice.replay", run = r, steps = n, tag = tag,
    replay_ms = r3(replay_ms), us_per_step = r3(replay_ms * 1000 / n), cpu_us_per_step = r3(replay_cpu_ms * 1000 / n),
    load_ms = r3(load_ns / 1e6), body_ms = r3(body_ns / 1e6),
    execute_ms = r3(exec_ms), execute_cpu_ms = r3(exec_cpu_ms) }), "\n")
end
table.sort(per)
table.sort(per_cpu)
table.sort(per_exec)
local mid = (runs + 1) // 2
io.stdout:write(json.encode({ bench = "sluice.replay.summary", steps = n, runs = runs, tag = tag,
  median_us_per_step = r3(per[mid] * 1000 / n), best_us_per_step = r3(per[1] * 1000 / n),
  median_cpu_us_per_step = r3(per_cpu[mid] * 1000 / n), best_cpu_us_per_step = r3(per_cpu[1] * 1000 / n),
  median_execute_us_per_step = r3(per_exec[mid] * 1000 / n),
  hwm_kB = (function()
    for line in io.lines("/proc/self/status") do
      local v = line:match("^VmHWM:%s+(%d+)")
      if v then return tonumber(v) end
    end
  end)() }), "\n")
storage.close()
