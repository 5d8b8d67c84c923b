-- store_access_spec.lua: the sluice._store operations of schedules, API
-- keys, namespaces and quota counters inside the host on a real store, and
-- a record that does not decode read as an error (nil, "EBADSTORE: ...")
-- that the callers raise, never as no record.
local H = require "helper"
local raw = require "sluice._store_raw"
local store = require "sluice._store"
local keys = require "sluice.keys"
local quota = require "sluice.quota"

local target
H.task(function() target = H.store_target() end)
assert(store.open(target))

describe("sluice._store records", function()
  it("stores, pages and deletes schedule records", function()
    H.task(function()
      local b = store.batch()
      for i = 1, 5 do b:put_schedule("s" .. i, { name = "s" .. i, runs = i }) end
      assert.are.equal(5, b:count())
      assert.is_true(b:commit())
      assert.are.equal(3, store.schedule("s3").runs)
      assert.is_nil(store.schedule("nope"))
      local page, after = store.schedules(nil, 2)
      assert.are.same({ "s1", "s2" }, { page[1].name, page[2].name })
      assert.are.equal("s2", after)
      page, after = store.schedules(after, 2)
      assert.are.same({ "s3", "s4" }, { page[1].name, page[2].name })
      page, after = store.schedules(after, 2)
      assert.are.equal(1, #page)
      assert.is_nil(after)
      assert.is_true(store.batch():delete_schedule("s1"):commit())
      assert.are.equal(4, #store.schedules())
      assert.has_error(function() store.batch():put_schedule("", {}) end)
      assert.has_error(function() store.batch():put_schedule("x", { f = print }) end)
    end)
  end)

  it("reads the states the scheduler arms from, a page at a time into one list", function()
    H.task(function()
      local t = function(iso) return require("sluice._clock").parse_time(iso) end
      local b = store.batch()
      b:put_schedule("st1", { pipeline = "p", spec = "0 5 * * *", next_at = "2026-12-02T05:00:00Z", enabled = true })
      b:put_schedule("st2", { pipeline = "p", spec = "every 45s", next_at = "2026-12-02T05:00:45Z",
        last_at = "2026-12-02T05:00:00Z", runs = 7, enabled = false, source = "api",
        input = { deep = { 1, 2, { x = "y", ["next_at"] = "inside" } }, note = "\"quoted\" \0" } })
      b:put_schedule("st3", { pipeline = "p", next_at = "not a time" })
      assert.is_true(b:commit())
      local list = {}
      local n, after = store.schedule_states("st", 2, list)
      assert.are.equal(2, n)
      assert.are.equal("st2", after)
      assert.are.same({ "st1", "0 5 * * *", t("2026-12-02T05:00:00Z"), false, 0, true, false,
        "st2", "every 45s", t("2026-12-02T05:00:45Z"), t("2026-12-02T05:00:00Z"), 7, false, true }, list)
      n, after = store.schedule_states(after, 2, list)
      assert.are.equal(1, n)
      assert.is_nil(after)
      -- the list is reused: past 7 n it holds what the page before left
      assert.are.same({ "st3", false, false, false, 0, true, false }, { table.unpack(list, 1, 7) })
      local b2 = store.batch()
      for i = 1, 3 do b2:delete_schedule("st" .. i) end
      assert.is_true(b2:commit())
    end)
  end)

  it("frees listed rows and read pages when they are collected (each kind of row its own)", function()
    -- a schedules page and a stream page were once freed by each other's
    -- collector (one metatable name): serve with 100,000 schedules crashed
    H.task(function()
      local b = store.batch()
      for i = 1, 50 do b:put_schedule(("g%02d"):format(i), { name = "g", runs = i }) end
      assert.is_true(b:commit())
      for _ = 1, 20 do
        assert.are.equal(50, #store.schedules(nil, 50))
        assert.is_table(store.read_events({ prefix = "" }))
        collectgarbage("collect")
      end
      b = store.batch()
      for i = 1, 50 do b:delete_schedule(("g%02d"):format(i)) end
      assert.is_true(b:commit())
    end)
  end)

  it("adds, verifies, lists and revokes API keys, and counts runs by namespace and day", function()
    H.task(function()
      assert.is_false(keys.any())
      local text, rec = keys.add("ops", "acme", "admin")
      assert.is_string(text, rec)
      assert.is_true(keys.any())
      assert.are.equal("ops", keys.verify(text).name)
      assert.is_nil(keys.verify(text:sub(1, -2) .. (text:sub(-1) == "0" and "1" or "0")))
      assert.is_nil(keys.add("ops", "acme", "admin"))
      local list = keys.list()
      assert.are.equal(1, #list)
      assert.is_nil(list[1].hash)
      assert.is_true(keys.revoke("ops"))
      assert.is_false(keys.any())

      assert.is_truthy(quota.set("acme", { runs_per_day = 3 }))
      assert.are.equal(3, quota.get("acme").runs_per_day)
      for _ = 1, 2 do assert.is_true(store.batch():count_run("acme", "2026-12-01"):commit()) end
      assert.are.equal(2, store.quota_used("acme", "2026-12-01"))
      assert.are.equal(0, store.quota_used("acme", "2026-12-02"))
      assert.are.equal(2, quota.runs_on("acme", "2026-12-01"))
      assert.has_error(function() store.batch():count_run("acme", "today") end)
    end)
  end)

  -- damaged records are written by key (LMDB); PostgreSQL's json columns
  -- refuse text that is not JSON
  local lmdb_it = H.backend == "lmdb" and it or pending
  lmdb_it("reads a record that does not decode as an error, which the callers raise", function()
    H.task(function()
      -- written by key, as a damaged store would hold it
      assert(raw.commit({ "schedules", "bad", "{not json", "api_keys", "0123456789ab", "[1,",
        "namespaces", "zeta", "{" }))
      local v, msg, code = store.schedules()
      assert.is_nil(v)
      assert.are.equal("EBADSTORE", code)
      assert.matches("^EBADSTORE: schedule bad: its stored record does not decode", msg)
      v, msg, code = store.schedule("bad")
      assert.is_nil(v)
      assert.are.equal("EBADSTORE", code)
      v, msg, code = store.schedule_states(nil, 0, {})
      assert.is_nil(v)
      assert.are.equal("EBADSTORE", code)
      assert.matches("^EBADSTORE: schedule bad: its stored record does not decode", msg)
      assert.has_error(function() require("sluice.api.schedules").load_stored() end)
      assert.has_error(function() keys.list() end)
      assert.has_error(function() keys.verify("sk_0123456789ab_00") end)
      assert.has_error(function() quota.list() end)
      assert.has_error(function() quota.get("zeta") end)
    end)
  end)
end)
