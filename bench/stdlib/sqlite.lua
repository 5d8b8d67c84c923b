-- bench/stdlib/sqlite.lua DB N [CSV]: db:insert_many of N generated
-- records (id, name, email, score, created) into a fresh table of DB, in
-- one transaction with SQLite's default durability (rollback journal,
-- synchronous=FULL). The records are built before the clock starts; the
-- time is insert_many's alone. With CSV (the same rows, the file the
-- sqlite3 shell imports) it also times a whole load from the file into a
-- fresh table: csv.rows -> batches of 50,000 records -> one insert_many
-- (one transaction) per batch. One JSON line per measurement.
local here = debug.getinfo(1, "S").source:sub(2):match("^(.*)/[^/]*$")
local L = dofile(here .. "/../lib.lua")
local sqlite = require "sluice.sqlite"
local csv = require "sluice.csv"
local json = require "sluice.json"
local uv = require "luv"

local path, n, csv_path = arg[1], tonumber(arg[2]), arg[3]
local schema = "CREATE TABLE t (id INTEGER PRIMARY KEY, name TEXT, email TEXT, score REAL, created TEXT)"

os.remove(path)
local db = sqlite.open(path)
db:exec(schema)
local recs = {}
for i = 1, n do
  recs[i] = { id = i, name = "name " .. i, email = "user" .. i .. "@example.com", score = i * 0.25,
    created = "2026-12-01T00:00:00Z" }
end
local t0 = uv.hrtime()
local count = db:insert_many("t", recs)
local wall = (uv.hrtime() - t0) / 1e9
assert(count == n and db:rows("SELECT count(*) AS c FROM t")[1].c == n)
db:close()
print(json.encode({
  bench = "sqlite", impl = "sluice", what = "insert_many", rows = n, wall_s = L.r3(wall),
  rows_per_s = math.floor(n / wall + 0.5), hwm_kb = L.proc_status().VmHWM, sqlite = sqlite.version(),
}))

if csv_path then
  recs = nil
  collectgarbage()
  os.remove(path)
  db = sqlite.open(path)
  db:exec(schema)
  t0 = uv.hrtime()
  local batch, total = {}, 0
  for r in csv.rows(csv_path, { header = { "id", "name", "email", "score", "created" } }) do
    batch[#batch + 1] = r
    if #batch == 50000 then
      total = total + db:insert_many("t", batch)
      batch = {}
    end
  end
  if #batch > 0 then total = total + db:insert_many("t", batch) end
  wall = (uv.hrtime() - t0) / 1e9
  assert(total == n)
  db:close()
  print(json.encode({
    bench = "sqlite", impl = "sluice", what = "csv.rows + insert_many (50,000 per transaction)",
    rows = n, wall_s = L.r3(wall), rows_per_s = math.floor(n / wall + 0.5),
  }))
end
