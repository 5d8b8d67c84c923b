-- bench/stdlib/csv.lua PATH MODE: streams the CSV at PATH with
-- csv.rows (MODE "arrays": rows as arrays; "records": header = true) and
-- counts the records, sampling VmRSS every 10,000 records. One JSON line:
-- records/s, MB/s, the RSS peak while streaming, VmHWM.
local here = debug.getinfo(1, "S").source:sub(2):match("^(.*)/[^/]*$")
local L = dofile(here .. "/../lib.lua")
local csv = require "sluice.csv"
local json = require "sluice.json"
local uv = require "luv"

local path, mode = arg[1], arg[2] or "arrays"
local f = assert(io.open(path, "rb"))
local bytes = f:seek("end")
f:close()
local opts = mode == "records" and { header = true } or nil
local n, rss_peak, fields = 0, 0, 0
local t0 = uv.hrtime()
for row in csv.rows(path, opts) do
  n = n + 1
  if n % 10000 == 0 then
    local rss = L.proc_status().VmRSS
    if rss > rss_peak then rss_peak = rss end
  end
  if n == 1 then for _ in pairs(row) do fields = fields + 1 end end
end
local wall = (uv.hrtime() - t0) / 1e9
print(json.encode({
  bench = "csv", impl = "sluice", mode = mode, records = n, fields = fields, bytes = bytes,
  wall_s = L.r3(wall), records_per_s = math.floor(n / wall + 0.5),
  mb_per_s = L.r1(bytes / 1e6 / wall), rss_peak_kb = rss_peak, hwm_kb = L.proc_status().VmHWM,
}))
