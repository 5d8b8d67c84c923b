-- pg_spec.lua: the PostgreSQL connection of the store (host/pg.c through
-- sluice._pg) against a real PostgreSQL 15 started for this spec: queries
-- with parameters yield and never block the loop, batches from many
-- coroutines share transactions (group commit) and each commits or fails
-- as a whole, and a crash-restart of the server in the middle of a load
-- loses no batch that was acknowledged (a batch in flight fails, saying it
-- may or may not have committed) while the loop keeps serving.
local uv = require "luv"
local H = require "helper"
local P = require "pg_helper"
local pg = require "sluice._pg"

-- runs n coroutines of fn(i) and waits for all of them
local function all(n, fn, timeout_ms)
  local left = n
  for i = 1, n do
    coroutine.wrap(function()
      fn(i)
      left = left - 1
    end)()
  end
  H.wait_until(function() return left == 0 end, function() return left .. " coroutines to finish" end,
    timeout_ms or 30000)
end

describe("sluice._pg", function()
  local inst, url, c
  setup(function()
    inst = P.start()
    url = inst:database("pgspec")
    c = assert(pg.connect(url))
  end)
  teardown(function()
    if c then c:close() end
    if inst then inst:stop() end
  end)

  it("runs queries with parameters and returns typed rows", function()
    local rows = assert(c:query("SELECT $1::int + 1 AS n, $2::text AS s, NULL AS z, $3::bool AS b, " ..
      "2.5::float8 AS f, $4::bytea AS raw, 12.50::numeric AS exact", 41, "héllo", true, "a\0b"))
    assert.are.same({ n = 42, s = "héllo", b = true, f = 2.5, raw = "a\0b", exact = "12.50" }, rows[1])
    assert.are.equal(0, #assert(c:query("SELECT 1 WHERE false")))
  end)

  it("reports a statement PostgreSQL refuses with its SQLSTATE, and the connection goes on", function()
    local ok, msg, code, state = c:query("SELECT nope")
    assert.is_nil(ok)
    assert.are.equal("EINVAL", code)
    assert.are.equal("42703", state)
    assert.matches('column "nope" does not exist', msg)
    assert.are.equal(1, c:query("SELECT 1 AS one")[1].one)
  end)

  it("fails a connection to a server that is not there at once, with libpq's reason", function()
    local t0 = uv.hrtime()
    local ok, msg, code = pg.connect("postgresql:///x?host=/nonexistent-dir&port=1")
    assert.is_nil(ok)
    assert.are.equal("EIO", code)
    assert.matches("cannot connect to PostgreSQL: .*nonexistent%-dir", msg)
    assert.is_true((uv.hrtime() - t0) / 1e6 < 5000)
    local bad, msg2, code2 = pg.connect("postgresql://[::1")
    assert.is_nil(bad)
    assert.are.equal("EINVAL", code2)
    assert.matches("connection string", msg2)
  end)

  it("commits batches from many coroutines together, each one whole or not at all", function()
    assert(c:exec("CREATE TABLE items (id int PRIMARY KEY, batch int NOT NULL)"))
    assert(c:exec("INSERT INTO items VALUES (-1, -1)"))
    local before = c:stats()
    local failed = {}
    all(200, function(i)
      -- batch 77 collides on its second row: its first row must not stay
      local second = i == 77 and -1 or 1000 + i
      local ok, msg, code, state = c:batch {
        { "INSERT INTO items VALUES ($1, $2)", i, i },
        { "INSERT INTO items VALUES ($1, $2)", second, i },
      }
      if not ok then failed[#failed + 1] = { i = i, msg = msg, code = code, state = state } end
    end)
    assert.are.equal(1, #failed)
    assert.are.same({ i = 77, code = "EINVAL", state = "23505" },
      { i = failed[1].i, code = failed[1].code, state = failed[1].state })
    local rows = assert(c:query("SELECT count(*) AS n, count(*) FILTER (WHERE batch = 77) AS b77 FROM items"))
    assert.are.same({ n = 1 + 199 * 2, b77 = 0 }, rows[1])
    local s = c:stats()
    assert.are.equal(199, s.batches - before.batches)
    -- group commit: the 200 batches shared a few transactions, not 200
    assert.is_true(s.commits - before.commits < 50, "commits: " .. (s.commits - before.commits))
  end)

  it("prepares a write's SQL the second time it is sent, again on a new connection; SQL it refuses still fails alone", function()
    local q = assert(pg.connect(url))
    assert(q:exec("CREATE TABLE prep (id int PRIMARY KEY)"))
    local function prepared()
      local list = {}
      for _, r in ipairs(assert(q:query("SELECT statement FROM pg_prepared_statements ORDER BY statement"))) do
        list[#list + 1] = r.statement
      end
      return list
    end
    for i = 1, 3 do assert(q:batch { { "INSERT INTO prep VALUES ($1)", i } }) end
    assert.are.same({ "INSERT INTO prep VALUES ($1)" }, prepared())
    -- a statement PostgreSQL refuses, grouped with good ones: the refused
    -- Parse sends the group again unprepared; only the bad batch fails
    for round = 1, 3 do
      local res = {}
      all(3, function(i)
        local sql = i == 2 and "INSERT INTO nosuch VALUES ($1)" or "INSERT INTO prep VALUES ($1)"
        local ok, _, code, state = q:batch { { sql, round * 10 + i } }
        res[i] = ok and "ok" or (code .. " " .. state)
      end)
      assert.are.same({ "ok", "EINVAL 42P01", "ok" }, res)
    end
    assert.are.same({ "INSERT INTO prep VALUES ($1)" }, prepared())
    -- the server ends the session: the next one prepares again
    local pid = assert(q:query("SELECT pg_backend_pid() AS pid"))[1].pid
    assert.is_true(assert(c:query("SELECT pg_terminate_backend($1::int) AS t", pid))[1].t)
    local id, acked = 100, 0
    H.wait_until(function()
      id = id + 1
      if q:batch { { "INSERT INTO prep VALUES ($1)", id } } then acked = acked + 1 end
      return acked >= 3
    end, "three batches on the new connection", 30000)
    assert.is_true(q:stats().connects >= 2)
    assert.are.same({ "INSERT INTO prep VALUES ($1)" }, prepared())
    local n = assert(q:query("SELECT count(*)::int AS n FROM prep WHERE id > 100"))[1].n
    assert.are.equal(acked, n)
    q:close()
  end)

  it("sends the rows of one SQL in a group as one statement, the last of a key winning; a bad row fails its batch alone", function()
    assert(c:exec("CREATE TABLE rows_t (k int PRIMARY KEY, v text NOT NULL, b int)"))
    assert(c:exec("CREATE TABLE rows_n (n int NOT NULL)"))
    assert(c:exec("INSERT INTO rows_n VALUES (0)"))
    -- counts the statements that insert into rows_t
    assert(c:exec([[CREATE FUNCTION rows_count() RETURNS trigger LANGUAGE plpgsql AS $$
      BEGIN UPDATE rows_n SET n = n + 1; RETURN NULL; END $$]]))
    assert(c:exec("CREATE TRIGGER rows_count AFTER INSERT ON rows_t FOR EACH STATEMENT EXECUTE FUNCTION rows_count()"))
    local sql = "INSERT INTO rows_t (k, v, b) SELECT u.k::int, u.v, u.b::int FROM unnest($1::text[], $2::text[], "
      .. "$3::text[]) AS u(k, v, b) ON CONFLICT (k) DO UPDATE SET v = EXCLUDED.v, b = EXCLUDED.b"
    local before = c:stats()
    local function load(from, bad)
      local failed = {}
      all(200, function(i)
        local n = from + i
        -- key 0, which every batch writes, and its own row (b NULL for odd n)
        local ok, msg, code, state = c:batch {
          { sql, 0, "last" .. n, n, n = 3, row = 1 },
          { sql, n, i ~= bad and "v" .. n or nil, n % 2 == 0 and n or nil, n = 3, row = 1 },
        }
        if not ok then failed[#failed + 1] = { n = n, msg = msg, code = code, state = state } end
      end)
      return failed
    end
    assert.are.same({}, load(0))
    local s = c:stats()
    assert.are.equal(200, s.batches - before.batches)
    local tx = s.commits - before.commits
    assert.is_true(tx < 50, "commits: " .. tx)
    -- one statement per transaction, not one per row (400)
    assert.are.equal(tx, assert(c:query("SELECT n FROM rows_n"))[1].n)
    local rows = assert(c:query("SELECT count(*)::int AS n, count(b)::int AS b FROM rows_t WHERE k > 0"))[1]
    assert.are.same({ n = 200, b = 100 }, rows)
    assert.are.equal("v7", assert(c:query("SELECT v FROM rows_t WHERE k = 7"))[1].v)
    assert.are.same({ v = "last200", b = 200 }, assert(c:query("SELECT v, b FROM rows_t WHERE k = 0"))[1])
    -- batch 77's own row is refused (v NULL): it fails alone, its other row does not stay
    local failed = load(1000, 77)
    assert.are.equal(1, #failed)
    assert.are.same({ n = 1077, code = "EINVAL", state = "23502" },
      { n = failed[1].n, code = failed[1].code, state = failed[1].state })
    rows = assert(c:query("SELECT count(*)::int AS n FROM rows_t WHERE k > 1000"))[1]
    assert.are.equal(199, rows.n)
    assert.are.equal(0, #assert(c:query("SELECT 1 FROM rows_t WHERE k = 1077")))
    assert.are.same({ v = "last1200", b = 1200 }, assert(c:query("SELECT v, b FROM rows_t WHERE k = 0"))[1])
  end)

  it("returns the rows of each statement of a committed batch", function()
    assert(c:exec("CREATE TABLE seqs (name text PRIMARY KEY, v bigint NOT NULL)"))
    local ok, res = c:batch {
      { "INSERT INTO seqs VALUES ('e', 0)" },
      { "UPDATE seqs SET v = v + $1 WHERE name = 'e' RETURNING v", 5 },
    }
    assert.is_true(ok)
    assert.are.same({ {}, { { v = 5 } } }, res)
  end)

  it("never loses an acknowledged batch across a crash-restart, and the loop keeps serving", function()
    assert(c:exec("CREATE TABLE acks (id int PRIMARY KEY, w int NOT NULL)"))
    local acked, failed, unknown, stop = {}, 0, 0, false
    local ticks = 0
    local timer = uv.new_timer()
    timer:start(10, 10, function() ticks = ticks + 1 end)
    local next_id = 0
    local workers = 8
    local running = workers
    for w = 1, workers do
      coroutine.wrap(function()
        while not stop do
          next_id = next_id + 1
          local id = next_id
          local ok, msg = c:batch { { "INSERT INTO acks VALUES ($1, $2)", id, w } }
          if ok then
            acked[#acked + 1] = id
          else
            failed = failed + 1
            if msg:find("may or may not have committed", 1, true) then unknown = unknown + 1 end
            H.sleep(20)
          end
        end
        running = running - 1
      end)()
    end
    H.wait_until(function() return #acked >= 50 end, "50 acknowledged batches before the restart")
    local restarting, ticks_during = true, nil
    coroutine.wrap(function()
      local t0 = ticks
      inst:restart()
      ticks_during = ticks - t0
      restarting = false
    end)()
    H.wait_until(function() return not restarting end, "pg_ctl restart", 120000)
    local after_restart = #acked
    H.wait_until(function() return #acked >= after_restart + 50 end,
      "50 more acknowledged batches after the restart", 60000)
    stop = true
    H.wait_until(function() return running == 0 end, "the workers to stop")
    timer:close()
    -- the loop ran its timer while PostgreSQL was down and coming back
    assert.is_true(ticks_during > 10, "timer ticks during the restart: " .. tostring(ticks_during))
    local s = c:stats()
    assert.is_true(s.lost >= 1, "the connection was lost at least once")
    assert.is_true(s.connects >= 2, "and re-established")
    -- every acknowledged batch is there
    local rows = assert(c:query("SELECT id FROM acks"))
    local present = {}
    for _, r in ipairs(rows) do present[r.id] = true end
    local missing = {}
    for _, id in ipairs(acked) do
      if not present[id] then missing[#missing + 1] = id end
    end
    assert.are.same({}, missing)
    -- what was in flight failed, saying the outcome is unknown (or waited
    -- for the new connection and committed)
    assert.are.equal(unknown, s.unknown)
    assert.is_true(#rows >= #acked)
    assert.is_true(#rows <= #acked + failed)
  end)

  it("fails writes after queue_timeout_ms without a server, then reconnects when it is back", function()
    local q = assert(pg.connect(url, { queue_timeout_ms = 1500, backoff_max_ms = 200 }))
    assert(q:exec("CREATE TABLE outage (id int PRIMARY KEY)"))
    inst:pause()
    local t0 = uv.hrtime()
    local ok, msg, code = q:batch { { "INSERT INTO outage VALUES (1)" } }
    local waited = (uv.hrtime() - t0) / 1e6
    assert.is_nil(ok)
    assert.are.equal("EIO", code)
    assert.matches("no connection to PostgreSQL for 1500 ms .*not written", msg)
    assert.is_true(waited < 10000, "failed after " .. waited .. " ms")
    inst:start()
    H.wait_until(function() return q:stats().connected end, "the connection to come back", 30000)
    assert.is_true(assert(q:batch { { "INSERT INTO outage VALUES (2)" } }))
    assert.are.same({ { id = 2 } }, assert(q:query("SELECT id FROM outage")))
    q:close()
  end)
end)
