-- hosts_schedule_cas_spec.lua: a schedule created over the HTTP API on a
-- PostgreSQL store, changed by another host while the host firing it is
-- in the middle of a fire (issue 15), with a real serve process on a real
-- PostgreSQL 15. The fire writes the schedule's record only over the row
-- version it read just before firing (a compare-and-set): the change
-- stays, and the fire's run is created once all the same. The other
-- host's change is this test's own transaction, committed while the
-- fire's write waits for the row lock it holds.
local H = require "helper"
local P = require "pg_helper"
local HH = require "http_helper"

local PIPES = [[
pipeline("tick", function()
  step("tick", function() mark(ctx().run_id .. " tick") end)
end)
]]

describe("a schedule changed during its fire", function()
  local f
  before_each(function() f = P.fixture(PIPES) end)
  after_each(function() if f then f:close() end end)

  local function one(sql, ...) return assert(f.c:query(sql, ...))[1] end
  local function fires() return one("SELECT count(*)::int AS n FROM sluice.runs WHERE pipeline = 'tick'").n end
  local function waiting()
    return one("SELECT count(*)::int AS n FROM pg_stat_activity WHERE datname = current_database() "
      .. "AND wait_event_type = 'Lock'").n > 0
  end

  for _, change in ipairs({ "paused", "deleted" }) do
    it(("stays %s when that commits during the fire, and the fire's run is created once"):format(change), function()
      local a = f.hosts:serve(1)
      H.wait_until(function() return one("SELECT count(*)::int AS n FROM sluice.leases WHERE kind = 'schedules'").n == 1 end,
        "the host to hold the schedules", 30000, 20)
      local status, body = HH.post(a.url .. "/schedules", { name = "t1", pipeline = "tick", every = "1s" })
      assert.are.equal(201, status, body)
      H.wait_until(function() return fires() >= 1 end, function() return "a first fire: " .. a:log() end, 30000, 20)
      -- another host's transaction holds the record; the next fire's commit waits for it
      local c2 = assert(require("sluice._pg").connect(f.url))
      assert(c2:exec("BEGIN"))
      assert(c2:query("SELECT 1 FROM sluice.schedules WHERE name = 't1' FOR UPDATE"))
      H.wait_until(waiting, function() return "the next fire to wait for the record: " .. a:log() end, 30000, 20)
      local before = fires() -- that fire's run is not committed yet
      if change == "paused" then
        local rec = one("SELECT record::text AS r FROM sluice.schedules WHERE name = 't1'").r
        assert.is_truthy(rec:find('"enabled":true', 1, true), rec)
        assert.are.equal(1, c2:exec([[UPDATE sluice.schedules SET record = replace(record::text, '"enabled":true',
          '"enabled":false')::json WHERE name = 't1']]))
      else
        assert.are.equal(1, c2:exec("DELETE FROM sluice.schedules WHERE name = 't1'"))
      end
      assert(c2:exec("COMMIT"))
      c2:close()
      -- the fire happened: its run was committed, once (each fire's run id is its time)
      H.wait_until(function() return fires() >= before + 1 end, function() return "the fire's run: " .. a:log() end,
        30000, 20)
      local dup = one("SELECT count(*)::int AS n FROM (SELECT id FROM sluice.runs GROUP BY id HAVING count(*) > 1) d").n
      assert.are.equal(0, dup)
      -- and did not undo the change
      if change == "paused" then
        local rec = one("SELECT record::text AS r FROM sluice.schedules WHERE name = 't1'").r
        assert.is_truthy(rec:find('"enabled":false', 1, true), "the fire undid the pause: " .. rec)
        H.wait_until(function() return a:log():find("schedule t1: paused on another host", 1, true) end,
          function() return "the firing host to follow the pause: " .. a:log() end, 30000, 50)
      else
        assert.are.equal(0, one("SELECT count(*)::int AS n FROM sluice.schedules WHERE name = 't1'").n,
          "the fire made the deleted schedule again")
        H.wait_until(function() return a:log():find("schedule t1: deleted on another host", 1, true) end,
          function() return "the firing host to follow the delete: " .. a:log() end, 30000, 50)
      end
      -- it fires no more: the fires after the change found it so (the
      -- host reads the record before each one) and its record stays
      local n = fires()
      H.wait_until(function()
        local _, _, _, doc = HH.get(a.url .. "/schedules")
        for _, sch in ipairs(doc.schedules) do
          if sch.name == "t1" then return sch.enabled == false end
        end
        return change == "deleted"
      end, "GET /schedules to show the change", 30000, 50)
      assert.is_true(fires() <= n + 1)
    end)
  end
end)
