-- store_check_spec.lua: `sluice store check` on a store made by real
-- sluice processes (runs with steps and logs, a failed run, events in two
-- stream keys): it passes on the good store, and names each record and
-- index entry that a stray writer planted or removed (through
-- sluice._store_raw, in a process of its own), and nothing else (those on
-- LMDB only: tests/pg/store_copy_spec.lua damages a PostgreSQL store).
local H = require "helper"

local APP = [[
local log = require "sluice.log"
pipeline("etl", function(input)
  local a = step("fetch", function() log.info("fetching", { k = input.k }); return { n = input.k } end)
  step("save", function() return a.n + 1 end)
  emit("created", "orders:" .. input.k, { total = 99 })
  return a
end)
pipeline("bad", function() step("boom", function() error("kaputt") end) end)
]]

-- a store with runs good1, good2 (events at positions 1 and 2) and bad1
local function make_store(dir)
  local store = dir .. "/st"
  local app = H.write(dir .. "/app.lua", APP)
  for k = 1, 2 do
    local code, _, err = H.sluice({ "run", app, "--pipeline", "etl", "--id", "good" .. k, "--input",
      ('{"k": %d}'):format(k), "--store", store })
    assert.are.equal(0, code, err)
  end
  local code = H.sluice({ "run", app, "--pipeline", "bad", "--id", "bad1", "--store", store })
  assert.are.equal(1, code)
  return store
end

-- runs the Lua code `body` in a sluice process with the store open for
-- writing as `storage`, sluice._store_raw as `raw`, sluice.json as `json`
local function poke(dir, store, body)
  local f = H.write(dir .. "/poke.lua", [[
local storage = require "sluice._store"
local raw = require "sluice._store_raw"
local json = require "sluice.json"
assert(storage.open(arg[1]))
local function created(id) return json.decode(assert(raw.get("runs", id))).created_us end
]] .. body)
  local code, _, err = H.sluice({ f, store })
  assert.are.equal(0, code, err)
end

local function check(store, extra)
  local argv = { "store", "check", "--store", store }
  for _, a in ipairs(extra or {}) do argv[#argv + 1] = a end
  local code, out, err = H.sluice(argv)
  local lines = {}
  for l in out:gmatch("[^\n]+") do lines[#lines + 1] = l end
  return code, lines, err
end

describe("sluice store check", function()
  it("passes on a store sluice wrote", function()
    local dir = H.tmpdir()
    local store = make_store(dir)
    local code, lines, err = check(store)
    assert.are.equal(0, code, err)
    assert.are.equal(1, #lines, table.concat(lines, "\n"))
    -- 3 runs, 7 steps (an emit is one), 2 log lines, 2 events
    local name = H.store_target(store):gsub("%p", "%%%0") -- its URL on PostgreSQL
    assert.matches("^store " .. name .. ": 14 records checked, no problems$", lines[1])
  end)

  it("checks every record when it reads them in pages of one", function()
    local dir = H.tmpdir()
    local store = make_store(dir)
    local code, lines, err = check(store, { "--page", "1" })
    assert.are.equal(0, code, err)
    local name = H.store_target(store):gsub("%p", "%%%0")
    assert.matches("^store " .. name .. ": 14 records checked, no problems$", lines[1])
  end)

  H.lmdb_it("plants raw LMDB records (sluice._store_raw)")("names every record and index entry planted or removed, and exits 1", function()
    local dir = H.tmpdir()
    local store = make_store(dir)
    poke(dir, store, [[
assert(raw.commit({
  -- good1 loses its entry in the status listing
  "runs_by_status", "default\0completed\0" .. string.pack(">I8", created("good1")) .. "good1", false,
  -- an active run that does not exist
  "active_runs", "ghost", "",
  -- good2 listed under a pipeline it is not of
  "runs_by_pipeline", "default\0other\0" .. string.pack(">I8", created("good2")) .. "good2", "",
  -- a run record that is not JSON, in the history
  "runs", "broken", "{oops",
  "runs_by_time", string.pack(">I8", 5) .. "broken", "",
  -- the event at 1 (orders:1) loses its index entry; one for no event
  "stream_index", "orders:1\0" .. string.pack(">I8", 1), false,
  "stream_index", "orders:9\0" .. string.pack(">I8", 99), "",
  -- an idempotency key of a run that does not exist
  "idempotency", "default\0etl\0k-1", "nope",
}))
]])
    local code, lines = check(store)
    assert.are.equal(1, code)
    local text = table.concat(lines, "\n")
    local want = {
      "^run good1: missing from runs_by_status %(namespace default, pipeline etl, status completed%)$",
      "^active_runs entry of run ghost: names run ghost, which has no record$",
      "^runs_by_pipeline entry default/other of run good2: the run's record says pipeline etl$",
      "^run broken: its record does not decode: ",
      "^event 0000000000000001: missing from the stream index of key 'orders:1'$",
      "^stream_index entry orders:9@0000000000000063: names event 0000000000000063, which is not in the log$",
      "^idempotency key default/etl/k%-1: names run nope, which has no record$",
    }
    for _, pat in ipairs(want) do
      local found = false
      for _, l in ipairs(lines) do
        if l:find(pat) then found = true end
      end
      assert.is_true(found, ("no line matches %s in:\n%s"):format(pat, text))
    end
    -- nothing else: one line per damage, then the summary
    assert.are.equal(#want + 1, #lines, text)
    assert.matches("^store .*st: %d+ records checked, 7 problems$", lines[#lines])
  end)

  H.lmdb_it("plants raw LMDB records (sluice._store_raw)")("names a step record and a log line that do not decode", function()
    local dir = H.tmpdir()
    local store = make_store(dir)
    poke(dir, store, [[
local v = assert(raw.get("steps", "good1\0fetch"))
-- the step record's payload (after its header) replaced by bytes that are not JSON
assert(raw.commit({ "steps", "good1\0fetch", v:sub(1, #v - 3) .. "{{{" }))
local lk = assert(raw.scan("logs", "good2\0"))
assert(raw.commit({ "logs", lk[1], "not json" }))
]])
    local code, lines = check(store)
    assert.are.equal(1, code)
    local text = table.concat(lines, "\n")
    assert.matches("run good1: the result of step 'fetch' does not decode: ", text)
    assert.matches("run good2: log line 1 does not decode: ", text)
    assert.matches("2 problems$", text)
  end)

  it("refuses an argument and answers --help", function()
    local code, out = H.sluice({ "store", "check", "--help" })
    assert.are.equal(0, code)
    assert.matches("^usage: sluice store check", out)
    local err
    code, _, err = H.sluice({ "store", "check", "extra" })
    assert.are.equal(2, code)
    assert.matches("store check takes no argument", err)
    code, out = H.sluice({ "store", "copy", "--help" })
    assert.are.equal(0, code)
    assert.matches("^usage: sluice store copy %-%-from SRC %-%-to DST", out)
  end)
end)
