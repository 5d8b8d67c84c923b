-- migrate_spec.lua: `sluice store migrate --store postgres://...` against a
-- real PostgreSQL 15: it creates the schema sluice with every table, a
-- second run (and two at once) changes nothing, a schema newer than the
-- binary knows is refused, and an LMDB directory or an unreachable server
-- get a message saying what to do. And the schema's event id allocation:
-- ids become visible in id order, so a reader `after` an id misses none.
local H = require "helper"
local P = require "pg_helper"
local pg = require "sluice._pg"
local schema = require "sluice.pg_schema"

describe("sluice store migrate", function()
  local inst
  setup(function() inst = P.start() end)
  teardown(function() if inst then inst:stop() end end)

  local function tables(url)
    local c = assert(pg.connect(url))
    local rows = assert(c:query([[SELECT table_name FROM information_schema.tables
      WHERE table_schema = 'sluice' ORDER BY table_name]]))
    c:close()
    local names = {}
    for i, r in ipairs(rows) do names[i] = r.table_name end
    return names
  end

  it("is what every other command asks for on a database without the schema, before doing anything", function()
    local url = inst:database("m0")
    local state = H.tmpdir()
    for _, args in ipairs({ { "runs", "--store", url }, { "serve", "--no-http", "--store", url, "--state-dir", state },
      { "events", "orders", "--store", url }, { "keys", "list", "--store", url } }) do
      local code, _, err = H.sluice(args)
      assert.are.equal(2, code, err)
      assert.matches("has no schema sluice %(this sluice needs version %d+%): run sluice store migrate", err)
    end
    local code, out, err = H.sluice({ "run", "pipelines/daily_etl.lua" },
      { env = { "SLUICE_STORE=" .. url, "SLUICE_STATE_DIR=" .. state } })
    assert.are.equal(2, code, err)
    assert.are.equal("", out)
    assert.matches("run sluice store migrate", err)
    -- nothing was written: still no schema
    assert.are.same({}, tables(url))
  end)

  it("makes the store refuse reads and writes on a database without the schema, saying to migrate", function()
    local url = inst:database("m00")
    local store = require "sluice._store"
    H.task(function()
      assert(store.open(url))
      local n, msg, code = store.key_count()
      assert.is_nil(n)
      assert.are.equal("EBADSTORE", code)
      assert.matches("run sluice store migrate", msg)
      local ok, wmsg, wcode = store.batch():put_namespace("acme", { status = "active" }):commit()
      assert.is_nil(ok)
      assert.are.equal("EBADSTORE", wcode, wmsg)
      store.close()
    end)
  end)

  it("upgrades a store at version 1 to 2: its schedules created over the API are flagged", function()
    local url = inst:database("m12")
    local c = assert(pg.connect(url))
    local latest = schema.latest
    schema.latest = 1 -- as the sluice that made version 1 would
    local ok, from, to = pcall(schema.migrate, c)
    schema.latest = latest
    assert.is_true(ok, from)
    assert.are.same({ 0, 1 }, { from, to })
    assert(c:exec([[INSERT INTO sluice.schedules (name, record) VALUES
      ('from-api', '{"pipeline":"p","source":"api","spec":"every 5s","input":{"k":"a\u0000b"}}'),
      ('from-code', '{"pipeline":"p","spec":"every 5s"}')]]))
    c:close()
    local code, out, err = H.sluice({ "store", "migrate", "--store", url })
    assert.are.equal(0, code, err)
    assert.matches("schema sluice migrated from version 1 to " .. latest, out)
    c = assert(pg.connect(url))
    local rows = assert(c:query("SELECT name, api FROM sluice.schedules ORDER BY name"))
    assert.are.same({ { name = "from-api", api = true }, { name = "from-code", api = false } }, rows)
    assert.is_nil(schema.check(c))
    c:close()
  end)

  it("upgrades a store at version 2 to 3: the hosts registered before claim runs", function()
    local url = inst:database("m23")
    local c = assert(pg.connect(url))
    local latest = schema.latest
    schema.latest = 2 -- as the sluice that made version 2 would
    local ok, from, to = pcall(schema.migrate, c)
    schema.latest = latest
    assert.is_true(ok, from)
    assert.are.same({ 0, 2 }, { from, to })
    assert(c:exec("INSERT INTO sluice.hosts (id, name, pid, expires_at) VALUES ('old-host', 'm', 1, now())"))
    assert(c:exec([[INSERT INTO sluice.runs (id, pipeline, status, active, created_at_us, record) VALUES
      ('done', 'p', 'completed', false, 1, '{}'), ('going', 'p', 'running', true, 2, '{}')]]))
    c:close()
    local code, out, err = H.sluice({ "store", "migrate", "--store", url })
    assert.are.equal(0, code, err)
    assert.matches("schema sluice migrated from version 2 to " .. latest, out)
    c = assert(pg.connect(url))
    assert.are.same({ { id = "old-host", claims = true } }, assert(c:query("SELECT id, claims FROM sluice.hosts")))
    -- the runs' listings by status find the runs stored before
    assert.are.same({ { id = "done", final_status = "completed" }, { id = "going" } },
      assert(c:query("SELECT id, final_status FROM sluice.runs ORDER BY id")))
    assert.is_nil(schema.check(c))
    c:close()
  end)

  it("creates the schema, and a second run does nothing", function()
    local url = inst:database("m1")
    local code, out, err = H.sluice({ "store", "migrate", "--store", url })
    assert.are.equal(0, code, err)
    assert.matches("schema sluice migrated from version 0 to " .. schema.latest, out)
    assert.are.same({ "api_keys", "consumers", "counters", "cursors", "events", "hosts", "idempotency",
      "leases", "logs", "meta", "namespaces", "quotas", "runs", "schedules", "schema_version", "sends",
      "steps", "stream_trims" }, tables(url))
    local code2, out2, err2 = H.sluice({ "store", "migrate" }, { env = { "SLUICE_STORE=" .. url } })
    assert.are.equal(0, code2, err2)
    assert.matches("at version " .. schema.latest .. ", the latest this sluice knows: nothing to do", out2)
    local c = assert(pg.connect(url))
    assert.is_nil(schema.check(c))
    c:close()
  end)

  it("lets two hosts migrate at once: one migrates, the other finds it done", function()
    local url = inst:database("m2")
    local a = H.spawn({ "store", "migrate", "--store", url })
    local b = H.spawn({ "store", "migrate", "--store", url })
    local ca, _, oa, ea = a:wait()
    local cb, _, ob, eb = b:wait()
    assert.are.equal(0, ca, ea)
    assert.are.equal(0, cb, eb)
    local both = oa .. ob
    assert.are.equal(1, select(2, both:gsub("migrated from version 0", "")), both)
    -- the other found it done, or applied the migrations the first had not
    -- reached yet when it took the lock (each migration is a transaction)
    local other = oa:find("migrated from version 0", 1, true) and ob or oa
    local from = other:match("migrated from version (%d+) to " .. schema.latest)
    assert.is_true(other:find("nothing to do", 1, true) ~= nil or (from ~= nil and tonumber(from) > 0), both)
    local c = assert(pg.connect(url))
    assert.is_nil(schema.check(c))
    c:close()
  end)

  it("refuses a schema newer than this sluice knows", function()
    local url = inst:database("m3")
    assert.are.equal(0, (H.sluice({ "store", "migrate", "--store", url })))
    local c = assert(pg.connect(url))
    assert(c:exec("UPDATE sluice.schema_version SET version = $1", schema.latest + 1))
    assert.matches("newer than this sluice knows", schema.check(c))
    c:close()
    local code, out, err = H.sluice({ "store", "migrate", "--store", url })
    assert.are.equal(2, code)
    assert.are.equal("", out)
    assert.matches(("schema is at version %d, newer than this sluice knows %%(%d%%): upgrade sluice")
      :format(schema.latest + 1, schema.latest), err)
    for _, args in ipairs({ { "run", "pipelines/daily_etl.lua", "--store", url, "--state-dir", H.tmpdir() },
      { "serve", "--no-http", "--store", url, "--state-dir", H.tmpdir() }, { "status", "x", "--store", url } }) do
      code, out, err = H.sluice(args)
      assert.are.equal(2, code, err)
      assert.are.equal("", out)
      assert.matches("has schema version %d+, newer than this sluice knows %(%d+%): upgrade sluice", err)
    end
  end)

  it("says a store with no schema needs migrate", function()
    local url = inst:database("m4")
    local c = assert(pg.connect(url))
    assert.matches("at version 0, this sluice needs " .. schema.latest .. ": run sluice store migrate", schema.check(c))
    c:close()
  end)

  it("tells an LMDB directory and an unreachable server apart from a schema problem", function()
    local code, _, err = H.sluice({ "store", "migrate", "--store", H.tmpdir() })
    assert.are.equal(2, code)
    assert.matches("is an LMDB store %(a directory%), which needs no migration", err)
    local code2, _, err2 = H.sluice({ "store", "migrate", "--store", "postgresql:///x?host=/nonexistent-dir" })
    assert.are.equal(1, code2)
    assert.matches("cannot connect to PostgreSQL: .*nonexistent%-dir", err2)
  end)

  it("allocates event ids under the counter's row lock: they become visible in id order", function()
    local url = inst:database("m5")
    assert.are.equal(0, (H.sluice({ "store", "migrate", "--store", url })))
    local a, b, r = assert(pg.connect(url)), assert(pg.connect(url)), assert(pg.connect(url))
    local append = [[WITH s AS (UPDATE sluice.counters SET value = value + 1 WHERE name = 'events'
        RETURNING value)
      INSERT INTO sluice.events (seq, stream, type, ts_us, data)
      SELECT value, $1, 't', 0, '{}' FROM s RETURNING seq]]
    -- a takes the first id and keeps its transaction open a while; b
    -- appends meanwhile (on another key) and must come after a, both in
    -- id and in visibility
    local ida, idb, b_alone
    coroutine.wrap(function()
      local ok, res = assert(a:batch { { append, "k1" }, { "SELECT pg_sleep(0.5)" } })
      ida = ok and res[1][1].seq
    end)()
    H.wait_until(function()
      local rows = assert(r:query("SELECT count(*) AS n FROM pg_stat_activity WHERE query LIKE 'SELECT pg_sleep%'"))
      return rows[1].n > 0
    end, "the first append to hold its transaction open")
    coroutine.wrap(function()
      local ok, res = assert(b:batch { { append, "k2" } })
      idb = ok and res[1][1].seq
    end)()
    while not (ida and idb) do
      local rows = assert(r:query("SELECT seq FROM sluice.events ORDER BY seq"))
      if rows[1] and rows[1].seq ~= 1 then b_alone = true end
      H.sleep(10)
    end
    assert.are.same({ 1, 2 }, { ida, idb })
    assert.is_nil(b_alone, "a reader saw id 2 before id 1 committed")
    a:close()
    b:close()
    r:close()
  end)
end)
