-- bench/stdlib/http.lua URL N C: N GETs of URL from C concurrent tasks with
-- sluice.http (after a warm-up of 2*C requests that opens the connections),
-- each task taking the next request number until N are done. Prints one
-- JSON line: requests/s over the wall time, latency percentiles (hrtime
-- around each http.get), process CPU, VmHWM.
local here = debug.getinfo(1, "S").source:sub(2):match("^(.*)/[^/]*$")
local L = dofile(here .. "/../lib.lua")
local http = require "sluice.http"
local json = require "sluice.json"
local uv = require "luv"

local url, n, c = arg[1], tonumber(arg[2]), tonumber(arg[3])
assert(url and n and c, "usage: sluice bench/stdlib/http.lua URL N C")

local function run(total, lat)
  local next_i = 0
  local tasks = {}
  for t = 1, c do
    tasks[t] = function()
      while true do
        next_i = next_i + 1
        local i = next_i
        if i > total then return end
        local t0 = uv.hrtime()
        local r = assert(http.get(url))
        if lat then lat[i] = (uv.hrtime() - t0) / 1e6 end
        assert(r.status == 200 and #r.body > 10, "bad reply")
      end
    end
  end
  L.run_tasks(tasks)
end

run(2 * c)
local lat = {}
local cpu0 = os.clock()
local t0 = uv.hrtime()
run(n, lat)
local wall = (uv.hrtime() - t0) / 1e9
local cpu = os.clock() - cpu0
local s = L.latency(lat)
print(json.encode({
  bench = "http", impl = "sluice", n = n, concurrency = c, wall_s = L.r3(wall),
  rps = math.floor(n / wall + 0.5), p50_ms = s.p50_ms, p90_ms = s.p90_ms, p99_ms = s.p99_ms,
  max_ms = s.max_ms, cpu_s = L.r3(cpu), hwm_kb = L.proc_status().VmHWM, curl = http.version(),
  rev = L.git_rev(here .. "/../.."),
}))
