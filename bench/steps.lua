-- bench/steps.lua: durable-step benchmarks, run inside the host.
--
--   sluice bench/steps.lua MODE [ARGS] [--store DIR] [--tag TAG]
--
-- MODE
--   seq [N=10000]           one run of N sequential trivial steps: per-step
--                           latency (hrtime around each step call, inside the
--                           pipeline) p50/p90/p99/max and steps/s
--   conc R [TOTAL=200000]   R concurrent runs, each of ceil(TOTAL/R) trivial
--                           steps: aggregated durable steps/s, writer commits
--                           (batches per commit shows the group commit)
--   wf W C                  W runs ("workflows") of 3 trivial steps, C at a
--                           time (a worker pool; DBOS peer workload b)
--   replay [N=10000]        N steps stored by a run that then fails, then the
--                           resume of that run (engine.execute, same id) is
--                           timed: the replay cost
--   idle [SECONDS=3]        spawns `sluice bench/steps.lua idle-child`
--                           (store open, engine loaded, waiting on a timer)
--                           and reads its /proc/PID/status from outside
--   idle-child [SECONDS]    (the child of idle)
--
-- The store is a fresh directory: --store DIR, else $SLUICE_BENCH_STORE,
-- else a new mktemp -d under $TMPDIR (or /tmp) that is removed at the end.
-- Every measurement prints one JSON line on stdout and appends it to
-- bench/out/steps.jsonl (with mode, date, sluice git rev, host, peak RSS).
local uv = require "luv"
local raw = require "sluice._store_raw"
local storage = require "sluice._store"
local json = require "sluice.json"
local engine = require "sluice.engine"
local sched = require "sluice.sched"

local here = (arg and arg[0] or "bench/steps.lua"):match("^(.*)/[^/]*$") or "."
local root = here .. "/.."
local self_bin = arg and arg[-1] or "sluice"

---------------------------------------------------------------------------
-- arguments

local lib = dofile(here .. "/lib.lua")
local pos, opts = lib.args(arg, { store = true, tag = true, out = true })
local mode = pos[1]
if not mode then
  io.stderr:write("usage: sluice bench/steps.lua seq|conc|wf|replay|idle [ARGS] [--store DIR] [--tag TAG]\n")
  os.exit(2)
end

---------------------------------------------------------------------------
-- helpers

local sh, git_rev, proc_status = lib.sh, function() return lib.git_rev(root) end, lib.proc_status

local function mem(pid)
  local s = proc_status(pid)
  return { rss_kB = s.VmRSS, hwm_kB = s.VmHWM, rss_anon_kB = s.RssAnon, rss_file_kB = s.RssFile,
           rss_shmem_kB = s.RssShmem }
end

local pct, r1, r3, latency = lib.pct, lib.r1, lib.r3, lib.latency

local store_kB -- size of the store's data.mdb, set when it closes
local cpu_at_close -- per-thread CPU times just before the store (and its writer thread) closed

-- peak of the Lua heap, sampled every 20 ms on a loop timer while a mode runs
local heap_peak_kB, heap_timer = 0, nil
local function heap_sample()
  local kb = collectgarbage("count")
  if kb > heap_peak_kB then heap_peak_kB = kb end
end
local function proc_io()
  local f = io.open("/proc/self/io")
  if not f then return nil end
  local t = {}
  for line in f:lines() do
    local k, v = line:match("^([%w_]+): (%d+)")
    if k then t[k] = tonumber(v) end
  end
  f:close()
  return t
end
-- CPU time of each thread of this process (ms): the loop thread (tid = pid)
-- and the others (LMDB's writer thread; libuv's pool if used)
local function my_pid()
  local f = io.open("/proc/self/stat")
  local pid = f and f:read("n")
  if f then f:close() end
  return pid
end
local function thread_cpu()
  local pid = my_pid()
  local t = {}
  local p = pid and io.popen("ls /proc/" .. pid .. "/task 2>/dev/null")
  if not p then return t end
  for tid in p:lines() do
    local f = io.open("/proc/" .. pid .. "/task/" .. tid .. "/stat")
    if f then
      local st = f:read("a")
      f:close()
      local fields = {}
      for x in st:sub(st:find(")", 1, true) + 2):gmatch("%S+") do fields[#fields + 1] = x end
      t[tonumber(tid)] = (tonumber(fields[12]) + tonumber(fields[13])) * 10 -- ms, CLK_TCK 100
    end
  end
  p:close()
  t.pid = pid
  t.hr = uv.hrtime()
  return t
end
local io0, cpu0, wall0
local function heap_start()
  io0 = proc_io()
  cpu0 = thread_cpu()
  wall0 = uv.hrtime()
  heap_timer = uv.new_timer()
  heap_timer:start(0, 20, heap_sample)
  uv.unref(heap_timer)
end

local function emit(t)
  if heap_timer then
    heap_sample()
    heap_timer:stop()
    heap_timer:close()
    heap_timer = nil
    t.lua_heap = { peak_kB = math.floor(heap_peak_kB), end_kB = math.floor(collectgarbage("count")) }
  end
  local io1 = io0 and proc_io()
  if io1 then
    -- bytes the process wrote with write/pwrite (LMDB's pages and meta), and
    -- per writer commit: how many pages a group commit costs
    t.io = { wchar_kB = math.floor((io1.wchar - io0.wchar) / 1024),
             write_bytes_kB = math.floor((io1.write_bytes - io0.write_bytes) / 1024) }
    if t.writer and t.writer.commits and t.writer.commits > 0 then
      t.io.wchar_per_commit_B = math.floor((io1.wchar - io0.wchar) / t.writer.commits)
    end
  end
  t.store_kB = store_kB
  if cpu0 and cpu0.pid then
    local cpu1 = cpu_at_close or thread_cpu()
    local loop, others = 0, 0
    for tid, ms in pairs(cpu1) do
      if tid ~= "pid" and tid ~= "hr" then
        local d = ms - (cpu0[tid] or 0)
        if tid == cpu1.pid then loop = loop + d else others = others + d end
      end
    end
    local wall = ((cpu_at_close and cpu_at_close.hr or uv.hrtime()) - wall0) / 1e6
    -- of the whole mode (setup included): how busy the loop thread was
    t.cpu = { loop_thread_ms = loop, other_threads_ms = others, wall_ms = math.floor(wall),
              loop_busy_pct = r1(100 * loop / wall) }
  end
  t.bench = "sluice.steps"
  t.session = os.getenv("BENCH_SESSION")
  t.mode = t.mode or mode
  t.at = os.date("!%Y-%m-%dT%H:%M:%SZ")
  t.rev = git_rev()
  t.tag = opts.tag
  local where = opts.store or os.getenv("SLUICE_BENCH_STORE") or ""
  t.store = where:match("^postgres") and "postgresql" or "lmdb"
  t.durability = t.store == "lmdb" and "fsync (default)" or "the server's synchronous_commit (default on)"
  local line = json.encode(t)
  io.stdout:write(line, "\n")
  io.stdout:flush()
  local outdir = opts.out or (here .. "/out")
  os.execute("mkdir -p '" .. outdir .. "'")
  for _, path in ipairs({ outdir .. "/steps.jsonl", os.getenv("SESSION_OUT") or false }) do
    local f = path and io.open(path, "a")
    if f then
      f:write(line, "\n")
      f:close()
    end
  end
end

local function ms_since(t0) return (uv.hrtime() - t0) / 1e6 end

-- the store
local store = lib.store(opts.store or os.getenv("SLUICE_BENCH_STORE"), "bench")
local store_dir = store.dir
local open_store = store.open
local function close_store()
  cpu_at_close = thread_cpu() -- the writer thread ends with the store
  store_kB = store.close()
end

local function stats()
  local s = storage.stats()
  -- lmdb_commits: the LMDB transactions committed (writer.c defers step records)
  return { commits = s.commits, batches = s.batches, ops = s.ops, grows = s.grows, lmdb_commits = s.lmdb_commits or 0 }
end
local function stats_diff(a, b)
  local d = {}
  for k, v in pairs(b) do d[k] = v - a[k] end
  if d.commits > 0 then d.batches_per_commit = r1(d.batches / d.commits) end
  return d
end

local run_tasks = lib.run_tasks

local function check(rec, what)
  if not rec or rec.status ~= "completed" then
    error(("%s: run did not complete: %s"):format(what,
      rec and rec.error and rec.error.message or tostring(rec and rec.status)), 0)
  end
  return rec
end

---------------------------------------------------------------------------
-- modes

local modes = {}

function modes.seq(n)
  n = tonumber(n) or 10000
  open_store()
  local lat = {}
  local hr = uv.hrtime
  local p = pipeline("seq", function()
    local last
    for i = 1, n do
      local t0 = hr()
      last = step("s" .. i, function() return { i = i, ok = true } end)
      lat[i] = (hr() - t0) / 1e6
    end
    return last
  end)
  local s0 = stats()
  local t0 = hr()
  local rec = check(engine.execute(p, nil, "seq-" .. n), "seq")
  local total = ms_since(t0)
  assert(rec.result.i == n, "bad result")
  local sd = stats_diff(s0, stats())
  close_store()
  emit({
    steps = n, total_ms = r1(total), steps_per_s = r1(n / (total / 1000)),
    per_step = latency(lat), writer = sd, mem = mem(),
  })
end

function modes.conc(nruns, total)
  nruns = tonumber(nruns) or 64
  total = tonumber(total) or 200000
  local k = math.ceil(total / nruns)
  open_store()
  local p = dofile(here .. "/pg_pipes/conc.lua") -- the pipeline bench/pg_serve.py serves
  local list, recs = {}, {}
  for r = 1, nruns do
    list[r] = function()
      recs[r] = engine.execute(p, { k = k }, ("conc-%d-%05d"):format(nruns, r))
    end
  end
  local s0 = stats()
  local t0 = uv.hrtime()
  run_tasks(list)
  local wall = ms_since(t0)
  local sd = stats_diff(s0, stats())
  local steps = 0
  for r = 1, nruns do
    check(recs[r], "conc run " .. r)
    steps = steps + recs[r].executed
  end
  assert(steps == nruns * k, "step count")
  local m = mem()
  close_store()
  emit({
    runs = nruns, steps_per_run = k, steps = steps, total_ms = r1(wall),
    steps_per_s = r1(steps / (wall / 1000)), writer = sd,
    commits_per_s = r1(sd.commits / (wall / 1000)), mem = m,
  })
end

function modes.wf(nwf, c)
  nwf = tonumber(nwf) or 1000
  c = tonumber(c) or 32
  open_store()
  local p = pipeline("three", function(x)
    local a = step("s1", function() return { a = x } end)
    local b = step("s2", function() return { b = a.a + 1 } end)
    local cc = step("s3", function() return { c = b.b + 2 } end)
    return { x = x, sum = a.a + b.b + cc.c }
  end)
  -- warm-up, as the peer does (100 workflows at 8)
  local function batch(n, conc, tag)
    local lat, next_i = {}, 0
    local workers = {}
    for w = 1, conc do
      workers[w] = function()
        while true do
          next_i = next_i + 1
          local i = next_i
          if i > n then return end
          local t0 = uv.hrtime()
          local rec = check(engine.execute(p, i, ("%s-%d"):format(tag, i)), "wf")
          lat[#lat + 1] = ms_since(t0)
          assert(rec.result.sum == 3 * i + 4, "bad result")
        end
      end
    end
    local t0 = uv.hrtime()
    run_tasks(workers)
    return ms_since(t0), lat
  end
  batch(100, 8, "warm")
  local s0 = stats()
  local wall, lat = batch(nwf, c, "wf-c" .. c)
  local sd = stats_diff(s0, stats())
  local m = mem()
  close_store()
  emit({
    workflows = nwf, steps_per_workflow = 3, concurrency = c, total_ms = r1(wall),
    workflows_per_s = r1(nwf / (wall / 1000)), steps_per_s = r1(3 * nwf / (wall / 1000)),
    per_workflow = latency(lat), writer = sd, mem = m,
  })
end

function modes.replay(n)
  n = tonumber(n) or 10000
  open_store()
  local fail_after = true
  local calls = 0
  local p = pipeline("replay", function()
    local last
    for i = 1, n do
      last = step("s" .. i, function() calls = calls + 1; return { i = i, ok = true } end)
    end
    if fail_after then error("bench: fail after the last step so the run stays unfinished") end
    return last
  end)
  local id = "replay-" .. n
  local t0 = uv.hrtime()
  local rec1 = engine.execute(p, nil, id)
  local first_ms = ms_since(t0)
  assert(rec1.status == "failed" and calls == n, "first execution should fail after storing every step")
  fail_after = false
  collectgarbage()
  -- the resume: every step replayed from the store
  local s0 = stats()
  t0 = uv.hrtime()
  local rec2 = check(engine.execute(p, nil, id), "replay")
  local replay_ms = ms_since(t0)
  local sd = stats_diff(s0, stats())
  assert(calls == n and rec2.replayed == n and rec2.executed == 0, "replay ran a step again")
  -- where the time goes, outside the engine: reading the stored steps as the
  -- engine's loader does, then turning each stored result into a value
  local breakdown = {}
  t0 = uv.hrtime()
  local _, vals = raw.scan("steps", id .. "\0")
  breakdown.scan_ms = r3(ms_since(t0))
  local bytes = 0
  for i = 1, #vals do bytes = bytes + #vals[i] end
  breakdown.stored_bytes = bytes
  if storage.load_steps then
    -- done[id] = the result's JSON (true: nil, false: failed)
    local codec = require "sluice._codec"
    t0 = uv.hrtime()
    local done = storage.load_steps(id)
    breakdown.load_steps_ms = r3(ms_since(t0))
    t0 = uv.hrtime()
    for _, v in pairs(done) do if type(v) == "string" then codec.try_decode(v) end end
    breakdown.step_results_ms = r3(ms_since(t0))
  end
  -- the pipeline's own per-step work without the engine (the id string, the
  -- closure): part of replay_ms that any pipeline shaped like this one pays
  do
    local sink
    local noop = function(_, f) sink = f end
    t0 = uv.hrtime()
    for i = 1, n do noop("s" .. i, function() calls = calls + 1; return { i = i, ok = true } end) end
    breakdown.pipeline_loop_ms = r3(ms_since(t0))
    sink = nil
  end
  -- an empty run's start+finish (two commits), the fixed part of any resume
  local q = pipeline("empty", function() return 1 end)
  t0 = uv.hrtime()
  check(engine.execute(q, nil, "empty-1"), "empty")
  breakdown.empty_run_ms = r3(ms_since(t0)) -- two commits: run started, run finished
  local m = mem()
  close_store()
  emit({
    steps = n, first_execution_ms = r1(first_ms), replay_ms = r3(replay_ms),
    replay_us_per_step = r3(replay_ms * 1000 / n), replayed = rec2.replayed,
    breakdown = breakdown,
    writer = sd, mem = m,
  })
end

modes["idle-child"] = function(secs)
  secs = tonumber(secs) or 3
  open_store()
  -- the engine is loaded (required above); define a pipeline like a user would
  pipeline("idle", function() return step("one", function() return 1 end) end)
  io.stdout:write("ready\n")
  io.stdout:flush()
  local co = coroutine.running()
  local t = uv.new_timer()
  t:start(math.floor(secs * 1000), 0, function() t:close(); coroutine.resume(co) end)
  coroutine.yield()
  close_store()
end

function modes.idle(secs)
  secs = tonumber(secs) or 3
  local out = uv.new_pipe(false)
  local exited = false
  -- the child is killed, so it cannot remove its store: this process owns it
  local dir = store_dir or sh("mktemp -d " .. (os.getenv("TMPDIR") or "/tmp") .. "/sluice-bench.XXXXXX")
  local args = { arg[0], "idle-child", tostring(secs + 2), "--store", dir }
  local handle, pid = uv.spawn(self_bin, { args = args, stdio = { nil, out, 2 } },
    function() exited = true end)
  assert(handle, pid)
  local co = coroutine.running()
  local got = ""
  local ready = false
  out:read_start(function(err, data)
    assert(not err, err)
    if data then got = got .. data end
    if not ready and got:find("ready\n", 1, true) then
      ready = true
      coroutine.resume(co)
    end
  end)
  coroutine.yield() -- until the child is ready
  local t = uv.new_timer()
  t:start(math.floor(secs * 1000), 0, function() t:close(); coroutine.resume(co) end)
  coroutine.yield() -- idle for secs
  local m = mem(pid)
  local f = io.open("/proc/" .. pid .. "/stat")
  local cpu
  if f then
    local st = f:read("a"); f:close()
    local fields = {}
    for x in st:sub(st:find(")", 1, true) + 2):gmatch("%S+") do fields[#fields + 1] = x end
    cpu = (tonumber(fields[12]) + tonumber(fields[13])) * 10 -- ms (CLK_TCK 100)
  end
  uv.process_kill(handle, "sigterm")
  local t2 = uv.new_timer()
  t2:start(200, 0, function() t2:close(); coroutine.resume(co) end)
  coroutine.yield()
  out:read_stop(); out:close(); handle:close()
  if not store_dir then os.execute("rm -rf '" .. dir .. "'") end
  emit({ idle_s = secs, pid = pid, cpu_ms_total = cpu, mem = m })
end

local fn = modes[mode]
if not fn then
  io.stderr:write("unknown mode '" .. mode .. "'\n")
  os.exit(2)
end
if mode ~= "idle" and mode ~= "idle-child" then heap_start() end
fn(table.unpack(pos, 2))
