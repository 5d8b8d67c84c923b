-- stream_spec.lua: emit / read inside the host on a real store: per-key
-- order under concurrent producers, wildcard merge order, every `from`
-- position, paging with `after`, memoized emits and sends in runs,
-- wait_for with bursts and timeouts, durable sleep.
local H = require "helper"
local raw = require "sluice._store_raw"
local clock = require "sluice._clock"
local store = require "sluice._store"
local engine = require "sluice.engine"
local sched = require "sluice.sched"
local uv = require "luv"

assert(store.open(H.store_target()))

-- runs fns concurrently as tasks and waits for all
local function together(fns)
  local tasks = {}
  for i, f in ipairs(fns) do tasks[i] = sched.go({}, f) end
  for _, t in ipairs(tasks) do
    local ok, err = t:await()
    assert(ok, err and (err.traceback or err.message))
  end
end

describe("emit and read", function()
  it("keeps per-key order under 50 concurrent producers and merges keys in append order", function()
    local fns = {}
    for p = 1, 50 do
      fns[p] = function()
        for i = 1, 20 do emit("tick", "conc:" .. (p % 5), { p = p, i = i }) end
      end
    end
    together(fns)
    local all = read{ stream = "conc:*", limit = 5000 }
    assert.are.equal(1000, #all)
    for i = 2, #all do assert.is_true(all[i - 1].id < all[i].id, "ids sort in append order") end
    for k = 0, 4 do
      local last = {}
      local evs = read{ stream = "conc:" .. k, limit = 5000 }
      assert.are.equal(200, #evs)
      for _, e in ipairs(evs) do
        assert.are.equal("conc:" .. k, e.stream)
        assert.is_true((last[e.data.p] or 0) < e.data.i, "order within a producer and key")
        last[e.data.p] = e.data.i
      end
    end
  end)

  it("pages with after through every event exactly once", function()
    for i = 1, 250 do emit("page", "paging", i) end
    local seen, after, pages = {}, nil, 0
    repeat
      local evs = read{ stream = "paging", after = after, limit = 30 }
      for _, e in ipairs(evs) do
        assert.is_nil(seen[e.data])
        seen[e.data] = true
      end
      after = evs[#evs] and evs[#evs].id or after
      pages = pages + 1
    until #evs < 30
    for i = 1, 250 do assert.is_true(seen[i], "event " .. i) end
    assert.are.equal(9, pages)
  end)

  it("reads from TRIM_HORIZON, LATEST and a time, and empty streams", function()
    local before = clock.iso(clock.now() - 1000000) -- a second ago
    emit("a", "from:x", 1)
    H.sleep(5)
    local mid = clock.iso(clock.now())
    emit("b", "from:x", 2)
    assert.are.equal(2, #read{ stream = "from:x", from = "TRIM_HORIZON" })
    assert.are.equal(0, #read{ stream = "from:x", from = "LATEST" })
    local from_mid = read{ stream = "from:x", from = mid }
    assert.are.equal(1, #from_mid)
    assert.are.equal(2, from_mid[1].data)
    assert.are.equal(2, #read{ stream = "from:x", from = before })
    assert.are.same({}, read{ stream = "from:x", from = "2999-01-01T00:00:00Z" })
    assert.are.same({}, read{ stream = "never:written" })
    assert.are.same({}, read{ stream = "never:*" })
  end)

  it("hints at the wildcard when a key read nothing but keys under it hold events", function()
    for i = 1, 3 do emit("h", "hint:" .. i, i) end
    local evs, info = read{ stream = "hint" }
    assert.are.same({}, evs)
    assert.are.equal("no events under key 'hint'; 3 keys match 'hint:*'", info.hint)
    -- a key that holds events gets no hint when a read past them is empty
    local last = read{ stream = "hint:3" }[1].id
    local _, i2 = read{ stream = "hint:3", after = last }
    assert.is_nil(i2.hint)
    assert.is_nil(select(2, read{ stream = "hint:*" }).hint)
    assert.is_nil(select(2, read{ stream = "nohint" }).hint)
    emit("h", "single/x", 1)
    assert.are.equal("no events under key 'single'; 1 key matches 'single/*'", select(2, read{ stream = "single" }).hint)
    for i = 1, 12 do emit("h", "many:" .. i, i) end
    assert.are.equal("no events under key 'many'; 10 or more keys match 'many:*'", select(2, read{ stream = "many" }).hint)
    -- a key that has events, read from after them, with other keys under it
    emit("h", "hint", 0)
    assert.is_nil(select(2, read{ stream = "hint", from = "LATEST" }).hint)
  end)

  it("rejects bad arguments with clear messages", function()
    assert.has_error(function() emit("", "k", 1) end)
    local ok, err = pcall(emit, "t", "k", { f = print })
    assert.is_false(ok)
    assert.matches("emit: the event cannot be stored: data.f: cannot store a function", err)
    ok, err = pcall(read, { stream = "x", after = "zz" })
    assert.matches('read: after: "zz" is not an event id', err)
  end)
end)

describe("retention", function()
  local stream = require "sluice.stream"
  after_each(function() require("sluice.registry").reset("retention") end)

  it("keeps the newest max_count events of each key and says reads lost some", function()
    for i = 1, 30 do emit("r", "ret:" .. (i % 3), i) end
    emit("r", "kept:1", 0)
    retention("ret:*", { max_count = 4 })
    local removed = stream.trim_once()
    assert.are.equal(18, removed)
    for k = 0, 2 do
      local evs, info = read{ stream = "ret:" .. k }
      assert.are.equal(4, #evs)
      assert.is_true(info.trimmed, "a read from the start says events were trimmed")
      local _, info2 = read{ stream = "ret:" .. k, after = evs[1].id }
      assert.is_nil(info2.trimmed)
    end
    local _, winfo = read{ stream = "ret:*" }
    assert.is_true(winfo.trimmed)
    assert.are.equal(1, #read{ stream = "kept:1" })
    -- new ids keep growing after trimming
    local id = emit("r", "ret:0", 31)
    assert.is_true(id > read{ stream = "ret:*", limit = 100 }[11].id)
  end)

  it("removes events older than max_age and nothing newer", function()
    emit("old", "age:1", 1)
    emit("old", "age:2", 2)
    -- a wide gap between the old events' age and the new one's, so that a
    -- slow commit of the new event (a loaded machine) cannot age it past max_age
    H.sleep(1500)
    emit("new", "age:1", 3)
    retention("age:*", { max_age = "1s" })
    assert.are.equal(2, stream.trim_once())
    local evs, info = read{ stream = "age:*" }
    assert.are.equal(1, #evs)
    assert.are.equal(3, evs[1].data)
    assert.is_true(info.trimmed)
  end)
end)

describe("a consumer", function()
  local stream = require "sluice.stream"

  -- runs the consumer in a task until pred(state) holds, then stops it
  local function consume_until(c, pred, what)
    local task = sched.go({}, stream.run_consumer, c, function() end)
    local store = require "sluice._store"
    H.wait_until(function()
      local state, err = store.consumer(c.name)
      assert(state or not err, err)
      return state and pred(state)
    end, what, 10000, 5)
    c.stop()
    assert(task:await())
    return assert(store.consumer(c.name))
  end

  it("moves the checkpoint to the end of the batch its completed run holds, then delivers the rest", function()
    local got = {}
    local c = consume("cp", "cp:*", function(events)
      local ids = {}
      for i, e in ipairs(events) do ids[i] = e.data end
      got[#got + 1] = table.concat(ids, ",")
    end, { batch = 100 })
    for i = 1, 3 do emit("e", "cp:" .. (i % 2), i) end
    local first3 = read{ stream = "cp:*" }
    -- the run of a batch of 3 completed, then the process died before the
    -- checkpoint moved; 2 more events came meanwhile
    assert.are.equal("completed", engine.execute(c.pipeline, { events = first3 }, "consume:cp@" .. first3[1].id).status)
    for i = 4, 5 do emit("e", "cp:" .. (i % 2), i) end
    local all = read{ stream = "cp:*" }
    local state = consume_until(c, function(s) return s.after == all[5].id end, "the checkpoint at the 5th event")
    assert.are.same({ "1,2,3", "4,5" }, got)
    assert.are.equal(all[5].id, state.after)
    assert.are.equal("completed", engine.get_run("consume:cp@" .. all[4].id).status)
  end)

  it("resumes a batch cut off by a crash with its stored events, not the longer read", function()
    local got, fail = {}, true
    local c = consume("cp2", "cp2:*", function(events)
      if fail then error("cut off") end
      local ids = {}
      for i, e in ipairs(events) do ids[i] = e.data end
      got[#got + 1] = table.concat(ids, ",")
    end, { batch = 100 })
    for i = 1, 2 do emit("e", "cp2:a", i) end
    local first2 = read{ stream = "cp2:*" }
    -- a run of those 2 that did not finish (as a crash leaves it)
    assert.are.equal("failed", engine.execute(c.pipeline, { events = first2 }, "consume:cp2@" .. first2[1].id).status)
    fail = false
    emit("e", "cp2:a", 3)
    local all = read{ stream = "cp2:*" }
    consume_until(c, function(s) return s.after == all[3].id end, "the checkpoint at the 3rd event")
    assert.are.same({ "1,2", "3" }, got)
  end)

  it("starts over with new batch runs when its pattern changed", function()
    local got = {}
    local c = consume("cp3", "cp3:a*", function(events)
      local ids = {}
      for i, e in ipairs(events) do ids[i] = e.data end
      got[#got + 1] = table.concat(ids, ",")
    end, { batch = 100 })
    emit("e", "cp3:a", 1)
    emit("e", "cp3:b", 2)
    emit("e", "cp3:a", 3)
    local all = read{ stream = "cp3:*" }
    consume_until(c, function(s) return s.after == all[3].id end, "the a events")
    assert.are.same({ "1,3" }, got)
    -- the file now says cp3:*: every event again, b included, in new runs
    c.pattern = "cp3:*"
    local state = consume_until(c, function(s) return s.pattern == "cp3:*" and s.after == all[3].id end, "all events")
    assert.are.same({ "1,3", "1,2,3" }, got)
    assert.are.equal(2, state.gen)
    assert.are.equal("completed", engine.get_run("consume:cp3#2@" .. all[1].id).status)
  end)
end)

describe("in a run", function()
  it("does not emit or send again on replay, and sleep replays at once", function()
    local fail = true
    local p = pipeline("emitter", function()
      local id = emit("made", "replay:1", { n = 1 })
      send("replay.sent", { n = 1 })
      sleep("300ms")
      if fail then error("after the side effects") end
      return id
    end)
    assert.are.equal("failed", engine.execute(p, nil, "em1").status)
    fail = false
    local t0 = uv.hrtime()
    local rec = engine.execute(p, nil, "em1")
    assert.are.equal("completed", rec.status)
    -- emit, send and sleep replayed, none executed; the finished sleep
    -- did not wait again (the margin is for commits on a loaded disk)
    assert.are.same({ 3, 0 }, { rec.replayed, rec.executed })
    assert.is_true((uv.hrtime() - t0) / 1e6 < 250, "a finished sleep slept again")
    assert.are.equal(1, #read{ stream = "replay:1" })
    assert.are.equal(rec.result, read{ stream = "replay:1" }[1].id)
  end)

  it("wait_for resumes 100 waiting runs, each with its own event from a burst", function()
    local p = pipeline("waiter", function(input)
      local data, ev = wait_for("order.paid", { match = { order = input.order }, timeout = "20s" })
      return { got = data.order, id = ev.id }
    end)
    local results = {}
    local fns = {}
    for i = 1, 100 do
      fns[i] = function() results[i] = engine.execute(p, { order = i }, "w" .. i) end
    end
    local tasks = {}
    for i = 1, 100 do tasks[i] = sched.go({}, fns[i]) end
    -- once every run waits, send 100 events in a tight loop
    H.wait_until(function()
      for i = 1, 100 do
        local r = engine.get_run("w" .. i)
        if not r or r.status ~= "waiting" then return false end
      end
      return true
    end, "100 runs to wait", 10000, 5)
    for i = 100, 1, -1 do send("order.paid", { order = i }) end
    for i = 1, 100 do assert(tasks[i]:await()) end
    for i = 1, 100 do
      assert.are.equal("completed", results[i].status)
      assert.are.equal(i, results[i].result.got)
    end
  end)

  it("wait_for times out with nil, 'timeout'", function()
    local p = pipeline("impatient", function()
      local data, why = wait_for("never.sent", { timeout = "30ms" })
      return { data = data == nil, why = why }
    end)
    local rec = engine.execute(p, nil, "imp1")
    assert.are.same({ data = true, why = "timeout" }, rec.result)
  end)

end)

describe("the event dispatcher", function()
  local events = require "sluice.events"
  local store = require "sluice._store"

  H.lmdb_it("plants a raw LMDB record")("reports a send it cannot read and retries, instead of waiting for sends forever", function()
    -- a send whose key is not a position: the store is corrupt there
    local b = store.batch()
    raw.ops(b, { "sends", "bad", "{}" })
    assert(b:commit())
    local lines = {}
    local task = sched.go({}, events.run_dispatcher, function() end, function(fmt, ...)
      lines[#lines + 1] = fmt:format(...)
    end)
    H.wait_until(function() return #lines >= 1 end, "the dispatcher reports the failed read", 10000, 5)
    assert.matches("dispatching events: reading the sends: EBADSTORE: .*not a position", lines[1])
    local fix = store.batch()
    raw.ops(fix, { "sends", "bad", false })
    assert(fix:commit())
    events.dispatcher.stop()
    assert(task:await())
    local sends, err, code = store.sends({ after = 0 })
    assert(sends, err)
    assert.is_nil(code)
  end)
end)
