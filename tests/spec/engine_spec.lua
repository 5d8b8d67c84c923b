-- engine_spec.lua: the Lua API inside the host: steps are memoized in a
-- real LMDB store, retries, timeouts, parallel branches, errors that name
-- the step and the path, ctx().
local H = require "helper"
local storage = require "sluice._store"
local engine = require "sluice.engine"
local json = require "sluice.json"
local uv = require "luv"

local store = H.store_target()
assert(storage.open(store))

local n = 0
local function define(fn, opts)
  n = n + 1
  return pipeline("spec" .. n, fn, opts)
end


describe("step", function()
  it("returns the function's result and stores it", function()
    local calls = 0
    local p = define(function(input)
      local a = step("a", function(x) calls = calls + 1; return { x = x, big = math.maxinteger } end, input.x)
      return a
    end)
    local rec = engine.execute(p, { x = 41 }, "step-stores")
    assert.are.equal("completed", rec.status)
    assert.are.same({ x = 41, big = math.maxinteger }, rec.result)
    assert.are.equal(1, calls)
    local steps = engine.get_steps("step-stores")
    assert.are.equal(1, #steps)
    assert.are.equal("a", steps[1].id)
    assert.are.equal("completed", steps[1].status)
    assert.are.equal(1, steps[1].attempts)
    assert.is_true(math.type(steps[1].result.big) == "integer")
  end)

  it("does not run again when the run is resumed after a failure", function()
    local calls = { a = 0, b = 0 }
    local fail_b = true
    local p = define(function()
      local a = step("a", function() calls.a = calls.a + 1; return 1 end)
      local b = step("b", function()
        calls.b = calls.b + 1
        if fail_b then error("b is broken") end
        return 2
      end)
      return a + b
    end)
    local rec = engine.execute(p, nil, "resume-after-failure")
    assert.are.equal("failed", rec.status)
    assert.are.equal("b", rec.error.step)
    assert.matches("b is broken", rec.error.message)
    assert.matches("engine_spec.lua", rec.error.traceback)
    fail_b = false
    rec = engine.execute(p, nil, "resume-after-failure")
    assert.are.equal("completed", rec.status)
    assert.are.equal(3, rec.result)
    assert.are.same({ a = 1, b = 2 }, calls)
    assert.are.equal(2, rec.attempt)
  end)

  it("prints a completed run's stored result without running it", function()
    local calls = 0
    local p = define(function()
      return step("once", function() calls = calls + 1; return "done" end)
    end)
    assert.are.equal("done", engine.execute(p, nil, "completed-once").result)
    assert.are.equal("done", engine.execute(p, nil, "completed-once").result)
    assert.are.equal(1, calls)
  end)

  it("retries with backoff and records the attempts", function()
    local tries = 0
    local p = define(function()
      return step("flaky", { retries = 3, backoff = { initial = "5ms", factor = 2, jitter = 0 } }, function()
        tries = tries + 1
        if tries < 3 then error("not yet") end
        return ctx().attempt
      end)
    end)
    local rec = engine.execute(p, nil, "retries")
    assert.are.equal("completed", rec.status)
    assert.are.equal(3, rec.result)
    assert.are.equal(3, engine.get_steps("retries")[1].attempts)
  end)

  it("fails after the last retry with the step id and the attempts", function()
    local p = define(function()
      return step("hopeless", { retries = 1, backoff = "1ms" }, function() error("no luck") end)
    end)
    local rec = engine.execute(p, nil, "retries-exhausted")
    assert.are.equal("failed", rec.status)
    assert.are.equal("hopeless", rec.error.step)
    assert.matches("step 'hopeless' failed after 2 attempts: .*no luck", rec.error.message)
    local s = engine.get_steps("retries-exhausted")[1]
    assert.are.equal("failed", s.status)
    assert.are.equal(2, s.attempts)
  end)

  it("times out a step that waits too long", function()
    local p = define(function()
      return step("slow", { timeout = "30ms" }, function()
        H.sleep(2000)
        return "late"
      end)
    end)
    local t0 = uv.hrtime()
    local rec = engine.execute(p, nil, "timeout")
    assert.are.equal("failed", rec.status)
    assert.are.equal("step 'slow' timed out after 30ms", rec.error.message)
    assert.are.equal("timeout", rec.error.reason)
    assert.is_true((uv.hrtime() - t0) / 1e6 < 1500, "the step was not cut off at its timeout")
  end)

  it("names the step and the path of a value that cannot be stored", function()
    local p = define(function()
      return step("fetch", function()
        return { rows = { 1, 2, { fn = print } } }
      end)
    end)
    local rec = engine.execute(p, nil, "unstorable")
    assert.are.equal("failed", rec.status)
    assert.are.equal("fetch", rec.error.step)
    assert.matches("step 'fetch' failed: returned a value that cannot be stored: result.rows%[3%].fn: cannot store a function",
      rec.error.message)
  end)

  it("rejects a table mixing array items and string keys", function()
    local p = define(function()
      return step("mixed", function() return { 1, 2, x = 3 } end)
    end)
    local rec = engine.execute(p, nil, "mixed")
    assert.matches("step 'mixed'.*result: table mixes array items and string keys", rec.error.message)
  end)

  it("names both call sites of a step id used twice", function()
    local first = debug.getinfo(1, "l").currentline + 2
    local p = define(function()
      step("same", function() return 1 end)
      step("same", function() return 2 end)
    end)
    local rec = engine.execute(p, nil, "dup")
    assert.are.equal("failed", rec.status)
    -- each site is the user's line, not a frame of the engine
    assert.matches(("step id 'same' is used twice in run dup: at .*engine_spec.lua:%d and at .*engine_spec.lua:%d;")
      :format(first, first + 1), rec.error.message)
  end)

  it("tells an id used again after thousands of others apart from them, naming both sites", function()
    local loop = debug.getinfo(1, "l").currentline + 4
    local long = ("x"):rep(255)
    local p = define(function()
      for i = 1, 5000 do
        step("s" .. i, function() return i end) -- s1 and s10, s100: alike, not the same
      end
      step(long, function() return 0 end)
      step("s4999", function() return 0 end)
    end)
    local rec = engine.execute(p, nil, "dup-late")
    assert.are.equal("failed", rec.status)
    assert.matches(("step id 's4999' is used twice in run dup%%-late: at .*engine_spec.lua:%d and at .*engine_spec.lua:%d;")
      :format(loop, loop + 3), rec.error.message)
    local again = define(function()
      step(long, function() return 1 end)
      step(long, function() return 2 end)
    end)
    assert.matches("step id 'x+' is used twice", engine.execute(again, nil, "dup-long").error.message)
  end)

  it("refuses more than one return value", function()
    local p = define(function()
      return step("two", function() return 1, 2 end)
    end)
    assert.matches("returned 2 values", engine.execute(p, nil, "two-values").error.message)
  end)

  it("is a clear error outside a run", function()
    local ok, err = pcall(step, "x", function() end)
    assert.is_false(ok)
    assert.matches("step%(\"x\"%) called outside a run", err)
  end)

  it("round-trips exact values through the store on replay", function()
    local value = {
      ints = { math.mininteger, math.maxinteger, 0, -1 },
      floats = { 0.1, 1e308, 5e-324, 1.0 },
      bytes = "a\0b\255\254",
      empty = json.array({}),
      null = json.null,
    }
    local calls = 0
    local p = define(function()
      return step("exact", function() calls = calls + 1; return value end)
    end)
    local rec = engine.execute(p, nil, "exact")
    assert.are.equal("completed", rec.status)
    -- read back from LMDB, decoded by the same codec replay uses
    local stored = engine.get_steps("exact")[1].result
    assert.are.same(value.ints, stored.ints)
    for i, f in ipairs(value.floats) do
      assert.are.equal(f, stored.floats[i])
      assert.are.equal("float", math.type(stored.floats[i]))
    end
    assert.are.equal(value.bytes, stored.bytes)
    assert.are.equal(json.null, stored.null)
    assert.are.equal("[]", json.encode(stored.empty))
    assert.are.equal(1, calls)
  end)

  it("keeps NaN and infinities exact in the store (JSON null only at the edges)", function()
    local calls, replayed, stop_once = 0, nil, true
    local p = define(function()
      local v = step("odd", function() calls = calls + 1; return { nan = 0 / 0, inf = math.huge, ninf = -math.huge } end)
      replayed = v
      step("then", function() if stop_once then stop_once = false; error("stop here once") end end)
      return v
    end)
    assert.are.equal("failed", engine.execute(p, nil, "nonfinite").status)
    local rec = engine.execute(p, nil, "nonfinite") -- resumes: "odd" is replayed from the store
    assert.are.equal("completed", rec.status, rec.error and rec.error.message)
    assert.are.equal(1, calls)
    for _, v in ipairs({ replayed, engine.get_steps("nonfinite")[1].result, engine.get_run("nonfinite").result }) do
      assert.is_true(v.nan ~= v.nan)
      assert.are.equal(math.huge, v.inf)
      assert.are.equal(-math.huge, v.ninf)
    end
    -- what users print or send (sluice.json) is JSON: null
    assert.are.equal('{"inf":null,"nan":null,"ninf":null}', json.encode(rec.result))
  end)

  it("gives the run id, step id and attempt through ctx()", function()
    local p = define(function()
      return step("who", function() return ctx() end)
    end)
    local c = engine.execute(p, nil, "ctx-run").result
    assert.are.equal("ctx-run", c.run_id)
    assert.are.equal("who", c.step_id)
    assert.are.equal(1, c.attempt)
  end)
end)

describe("parallel", function()
  it("runs 100 branches waiting 200 ms each concurrently", function()
    local p = define(function()
      local fns = {}
      for i = 1, 100 do
        fns[i] = function()
          return step("wait" .. i, function() H.sleep(200); return i end)
        end
      end
      local results = { parallel(table.unpack(fns)) }
      local sum = 0
      for _, v in ipairs(results) do sum = sum + v end
      return sum
    end)
    local t0 = uv.hrtime()
    local rec = engine.execute(p, nil, "par100")
    local ms = (uv.hrtime() - t0) / 1e6
    assert.are.equal("completed", rec.status)
    assert.are.equal(5050, rec.result)
    -- sequentially this would take 20 s
    assert.is_true(ms < 5000, ("100 parallel waits of 200 ms took %.0f ms"):format(ms))
  end)

  it("lets the other branches finish and raises the first error", function()
    local finished = 0
    local p = define(function()
      parallel(
        function() step("ok1", function() H.sleep(20); finished = finished + 1; return 1 end) end,
        function() step("bad", function() error("branch 2 broke") end) end,
        function() step("ok3", function() H.sleep(40); finished = finished + 1; return 3 end) end)
    end)
    local rec = engine.execute(p, nil, "par-fail")
    assert.are.equal("failed", rec.status)
    assert.are.equal("bad", rec.error.step)
    assert.are.equal(2, finished)
    local stored = {}
    for _, s in ipairs(engine.get_steps("par-fail")) do stored[s.id] = s.status end
    assert.are.same({ ok1 = "completed", bad = "failed", ok3 = "completed" }, stored)
  end)

  it("replays branches that interleave differently", function()
    local calls = 0
    local flip = false
    local p = define(function()
      return { parallel(
        function()
          if flip then H.sleep(30) end
          return step("left", function() calls = calls + 1; return "L" end)
        end,
        function()
          if not flip then H.sleep(30) end
          local r = step("right", function() calls = calls + 1; return "R" end)
          if not flip then error("first time fails after both steps") end
          return r
        end) }
    end)
    assert.are.equal("failed", engine.execute(p, nil, "interleave").status)
    flip = true
    local rec = engine.execute(p, nil, "interleave")
    assert.are.equal("completed", rec.status)
    assert.are.same({ "L", "R" }, rec.result)
    assert.are.equal(2, calls)
  end)
end)

describe("engine errors", function()
  it("are tables {code=, message=, step=} whose tostring is the message users read", function()
    local p = define(function()
      local ok, err = pcall(step, "boom", function() error("bad input", 0) end)
      assert(not ok)
      return { type = type(err), code = err.code, message = err.message, step = err.step, text = tostring(err),
        traceback = type(err.traceback) }
    end)
    local rec = engine.execute(p, nil, "error-table")
    assert.are.equal("completed", rec.status)
    assert.are.same({ type = "table", code = "ESTEP", message = "step 'boom' failed: bad input", step = "boom",
      text = "step 'boom' failed: bad input", traceback = "string" }, rec.result)
  end)

  it("carry their code into the stored run and step records", function()
    local p = define(function()
      step("late", { timeout = "20ms" }, function() H.sleep(2000) end)
    end)
    local rec = engine.execute(p, nil, "error-codes")
    assert.are.equal("failed", rec.status)
    assert.are.equal("ETIMEOUT", rec.error.code)
    assert.are.equal("step 'late' timed out after 20ms", rec.error.message)
    local stored = engine.get_run("error-codes")
    assert.are.equal("ETIMEOUT", stored.error.code)
    assert.are.equal("late", stored.error.step)
    local s = engine.get_steps("error-codes")[1]
    assert.are.equal("ETIMEOUT", s.error.code)
    assert.are.equal("step 'late' timed out after 20ms", s.error.message)
  end)

end)

describe("replay", function()
  it("fails a run whose steps come in another order than recorded", function()
    local order = { "one", "two" }
    local fail = true
    local p = define(function()
      for _, id in ipairs(order) do step(id, function() return id end) end
      if fail then error("stop after the steps") end
    end)
    assert.are.equal("failed", engine.execute(p, nil, "diverge").status)
    order = { "one", "three" }
    fail = false
    local rec = engine.execute(p, nil, "diverge")
    assert.are.equal("failed", rec.status)
    assert.matches("run diverge diverged from its recorded history: at position 2 of branch main the recorded step is 'two' but the code now calls step 'three'",
      rec.error.message)
  end)

  it("fails a run that calls a recorded step from another branch", function()
    local moved = false
    local p = define(function()
      step("one", function() return 1 end)
      if moved then
        parallel(function() return step("two", function() return 2 end) end)
      else
        step("two", function() return 2 end)
        error("stop after the steps")
      end
    end)
    assert.are.equal("failed", engine.execute(p, nil, "diverge-branch").status)
    moved = true
    local rec = engine.execute(p, nil, "diverge-branch")
    assert.are.equal("failed", rec.status)
    assert.are.equal("EDIVERGED", rec.error.code)
    assert.matches("run diverge%-branch diverged from its recorded history: step 'two' was recorded at position 2 of branch main but the code now calls it at position 1 of branch 2%.1",
      rec.error.message)
  end)

  it("names a replayed step's id used again as used twice", function()
    local again = false
    local p = define(function()
      local a = step("once", function() return { v = 1 } end)
      if not again then error("stop after the step") end
      return step("once", function() return 2 end) + a.v
    end)
    assert.are.equal("failed", engine.execute(p, nil, "dup-replayed").status)
    again = true
    local rec = engine.execute(p, nil, "dup-replayed")
    assert.are.equal("failed", rec.status)
    assert.matches("step id 'once' is used twice in run dup%-replayed: at a replayed step and at .*engine_spec.lua:%d+",
      rec.error.message)
  end)

  it("replays in one C call with the Lua step's checks and errors at the user's line", function()
    -- the global step is C (l_step.c); what its fast path does not take
    -- goes to the Lua step, whose errors name this file
    assert.are.equal("C", debug.getinfo(step, "S").what)
    local mode, calls = "record", 0
    local p = define(function(input)
      local a = step("a", function(x) calls = calls + 1; return { x = x } end, input.x)
      if mode == "record" then
        local b = step("b", function() calls = calls + 1; return { list = { 1, 2 } } end)
        b.list[1] = "changed" -- the stored result stays as it was
        error("stop after the steps")
      elseif mode == "not a function" then
        step("b", "not a function")
      elseif mode == "bad id" then
        step("b\0", function() end)
      end
      local b = step("b", function() calls = calls + 1; return "run again" end)
      local c = step("c", function() calls = calls + 1; return a.x end)
      return { a = a, b = b, c = c }
    end)
    assert.are.equal("failed", engine.execute(p, { x = 7 }, "replay-fast").status)
    mode = "not a function"
    local rec = engine.execute(p, { x = 8 }, "replay-fast")
    assert.matches("engine_spec.lua:%d+: step 'b': expected a function, got string", rec.error.message)
    mode = "bad id"
    rec = engine.execute(p, { x = 8 }, "replay-fast")
    assert.matches("engine_spec.lua:%d+: step: the id \"b\\0\" must not contain NUL bytes", rec.error.message)
    mode = "done"
    rec = engine.execute(p, { x = 9 }, "replay-fast")
    assert.are.equal("completed", rec.status)
    assert.are.same({ a = { x = 7 }, b = { list = { 1, 2 } }, c = 7 }, rec.result)
    assert.are.equal(2, rec.replayed)
    assert.are.equal(1, rec.executed)
    assert.are.equal(3, calls)
  end)

  it("gives each replay a fresh copy of the stored result, nested tables and NUL bytes included", function()
    local stored = { s = "x\0y", nested = { list = { 1, { deep = "z\0" } }, empty = {} }, n = 1.5,
      big = math.maxinteger, ["k\0"] = true }
    local fail, seen = true, {}
    local p = define(function()
      local a = step("a", function() return stored end)
      seen[#seen + 1] = a
      local function copy_of(t)
        if type(t) ~= "table" then return t end
        local c = {}
        for k, v in pairs(t) do c[k] = copy_of(v) end
        return c
      end
      local copy = copy_of(a)
      a.nested.list[1], a.s, a["k\0"] = "mutated", nil, nil -- what a replay gets is its own
      if fail then error("stop after the step") end
      return copy
    end)
    assert.are.equal("failed", engine.execute(p, nil, "replay-fresh").status)
    assert.are.equal("failed", engine.execute(p, nil, "replay-fresh").status)
    fail = false
    local rec = engine.execute(p, nil, "replay-fresh")
    assert.are.equal("completed", rec.status)
    assert.are.equal(1, rec.replayed)
    assert.are.same({ s = "x\0y", nested = { list = { 1, { deep = "z\0" } }, empty = {} }, n = 1.5,
      big = math.maxinteger, ["k\0"] = true }, rec.result)
    assert.are.equal(3, #seen)
    assert.are_not.equal(seen[2], seen[3]) -- two replays, two tables
  end)

  it("counts the steps replayed in C, by the Lua step and by memo", function()
    local fail = true
    local p = define(function()
      step("fast", function() return 1 end)                      -- the C fast path
      step("opts", { timeout = "5s" }, function() return 2 end) -- options: the Lua step
      sleep("1ms")                                               -- a memo
      step("nil", function() return nil end)                     -- a nil result, in C
      if fail then error("stop after the steps") end
      return step("last", function() return 3 end)
    end)
    local rec = engine.execute(p, nil, "replay-count")
    assert.are.equal("failed", rec.status)
    assert.are.equal(0, rec.replayed)
    fail = false
    rec = engine.execute(p, nil, "replay-count")
    assert.are.equal("completed", rec.status)
    assert.are.equal(4, rec.replayed)
    assert.are.equal(1, rec.executed)
  end)

  it("replays stored results and runs again a step that failed", function()
    local calls, fail = { a = 0, b = 0, c = 0 }, true
    local p = define(function()
      local a = step("a", function() calls.a = calls.a + 1; return { n = 1, list = { 1, 2, 3 } } end)
      local b = step("b", function() calls.b = calls.b + 1; return nil end)
      local c = step("c", function()
        calls.c = calls.c + 1
        if fail then error("not yet") end
        return "c"
      end)
      return { a = a, b = b == nil, c = c }
    end)
    assert.are.equal("failed", engine.execute(p, nil, "replay-mixed").status)
    fail = false
    local rec = engine.execute(p, nil, "replay-mixed")
    assert.are.equal("completed", rec.status)
    assert.are.same({ a = { n = 1, list = { 1, 2, 3 } }, b = true, c = "c" }, rec.result)
    assert.are.same({ a = 1, b = 1, c = 2 }, calls)
    assert.are.equal(2, rec.replayed)
    assert.are.equal(1, rec.executed)
  end)
end)
