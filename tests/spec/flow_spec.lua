-- flow_spec.lua: map and dag (lua/flow.lua) inside the host, on a real
-- LMDB store: bounded fan-out, results in order, resume running only the
-- unfinished items or nodes, settle mode, argument and definition errors
-- that name the map or the nodes, and a map killed with SIGKILL and resumed
-- through the CLI.
local H = require "helper"
local storage = require "sluice._store"
local engine = require "sluice.engine"
local flow = require "sluice.flow"
local json = require "sluice.json"
local uv = require "luv"

local store = H.store_target()
assert(storage.open(store))

local n = 0
local function define(fn, opts)
  n = n + 1
  return pipeline("flow" .. n, fn, opts)
end


local function range(k)
  local t = {}
  for i = 1, k do t[i] = i end
  return t
end

-- runs fn inside a run and returns the error message it raises
local function error_in_run(fn)
  local p = define(function()
    local ok, err = pcall(fn)
    assert(not ok, "expected an error")
    return type(err) == "table" and err.message or tostring(err)
  end)
  local rec = engine.execute(p, nil)
  assert.are.equal("completed", rec.status, rec.error and rec.error.message)
  return rec.result
end

describe("map", function()
  it("runs 1,000 items with at most 8 in flight and returns results in order", function()
    local inflight, max_inflight, calls = 0, 0, 0
    local p = define(function()
      return map("sq", range(1000), function(x, i)
        assert(x == i)
        calls = calls + 1
        inflight = inflight + 1
        if inflight > max_inflight then max_inflight = inflight end
        H.sleep(1)
        inflight = inflight - 1
        return x * x
      end, { concurrency = 8 })
    end)
    local rec = engine.execute(p, nil, "map-1000")
    assert.are.equal("completed", rec.status, rec.error and rec.error.message)
    assert.are.equal(1000, #rec.result)
    for i = 1, 1000 do assert.are.equal(i * i, rec.result[i]) end
    assert.are.equal(1000, calls)
    assert.are.equal(8, max_inflight)
    assert.are.equal(1000, rec.executed)
    local steps = engine.get_steps("map-1000")
    assert.are.equal(1000, #steps)
    local ids = {}
    for _, s in ipairs(steps) do ids[s.id] = s.status end
    assert.are.equal("completed", ids["sq#1"])
    assert.are.equal("completed", ids["sq#1000"])
  end)

  it("defaults to 8 in flight", function()
    local inflight, max_inflight = 0, 0
    local p = define(function()
      return map("d", range(40), function(x)
        inflight = inflight + 1
        if inflight > max_inflight then max_inflight = inflight end
        H.sleep(2)
        inflight = inflight - 1
        return x
      end)
    end)
    assert.are.equal("completed", engine.execute(p, nil).status)
    assert.are.equal(8, max_inflight)
  end)

  it("resumed after an item failed runs only the unfinished items", function()
    local runs = {}
    local broken = true
    local p = define(function()
      local r = map("m", range(1000), function(x, i)
        runs[i] = (runs[i] or 0) + 1
        if i == 600 and broken then error("item 600 is broken") end
        return x + 1
      end, { concurrency = 8 })
      return #r
    end)
    local rec = engine.execute(p, nil, "map-resume")
    assert.are.equal("failed", rec.status)
    assert.are.equal("m#600", rec.error.step)
    assert.matches("step 'm#600' failed: .*item 600 is broken", rec.error.message)
    local first = 0
    for i = 1, 1000 do first = first + (runs[i] or 0) end
    -- no new item starts once the failure is known; the other 7 workers may
    -- each take a next item while the failure's own record is committed
    assert.is_true(first >= 600 and first <= 630, "items run the first time: " .. first)
    for i = 631, 1000 do assert.is_nil(runs[i], "item " .. i .. " started after the failure") end

    broken = false
    rec = engine.execute(p, nil, "map-resume")
    assert.are.equal("completed", rec.status, rec.error and rec.error.message)
    assert.are.equal(1000, rec.result)
    for i = 1, 1000 do
      assert.are.equal(i == 600 and 2 or 1, runs[i], "item " .. i)
    end
    assert.are.equal(first - 1, rec.replayed)
    assert.are.equal(1000 - (first - 1), rec.executed)
  end)

  it("raises the first failure in item order after the in-flight items settle", function()
    local finished = {}
    local p = define(function()
      map("f", range(4), function(x)
        if x == 3 then error("three fails first") end
        if x == 2 then H.sleep(30); error("two fails later") end
        H.sleep(60)
        finished[x] = true
        return x
      end, { concurrency = 4 })
    end)
    local rec = engine.execute(p, nil)
    assert.are.equal("failed", rec.status)
    assert.are.equal("f#2", rec.error.step)
    assert.is_true(finished[1] and finished[4], "the items in flight did not finish")
  end)

  it("with settle = true returns ok or err per item and never raises", function()
    local p = define(function()
      return map("s", { "a", "b", "c", "d" }, function(x, i)
        if i % 2 == 0 then error("no " .. x) end
        if x == "c" then return nil end
        return x:upper()
      end, { settle = true, concurrency = 2 })
    end)
    local rec = engine.execute(p, nil)
    assert.are.equal("completed", rec.status, rec.error and rec.error.message)
    local r = rec.result
    assert.are.equal(4, #r)
    assert.are.same({ ok = "A" }, r[1])
    assert.matches("step 's#2' failed: .*no b", r[2].err)
    assert.is_nil(r[2].ok)
    assert.are.equal(json.null, r[3].ok)
    assert.matches("no d", r[4].err)
  end)

  it("turns nil results into json.null so the list stays a sequence", function()
    local p = define(function()
      return map("nils", range(3), function(x) if x == 2 then return nil end return x end)
    end)
    local rec = engine.execute(p, nil)
    assert.are.equal("completed", rec.status, rec.error and rec.error.message)
    assert.are.equal(3, #rec.result)
    assert.are.equal(json.null, rec.result[2])
  end)

  it("of no items returns an empty array", function()
    local p = define(function() return map("none", {}, function() end) end)
    local rec = engine.execute(p, nil)
    assert.are.equal("completed", rec.status)
    assert.are.equal("[]", json.encode(rec.result))
  end)

  it("passes retries to each item's step", function()
    local tries = {}
    local p = define(function()
      return map("r", range(3), function(x)
        tries[x] = (tries[x] or 0) + 1
        if x == 2 and tries[x] < 3 then error("flaky") end
        return x
      end, { retries = 2, backoff = "1ms" })
    end)
    local rec = engine.execute(p, nil)
    assert.are.equal("completed", rec.status, rec.error and rec.error.message)
    assert.are.same({ 1, 3, 1 }, tries)
  end)

  it("rejects bad arguments with errors naming the map", function()
    local f = function() end
    local cases = {
      { function() map("m", "abc", f) end, "map 'm': items must be a sequence table, got string" },
      { function() map("m", { 1, 2, nil, 4 }, f) end, "map 'm': items must be a sequence" },
      { function() map("m", { 1, 2, x = 3 }, f) end, "map 'm': items must be a sequence .*found key 'x'" },
      { function() map("m", { 1 }, "f") end, "map 'm': expected a function as third argument, got string" },
      { function() map("m", { 1 }, f, { concurrency = 0 }) end, "map 'm': concurrency must be a positive integer, got 0" },
      { function() map("m", { 1 }, f, { concurrency = 1.5 }) end, "map 'm': concurrency must be a positive integer, got 1.5" },
      { function() map("m", { 1 }, f, { concurrency = "8" }) end, "map 'm': concurrency must be a positive integer, got \"8\"" },
      { function() map("m", { 1 }, f, { concurency = 8 }) end, "map 'm': unknown option 'concurency' %(known: concurrency, settle" },
      { function() map("m", { 1 }, f, { settle = "yes" }) end, "map 'm': settle must be a boolean" },
      { function() map("m", { 1 }, f, { timeout = "soon" }) end, "map 'm' timeout: \"soon\" is not a duration" },
      { function() map("m", { 1 }, f, { retries = -1 }) end, "map 'm': retries must be an integer >= 0" },
      { function() map("m", { 1 }, f, 8) end, "map 'm': options must be a table, got number" },
      { function() map("", { 1 }, f) end, "map: the id must be a non%-empty string" },
      { function() map(nil, { 1 }, f) end, "map: the id must be a non%-empty string" },
    }
    for k, c in ipairs(cases) do
      local msg = error_in_run(c[1])
      assert.matches(c[2], msg, 1, false, "case " .. k)
      -- the error points at the map call in this file, not inside flow.lua
      assert.matches("flow_spec.lua:%d+: ", msg, 1, false, "case " .. k)
    end
  end)

  it("is an error outside a run and inside a step", function()
    local ok, err = pcall(function() map("m", { 1 }, function() end) end)
    assert.is_false(ok)
    assert.matches("flow_spec.lua:%d+: map called outside a run", err)
    local p = define(function()
      return step("outer", function()
        return map("inner", { 1 }, function(x) return x end)
      end)
    end)
    local rec = engine.execute(p, nil)
    assert.are.equal("failed", rec.status)
    assert.matches("map 'inner' called inside step 'outer'", rec.error.message)
  end)

  it("names both call sites of a map id used twice", function()
    local msg = error_in_run(function()
      map("twice", { 1 }, function(x) return x end)
      map("twice", { 1 }, function(x) return x end)
    end)
    assert.matches("map id 'twice' is used twice in run .*: at .*flow_spec.lua:%d+ and at .*flow_spec.lua:%d+", msg)
  end)

  it("completes 10,000 items with a bounded pool of coroutines", function()
    local cos, ncos = setmetatable({}, { __mode = "k" }), 0
    flow.stats.peak_workers = flow.stats.workers
    local base = flow.stats.workers
    local p = define(function()
      local r = map("big", range(10000), function(x)
        local co = coroutine.running()
        if not cos[co] then cos[co] = true; ncos = ncos + 1 end
        return x
      end, { concurrency = 16 })
      local sum = 0
      for i = 1, #r do sum = sum + r[i] end
      return { n = #r, sum = sum }
    end)
    local rec = engine.execute(p, nil, "map-10000")
    assert.are.equal("completed", rec.status, rec.error and rec.error.message)
    assert.are.same({ n = 10000, sum = 10000 * 10001 // 2 }, rec.result)
    assert.is_true(ncos <= 16, ncos .. " coroutines ran items")
    assert.is_true(flow.stats.peak_workers - base <= 16, "peak workers " .. flow.stats.peak_workers)
    assert.are.equal(base, flow.stats.workers)
  end)

  it("replays items that finish in another order, running none again", function()
    local calls = 0
    local fail_after = true
    local p = define(function()
      local r = map("shuffle", range(50), function(x)
        calls = calls + 1
        H.sleep((x * 7) % 11) -- items finish out of order
        return x
      end, { concurrency = 5 })
      if fail_after then error("fail after the map") end
      return r
    end)
    assert.are.equal("failed", engine.execute(p, nil, "map-order").status)
    fail_after = false
    local rec = engine.execute(p, nil, "map-order")
    assert.are.equal("completed", rec.status, rec.error and rec.error.message)
    assert.are.same(range(50), rec.result)
    assert.are.equal(50, calls)
    assert.are.equal(50, rec.replayed)
  end)

  it("runs inside parallel branches", function()
    local p = define(function()
      return { parallel(
        function() return map("left", range(5), function(x) H.sleep(1); return -x end) end,
        function() return map("right", range(5), function(x) H.sleep(1); return x end) end) }
    end)
    local rec = engine.execute(p, nil)
    assert.are.equal("completed", rec.status, rec.error and rec.error.message)
    assert.are.same({ { -1, -2, -3, -4, -5 }, range(5) }, rec.result)
  end)

  it("fails a resume whose map id changed", function()
    local id, fail = "v1", true
    local p = define(function()
      map(id, range(3), function(x) return x end)
      if fail then error("stop") end
    end)
    assert.are.equal("failed", engine.execute(p, nil, "map-diverge").status)
    id, fail = "v2", false
    local rec = engine.execute(p, nil, "map-diverge")
    assert.are.equal("failed", rec.status)
    -- item i is at position i of the map's branch, whichever worker ran it
    local at, old, new = rec.error.message:match(
      "diverged from its recorded history: at position (%d+) of branch 1# the recorded step is 'v1#(%d+)' but the code now calls step 'v2#(%d+)'")
    assert.is_not_nil(at, rec.error.message)
    assert.are.equal(at, old)
    assert.are.equal(at, new)
  end)
end)

describe("dag", function()
  it("runs a diamond's middle nodes concurrently and its join once", function()
    local times, joins, got = {}, 0, nil
    local function timed(name, ms, value)
      return function()
        local t0 = uv.hrtime()
        H.sleep(ms)
        times[name] = { t0, uv.hrtime() }
        return value
      end
    end
    local p = define(function()
      return dag {
        a = { timed("a", 1, 1) },
        b = { after = { "a" }, function(deps) assert(deps.a == 1); return timed("b", 100, 2)() end },
        c = { after = { "a" }, function(deps) assert(deps.a == 1); return timed("c", 100, 3)() end },
        d = { after = { "b", "c" }, function(deps)
          joins = joins + 1
          got = deps
          return deps.b + deps.c
        end },
      }
    end)
    local rec = engine.execute(p, nil, "diamond")
    assert.are.equal("completed", rec.status, rec.error and rec.error.message)
    assert.are.same({ a = 1, b = 2, c = 3, d = 5 }, rec.result)
    assert.are.equal(1, joins)
    assert.are.same({ b = 2, c = 3 }, got)
    -- b and c overlap: each started before the other ended
    assert.is_true(times.b[1] < times.c[2] and times.c[1] < times.b[2], "b and c did not overlap")
    assert.is_true(times.b[1] >= times.a[2] and times.c[1] >= times.a[2], "b or c started before a ended")
    local ids = {}
    for _, s in ipairs(engine.get_steps("diamond")) do ids[#ids + 1] = s.id end
    table.sort(ids)
    assert.are.same({ "a", "b", "c", "d" }, ids)
  end)

  it("names the cycle", function()
    local f = function() end
    local msg = error_in_run(function()
      dag { a = { after = { "c" }, f }, b = { after = { "a" }, f }, c = { after = { "b" }, f }, d = { f } }
    end)
    assert.matches("flow_spec.lua:%d+: dag: cycle a %-> b %-> c %-> a", msg)
    msg = error_in_run(function() dag { x = { after = { "x" }, f } } end)
    assert.matches("dag: cycle x %-> x", msg)
  end)

  it("rejects unknown dependencies, nodes without a function and bad fields", function()
    local f = function() end
    local cases = {
      { function() dag { a = { f }, b = { after = { "a", "x" }, f } } end, "dag: node 'b' is after unknown node 'x'" },
      { function() dag { a = { after = { "b" } } , b = { f } } end, "dag: node 'a' has no function" },
      { function() dag { a = 42 } end, "dag: node 'a' must be a table {after = {...}, fn} or a function, got number" },
      { function() dag { a = { f, deps = { "b" } } } end, "dag: node 'a' has an unknown field 'deps'" },
      { function() dag { a = { f, after = 3 } } end, "dag: node 'a': after must be a list of node names, got number" },
      { function() dag { { f } } end, "dag: node names must be strings" },
      { function() dag { a = { f, timeout = "never" } } end, "dag: node 'a' timeout: \"never\" is not a duration" },
      { function() dag(nil) end, "dag: expected a table of nodes" },
    }
    for k, c in ipairs(cases) do
      local msg = error_in_run(c[1])
      assert.matches(c[2], msg, 1, false, "case " .. k)
      assert.matches("flow_spec.lua:%d+: ", msg, 1, false, "case " .. k)
    end
  end)

  it("is an error outside a run and inside a step", function()
    local ok, err = pcall(function() dag { a = { function() end } } end)
    assert.is_false(ok)
    assert.matches("flow_spec.lua:%d+: dag called outside a run", err)
    local p = define(function()
      return step("outer", function() return dag { a = { function() end } } end)
    end)
    assert.matches("dag called inside step 'outer'", engine.execute(p, nil).error.message)
  end)

  it("stops dependents of a failed node, lets running nodes finish, and resumes only unfinished nodes", function()
    local calls = { a = 0, b = 0, c = 0, d = 0, e = 0 }
    local broken = true
    local p = define(function()
      return dag {
        a = { function() calls.a = calls.a + 1; return "a" end },
        b = { after = { "a" }, function()
          calls.b = calls.b + 1
          if broken then error("b is broken") end
          return "b"
        end },
        -- c runs until b's failure is stored (however slow the disk)
        c = { after = { "a" }, function()
          calls.c = calls.c + 1
          H.wait_until(function()
            for _, s in ipairs(engine.get_steps("dag-fail")) do
              if s.id == "b" and s.status == "failed" then return true end
            end
          end, "b to fail", 10000, 5)
          return "c"
        end },
        d = { after = { "b", "c" }, function(deps) calls.d = calls.d + 1; return deps.b .. deps.c end },
        e = { after = { "c" }, function() calls.e = calls.e + 1; return "e" end },
      }
    end)
    local rec = engine.execute(p, nil, "dag-fail")
    assert.are.equal("failed", rec.status)
    assert.are.equal("b", rec.error.step)
    assert.matches("b is broken", rec.error.message)
    -- c was running when b failed: it finished; nothing started afterwards
    assert.are.same({ a = 1, b = 1, c = 1, d = 0, e = 0 }, calls)
    local stored = {}
    for _, s in ipairs(engine.get_steps("dag-fail")) do stored[s.id] = s.status end
    assert.are.same({ a = "completed", b = "failed", c = "completed" }, stored)

    broken = false
    rec = engine.execute(p, nil, "dag-fail")
    assert.are.equal("completed", rec.status, rec.error and rec.error.message)
    assert.are.same({ a = "a", b = "b", c = "c", d = "bc", e = "e" }, rec.result)
    assert.are.same({ a = 1, b = 2, c = 1, d = 1, e = 1 }, calls)
    assert.are.equal(2, rec.replayed)
  end)

  it("raises the failure of the first failed node by name", function()
    local p = define(function()
      return dag {
        z = { function() error("z fails first") end },
        m = { function() H.sleep(20); error("m fails later") end },
      }
    end)
    local rec = engine.execute(p, nil)
    assert.are.equal("failed", rec.status)
    assert.are.equal("m", rec.error.step)
  end)

  it("accepts bare functions and a single dependency name", function()
    local p = define(function()
      return dag {
        one = function() return 1 end,
        two = { after = "one", function(deps) return deps.one + 1 end },
      }
    end)
    local rec = engine.execute(p, nil)
    assert.are.equal("completed", rec.status, rec.error and rec.error.message)
    assert.are.same({ one = 1, two = 2 }, rec.result)
  end)

  it("of no nodes returns an empty table", function()
    local p = define(function() return dag {} end)
    local rec = engine.execute(p, nil)
    assert.are.equal("completed", rec.status)
    assert.are.same({}, rec.result)
  end)
end)

describe("map killed with SIGKILL", function()
  it("resumes through the CLI running only the unfinished items", function()
    local dir = H.tmpdir()
    local store_dir = dir .. "/store"
    local log = dir .. "/log"
    local f = H.write(dir .. "/fan.lua", ([[
local uv = require "luv"
pipeline("fan", function(input)
  local r = map("item", input, function(x, i)
    local f = io.open(%q, "a")
    f:write(i, "\n")
    f:close()
    -- wait on the loop a little so the kill lands with items in flight
    local co = coroutine.running()
    local t = uv.new_timer()
    t:start(2, 0, function() t:close(); coroutine.resume(co) end)
    coroutine.yield()
    return x * 2
  end, { concurrency = 8 })
  local sum = 0
  for _, v in ipairs(r) do sum = sum + v end
  return sum
end)]]):format(log))
    local k = 1000
    local input = json.encode(range(k))
    local args = { "run", f, "--id", "fan1", "--input", input, "--store", store_dir }
    local p = H.spawn(args)
    H.wait_until(function() return p.exited or #H.lines(log) >= 300 end, "the map to reach item 300", 30000, 2)
    p:kill("sigkill")
    local _, signal = p:wait()
    assert.are.equal(9, signal, "the run ended before it was killed")
    local before = #H.lines(log)
    assert.is_true(before < k, "every item ran before the kill")

    local code, out, err = H.sluice(args)
    assert.are.equal(0, code, err)
    assert.are.equal(tostring(k * (k + 1)) .. "\n", out)
    local seen, dups = {}, 0
    for _, l in ipairs(H.lines(log)) do
      local i = tonumber(l)
      if seen[i] then dups = dups + 1 end
      seen[i] = true
    end
    for i = 1, k do assert.is_true(seen[i], "item " .. i .. " never ran") end
    -- only the items in flight at the kill (at most 8) ran twice
    assert.is_true(dups <= 8, dups .. " items ran twice")
    assert.is_true(#H.lines(log) - before <= k - before + 8, "the resume ran finished items again")

    local _, st = H.sluice({ "status", "fan1", "--json", "--store", store_dir })
    local doc = json.decode(st)
    assert.are.equal("completed", doc.status)
    assert.are.equal(k, #doc.steps)
  end)
end)
