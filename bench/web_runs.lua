-- bench/web_runs.lua: fills a store with N finished runs for the dashboard
-- benchmark (bench/web_first_paint.py), written the way the engine writes
-- them: each record with its listing entries (sluice._store's put_run), 10,000
-- runs per durable commit. Five pipelines, one run a second back from now,
-- 90% completed, 8% failed (with an error and a traceback), 2% cancelled.
--
--   sluice bench/web_runs.lua --store DIR [N=1000000]
--
-- Prints one JSON line: {runs, seconds, store_kB}.
local here = arg[0]:match("^(.*)/[^/]*$") or "."
local L = dofile(here .. "/lib.lua")
local clock = require "sluice._clock"
local raw = require "sluice._store_raw"
local ids = require "sluice._ids"
local store = require "sluice._store"
local json = require "sluice.json"
local sched = require "sluice.sched"

local pos, opts = L.args(arg, { store = true })
local n = math.tointeger(tonumber(pos[1] or "1000000"))
assert(opts.store, "usage: sluice bench/web_runs.lua --store DIR [N]")
assert(n and n > 0, "N must be a positive integer")

local PIPELINES = { "etl", "gcp/cost/billing", "orders-sync", "report", "nightly" }
local BATCH = 10000

local s = L.store(opts.store, "web")
s.open()
local t0 = clock.hrtime()
local now = clock.now()
local ok, err = sched.go({}, function()
  local done = 0
  while done < n do
    -- the listings are written with the records: serve need not build them
    local b = store.batch()
    if done == 0 then raw.ops(b, { "meta", "runs_indexed", "1" }) end
    for _ = 1, math.min(BATCH, n - done) do
      done = done + 1
      local created = now - (n - done) * 1000000 -- one a second, the newest now
      local k = done % 50
      local status = k < 4 and "failed" or k == 4 and "cancelled" or "completed"
      local dur = 40 + (done * 7919) % 4000
      local rec = {
        id = ids.new_id(), pipeline = PIPELINES[done % #PIPELINES + 1], status = status, attempt = 1,
        input = { day = clock.iso(created):sub(1, 10), n = done },
        created_at = clock.iso(created), created_us = created,
        started_at = clock.iso(created + 2000), finished_at = clock.iso(created + 2000 + dur * 1000),
        duration_ms = dur, trigger = { kind = done % 3 == 0 and "schedule" or "http", by = json.null },
        source_hash = "e00009d23ab33347",
      }
      if status == "completed" then
        rec.result = { rows = done % 997, ok = true }
      elseif status == "failed" then
        rec.error = { message = "step 'fetch' failed: pipelines/etl.lua:12: upstream said 503", step = "fetch",
          traceback = "stack traceback:\n\tpipelines/etl.lua:12: in function <pipelines/etl.lua:11>" }
      else
        rec.error = { message = "cancelled", reason = "cancelled" }
      end
      b:put_run(rec, { new = true })
    end
    local cok, msg, code = b:commit()
    if not cok then error(("commit: %s (%s)"):format(msg, code), 0) end
  end
end):await()
if not ok then error(err, 0) end
local secs = (clock.hrtime() - t0) / 1e9
local kB = s.close()
print(json.encode({ runs = n, seconds = L.r1(secs), store_kB = kB }))
