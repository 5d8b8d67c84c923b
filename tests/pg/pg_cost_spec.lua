-- pg_cost_spec.lua: what the PostgreSQL store does to cost the server less
-- per run keeps its guarantees, against a real PostgreSQL 15
-- (tests/pg_helper.lua): a new run's lease (hosts.hold_run) probes the
-- leases by their key, not the host's other leases, and still refuses a
-- run another host holds; the store's reads, prepared once their SQL
-- repeats, still answer, and one whose table went away fails with
-- PostgreSQL's error, again and again, while the others go on; a step's
-- record, sent as a plain insert when it is likely its first, replaces the
-- one stored before when it is not (the transaction goes again as upserts),
-- and the others of its group commit with it.
local H = require "helper"
local P = require "pg_helper"
local pgc = require "sluice._pg"

describe("the PostgreSQL store's cost per run", function()
  local inst, url, c

  setup(function()
    inst = P.start()
    url = inst:database("cost")
    c = assert(pgc.connect(url))
    assert(require("sluice.pg_schema").migrate(c))
  end)
  teardown(function()
    if c then c:close() end
    if inst then inst:stop() end
  end)

  local function one(sql)
    return assert(c:query(sql))[1]
  end

  it("holds a new run's lease with one probe of its key, and refuses a run another host holds", function()
    H.task(function()
      local store = require "sluice._store"
      local hosts = require "sluice._hosts"
      assert(store.open(url))
      assert(hosts.register({ id = "a", name = "t", pid = 1, lease_ms = 60000 }))
      assert(hosts.register({ id = "b", name = "t", pid = 2, lease_ms = 60000 }))
      -- host a holds 400 runs, as a host with a backlog does
      local b = store.batch()
      for i = 1, 400 do hosts.hold_run(b, "a", "run-" .. i) end
      assert(b:commit())
      assert.are.equal(400, one("SELECT count(*)::int AS n FROM sluice.leases WHERE host_id = 'a'").n)
      -- the planner has no statistics on leases (a fresh database): a
      -- condition on the host would read leases_by_host, all 400
      assert(c:exec("SELECT pg_stat_reset()"))
      local before = one("SELECT coalesce(sum(idx_tup_read), 0)::int AS n FROM pg_stat_user_indexes "
        .. "WHERE indexrelname = 'leases_by_host'").n
      for i = 401, 420 do
        assert(hosts.hold_run(store.batch(), "a", "run-" .. i):commit())
      end
      assert(hosts.hold_run(store.batch(), "a", "run-3"):commit()) -- its own again: held
      local ok, err = hosts.hold_run(store.batch():put_schedule("by-b", { n = 1 }), "b", "run-5"):commit()
      assert.is_nil(ok)
      assert.matches("sluice run run%-5 is leased to another host", err)
      assert.are.equal("a", one("SELECT host_id FROM sluice.leases WHERE name = 'run-5'").host_id)
      assert.are.equal(0, one("SELECT count(*)::int AS n FROM sluice.schedules WHERE name = 'by-b'").n)
      assert(hosts.hold_run(store.batch(), "b", "run-free"):commit())
      assert.are.equal("b", one("SELECT host_id FROM sluice.leases WHERE name = 'run-free'").host_id)
      store.close()
      -- the store's backend flushed its counters as it closed
      H.wait_until(function()
        return one("SELECT coalesce(sum(idx_scan), 0)::int AS n FROM pg_stat_user_indexes "
          .. "WHERE indexrelname = 'leases_pkey'").n >= 20
      end, "the statistics of the store's session", 10000)
      local after = one("SELECT coalesce(sum(idx_tup_read), 0)::int AS n FROM pg_stat_user_indexes "
        .. "WHERE indexrelname = 'leases_by_host'").n
      assert.are.equal(before, after, "entries of leases_by_host read by the holds")
    end)
  end)

  it("answers a read prepared once its SQL repeats, and fails one whose table went away each time", function()
    H.task(function()
      local store = require "sluice._store"
      assert(store.open(url))
      local b = store.batch()
      for i = 1, 5 do
        b:put_run({ id = "r" .. i, pipeline = "p", status = "running", created_us = i }, { new = true })
      end
      assert(b:commit())
      for round = 1, 3 do -- the second sends its Parse, the third runs it by name
        for i = 1, 5 do assert.are.equal("r" .. i, store.get_run("r" .. i).id, "round " .. round) end
      end
      assert.is_nil(store.get_idempotency("default", "p", "k")) -- its SQL seen once
      assert(c:exec("ALTER TABLE sluice.idempotency RENAME TO idempotency_away"))
      for i = 1, 3 do -- the first sends a Parse, which fails: then unprepared
        local ok, r, err = pcall(store.get_idempotency, "default", "p", "k")
        local msg = tostring(ok and err or r)
        assert.is_falsy(ok and r, "read " .. i)
        assert.matches('relation "sluice.idempotency" does not exist', msg, 1, true)
      end
      assert.are.equal("r2", store.get_run("r2").id) -- the connection goes on
      assert(c:exec("ALTER TABLE sluice.idempotency_away RENAME TO idempotency"))
      store.close()
    end)
  end)

  it("replaces a step's stored record that a plain insert met, and commits the rest of its group", function()
    H.task(function()
      local store = require "sluice._store"
      local sched = require "sluice.sched"
      assert(store.open(url))
      local b = store.batch()
      for i = 1, 20 do b:put_step("sr", "main", i, "s" .. i, "completed", 1, 1000 + i, 5, { v = i }) end
      assert(b:commit())
      local before = store.stats().commits
      local function rollbacks()
        return one("SELECT xact_rollback::int AS n FROM pg_stat_database WHERE datname = current_database()").n
      end
      local rb = rollbacks()
      -- one group (the batches queued together): 30 new steps, step s7
      -- written again with a new value, s8 twice (its later record wins)
      local left, errs = 0, {}
      local function commit(fill)
        left = left + 1
        sched.spawn({}, function()
          local x = store.batch()
          fill(x)
          local ok, err = x:commit()
          if not ok then errs[#errs + 1] = err end
        end, function() left = left - 1 end)
      end
      for i = 21, 35 do commit(function(x) x:put_step("sr", "main", i, "s" .. i, "completed", 1, 2000, 5, { v = i }) end) end
      commit(function(x) x:put_step("sr", "main", 7, "s7", "completed", 1, 3000, 9, { v = "again" }) end)
      commit(function(x) x:put_step("sr", "main", 8, "s8", "running", 1, 3000, 0) end)
      commit(function(x) x:put_step("sr", "main", 8, "s8", "failed", 1, 3000, 9, { v = "last" }) end)
      for i = 36, 50 do commit(function(x) x:put_step("sr", "main", i, "s" .. i, "completed", 1, 2000, 5, { v = i }) end) end
      H.wait_until(function() return left == 0 end, "the commits", 30000)
      assert.are.same({}, errs)
      assert.are.equal(50, one("SELECT count(*)::int AS n FROM sluice.steps WHERE run_id = 'sr'").n)
      local s7 = one("SELECT payload::text AS p, started_at_us AS t FROM sluice.steps WHERE run_id = 'sr' AND step_id = 's7'")
      assert.are.equal('{"v":"again"}', s7.p)
      local s8 = one("SELECT payload::text AS p, status FROM sluice.steps WHERE run_id = 'sr' AND step_id = 's8'")
      assert.are.equal('{"v":"last"}', s8.p)
      assert.are.equal(2, s8.status)
      assert.are.equal('{"v":40}', one("SELECT payload::text AS p FROM sluice.steps WHERE step_id = 's40'").p)
      assert.is_true(store.stats().commits - before <= 32, "commits")
      store.close()
      -- the plain insert met s7's key: that transaction rolled back and went
      -- again (the store's session flushed its statistics as it closed)
      H.wait_until(function() return rollbacks() > rb end, "a rolled back transaction", 10000)
    end)
  end)
end)
