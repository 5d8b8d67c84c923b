-- parallel_etl.lua: a DAG. extract -> (validate, clean, enrich in parallel)
-- -> merge -> load -> notify; each node a durable step, started as soon as
-- the nodes it is after have finished. Validation fails the run when more
-- than 10% of the rows are invalid, naming them; the load is an upsert keyed
-- by id (sluice.sink.upsert_jsonl), so a rerun replaces rows, never adds.
--
--   sluice run pipelines/parallel_etl.lua                                # 1 of 20 rows invalid: loads 19
--   sluice run pipelines/parallel_etl.lua --input '{"file": "customers_bad.csv"}'   # 4 of 20: fails
local http = require "sluice.http"
local csv = require "sluice.csv"
local sink = require "sluice.sink"
local fs = require "sluice.fs"
local log = require "sluice.log"

local here = debug.getinfo(1, "S").source:match("^@(.*)/") or "."
if here:sub(1, 1) ~= "/" then here = require("luv").cwd() .. "/" .. here end

local MAX_INVALID = 0.10

-- why a row is invalid, or nil
local function problem(r)
  if not (r.id or ""):match("^%d+$") then return "id is not a number" end
  if not (r.email or ""):match("^%s*[^@%s]+@[^@%s]+%.[^@%s]+%s*$") then return "email is not an address" end
  if not tonumber(r.spend or "") then return "spend is not a number" end
  return nil
end

pipeline("parallel_etl", function(input)
  local base = input.source or ("file://" .. here .. "/data")
  local r = dag{
    extract = { retries = 3, backoff = "1s", function()
      local body = http.must.get(base .. "/" .. input.file, { timeout = "30s" }).body
      return csv.parse(body, { header = true })
    end },

    validate = { after = { "extract" }, function(d)
      local bad = {}
      for i, row in ipairs(d.extract) do
        local why = problem(row)
        -- line i + 1 of the file: the header is line 1
        if why then bad[#bad + 1] = ("line %d (id %s): %s"):format(i + 1, row.id ~= "" and row.id or "?", why) end
      end
      local share = #bad / math.max(1, #d.extract)
      if share > MAX_INVALID then
        error(("validation failed: %d of %d rows are invalid (%.0f%%, more than %.0f%%): %s"):format(
          #bad, #d.extract, share * 100, MAX_INVALID * 100, table.concat(bad, "; ")))
      end
      return { invalid = #bad, rows = #d.extract, problems = bad }
    end },

    clean = { after = { "extract" }, function(d)
      local out = {}
      for _, row in ipairs(d.extract) do
        if not problem(row) then
          out[#out + 1] = { id = math.tointeger(tonumber(row.id)), name = row.name,
            email = row.email:match("^%s*(.-)%s*$"):lower(), spend = tonumber(row.spend) }
        end
      end
      return out
    end },

    enrich = { after = { "extract" }, function(d)
      local regions = http.must.json(base .. "/regions.json")
      local by_id = {}
      for _, row in ipairs(d.extract) do
        if not problem(row) then by_id[row.id] = { country = row.country, region = regions[row.country] or "OTHER" } end
      end
      return by_id
    end },

    merge = { after = { "validate", "clean", "enrich" }, function(d)
      local out = {}
      for i, c in ipairs(d.clean) do
        local e = d.enrich[tostring(c.id)]
        out[i] = { id = c.id, name = c.name, email = c.email, spend = c.spend, country = e.country, region = e.region }
      end
      return out
    end },

    load = { after = { "merge" }, function(d)
      assert(fs.mkdir(fs.dirname(input.out)))
      local added, replaced = sink.upsert_jsonl(input.out, "id"):write(d.merge)
      return { added = added, replaced = replaced }
    end },

    notify = { after = { "load", "validate" }, function(d)
      local msg = ("loaded %d customers into %s (%d new, %d updated); %d invalid row(s) skipped"):format(
        d.load.added + d.load.replaced, input.out, d.load.added, d.load.replaced, d.validate.invalid)
      log.info(msg, { added = d.load.added, replaced = d.load.replaced })
      return msg
    end },
  }
  return { loaded = r.load.added + r.load.replaced, added = r.load.added, replaced = r.load.replaced,
    invalid = r.validate.invalid, message = r.notify }
end, { params = {
  file = { type = "string", default = "customers.csv", description = "the CSV under source" },
  source = { type = "string", description = "base URL of the CSV and regions.json (default: pipelines/data)" },
  out = { type = "string", default = "out/parallel_etl/customers.jsonl" },
} })
