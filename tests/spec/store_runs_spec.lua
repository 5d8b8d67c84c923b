-- store_runs_spec.lua: runs with their listings, steps, run logs and
-- idempotency keys (sluice._store, host/l_store_runs.c) in a real store of
-- H.backend (LMDB here; ctest runs it again on PostgreSQL, where reads
-- yield and the listings are indexes): every status change of a run moves
-- its status entry in the same commit, pages by namespace, pipeline and
-- status with a cursor and a time bound, the active runs, steps stored and
-- loaded for the replay, logs kept in order, a batch that fails leaves
-- nothing, and the refusal of what a record cannot hold.
local H = require "helper"
local clock = require "sluice._clock"
local engine = require "sluice.engine"
local json = require "sluice.json"
local store = require "sluice._store"

local pg = H.backend == "postgres"
local target
H.task(function() target = H.store_target() end)
assert(store.open(target))

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

-- a page of runs (reads yield on PostgreSQL: inside a task)
local function page(f)
  return H.task(function()
    local runs, nxt = store.runs(f)
    return { runs = runs, nxt = nxt }
  end)
end

local function ids_of(runs)
  local out = {}
  for i, r in ipairs(runs) do out[i] = r.id end
  return out
end

local function commit(b)
  return H.task(function() return table.pack(b:commit()) end)
end

-- a new run record, written alone
local function new_run(id, fields)
  local now = clock.now()
  local rec = { id = id, pipeline = "p", status = "running", created_us = now, created_at = clock.iso(now) }
  for k, v in pairs(fields or {}) do rec[k] = v end
  assert(commit(store.batch():put_run(rec, { new = true }))[1])
  return rec
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
    assert.are.same({ "completed" }, H.task(function() return status_entries("idx-1") end))
    assert.are.equal(1, #page({ pipeline = "idx-sleepy", limit = 10 }).runs)
    assert.are.equal(1, #page({ limit = 10 }).runs)
  end)

  it("page newest first with a cursor, by pipeline, status and since", function()
    local p = pipeline("idx-page", function(input) if input.fail then error("no") end return input.i end)
    H.task(function()
      for i = 1, 7 do engine.execute(p, { i = i, fail = i % 3 == 0 }, ("page-%d"):format(i)) end
    end)
    local got, cursor = {}, nil
    repeat
      local pg_ = page({ pipeline = "idx-page", limit = 3, before = cursor })
      for _, r in ipairs(pg_.runs) do got[#got + 1] = r.id end
      cursor = pg_.nxt
    until not cursor
    assert.are.same({ "page-7", "page-6", "page-5", "page-4", "page-3", "page-2", "page-1" }, got)
    -- the last full page says there is no next one
    local last = page({ pipeline = "idx-page", limit = 7 })
    assert.are.equal(7, #last.runs)
    assert.is_nil(last.nxt)
    local failed = page({ status = "failed", limit = 10 }).runs
    assert.are.same({ "page-6", "page-3" }, { failed[1].id, failed[2].id })
    local both = page({ pipeline = "idx-page", status = "completed", limit = 2 })
    assert.are.same({ "page-7", "page-5" }, ids_of(both.runs))
    assert.are.same({ "page-4", "page-2" }, ids_of(page({ pipeline = "idx-page", status = "completed",
      limit = 2, before = both.nxt }).runs))
    local r5 = H.task(function() return engine.get_run("page-5") end)
    local recent = page({ pipeline = "idx-page", since_us = r5.created_us, limit = 10 }).runs
    assert.are.equal(3, #recent)
    assert.are.equal(0, #page({ namespace = "acme", limit = 10 }).runs)
    H.task(function()
      local none, msg, code = store.runs({ limit = 1, before = "nothex" })
      assert.is_nil(none)
      assert.are.equal("EINVAL", code)
      assert.matches("before must be a cursor", msg)
    end)
  end)

  it("list each namespace's runs, and every namespace's merged newest first", function()
    local t = clock.now()
    for i, ns in ipairs({ "ns-b", "ns-a", "ns-b", "ns-c", "ns-a" }) do
      new_run(("ns-run-%d"):format(i), { pipeline = "nsp", namespace = ns, created_us = t + i, status = i == 4 and "failed" or "running" })
    end
    assert.are.same({ "ns-run-5", "ns-run-2" }, ids_of(page({ namespace = "ns-a", limit = 10 }).runs))
    assert.are.same({ "ns-run-3", "ns-run-1" }, ids_of(page({ namespace = "ns-b", pipeline = "nsp", limit = 10 }).runs))
    local got, cursor = {}, nil
    repeat
      local pg_ = page({ pipeline = "nsp", limit = 2, before = cursor })
      for _, r in ipairs(pg_.runs) do got[#got + 1] = r.id end
      cursor = pg_.nxt
    until not cursor
    assert.are.same({ "ns-run-5", "ns-run-4", "ns-run-3", "ns-run-2", "ns-run-1" }, got)
    assert.are.same({ "ns-run-4" }, ids_of(page({ status = "failed", namespace = "ns-c", limit = 10 }).runs))
    assert.are.same({ "ns-run-5", "ns-run-3", "ns-run-2", "ns-run-1" },
      ids_of(page({ pipeline = "nsp", status = "running", limit = 10 }).runs))
  end)

  it("keep the active runs: those not completed, failed or cancelled, oldest first", function()
    local a = new_run("act-1", { created_us = 10 })
    new_run("act-2", { created_us = 5, status = "sleeping" })
    local ids = {}
    for _, r in ipairs(H.task(function() return store.unfinished_runs() end)) do
      if r.id:find("^act%-") then ids[#ids + 1] = r.id end
    end
    assert.are.same({ "act-2", "act-1" }, ids)
    -- read from the store, then final: it leaves the active runs
    local got = H.task(function() return store.get_run("act-1") end)
    assert.are.same(a.created_at, got.created_at)
    got.status = "completed"
    assert(commit(store.batch():put_run(got))[1])
    ids = {}
    for _, r in ipairs(H.task(function() return store.unfinished_runs() end)) do
      if r.id:find("^act%-") then ids[#ids + 1] = r.id end
    end
    assert.are.same({ "act-2" }, ids)
    assert.is_nil(H.task(function() return store.get_run("no-such-run") end))
  end)

  if pg then
    it("are the runs table's indexes: nothing to fill in on PostgreSQL", function()
      H.task(function()
        assert.is_true(store.runs_indexed())
        assert.are.equal(0, engine.index_runs())
        local nxt, count = store.batch():index_runs(nil, 10)
        assert.is_nil(nxt)
        assert.are.equal(0, count)
      end)
    end)
  else
    it("are filled in for a store whose runs were written without them", function()
      local raw = require "sluice._store_raw"
      local now = clock.now()
      local old = { id = "old-1", pipeline = "legacy", status = "completed", created_us = now, created_at = clock.iso(now) }
      H.task(function()
        assert(raw.ops(store.batch(), { "runs", "old-1", json.encode(old), "meta", "runs_indexed", false }):commit())
      end)
      assert.are.equal(0, #page({ pipeline = "legacy", limit = 10 }).runs)
      local n = H.task(function() return engine.index_runs() end)
      assert.is_true(n >= 1)
      local runs = page({ pipeline = "legacy", limit = 10 }).runs
      assert.are.equal("old-1", runs[1].id)
      assert.are.equal(1, #page({ pipeline = "legacy", status = "completed", limit = 10 }).runs)
      -- once only
      assert.are.equal(0, H.task(function() return engine.index_runs() end))
    end)
  end

  it("refuse a record that was neither read nor created new", function()
    local b = store.batch()
    local ok, err = pcall(b.put_run, b, { id = "stray", pipeline = "p", status = "running", created_us = 1 })
    assert.is_false(ok)
    assert.matches("neither read from the store nor created with {new=true}", err)
    ok, err = pcall(b.put_run, b, { id = "", pipeline = "p", created_us = 1 }, { new = true })
    assert.is_false(ok)
    assert.matches("has no id", err)
    ok, err = pcall(b.put_run, b, { id = "x\0y", pipeline = "p", created_us = 1 }, { new = true })
    assert.is_false(ok)
    assert.matches("holds a NUL byte", err)
    ok, err = pcall(b.put_run, b, { id = "neg", pipeline = "p", created_us = -1 }, { new = true })
    assert.is_false(ok)
    assert.matches("created_us is negative", err)
    assert.are.equal(0, b:count())
  end)
end)

describe("steps", function()
  it("are loaded for the replay as committed: results, failures, branches; in-flight ones left out", function()
    new_run("st-1")
    local b = store.batch()
    assert(b:put_step("st-1", "", 1, "a", "completed", 1, 100, 5, { rows = { 1, 2 }, s = "é" }))
    assert(b:put_step("st-1", "", 2, "b", "completed", 2, 200, 5)) -- returned nil
    assert(b:put_step("st-1", "left", 1, "c", "failed", 3, 300, 5, { message = "boom" }))
    assert(b:put_step("st-1", "left", 2, "d", "running", 1, 400, 0))
    assert(commit(b)[1])
    H.task(function()
      local done, order, n = store.load_steps("st-1")
      assert.are.equal(3, n)
      assert.are.same({ rows = { 1, 2 }, s = "é" }, json.decode(done.a))
      assert.is_true(done.b)
      assert.is_false(done.c)
      assert.is_nil(done.d)
      assert.are.same({ [""] = { "a", "b" }, left = { "c" } }, order)
      -- the step's result replaces its in-flight record
      assert(store.batch():put_step("st-1", "left", 2, "d", "completed", 1, 400, 9, 42):commit())
      done = store.load_steps("st-1")
      assert.are.equal("42", done.d)
      -- every step as stored, in the order they started
      local steps = store.get_steps("st-1")
      assert.are.same({ "a", "b", "c", "d" }, ids_of(steps))
      assert.are.same({ "completed", "completed", "failed", "completed" },
        { steps[1].status, steps[2].status, steps[3].status, steps[4].status })
      assert.are.same({ rows = { 1, 2 }, s = "é" }, steps[1].result)
      assert.are.same({ message = "boom" }, steps[3].error)
      assert.are.same({ 3, 1, 300, 5, "left", 0 }, { steps[3].attempts, steps[3].pos, steps[3].started_us,
        steps[3].duration_us, steps[3].branch, steps[2].size })
      local one = store.get_step("st-1", "c")
      assert.are.same({ message = "boom" }, one.value)
      assert.is_nil(store.get_step("st-1", "zz"))
      assert.is_nil(store.get_step("other-run", "a"))
      local none, norder, nn = store.load_steps("no-steps")
      assert.are.same({ {}, {}, 0 }, { none, norder, nn })
    end)
  end)

  it("are copied to another run as they are, and a missing one is an error", function()
    new_run("cp-from")
    local b = store.batch()
    assert(b:put_step("cp-from", "", 1, 'q"uo\\te', "completed", 1, 1, 1, "v1"))
    assert(b:put_step("cp-from", "", 2, "plain", "completed", 1, 2, 1))
    assert(b:put_step("cp-from", "", 3, "later", "completed", 1, 3, 1, 3))
    assert(commit(b)[1])
    H.task(function()
      local c = store.batch():put_run({ id = "cp-to", pipeline = "p", created_us = 1 }, { new = true })
      c:copy_steps("cp-from", "cp-to", { 'q"uo\\te', "plain" })
      assert(c:commit())
      local steps = store.get_steps("cp-to")
      assert.are.same({ 'q"uo\\te', "plain" }, ids_of(steps))
      assert.are.equal("v1", steps[1].result)
      assert.is_nil(steps[2].result)
      local ok, err = pcall(function() store.batch():copy_steps("cp-from", "cp-2", { "plain", "nope" }) end)
      assert.is_false(ok)
      assert.matches("run cp%-from has no step 'nope'", err)
    end)
  end)
end)

describe("run logs", function()
  it("keep a run's lines oldest first, with their ids, and remove those deleted", function()
    local b = store.batch()
    b:put_log("lg-1", 200, 0, json.encode({ msg = "second" }))
    b:put_log("lg-1", 100, 1, json.encode({ msg = "first-b" }))
    b:put_log("lg-1", 100, 0, json.encode({ msg = "first-a" }))
    b:put_log("lg-2", 50, 0, json.encode({ msg = "other run" }))
    assert(commit(b)[1])
    H.task(function()
      local lines = store.read_logs("lg-1")
      assert.are.same({ "first-a", "first-b", "second" }, { lines[1].msg, lines[2].msg, lines[3].msg })
      assert.are.same({ 100, 0, 100, 1, 200, 0 }, store.log_ids("lg-1"))
      assert(store.batch():del_log("lg-1", 100, 0):del_log("lg-1", 999, 9):commit())
      assert.are.same({ 100, 1, 200, 0 }, store.log_ids("lg-1"))
      assert.are.same({}, store.read_logs("lg-none"))
    end)
  end)

  it("commit with the step that logged them, through the engine", function()
    local log = require "sluice.log"
    local p = pipeline("logs-engine", function()
      step("a", function() log.info("from a", { n = 1 }) return 1 end)
      step("b", function() log.warn("from b") return 2 end)
      return 3
    end)
    local rec = H.task(function() return engine.execute(p, nil, "logs-e1") end)
    assert.are.equal("completed", rec.status)
    local lines = H.task(function() return log.read("logs-e1") end)
    assert.are.equal(2, #lines)
    assert.are.equal("from a", lines[1].msg)
    assert.are.equal("b", lines[2].step)
  end)
end)

describe("idempotency keys", function()
  it("name the run an API request created, per namespace and pipeline", function()
    H.task(function()
      assert.is_nil(store.get_idempotency("default", "p", "key-1"))
      local b = store.batch():put_run({ id = "idem-run", pipeline = "p", created_us = 1 }, { new = true })
      b:put_idempotency("default", "p", "key-1", "idem-run")
      assert(b:commit())
      assert.are.equal("idem-run", store.get_idempotency("default", "p", "key-1"))
      assert.is_nil(store.get_idempotency("acme", "p", "key-1"))
      assert.is_nil(store.get_idempotency("default", "q", "key-1"))
      local ok, err = pcall(function() store.batch():put_idempotency("default", "p", ("k"):rep(201), "r") end)
      assert.is_false(ok)
      assert.matches("1 to 200 bytes", err)
      local none, msg, code = store.get_idempotency("default", "p", "")
      assert.is_nil(none)
      assert.are.equal("EINVAL", code)
      assert.matches("1 to 200 bytes", msg)
    end)
  end)
end)

describe("a batch of runs, steps, logs and keys", function()
  it("that fails at commit leaves none of its writes", function()
    assert(commit(store.batch():put_run({ id = "held", pipeline = "p", created_us = 1 }, { new = true })
      :put_idempotency("default", "p", "taken", "held"))[1])
    local b = store.batch():put_run({ id = "doomed", pipeline = "p", status = "running", created_us = 2 }, { new = true })
    assert(b:put_step("doomed", "", 1, "s1", "completed", 1, 1, 1, { big = ("x"):rep(1000) }))
    b:put_log("doomed", 1, 0, json.encode({ msg = "hi" }))
    if pg then
      -- PostgreSQL: the key is taken (an insert, not an upsert: one key, one run)
      b:put_idempotency("default", "p", "taken", "doomed")
    else
      -- LMDB: a step id too long for a key is refused when put (run and step
      -- id name its record in the layout by run), and adds nothing
      local n = b:count()
      local ok, msg = b:put_step("doomed", "", 2, ("k"):rep(600), "completed", 1, 1, 1)
      assert.is_nil(ok)
      assert.matches("over the store's limit of 510: use a shorter step id", msg)
      assert.are.equal(n, b:count())
      -- a log line's key over LMDB's 511 bytes fails the transaction
      b:put_log(("k"):rep(600), 1, 0, "{}")
    end
    local res = commit(b)
    assert.is_nil(res[1])
    assert.are.equal(pg and "EINVAL" or "EIO", res[3])
    H.task(function()
      assert.is_nil(store.get_run("doomed"))
      local _, _, n = store.load_steps("doomed")
      assert.are.equal(0, n)
      assert.are.same({}, store.read_logs("doomed"))
      assert.are.equal("held", store.get_idempotency("default", "p", "taken"))
      for _, r in ipairs(store.unfinished_runs()) do assert.are_not.equal("doomed", r.id) end
    end)
  end)

  it("refuses names a record cannot hold, and adds nothing for them", function()
    local b = store.batch()
    local ok, msg, code = b:put_step("r\0x", "", 1, "a", "completed", 1, 1, 1)
    assert.is_nil(ok)
    assert.are.equal("EINVAL", code)
    assert.matches("run id without NUL", msg)
    ok, msg, code = b:put_step("r", "", 1, "a\0b", "completed", 1, 1, 1)
    assert.are.equal("EINVAL", code)
    assert.matches("without NUL", msg)
    assert.has_error(function() b:put_log("r\0x", 1, 0, "{}") end, "put_log: a log line needs a run id without NUL")
    if pg then
      -- PostgreSQL text holds no NUL: a branch, a key, a run read by id
      ok, msg, code = b:put_step("r", "br\0x", 1, "a", "completed", 1, 1, 1)
      assert.are.equal("EINVAL", code)
      assert.matches("branch", msg)
      assert.has_error(function() b:put_idempotency("default", "p", "k\0y", "r") end)
      H.task(function()
        local none, m2, c2 = store.load_steps("a\0b")
        assert.is_nil(none)
        assert.are.equal("EINVAL", c2)
        assert.matches("NUL", m2)
        none, m2, c2 = store.get_idempotency("default", "p", "k\0y")
        assert.is_nil(none)
        assert.are.equal("EINVAL", c2)
        none, _, c2 = store.read_logs("a\0b")
        assert.are.equal("EINVAL", c2)
      end)
    end
    assert.are.equal(0, b:count())
  end)
end)
