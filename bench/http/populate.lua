-- bench/http/populate.lua STORE N IDS_FILE: writes N finished runs of the
-- pipelines p0..p9 (completed, every 10th failed) straight into a store, with
-- the same records and listings serve writes (sluice._store's put_run), in
-- commits of 5,000 runs; writes 1,000 of the run ids, one a line, to
-- IDS_FILE for the GET /runs/{id} load.
local clock = require "sluice._clock"
local raw = require "sluice._store_raw"
local storage = require "sluice._store"
local store, n, ids_file = arg[1], tonumber(arg[2]), arg[3]
assert(storage.open(store))
local t0 = clock.hrtime()
local now = clock.now() - n * 1000
local ids = assert(io.open(ids_file, "w"))
local i = 0
while i < n do
  local b = storage.batch()
  for _ = 1, math.min(5000, n - i) do
    i = i + 1
    local us = now + i * 1000
    local id = ("run-%08d"):format(i)
    local failed = i % 10 == 0
    local rec = {
      id = id, pipeline = "p" .. (i % 10), input = { n = i }, status = failed and "failed" or "completed",
      attempt = 1, created_us = us, created_at = clock.iso(us), started_at = clock.iso(us),
      finished_at = clock.iso(us + 500), duration_ms = 0.5, result = not failed and { n = i } or nil,
      error = failed and { message = "step 'x' failed: boom", step = "x" } or nil,
    }
    b:put_run(rec, { new = true })
    if i % (n // 1000) == 0 then ids:write(id, "\n") end
  end
  assert(b:commit())
end
ids:close()
assert(raw.commit({ "meta", "runs_indexed", "1" }))
io.stderr:write(("populated %d runs in %.1f s\n"):format(n, (clock.hrtime() - t0) / 1e9))
