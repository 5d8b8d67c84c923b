-- sqlite_spec.lua: sluice.sqlite on real database files: values keep their
-- types, params by position and by name, insert_many in one transaction
-- (upserts replace, a failure in any chunk leaves nothing), errors as
-- tables with SQLite's code, the loop running while a statement runs on a
-- worker, statements of one database in call order, close, and a script
-- that exits with a database open or a statement running.
local H = require "helper"
local sqlite = require "sluice.sqlite"
local json = require "sluice.json"
local sched = require "sluice.sched"
local uv = require "luv"

local dir = H.tmpdir()
local n = 0
local function fresh()
  n = n + 1
  return sqlite.open(dir .. "/db" .. n .. ".sqlite")
end

describe("sluice.sqlite", function()
  it("keeps integers, floats, text, blobs and NULL", function()
    local db = fresh()
    db:exec("CREATE TABLE v (k TEXT PRIMARY KEY, x)")
    local blob = "\0\255binary"
    db:exec("INSERT INTO v VALUES ('max', ?), ('float', ?), ('text', ?), ('blob', ?), "
      .. "('null', ?), ('jnull', ?), ('bool', ?), ('json', ?)",
      { math.maxinteger, 0.1, "héllo", blob, nil, json.null, true, { a = 1, list = json.array{} } })
    local got = {}
    for _, r in ipairs(db:rows("SELECT k, x, typeof(x) AS t FROM v")) do got[r.k] = r end
    assert.are.equal(math.maxinteger, got.max.x)
    assert.are.equal("integer", math.type(got.max.x))
    assert.are.equal(0.1, got.float.x)
    assert.are.equal("float", math.type(got.float.x))
    assert.are.same({ "héllo", "text" }, { got.text.x, got.text.t })
    assert.are.same({ blob, "blob" }, { got.blob.x, got.blob.t })
    assert.are.same({ k = "null", t = "null" }, got.null)
    assert.are.equal("null", got.jnull.t)
    assert.are.equal(1, got.bool.x)
    assert.are.same({ a = 1, list = {} }, json.decode(got.json.x))
    db:close()
  end)

  it("binds params by position and by name, and returns changes and the rowid", function()
    local db = fresh()
    db:exec([[
      CREATE TABLE u (id INTEGER PRIMARY KEY, name TEXT);
      -- a comment between statements
      CREATE INDEX u_name ON u (name);
    ]])
    local changes, rowid = db:exec("INSERT INTO u (name) VALUES (?)", { "ann" })
    assert.are.same({ 1, 1 }, { changes, rowid })
    db:exec("INSERT INTO u (id, name) VALUES (:id, :name)", { id = 7, name = "bob" })
    db:exec("INSERT INTO u (id, name) VALUES (@id, $name)", { id = 8, name = "cy" })
    assert.are.same({ { id = 7, name = "bob" } }, db:rows("SELECT * FROM u WHERE name = :n", { n = "bob" }))
    assert.are.equal(3, db:exec("UPDATE u SET name = upper(name)"))
    local ok, err = pcall(db.exec, db, "INSERT INTO u (name) VALUES (?)", { "a", "b" })
    assert.is_false(ok)
    assert.are.equal("SQLITE_RANGE", err.code)
    assert.matches("takes 1 parameters, 2 given", err.message)
    ok, err = pcall(db.rows, db, "SELECT * FROM u WHERE id = :id", { name = "x" })
    assert.matches("no value for parameter :id", err.message)
    ok, err = pcall(db.rows, db, "SELECT 1; SELECT 2")
    assert.matches("rows runs one statement", err.message)
    ok, err = pcall(db.exec, db, "INSERT INTO u (name) VALUES (?)", { print })
    assert.are.equal("SQLITE_MISUSE", err.code)
    assert.matches("params%[1%]: cannot bind a function", err.message)
    db:close()
  end)

  it("raises error tables with SQLite's code", function()
    local db = fresh()
    db:exec("CREATE TABLE t (id INTEGER PRIMARY KEY)")
    db:exec("INSERT INTO t VALUES (1)")
    local ok, err = pcall(db.exec, db, "INSERT INTO t VALUES (1)")
    assert.is_false(ok)
    assert.are.equal("SQLITE_CONSTRAINT", err.code)
    assert.are.equal("SQLITE_CONSTRAINT: UNIQUE constraint failed: t.id", tostring(err))
    assert.are.equal("INSERT INTO t VALUES (1)", err.sql)
    ok, err = pcall(db.rows, db, "SELEC 1")
    assert.are.equal("SQLITE_ERROR", err.code)
    assert.matches('near "SELEC": syntax error', err.message)
    ok, err = pcall(sqlite.open, dir .. "/no/such/dir/x.db")
    assert.are.equal("SQLITE_CANTOPEN", err.code)
    ok, err = pcall(sqlite.open, dir .. "/missing.db", { readonly = true })
    assert.are.equal("SQLITE_CANTOPEN", err.code)
    db:close()
  end)

  it("inserts many records in one transaction, and upserts replace instead of duplicating", function()
    local db = fresh()
    db:exec("CREATE TABLE r (id INTEGER PRIMARY KEY, name TEXT, score REAL)")
    local recs = {}
    for i = 1, 12000 do recs[i] = { id = i, name = "n" .. i, score = i / 2 } end
    assert.are.equal(12000, db:insert_many("r", recs))
    recs[5] = { id = 5, name = "five", score = 0.25 }
    recs[12001] = { id = 12001, name = "new" }
    assert.are.equal(12001, db:insert_many("r", recs, { upsert_on = "id" }))
    assert.are.equal(12001, db:rows("SELECT count(*) AS c FROM r")[1].c)
    assert.are.same({ { id = 5, name = "five", score = 0.25 } }, db:rows("SELECT * FROM r WHERE id = 5"))
    assert.are.same({ { id = 12001, name = "new" } }, db:rows("SELECT * FROM r WHERE id = 12001"))
    assert.are.equal(0, db:insert_many("r", {}))
    db:close()
  end)

  it("leaves nothing when a record of a later chunk fails", function()
    -- records are copied 5,000 at a time, the next chunk while the worker
    -- inserts the previous one: failures in the 2nd and the 3rd chunk
    local db = fresh()
    db:exec("CREATE TABLE r (id INTEGER PRIMARY KEY, v TEXT)")
    local recs = {}
    for i = 1, 16000 do recs[i] = { id = i, v = "x" } end
    for _, bad in ipairs({ 8000, 13000 }) do
      recs[bad] = { id = 1, v = "duplicate" }
      local ok, err = pcall(db.insert_many, db, "r", recs)
      assert.is_false(ok)
      assert.are.equal("SQLITE_CONSTRAINT", err.code)
      assert.are.equal(0, db:rows("SELECT count(*) AS c FROM r")[1].c)
      recs[bad] = { id = bad, v = function() end }
      ok, err = pcall(db.insert_many, db, "r", recs)
      assert.are.equal("SQLITE_MISUSE", err.code)
      assert.matches(("records%%[%d%%]%%.v: cannot bind a function"):format(bad), err.message)
      assert.are.equal(0, db:rows("SELECT count(*) AS c FROM r")[1].c)
      recs[bad] = { id = bad, v = "x" }
    end
    -- the database is usable afterwards
    assert.are.equal(16000, db:insert_many("r", recs))
    assert.are.equal(16000, db:rows("SELECT count(*) AS c FROM r")[1].c)
    db:close()
  end)

  it("keeps the loop running while a statement runs on a worker", function()
    local db = fresh()
    local ticks = 0
    local t = uv.new_timer()
    t:start(5, 5, function() ticks = ticks + 1 end)
    local t0 = uv.hrtime()
    local r = db:rows([[WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 2000000)
      SELECT count(*) AS n FROM c]])
    local ms = (uv.hrtime() - t0) / 1e6
    t:stop()
    t:close()
    assert.are.equal(2000000, r[1].n)
    -- a blocked loop would have fired the timer at most once
    assert.is_true(ticks >= 2, ("%d ticks in %.0f ms"):format(ticks, ms))
    db:close()
  end)

  it("runs the statements of one database in call order, from many tasks", function()
    local db = fresh()
    db:exec("CREATE TABLE log (seq INTEGER PRIMARY KEY AUTOINCREMENT, task INTEGER)")
    local handles = {}
    for i = 1, 50 do
      handles[i] = sched.go({}, function() return db:exec("INSERT INTO log (task) VALUES (?)", { i }) end)
    end
    for i = 1, 50 do assert.is_true((handles[i]:await())) end
    local rows = db:rows("SELECT task FROM log ORDER BY seq")
    assert.are.equal(50, #rows)
    for i = 1, 50 do assert.are.equal(i, rows[i].task) end
    db:close()
  end)

  it("closes after the statements already called, and refuses statements afterwards", function()
    local path = dir .. "/closing.sqlite"
    local db = sqlite.open(path)
    db:exec("CREATE TABLE t (x)")
    local h = sched.go({}, function() return db:exec("INSERT INTO t VALUES (42)") end)
    db:close()
    assert.is_true((h:await()))
    local ok, err = pcall(function() db:exec("SELECT 1") end)
    assert.is_false(ok)
    assert.matches("sqlite_spec.lua:%d+: sluice.sqlite: the database .* is closed", err)
    do
      local again <close> = sqlite.open(path, { readonly = true })
      assert.are.same({ { x = 42 } }, again:rows("SELECT x FROM t"))
      ok, err = pcall(again.exec, again, "INSERT INTO t VALUES (1)")
      assert.are.equal("SQLITE_READONLY", err.code)
    end
  end)

  it("lets a database be collected right after its last statement returns", function()
    -- the collection runs while the host is still inside the statement's
    -- completion (ASan catches a use after free there)
    for i = 1, 20 do
      local h = sched.go({}, function()
        local db = sqlite.open(dir .. "/gc" .. i .. ".sqlite")
        db:exec("CREATE TABLE t (x)")
        db = nil
        collectgarbage("collect")
        return true
      end)
      assert.is_true((h:await()))
    end
    local db = sqlite.open(dir .. "/gc20.sqlite", { readonly = true })
    assert.are.same({}, db:rows("SELECT * FROM t"))
    db:close()
  end)

  it("refuses to wait where the host cannot resume", function()
    local db = fresh()
    local ok, err = pcall(function()
      return ("x"):gsub(".", function() db:rows("SELECT 1") end)
    end)
    assert.is_false(ok)
    assert.matches("must run in a coroutine the host resumes", tostring(err))
    db:close()
  end)

  it("lets a script exit with a database open or a statement running", function()
    local path = dir .. "/script.sqlite"
    H.write(dir .. "/s.lua", ([[
      local sqlite = require "sluice.sqlite"
      local db = sqlite.open(%q, { wal = true })
      db:exec("CREATE TABLE t (x)")
      db:insert_many("t", { { x = 1 }, { x = 2 } })
      print(#db:rows("SELECT * FROM t"))
      if arg[1] == "busy" then
        coroutine.wrap(function()
          db:rows("WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 3000000) SELECT count(*) FROM c")
        end)()
        require("sluice._vm").stop()
      end
    ]]):format(path))
    local code, out, err = H.sluice({ dir .. "/s.lua" })
    assert.are.equal(0, code, err)
    assert.are.equal("2\n", out)
    assert.are.equal("", err)
    os.remove(path)
    code, out, err = H.sluice({ dir .. "/s.lua", "busy" })
    assert.are.equal(0, code, err)
    assert.are.equal("2\n", out)
    assert.are.equal("", err)
    -- the data committed before the exit is there
    local db = sqlite.open(path, { readonly = true })
    assert.are.equal(2, #db:rows("SELECT * FROM t"))
    db:close()
  end)
end)
