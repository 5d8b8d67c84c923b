-- sensor_metrics.lua: a daily metrics job, also run by hand. Every day at
-- 3am: extract the sensor readings (sluice.http), validate each value as a
-- number and categorize it (below 100 low, 100 to 200 medium, above 200
-- high), load the valid ones into SQLite (an upsert keyed by id, so a rerun
-- replaces them), and return what was done.
--
--   sluice run pipelines/sensor_metrics.lua --id metrics-1
--   sluice status metrics-1        sluice runs --pipeline sensor_metrics
--   sluice serve pipelines/ &      sluice schedules      # next fire, runs so far
--   sqlite3 out/sensor_metrics.db 'select * from metrics'
--
-- The result: {recordCount = 3, destination = "sqlite://out/sensor_metrics.db",
-- success = true, skipped = {"rec-2"}, stagesCompleted = {"extract", "transform", "load"}}
local http = require "sluice.http"
local sqlite = require "sluice.sqlite"
local fs = require "sluice.fs"
local log = require "sluice.log"
local json = require "sluice.json"

local here = debug.getinfo(1, "S").source:match("^@(.*)/") or "."
if here:sub(1, 1) ~= "/" then here = require("luv").cwd() .. "/" .. here end

local function category(v)
  if v < 100 then return "low" end
  if v <= 200 then return "medium" end
  return "high"
end

local sensor_metrics = pipeline("sensor_metrics", function(input)
  local stages = {}

  local readings = step("extract", { retries = 3, backoff = "1s" }, function()
    local rows = http.must.json(input.source or ("file://" .. here .. "/data/sensors.json"), { timeout = "30s" })
    return rows
  end)
  stages[#stages + 1] = "extract"

  local t = step("transform", function()
    local valid, skipped = json.array({}), json.array({})
    for _, r in ipairs(readings) do
      local v = tonumber(r.value)
      if v and v == v and v ~= math.huge and v ~= -math.huge then
        valid[#valid + 1] = { id = r.id, value = v + 0.0, category = category(v) }
      else
        skipped[#skipped + 1] = r.id
        log.warn("skipped a reading that is not a number", { id = r.id, value = r.value })
      end
    end
    return { valid = valid, skipped = skipped }
  end)
  stages[#stages + 1] = "transform"

  local n = step("load", function()
    assert(fs.mkdir(fs.dirname(input.db)))
    local db <close> = sqlite.open(input.db)
    db:exec([[CREATE TABLE IF NOT EXISTS metrics (
      id TEXT PRIMARY KEY, value REAL NOT NULL, category TEXT NOT NULL, run_id TEXT NOT NULL)]])
    local rows = {}
    for i, r in ipairs(t.valid) do
      rows[i] = { id = r.id, value = r.value, category = r.category, run_id = ctx().run_id }
    end
    local written = db:insert_many("metrics", rows, { upsert_on = "id" })
    log.info("loaded", { rows = written, db = input.db })
    return written
  end)
  stages[#stages + 1] = "load"

  return {
    recordCount = n, destination = "sqlite://" .. input.db, success = true,
    skipped = t.skipped, stagesCompleted = stages,
  }
end, { params = {
  source = { type = "string", description = "URL of the readings (default: pipelines/data/sensors.json)" },
  db = { type = "string", default = "out/sensor_metrics.db", description = "the SQLite database to load" },
} })

every.day.at("3am")(sensor_metrics)
