-- sink_spec.lua: sluice.sink inside the host on real files: a step that
-- runs again (retry, resume) replaces its writes instead of adding lines;
-- parallel writers; caller keys; the sink file rebuilt from its parts when
-- it does not match them; CSV; upsert by key. The kill -9 cases are in
-- tests/functional/sink_crash_spec.lua.
local H = require "helper"
local store = require "sluice._store"
local json = require "sluice.json"
local engine = require "sluice.engine"
local sink = require "sluice.sink"
local fs = require "sluice.fs"

assert(store.open(H.store_target()))
local dir = H.tmpdir()

local function lines(path)
  return json.decode_lines(fs.read(path) or "")
end

local n = 0
local function run(fn, input, id)
  n = n + 1
  local p = pipeline("sink" .. n, fn)
  return engine.execute(p, input, id or ("sink-run-" .. n)), p
end

describe("sink.jsonl", function()
  it("writes records in order, one line each", function()
    local path = dir .. "/order.jsonl"
    local r = run(function()
      local out = sink.jsonl(path)
      step("a", function() return out:write({ { id = 1 }, { id = 2, s = "x\ny" } }) end)
      step("b", function() out:write({ { id = 3 } }); out:write({}); out:write({ { id = 4 } }) end)
    end)
    assert.are.equal("completed", r.status)
    assert.are.same({ { id = 1 }, { id = 2, s = "x\ny" }, { id = 3 }, { id = 4 } }, lines(path))
    assert.are.same(lines(path), sink.jsonl(path):records())
  end)

  it("does not duplicate the writes of a step that is retried", function()
    local path = dir .. "/retry.jsonl"
    local r = run(function()
      local out = sink.jsonl(path)
      step("load", { retries = 3, backoff = "1ms" }, function()
        out:write({ { a = ctx().attempt } })
        out:write({ { b = ctx().attempt } })
        if ctx().attempt < 3 then error("flaky") end
      end)
    end)
    assert.are.equal("completed", r.status)
    assert.are.same({ { a = 3 }, { b = 3 } }, lines(path))
  end)

  it("drops the extra writes of an earlier attempt that wrote more", function()
    local path = dir .. "/fewer.jsonl"
    local r = run(function()
      local out = sink.jsonl(path)
      step("load", { retries = 1, backoff = "1ms" }, function()
        local k = ctx().attempt == 1 and 3 or 1
        for i = 1, k do out:write({ { i = i, attempt = ctx().attempt } }) end
        if ctx().attempt == 1 then error("again") end
      end)
    end)
    assert.are.equal("completed", r.status)
    assert.are.same({ { i = 1, attempt = 2 } }, lines(path))
  end)

  it("does not duplicate on resume; other runs append", function()
    local path = dir .. "/resume.jsonl"
    local fail = true
    local p = pipeline("sink-resume", function(input)
      local out = sink.jsonl(path)
      step("one", function() out:write({ { run = input, s = 1 } }) end)
      step("two", function()
        out:write({ { run = input, s = 2 } })
        if fail then error("down") end
      end)
    end)
    assert.are.equal("failed", engine.execute(p, "r1", "resume-1").status)
    fail = false
    assert.are.equal("completed", engine.execute(p, "r1", "resume-1").status)
    assert.are.equal("completed", engine.execute(p, "r2", "resume-2").status)
    assert.are.same({ { run = "r1", s = 1 }, { run = "r1", s = 2 }, { run = "r2", s = 1 }, { run = "r2", s = 2 } },
      lines(path))
  end)

  it("takes turns between parallel branches writing one sink", function()
    local path = dir .. "/par.jsonl"
    local r = run(function()
      local out = sink.jsonl(path)
      local function branch(b)
        return function()
          step("b" .. b, function()
            for i = 1, 30 do out:write({ { b = b, i = i } }) end
          end)
        end
      end
      parallel(branch(1), branch(2), branch(3))
    end)
    assert.are.equal("completed", r.status)
    local got = lines(path)
    assert.are.equal(90, #got)
    local seen, last = {}, {}
    for _, l in ipairs(got) do
      local k = l.b .. ":" .. l.i
      assert.is_nil(seen[k])
      seen[k] = true
      assert.is_true(l.i > (last[l.b] or 0), "each branch's writes in order")
      last[l.b] = l.i
    end
  end)

  it("replaces the part of a caller key, from any run", function()
    local path = dir .. "/keyed.jsonl"
    local p = pipeline("sink-keyed", function(input)
      local out = sink.jsonl(path)
      step("day", function() out:write({ { day = input.day, v = input.v } }, { key = input.day }) end)
    end)
    engine.execute(p, { day = "2026-01-01", v = 1 }, "k1")
    engine.execute(p, { day = "2026-01-02", v = 1 }, "k2")
    engine.execute(p, { day = "2026-01-01", v = 2 }, "k3")
    assert.are.same({ { day = "2026-01-01", v = 2 }, { day = "2026-01-02", v = 1 } }, lines(path))
    -- with a key it also works outside a run
    sink.jsonl(path):write({ { day = "2026-01-02", v = 9 } }, { key = "2026-01-02" })
    assert.are.same({ { day = "2026-01-01", v = 2 }, { day = "2026-01-02", v = 9 } }, lines(path))
  end)

  it("rebuilds a sink file that does not match its parts", function()
    local path = dir .. "/heal.jsonl"
    local p = pipeline("sink-heal", function(input)
      local out = sink.jsonl(path)
      step("w", function() out:write({ { v = input } }) end)
    end)
    engine.execute(p, 1, "h1")
    -- a torn append, as a crash in the middle of one would leave
    assert(fs.append(path, '{"v":2'))
    engine.execute(p, 2, "h2")
    assert.are.same({ { v = 1 }, { v = 2 } }, lines(path))
    -- the sink file removed: rebuilt from the parts at the next write
    assert(fs.remove(path))
    engine.execute(p, 3, "h3")
    assert.are.same({ { v = 1 }, { v = 2 }, { v = 3 } }, lines(path))
  end)

  it("refuses a write outside a step and a record it cannot encode", function()
    local out = sink.jsonl(dir .. "/x.jsonl")
    local ok, err = pcall(out.write, out, { { a = 1 } })
    assert.is_false(ok)
    assert.matches("write called outside a step", err)
    local r = run(function() step("bad", function() out:write({ { a = 1 }, { f = print } }) end) end)
    assert.are.equal("failed", r.status)
    assert.matches("record 2: value.f: cannot store a function", r.error.message)
    assert.is_false(fs.exists(dir .. "/x.jsonl"))
  end)
end)

describe("sink.csv", function()
  it("writes a header once, records by header names and lists, RFC 4180 quoting", function()
    local path = dir .. "/out.csv"
    local r = run(function()
      local out = sink.csv(path, { header = { "id", "name", "score" } })
      step("a", function() out:write({ { id = 1, name = "a,b", score = 0.1 }, { 2, 'say "hi"', json.null } }) end)
      step("b", { retries = 1, backoff = "1ms" }, function()
        out:write({ { id = 3, name = "two\nlines", score = 1e21 } })
        if ctx().attempt == 1 then error("again") end
      end)
    end)
    assert.are.equal("completed", r.status)
    assert.are.equal('id,name,score\n1,"a,b",0.1\n2,"say ""hi""",\n3,"two\nlines",1e+21\n', fs.read(path))
  end)

  it("takes a delimiter, and records need a header", function()
    local path = dir .. "/semi.csv"
    local r = run(function()
      local out = sink.csv(path, { delimiter = ";" })
      step("a", function() out:write({ { "a;b", "c" } }) end)
      step("b", function() out:write({ { k = 1 } }) end)
    end)
    assert.are.equal('"a;b";c\n', fs.read(path))
    assert.are.equal("failed", r.status)
    assert.matches("row 1 is a record; give the sink a header", r.error.message)
  end)
end)

describe("sink.upsert_jsonl", function()
  it("replaces records by key in place and appends new ones; a rerun adds nothing", function()
    local path = dir .. "/table.jsonl"
    local t = sink.upsert_jsonl(path, "id")
    local p = pipeline("upsert", function(input)
      return step("load", function()
        local added, replaced = t:write(input)
        return { added = added, replaced = replaced }
      end)
    end)
    assert.are.same({ added = 2, replaced = 0 }, engine.execute(p, { { id = "a", v = 1 }, { id = "b", v = 1 } }, "u1").result)
    assert.are.same({ added = 1, replaced = 1 }, engine.execute(p, { { id = "b", v = 2 }, { id = 7, v = 1 } }, "u2").result)
    assert.are.same({ added = 0, replaced = 2 }, engine.execute(p, { { id = "b", v = 2 }, { id = 7, v = 1 } }, "u3").result)
    assert.are.same({ { id = "a", v = 1 }, { id = "b", v = 2 }, { id = 7, v = 1 } }, t:records())
  end)

  it("takes a key function and refuses a record without a key before writing", function()
    local path = dir .. "/fn.jsonl"
    local t = sink.upsert_jsonl(path, function(r) return r.a .. "/" .. r.b end)
    t:write({ { a = "x", b = 1 }, { a = "x", b = 2 } })
    t:write({ { a = "x", b = 1, new = true } })
    assert.are.same({ { a = "x", b = 1, new = true }, { a = "x", b = 2 } }, t:records())
    local t2 = sink.upsert_jsonl(path, "id")
    local ok, err = pcall(t2.write, t2, { { id = 1 }, { name = "no id" } })
    assert.is_false(ok)
    assert.matches("record 2 has no key %(field 'id' is missing%)", err)
  end)
end)
