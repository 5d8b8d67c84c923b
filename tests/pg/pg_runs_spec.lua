-- pg_runs_spec.lua: runs and steps on the PostgreSQL store against a real
-- PostgreSQL 15 (tests/pg_helper.lua): the listings page exactly as LMDB's
-- (the same runs written to both stores give the same pages and the same
-- cursors), the steps of runs from many coroutines share commits (group
-- commit) and a resume loads a run's steps in one read, a failed run
-- executed again replays what it stored, and a step whose commit is in
-- flight when the connection is lost counts as not committed: the run
-- executes again from its stored steps and completes, that step run twice.
local H = require "helper"
local P = require "pg_helper"
local engine = require "sluice.engine"
local pgc = require "sluice._pg"
local sched = require "sluice.sched"
local store = require "sluice._store"

local inst
local function fresh_db(name)
  if not inst then inst = P.start() end
  local url = inst:database(name)
  local c = assert(pgc.connect(url))
  assert(require("sluice.pg_schema").migrate(c))
  return url, c
end

-- a run's status as PostgreSQL holds it
local function one_status(c, id)
  local rows = assert(c:query("SELECT status FROM sluice.runs WHERE id = $1", id))
  return rows[1] and rows[1].status
end

-- the same history of runs: ties of created_us, three namespaces, two
-- pipelines, statuses that move after the first write
local function write_runs()
  local b = store.batch()
  local recs = {}
  for i = 1, 60 do
    local rec = { id = ("r%02d"):format(i), pipeline = i % 2 == 0 and "p1" or "p2",
      namespace = ({ "acme", "zeta", nil })[i % 3 + 1],
      status = ({ "running", "completed", "failed", "sleeping" })[i % 4 + 1], created_us = 1000 + i // 3 }
    recs[i] = rec
    b:put_run(rec, { new = true })
  end
  assert(b:commit())
  b = store.batch()
  for i = 5, 60, 7 do
    -- (a cancel never lands on an end: on PostgreSQL the end would stay)
    recs[i].status = (i % 2 == 0 and recs[i].status ~= "failed") and "cancelled" or "completed"
    b:put_run(recs[i])
  end
  assert(b:commit())
end

local FILTERS = {
  {}, { pipeline = "p1" }, { status = "failed" }, { status = "completed" },
  { pipeline = "p2", status = "completed" }, { namespace = "acme" }, { namespace = "default" },
  { namespace = "acme", pipeline = "p1" }, { namespace = "zeta", status = "running" },
  { since_us = 1010 }, { pipeline = "p1", since_us = 1005 }, { namespace = "nobody" },
  { status = "cancelled" }, { pipeline = "p2", status = "sleeping" }, { namespace = "default", status = "running" },
}

-- every page of every filter at several limits: ids and next cursors
local function all_pages()
  local out = {}
  for fi, f in ipairs(FILTERS) do
    for _, limit in ipairs({ 1, 4, 7, 100 }) do
      local key, cursor, pages = fi .. "/" .. limit, nil, {}
      repeat
        local q = { limit = limit, before = cursor }
        for k, v in pairs(f) do q[k] = v end
        local runs, nxt = assert(store.runs(q))
        local ids = {}
        for i, r in ipairs(runs) do ids[i] = r.id end
        pages[#pages + 1] = { ids = ids, next = nxt }
        cursor = nxt
      until not cursor or #pages > 100
      out[key] = pages
    end
  end
  local bad = table.pack(store.runs({ limit = 1, before = "0011" }))
  out.bad = { bad[1], bad[3] }
  return out
end

describe("runs on PostgreSQL", function()
  teardown(function()
    store.close()
    if inst then inst:stop() end
  end)

  it("page exactly as on LMDB: the same pages, the same cursors", function()
    local lmdb, pg
    H.task(function()
      assert(store.open(H.tmpdir()))
      write_runs()
      lmdb = all_pages()
      local url = fresh_db("paging")
      assert(store.open(url))
      write_runs()
      pg = all_pages()
    end)
    assert.are.equal(9, #lmdb["1/7"]) -- 60 runs in pages of 7: the last one has no cursor
    assert.is_nil(lmdb["1/7"][9].next)
    assert.are.same(lmdb, pg)
    -- a cursor LMDB gave means the same place on PostgreSQL
    local mid = lmdb["2/4"][3].next
    H.task(function()
      local runs = store.runs({ pipeline = "p1", limit = 4, before = mid })
      assert.are.same(lmdb["2/4"][4].ids, { runs[1].id, runs[2].id, runs[3].id, runs[4].id })
    end)
  end)

  it("keep a cancel against the executing host's writes, and a run's end against a later cancel", function()
    local url, c = fresh_db("cancels")
    assert(store.open(url))
    local recs = {} -- each run's record, as a host keeps writing it
    local function put(id, status)
      local rec, new = recs[id], false
      if not rec then
        rec, new = { id = id, pipeline = "p", created_us = 1 }, true
        recs[id] = rec
      end
      rec.status = status
      assert(store.batch():put_run(rec, { new = new }):commit())
    end
    local function stored(id) return one_status(c, id) end
    H.task(function()
      -- another host's cancel holds while the executing host writes on
      put("c1", "running")
      put("c1", "cancelled")
      put("c1", "sleeping")
      put("c1", "running")
      assert.are.equal("cancelled", stored("c1"))
      -- until the run ends first (its last step done before the cancel
      -- stopped it): it ended as its host told its caller
      put("c1", "completed")
      assert.are.equal("completed", stored("c1"))
      -- a cancel landing after a run's end (it read the run running before
      -- the end committed) leaves the end
      for _, fin in ipairs({ "completed", "failed" }) do
        local id = "c-" .. fin
        put(id, "running")
        put(id, fin)
        put(id, "cancelled")
        assert.are.equal(fin, stored(id))
        assert.are.equal(fin, store.get_run(id).status)
      end
      -- a cancelled run stays cancelled when cancelled again
      put("c2", "cancelled")
      put("c2", "cancelled")
      assert.are.equal("cancelled", stored("c2"))
    end)
    c:close()
  end)

  it("commit the steps of many runs in shared transactions, and resume a run with one read of its steps", function()
    local url = fresh_db("group")
    assert(store.open(url))
    local p = pipeline("grouped", function(n)
      for i = 1, 3 do step("s" .. i, function() return n * i end) end
      return n
    end)
    local before = store.stats()
    H.task(function()
      local tasks = {}
      for i = 1, 100 do tasks[i] = sched.go({}, function() return engine.execute(p, i, "g-" .. i) end) end
      for i = 1, 100 do
        local ok, rec = tasks[i]:await()
        assert(ok, rec)
        assert.are.equal("completed", rec.status)
      end
    end)
    local after = store.stats()
    local batches, commits = after.batches - before.batches, after.commits - before.commits
    -- 100 runs x (start, 3 steps, finish)
    assert.is_true(batches >= 500, "batches " .. batches)
    assert.is_true(commits * 4 <= batches, ("%d commits for %d batches"):format(commits, batches))

    -- a run of 50 steps, failed at the last: executed again, it replays 49
    -- steps from one read of the steps
    local fail = true
    local long = pipeline("long", function()
      for i = 1, 49 do step("l" .. i, function() return i end) end
      step("last", function() if fail then error("not yet") end return "done" end)
      return "ok"
    end)
    local rec = H.task(function() return engine.execute(long, nil, "long-1") end)
    assert.are.equal("failed", rec.status)
    fail = false
    local reads = store.stats().reads
    rec = H.task(function() return engine.execute(long, nil, "long-1") end)
    assert.are.equal("completed", rec.status)
    assert.are.equal(49, rec.replayed)
    assert.are.equal(1, rec.executed)
    -- the run record and its steps (and nothing per step)
    assert.is_true(store.stats().reads - reads <= 3, "reads " .. (store.stats().reads - reads))
  end)

  it("count a step whose commit was in flight when the connection was lost as not committed", function()
    local url, c = fresh_db("lost")
    assert(store.open(url))
    local ran = { a = 0, b = 0 }
    local p = pipeline("lossy", function()
      local x = step("a", function() ran.a = ran.a + 1 return 20 end)
      local y = step("b", function() ran.b = ran.b + 1 return 22 end)
      return x + y
    end)
    local rec
    H.task(function()
      -- inserts into steps wait for this lock: the commit of step a is in
      -- flight, on the server, when its connection is cut (watched from
      -- another connection: a transaction sees one snapshot of pg_stat_activity)
      local watch = assert(pgc.connect(url))
      assert(c:exec("BEGIN"))
      assert(c:exec("LOCK TABLE sluice.steps IN SHARE MODE"))
      local run = sched.go({}, function() return engine.execute(p, nil, "lost-1") end)
      local pid
      H.wait_until(function()
        local rows = assert(watch:query("SELECT pid FROM pg_stat_activity WHERE wait_event_type = 'Lock' " ..
          "AND query LIKE '%sluice.steps%'"))
        pid = rows[1] and rows[1].pid
        return pid ~= nil
      end, "the commit of step a to wait for the lock", 20000, 20)
      assert.are.equal(1, ran.a)
      assert(watch:query("SELECT pg_terminate_backend($1)", pid))
      assert(c:exec("COMMIT"))
      watch:close()
      local ok, res = run:await()
      assert(ok, res)
      rec = res
    end)
    assert.are.equal("completed", rec.status)
    assert.are.equal(42, rec.result)
    assert.are.same({ a = 2, b = 1 }, ran) -- a ran again: its record had not committed
    H.task(function()
      local steps = store.get_steps("lost-1")
      assert.are.same({ "a", "b" }, { steps[1].id, steps[2].id })
      assert.are.equal(20, steps[1].result)
      local r = store.get_run("lost-1")
      assert.are.equal("completed", r.status)
    end)
    assert.is_true(store.stats().lost >= 1)
    c:close()
  end)

  it("execute a run again when a read it needs fails for the lost connection, instead of failing it", function()
    local url, c = fresh_db("lostread")
    assert(store.open(url))
    local ran, go = { a = 0, child = 0 }, false
    local child = pipeline("lr-child", function() step("c", function() ran.child = ran.child + 1 return 1 end) return 5 end)
    local p = pipeline("lr-parent", function()
      step("a", function()
        ran.a = ran.a + 1
        for _ = 1, 4000 do
          if go then break end
          sched.sleep_ms(5)
        end
        return 1
      end)
      return call(child, nil) + 1
    end)
    local rec
    H.task(function()
      local watch = assert(pgc.connect(url))
      local run = sched.go({}, function() return engine.execute(p, nil, "lr-1") end)
      H.wait_until(function() return ran.a == 1 end, "step a to start", 20000, 5)
      -- reads of runs wait for this lock: call's read of its child's record
      -- is in flight when the connection is cut
      assert(c:exec("BEGIN"))
      assert(c:exec("LOCK TABLE sluice.runs IN ACCESS EXCLUSIVE MODE"))
      go = true
      local pid
      H.wait_until(function()
        local rows = assert(watch:query("SELECT pid FROM pg_stat_activity WHERE wait_event_type = 'Lock' " ..
          "AND query LIKE '%FROM sluice.runs%'"))
        pid = rows[1] and rows[1].pid
        return pid ~= nil
      end, "a read of runs to wait for the lock", 20000, 20)
      assert(watch:query("SELECT pg_terminate_backend($1)", pid))
      assert(c:exec("COMMIT"))
      watch:close()
      local ok, res = run:await()
      assert(ok, res)
      rec = res
    end)
    assert.are.equal("completed", rec.status)
    assert.are.equal(6, rec.result)
    assert.are.same({ a = 1, child = 1 }, ran) -- step a had committed: replayed
    c:close()
  end)
end)
