-- pg_cost_spec.lua: what the PostgreSQL store does to cost the server less
-- per run keeps its guarantees, against a real PostgreSQL 15
-- (tests/pg_helper.lua): a new run's lease (hosts.hold_run) probes the
-- leases by their key, not the host's other leases, and still refuses a
-- run another host holds; the store's reads, prepared once their SQL
-- repeats, still answer, and one whose table went away fails with
-- PostgreSQL's error, again and again, while the others go on.
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
end)
