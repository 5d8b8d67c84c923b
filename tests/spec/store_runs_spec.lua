-- store_runs_spec.lua: the run listings (sluice._store's runs) in a real
-- store: every status change of a run moves its status entry in the same
-- commit, pages by namespace, pipeline and status with a cursor and a time
-- bound, the backfill of a store whose runs were written without listings,
-- and put_run's refusal of a record it cannot place.
local H = require "helper"
local raw = require "sluice._store_raw"
local clock = require "sluice._clock"
local engine = require "sluice.engine"
local json = require "sluice.json"
local store = require "sluice._store"

local dir = H.tmpdir()
assert(store.open(dir))

local STATUSES = { "pending", "running", "sleeping", "waiting", "completed", "failed", "cancelled" }

-- the statuses under which run id is listed
local function status_entries(id)
  local out = {}
  for _, st in ipairs(STATUSES) do
    for _, r in ipairs((assert(store.runs({ status = st, limit = 1000 })))) do
      if r.id == id then out[#out + 1] = st end
    end
  end
  return out
end

local function page(f)
  local runs, nxt = store.runs(f)
  return runs, nxt
end

describe("the run listings", function()
  it("move a run's status entry with each status change, in the commit of its record", function()
    local seen = {}
    local p = pipeline("idx-sleepy", function()
      step("a", function() seen[#seen + 1] = status_entries("idx-1") return 1 end)
      sleep("50ms")
      return 2
    end)
    local rec = H.task(function() return engine.execute(p, nil, "idx-1") end)
    assert.are.equal("completed", rec.status)
    assert.are.same({ { "running" } }, seen)
    assert.are.same({ "completed" }, status_entries("idx-1"))
    assert.are.equal(1, #page({ pipeline = "idx-sleepy", limit = 10 }))
    assert.are.equal(1, #page({ limit = 10 }))
  end)

  it("page newest first with a cursor, by pipeline, status and since", function()
    local p = pipeline("idx-page", function(input) if input.fail then error("no") end return input.i end)
    H.task(function()
      for i = 1, 7 do engine.execute(p, { i = i, fail = i % 3 == 0 }, ("page-%d"):format(i)) end
    end)
    local got, cursor = {}, nil
    repeat
      local runs, nxt = page({ pipeline = "idx-page", limit = 3, before = cursor })
      for _, r in ipairs(runs) do got[#got + 1] = r.id end
      cursor = nxt
    until not cursor
    assert.are.same({ "page-7", "page-6", "page-5", "page-4", "page-3", "page-2", "page-1" }, got)
    local failed = page({ status = "failed", limit = 10 })
    assert.are.same({ "page-6", "page-3" }, { failed[1].id, failed[2].id })
    local both = page({ pipeline = "idx-page", status = "completed", limit = 2 })
    assert.are.same({ "page-7", "page-5" }, { both[1].id, both[2].id })
    local r5 = engine.get_run("page-5")
    local recent = page({ pipeline = "idx-page", since_us = r5.created_us, limit = 10 })
    assert.are.equal(3, #recent)
    assert.are.equal(0, #page({ namespace = "acme", limit = 10 }))
    local none, msg, code = store.runs({ limit = 1, before = "nothex" })
    assert.is_nil(none)
    assert.are.equal("EINVAL", code)
    assert.matches("before must be a cursor", msg)
  end)

  it("are filled in for a store whose runs were written without them", function()
    local now = clock.now()
    local old = { id = "old-1", pipeline = "legacy", status = "completed", created_us = now, created_at = clock.iso(now) }
    H.task(function()
      assert(raw.ops(store.batch(), { "runs", "old-1", json.encode(old), "meta", "runs_indexed", false }):commit())
    end)
    assert.are.equal(0, #page({ pipeline = "legacy", limit = 10 }))
    local n = H.task(function() return engine.index_runs() end)
    assert.is_true(n >= 1)
    local runs = page({ pipeline = "legacy", limit = 10 })
    assert.are.equal("old-1", runs[1].id)
    assert.are.equal(1, #page({ pipeline = "legacy", status = "completed", limit = 10 }))
    -- once only
    assert.are.equal(0, H.task(function() return engine.index_runs() end))
  end)

  it("refuse a record that was neither read nor created new", function()
    local b = store.batch()
    local ok, err = pcall(b.put_run, b, { id = "stray", pipeline = "p", status = "running", created_us = 1 })
    assert.is_false(ok)
    assert.matches("neither read from the store nor created with {new=true}", err)
    ok, err = pcall(b.put_run, b, { id = "", pipeline = "p", created_us = 1 }, { new = true })
    assert.is_false(ok)
    assert.matches("has no id", err)
    assert.are.equal(0, b:count())
  end)
end)
