-- billing_export.lua: the pipeline-service scenario. An organisation's daily
-- billing export, run for a namespace: parameters with templated defaults
-- (the day before the run was created; a table named after the namespace
-- and the environment) checked before the run starts, and the day's usage
-- written to that namespace's own SQLite table. Rows are upserted by (date,
-- account, metric): exporting a day again replaces its rows.
--
--   sluice run pipelines/billing_export.lua                                 # table default_dev
--   sluice run pipelines/billing_export.lua --namespace acme                # table acme_dev
--   sluice run pipelines/billing_export.lua --namespace acme --env prod --input '{"date": "2026-11-30"}'
--   sluice pipelines pipelines/billing_export.lua                           # the parameters
--   sqlite3 out/billing_export.db 'select * from acme_dev'
--
-- Over HTTP, a namespace's API key runs it in that namespace, under its
-- daily quota (README, "Writing pipelines"); {"target": "..."} chooses the
-- table whatever the namespace.
local http = require "sluice.http"
local sqlite = require "sluice.sqlite"
local fs = require "sluice.fs"
local log = require "sluice.log"

local here = debug.getinfo(1, "S").source:match("^@(.*)/") or "."
if here:sub(1, 1) ~= "/" then here = require("luv").cwd() .. "/" .. here end

pipeline("billing_export", function(input)
  if not input.target:match("^[%a_][%w_]*$") then
    error(("target %q is not a table name (letters, digits and _)"):format(input.target))
  end
  if not input.date:match("^%d%d%d%d%-%d%d%-%d%d$") then
    error(("date %q is not a day like 2026-11-30"):format(input.date))
  end

  local usage = step("extract", { retries = 3, backoff = "1s" }, function()
    local rows = http.must.json(input.source or ("file://" .. here .. "/data/billing/usage.json"),
      { query = { date = input.date }, timeout = "30s" })
    return rows
  end)

  local lines = step("transform", function()
    local out = {}
    for i, u in ipairs(usage) do
      out[i] = { date = input.date, account = u.account, metric = u.metric, units = u.units,
        unit_price = u.unit_price, amount_cents = math.floor(u.units * u.unit_price * 100 + 0.5) }
    end
    return out
  end)

  local n = step("load", function()
    assert(fs.mkdir(fs.dirname(input.db)))
    local db <close> = sqlite.open(input.db)
    db:exec(([[CREATE TABLE IF NOT EXISTS %s (
      date TEXT NOT NULL, account TEXT NOT NULL, metric TEXT NOT NULL,
      units REAL NOT NULL, unit_price REAL NOT NULL, amount_cents INTEGER NOT NULL,
      PRIMARY KEY (date, account, metric))]]):format(input.target))
    local written = db:insert_many(input.target, lines, { upsert_on = { "date", "account", "metric" } })
    log.info("exported", { table = input.target, date = input.date, rows = written })
    return written
  end)

  local cents = 0
  for _, l in ipairs(lines) do cents = cents + l.amount_cents end
  return { date = input.date, table = input.target, rows = n, total = cents / 100,
    destination = ("sqlite://%s#%s"):format(input.db, input.target) }
end, { params = {
  date = { type = "string", default = "{{yesterday}}", description = "the day to export (YYYY-MM-DD)" },
  target = { type = "string", default = "{{org_slug}}_{{env}}", description = "the namespace's table" },
  db = { type = "string", default = "out/billing_export.db" },
  source = { type = "string", description = "URL of the day's usage (default: pipelines/data/billing/usage.json)" },
} })
