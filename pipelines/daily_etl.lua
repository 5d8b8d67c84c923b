-- daily_etl.lua: the classic nightly ETL. Every day at 2am: extract users,
-- events and products in parallel (three durable steps fetched with
-- sluice.http), drop the events without a time or a user, lower-case the
-- user ids, join user and product names, load the result into a JSON Lines
-- sink, and send "pipeline.completed", which an `on` handler logs.
--
--   sluice run pipelines/daily_etl.lua                 # out/daily_etl/<yesterday>.jsonl
--   sluice run pipelines/daily_etl.lua --input '{"source": "https://example.com/export"}'
--   sluice serve pipelines/                            # the 2am schedule and the handler
--
-- The fixtures are pipelines/data/{users,events,products}.json, read as
-- file:// URLs; `source` points the same pipeline at any http(s) base URL.
local http = require "sluice.http"
local sink = require "sluice.sink"
local log = require "sluice.log"
local fs = require "sluice.fs"

-- the fixtures next to this file, whatever the working directory
local here = debug.getinfo(1, "S").source:match("^@(.*)/") or "."
if here:sub(1, 1) ~= "/" then here = require("luv").cwd() .. "/" .. here end

local function fetch(url)
  local rows = http.must.json(url, { timeout = "30s" })
  return rows
end

local daily_etl = pipeline("daily_etl", function(input)
  local base = input.source or ("file://" .. here .. "/data")

  local users, events, products = parallel(
    function() return step("extract-users", { retries = 3, backoff = "2s" }, fetch, base .. "/users.json") end,
    function() return step("extract-events", { retries = 3, backoff = "2s" }, fetch, base .. "/events.json") end,
    function() return step("extract-products", { retries = 3, backoff = "2s" }, fetch, base .. "/products.json") end)

  local clean = step("transform", function()
    local kept, dropped = {}, 0
    for _, e in ipairs(events) do
      if type(e.ts) == "string" and e.ts ~= "" and type(e.user) == "string" and e.user ~= "" then
        kept[#kept + 1] = { id = e.id, ts = e.ts, user = e.user:lower(), product = e.product, qty = e.qty }
      else
        dropped = dropped + 1
      end
    end
    log.info("transformed", { kept = #kept, dropped = dropped })
    return { events = kept, dropped = dropped }
  end)

  local enriched = step("enrich", function()
    local user_names, product_of = {}, {}
    for _, u in ipairs(users) do user_names[u.id:lower()] = u.name end
    for _, p in ipairs(products) do product_of[p.id] = p end
    local out = {}
    for i, e in ipairs(clean.events) do
      local p = product_of[e.product] or {}
      out[i] = {
        id = e.id, ts = e.ts, user = e.user, user_name = user_names[e.user] or "unknown",
        product = e.product, product_name = p.name or "unknown", qty = e.qty,
        amount = p.price and p.price * e.qty or 0,
      }
    end
    return out
  end)

  local n = step("load", function()
    assert(fs.mkdir(fs.dirname(input.out)))
    local written = sink.jsonl(input.out):write(enriched)
    log.info("loaded", { records = written, path = input.out })
    return written
  end)

  send("pipeline.completed", { pipeline = "daily_etl", records = n, out = input.out })
  return { records = n, dropped = clean.dropped, out = input.out }
end, { params = {
  source = { type = "string", description = "base URL of users.json, events.json and products.json (default: pipelines/data)" },
  out = { type = "string", default = "out/daily_etl/{{yesterday}}.jsonl", description = "the JSON Lines file to load into" },
} })

every.day.at("2am")(daily_etl)

on("pipeline.completed", function(data)
  step("log", function()
    log.info("pipeline completed", { pipeline = data.pipeline, records = data.records, out = data.out })
  end)
end)
