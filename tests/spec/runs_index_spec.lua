-- runs_index_spec.lua: the run listings of the HTTP API in a real store:
-- every status change of a run moves its status entry in the same commit,
-- pages by namespace, pipeline and status with a cursor and a time bound,
-- and the backfill of a store whose runs were written without listings.
local H = require "helper"
local clock = require "sluice._clock"
local storage = require "sluice._store"
local engine = require "sluice.engine"
local json = require "sluice.json"
local runs_index = require "sluice.runs_index"

local store = H.tmpdir()
assert(storage.open(store))

local function status_entries(id)
  local keys = storage.raw_scan("runs_by_status", "")
  local out = {}
  for _, k in ipairs(keys) do
    if k:sub(-#id) == id then out[#out + 1] = k:match("^[^%z]*%z([^%z]*)%z") end
  end
  return out
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
    assert.are.equal(1, #storage.raw_scan("runs_by_pipeline", "default\0idx-sleepy\0"))
    assert.are.equal(1, #storage.raw_scan("runs_by_time", ""))
  end)

  it("page newest first with a cursor, by pipeline, status and since", function()
    local p = pipeline("idx-page", function(input) if input.fail then error("no") end return input.i end)
    H.task(function()
      for i = 1, 7 do engine.execute(p, { i = i, fail = i % 3 == 0 }, ("page-%d"):format(i)) end
    end)
    local got, cursor = {}, nil
    repeat
      local runs, nxt = runs_index.page({ pipeline = "idx-page", limit = 3, before = cursor }, engine.get_run)
      for _, r in ipairs(runs) do got[#got + 1] = r.id end
      cursor = nxt
    until not cursor
    assert.are.same({ "page-7", "page-6", "page-5", "page-4", "page-3", "page-2", "page-1" }, got)
    local failed = runs_index.page({ status = "failed", limit = 10 }, engine.get_run)
    assert.are.same({ "page-6", "page-3" }, { failed[1].id, failed[2].id })
    local both = runs_index.page({ pipeline = "idx-page", status = "completed", limit = 2 }, engine.get_run)
    assert.are.same({ "page-7", "page-5" }, { both[1].id, both[2].id })
    local r5 = engine.get_run("page-5")
    local recent = runs_index.page({ pipeline = "idx-page", since_us = r5.created_us, limit = 10 }, engine.get_run)
    assert.are.equal(3, #recent)
    assert.are.equal(0, #runs_index.page({ namespace = "acme", limit = 10 }, engine.get_run))
    assert.is_nil((runs_index.page({ limit = 1, before = "nothex" }, engine.get_run)))
  end)

  it("are filled in for a store whose runs were written without them", function()
    local now = clock.now()
    local old = { id = "old-1", pipeline = "legacy", status = "completed", created_us = now, created_at = clock.iso(now) }
    H.task(function()
      assert(storage.raw_commit({ "runs", "old-1", json.encode(old), "meta", "runs_indexed", false }))
    end)
    assert.are.equal(0, #runs_index.page({ pipeline = "legacy", limit = 10 }, engine.get_run))
    local n = H.task(function() return runs_index.backfill() end)
    assert.is_true(n >= 1)
    local runs = runs_index.page({ pipeline = "legacy", limit = 10 }, engine.get_run)
    assert.are.equal("old-1", runs[1].id)
    assert.are.equal(1, #runs_index.page({ pipeline = "legacy", status = "completed", limit = 10 }, engine.get_run))
    -- once only
    assert.are.equal(0, H.task(function() return runs_index.backfill() end))
  end)
end)
