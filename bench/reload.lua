-- bench/reload.lua: hot reload latency, from a pipeline file's rename into
-- place to the new version live (issue 12). Run by hand:
--
--   build/sluice bench/reload.lua inproc [N=200] [K=1]   the watcher and the
--       registry in this process; the pipeline is called before and after
--       every poll of the loop until it returns the new version
--   build/sluice bench/reload.lua serve [N=200] [K=1]    a real `sluice serve`
--       child, asked over its control socket to run the pipeline (as `sluice
--       run` hands a run over) again and again until a run returns the new version
--   build/sluice bench/reload.lua log [N=200] [K=1]      the same child; the
--       reload line naming the new source hash is read from its stderr
--
-- The file defines K pipelines, each with an hourly schedule, a K-1 of them
-- unchanged from one version to the next (one pipeline's result changes).
-- Each iteration writes version i to a file outside the watched directory
-- (so that writing it is no event), then times os.rename into place. The
-- next iteration starts only once the previous version is live. Prints one
-- JSON line: latencies in ms (p50, p90, p99, max), the debounce included.
local uv = require "luv"
local ids = require "sluice._ids"
local sched = require "sluice.sched"
local json = require "sluice.json"
local here = debug.getinfo(1, "S").source:match("^@(.*)/[^/]*$") or "bench"
local L = dofile(here .. "/lib.lua")

local mode, n, k = arg[1] or "inproc", tonumber(arg[2] or "200"), tonumber(arg[3] or "1")
local root = L.sh("mktemp -d " .. (os.getenv("TMPDIR") or "/tmp") .. "/sluice-reload.XXXXXX")
local pdir, staging = root .. "/p", root .. "/staging"
os.execute(("mkdir -p '%s' '%s'"):format(pdir, staging))
local target = pdir .. "/b.lua"

local function version(i)
  local parts = { ('pipeline("b", function() return %d end)\nevery.hour("b")\n'):format(i) }
  for j = 2, k do
    parts[j] = ('pipeline("b%d", function() return step("s", function() return %d end) end)\nevery.hour("b%d")\n')
      :format(j, j, j)
  end
  return table.concat(parts)
end

local function write(path, text)
  local f = assert(io.open(path, "wb"))
  f:write(text)
  f:close()
end

-- waits (from a task) until done() holds, checked before the loop polls
-- (after the timers: the watcher's debounce) and after it polled (a pipe read)
local function until_(done)
  local me, handles, settled = coroutine.running(), { uv.new_prepare(), uv.new_check() }, false
  local function test()
    if settled or not done() then return end
    settled = true
    for _, h in ipairs(handles) do h:stop(); h:close() end
    sched.wake(me)
  end
  for _, h in ipairs(handles) do h:start(test) end
  sched.wait()
end

local function measure(live)
  local ms = {}
  for i = 1, n do
    local tmp = staging .. "/b.lua"
    write(tmp, version(i))
    local h = ids.hash(version(i))
    local t0 = uv.hrtime()
    assert(os.rename(tmp, target))
    until_(function() return live(i, h) end)
    ms[#ms + 1] = (uv.hrtime() - t0) / 1e6
  end
  return L.latency(ms)
end

local function inproc()
  local engine = require "sluice.engine"
  local reload = require "sluice.reload"
  write(target, version(0))
  assert(reload.watch(pdir, function() end))
  assert(reload.load_dir(pdir, function() end))
  local res = measure(function(i) local p = engine.pipelines.b; return p and p.fn() == i end)
  reload.stop()
  return res
end

local function serve(by_log)
  write(target, version(0))
  local store = root .. "/store"
  local errp = uv.new_pipe(false)
  local log = {}
  local proc = uv.spawn(os.getenv("SLUICE_BIN") or arg[-1], {
    args = { "serve", pdir, "--store", store }, stdio = { nil, nil, errp },
  }, function() end)
  errp:read_start(function(_, data) if data then log[#log + 1] = data end end)
  local function seen(text) return table.concat(log):find(text, 1, true) ~= nil end
  until_(function() return seen("schedules armed") end)
  local res
  if by_log then
    res = measure(function(_, h) return seen(" -> " .. h .. " in ") end)
  else
    local control = require "sluice.control"
    local cl = assert(control.connect(store))
    local runs = 0
    -- a run over the socket; true once it returns version i
    local function answers(i)
      runs = runs + 1
      local reply = assert(cl:call({ kind = "run", pipeline = "b", id = "r" .. runs }))
      assert(reply.ok, reply.message)
      return reply.run.result == i
    end
    local ms = {}
    for i = 1, n do
      local tmp = staging .. "/b.lua"
      write(tmp, version(i))
      local t0 = uv.hrtime()
      assert(os.rename(tmp, target))
      while not answers(i) do end
      ms[#ms + 1] = (uv.hrtime() - t0) / 1e6
    end
    cl:close()
    res = L.latency(ms)
    res.runs = runs
  end
  proc:kill("sigterm")
  return res
end

local ok, res = sched.go({}, mode == "inproc" and inproc or serve, mode == "log"):await()
os.execute("rm -rf '" .. root .. "'")
if not ok then error(res.traceback or res.message, 0) end
res.mode, res.n, res.k, res.rev = mode, n, k, L.git_rev(here .. "/..")
res.at = os.date("!%Y-%m-%dT%H:%M:%SZ")
print(json.encode(res))
