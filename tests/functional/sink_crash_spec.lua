-- sink_crash_spec.lua: sluice.sink across real kill -9: a run whose steps
-- write thousands of sink lines is killed in the middle of its writes,
-- several times, then resumed; the sink files hold every record exactly
-- once, in order, and the upsert table has no duplicate key.
local H = require "helper"
local json = require "sluice.json"

describe("sink after kill -9", function()
  it("never duplicates nor loses lines of a step killed while it writes", function()
    local dir = H.tmpdir()
    local store, out, tbl, csv = dir .. "/store", dir .. "/out.jsonl", dir .. "/table.jsonl", dir .. "/out.csv"
    local f = H.write(dir .. "/load.lua", ([[
local sink = require "sluice.sink"
pipeline("load", function(input)
  local out = sink.jsonl(%q)
  local csv = sink.csv(%q, { header = { "b", "i" } })
  local tbl = sink.upsert_jsonl(%q, "id")
  step("first", function() out:write({ { step = "first" } }) end)
  local function bulk(b)
    return function()
      step("bulk-" .. b, function()
        for i = 1, input.n do
          out:write({ { b = b, i = i, pad = string.rep("x", 200) } })
          csv:write({ { b = b, i = i } })
          tbl:write({ { id = b .. (i %% 50), i = i } })
        end
      end)
    end
  end
  parallel(bulk("a"), bulk("b"))
  step("last", function() out:write({ { step = "last" } }) end)
  return "done"
end)]]):format(out, csv, tbl))
    local n = 100
    local args = { "run", f, "--id", "sink1", "--input", json.encode({ n = n }), "--store", store }
    local function count() return #H.lines(out) end
    math.randomseed(os.time())
    local kills = 0
    for _ = 1, 4 do
      local target = count() + math.random(15, 45)
      local p = H.spawn(args)
      H.wait_until(function() return p.exited or count() >= target end, "the sink to reach " .. target .. " lines", 60000, 1)
      p:kill("sigkill")
      local c, signal = p:wait()
      if signal == 9 then kills = kills + 1 end
      if c == 0 and signal == 0 then break end
    end
    assert.is_true(kills >= 2, "the run was killed fewer than 2 times")
    local code, stdout, err = H.sluice(args)
    assert.are.equal(0, code, err)
    assert.are.equal('"done"\n', stdout)

    local lines = json.decode_lines(H.read(out))
    assert.are.same({ step = "first" }, lines[1])
    assert.are.same({ step = "last" }, lines[#lines])
    assert.are.equal(2 * n + 2, #lines)
    local last = { a = 0, b = 0 }
    for k = 2, #lines - 1 do
      local l = lines[k]
      assert.are.equal(last[l.b] + 1, l.i, "branch " .. l.b .. " in order without gaps")
      last[l.b] = l.i
    end
    local rows = H.lines(csv)
    assert.are.equal("b,i", rows[1])
    assert.are.equal(2 * n + 1, #rows)
    local seen = {}
    for k = 2, #rows do
      assert.is_nil(seen[rows[k]], "csv row " .. rows[k] .. " twice")
      seen[rows[k]] = true
    end
    local t = json.decode_lines(H.read(tbl))
    assert.are.equal(100, #t)
    local keys = {}
    for _, r in ipairs(t) do
      assert.is_nil(keys[r.id], "key " .. r.id .. " twice")
      keys[r.id] = true
      assert.is_true(r.i > n - 50, "the last write of each key won")
    end
  end)
end)
