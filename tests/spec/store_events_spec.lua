-- store_events_spec.lua: the sluice._store operations of events (append,
-- read by key and by prefix, positions, times, trimming and its marks),
-- sends with their dispatch cursor, and consumers' checkpoints, on a real
-- store of H.backend (LMDB here; ctest runs it again on PostgreSQL, where
-- positions are allocated by the commit and returned by it).
local H = require "helper"
local store = require "sluice._store"

local target
H.task(function() target = H.store_target() end)
assert(store.open(target))

-- appends the events {type, stream, data} in one commit: their first position
local next_seq = 1
local function append(list, ts)
  local b = store.batch()
  local first = next_seq
  next_seq = first + #list -- taken before the commit yields (LMDB: the caller allocates)
  b:append_events(list, first, ts or 1000)
  local ok, pos = b:commit()
  assert(ok, pos)
  if not store.remote() then return first end
  next_seq = math.max(next_seq, pos + #list)
  return pos
end

describe("events in the store", function()
  it("appends, reads one key and a prefix in position order, and pages by the last position", function()
    H.task(function()
      local first = append({ { "t", "a:1", { n = 1 } }, { "t", "b:1", { n = 2 } }, { "u", "a:2", "x" } }, 1000)
      assert.are.equal(1, first)
      local ev, next_id = store.read_events { stream = "a:1" }
      assert.are.equal(1, #ev)
      assert.are.same({ n = 1 }, ev[1].data)
      assert.are.equal(store.event_id(1), ev[1].id)
      assert.are.equal(store.event_id(1), next_id)
      ev = store.read_events { prefix = "a:" }
      assert.are.same({ "a:1", "a:2" }, { ev[1].stream, ev[2].stream })
      assert.are.equal("u", ev[2].type)
      ev = store.read_events { prefix = "", after = 1, limit = 1 }
      assert.are.equal(1, #ev)
      assert.are.equal("b:1", ev[1].stream)
      -- a short page of a prefix examined the log to its end
      local none, nid = store.read_events { prefix = "zz" }
      assert.are.equal(0, #none)
      assert.are.equal(store.event_id(3), nid)
      local last, ts = store.events_last()
      assert.are.equal(3, last)
      assert.are.equal(1002, ts)
      assert.are.same({ "a:1", "a:2" }, store.stream_keys { prefix = "a:" })
      assert.are.same({ "a:2", "b:1" }, store.stream_keys { after = "a:1" })
      assert.are.equal(1, store.events_after_time(1001))
      assert.are.equal(3, store.events_after_time(5000))
    end)
  end)

  it("trims by count and by time, marks what was lost, and keeps positions taken", function()
    H.task(function()
      local first = append({ { "t", "k", 1 }, { "t", "k", 2 }, { "t", "k", 3 }, { "t", "j", 4 } }, 2000)
      local b = store.batch()
      local n, last, more = b:trim_events { stream = "k", keep = 1, limit = 1 }
      assert.are.same({ 1, first, true }, { n, last, more })
      assert(b:commit())
      assert.is_true(store.events_trimmed { stream = "k", after = first - 1 })
      assert.is_false(store.events_trimmed { stream = "k", after = first })
      assert.is_false(store.events_trimmed { stream = "j", after = 0 })
      assert.is_true(store.events_trimmed { prefix = "", after = 0 })
      local ev = store.read_events { stream = "k" }
      assert.are.same({ 2, 3 }, { ev[1].data, ev[2].data })
      -- by time: everything before 2003 after the first batch, in log order
      b = store.batch()
      n, last, more = b:trim_events { prefix = "", after = 3, before_us = 2003, limit = 100 }
      assert.are.same({ 2, first + 2, false }, { n, last, more })
      assert(b:commit())
      ev = store.read_events { prefix = "", after = 3 }
      assert.are.equal(1, #ev)
      assert.are.equal("j", ev[1].stream)
      -- trimming the newest keeps its position taken
      b = store.batch()
      b:trim_events { stream = "j", keep = 0, limit = 10 }
      assert(b:commit())
      assert.are.equal(first + 3, (store.events_last()))
      assert.are.equal(first + 4, append({ { "t", "j", 5 } }, 3000))
      assert.has_error(function() store.batch():append_events({ { "", "k", 1 } }, 1, 1) end)
    end)
  end)

  it("gives concurrent batches distinct consecutive positions, each batch's in its order", function()
    local sched = require "sluice.sched"
    H.task(function()
      local base = next_seq
      local tasks, firsts = {}, {}
      for t = 1, 20 do
        tasks[t] = sched.go({}, function()
          firsts[t] = append({ { "c", "conc", { t = t, i = 1 } }, { "c", "conc", { t = t, i = 2 } },
            { "c", "conc", { t = t, i = 3 } } }, 1500)
        end)
      end
      for t = 1, 20 do assert(tasks[t]:await()) end
      local ev = store.read_events { stream = "conc", limit = 100 }
      assert.are.equal(60, #ev)
      for i, e in ipairs(ev) do
        assert.are.equal(store.event_id(base + i - 1), e.id)
        assert.are.equal(firsts[e.data.t] + e.data.i - 1, base + i - 1)
      end
      for i = 2, #ev do assert.is_true(ev[i].ts >= ev[i - 1].ts) end
    end)
  end)

  it("keeps sends in order with their dispatch cursor, and consumers' checkpoints by name", function()
    H.task(function()
      assert.are.equal(0, store.sends_last())
      assert.are.equal(0, store.dispatch_cursor())
      local b = store.batch()
      b:put_send(1, { name = "order", data = { id = 7 }, ts = "2026-12-01T00:00:00.000Z" })
      b:put_send(2, { name = "order", data = { id = 8 }, ts = "2026-12-01T00:00:00.000Z" })
      local ok, _, first_send = b:commit()
      assert(ok)
      if store.remote() then assert.are.equal(1, first_send) end
      local sends = store.sends { after = 0 }
      assert.are.equal(2, #sends)
      assert.are.same({ 1, 8 }, { sends[1].seq, sends[2].data.id })
      assert.are.equal(store.event_id(2), sends[2].id)
      assert.are.equal(2, store.sends_last())
      assert(store.batch():set_dispatch_cursor(1):put_consumer("c1", { name = "c1", after = 5 }):commit())
      assert.are.equal(1, store.dispatch_cursor())
      assert.are.equal(5, store.consumer("c1").after)
      assert.is_nil(store.consumer("nope"))
      assert(store.batch():put_consumer("c0", { name = "c0", after = 1 }):put_consumer("c1", { name = "c1", after = 6 }):commit())
      local all = store.consumers()
      assert.are.same({ "c0", "c1" }, { all[1].name, all[2].name })
      assert.are.equal(6, all[2].after)
    end)
  end)
end)
