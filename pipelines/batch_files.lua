-- batch_files.lua: a batch of files. List the CSV files of a directory,
-- process each in its own durable step with map (4 at a time), and
-- aggregate the counts. A file with a malformed row fails only its item,
-- reported with its line and column; the others are counted (a resume runs
-- only the items that failed).
--
--   sluice run pipelines/batch_files.lua                       # pipelines/data/batch/*.csv
--   sluice run pipelines/batch_files.lua --input '{"dir": "/srv/drop"}'
local csv = require "sluice.csv"
local fs = require "sluice.fs"
local log = require "sluice.log"

local here = debug.getinfo(1, "S").source:match("^@(.*)/") or "."

pipeline("batch_files", function(input)
  local dir = input.dir or (here .. "/data/batch")

  -- the list is a step: a resume sees the files the run started with
  local files = step("list", function()
    local list = assert(fs.glob(dir .. "/*.csv"))
    if #list == 0 then error(("no .csv file in %s"):format(dir)) end
    return list
  end)

  local results = map("file", files, function(path)
    local rows, amount = 0, 0
    for row in csv.rows(path, { header = true }) do
      rows = rows + 1
      amount = amount + (tonumber(row.amount) or 0)
    end
    log.info("counted", { file = path, rows = rows })
    return { rows = rows, amount_cents = math.floor(amount * 100 + 0.5) }
  end, { concurrency = 4, settle = true })

  return step("aggregate", function()
    local total = { files = #files, processed = 0, rows = 0, amount = 0, failed = {} }
    local cents = 0
    for i, r in ipairs(results) do
      local name = files[i]:match("[^/]+$")
      if r.ok then
        total.processed = total.processed + 1
        total.rows = total.rows + r.ok.rows
        cents = cents + r.ok.amount_cents
      else
        -- "step 'file#4' failed: <path>: line 4, column 6: unterminated quoted field ..."
        total.failed[#total.failed + 1] = { file = name, error = r.err:match("failed: (.*)$") or r.err }
      end
    end
    total.amount = cents / 100
    if #total.failed == 0 then total.failed = require("sluice.json").array({}) end
    return total
  end)
end, { params = {
  dir = { type = "string", description = "the directory of .csv files (default: pipelines/data/batch)" },
} })
