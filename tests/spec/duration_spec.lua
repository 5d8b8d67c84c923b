-- duration_spec.lua: durations as users write them, and a bounded random
-- fuzz of the parser: every input either parses to a number >= 0 or fails
-- with a message naming the field; nothing else escapes.
local duration = require "sluice.duration"

describe("duration", function()
  it("parses numbers and unit strings", function()
    assert.are.equal(1500, duration.ms(1.5))
    assert.are.equal(250, duration.ms("250ms"))
    assert.are.equal(30000, duration.ms("30s"))
    assert.are.equal(300000, duration.ms("5m"))
    assert.are.equal(7200000, duration.ms("2h"))
    assert.are.equal(86400000, duration.ms("1d"))
    assert.are.equal(5400000, duration.ms("1h30m"))
    assert.are.equal(1500, duration.ms("1.5s"))
  end)

  it("rejects bad durations naming the field", function()
    for _, bad in ipairs({ "", "5", "5x", "s", "-1s", "1s2", "1 day" }) do
      local ok, err = pcall(duration.ms, bad, "step 'x' timeout")
      assert.is_false(ok, bad)
      assert.matches("step 'x' timeout: ", err)
    end
    local ok, err = pcall(duration.ms, -1, "sleep")
    assert.is_false(ok)
    assert.matches("sleep: %-1 is not a duration", err)
    ok = pcall(duration.ms, 0 / 0, "sleep")
    assert.is_false(ok)
    ok = pcall(duration.ms, {}, "sleep")
    assert.is_false(ok)
  end)

  it("rejects spaces, signs and other malformed strings, showing the accepted forms", function()
    for _, bad in ipairs({ "5 m", "5s ", " 5s", "1h 30m", "\t5s", "+5s", "5.s", ".5s", "5S", "5sec", "1..5s",
      "5m\0", "1e3s" }) do
      local ok, err = pcall(duration.ms, bad, "sleep")
      assert.is_false(ok, ("%q was accepted"):format(bad))
      assert.are.equal(('sleep: %q is not a duration (use a number of seconds or a string like "250ms", ' ..
        '"30s", "1.5m", "2h", "1d" or "1h30m", without spaces)'):format(bad), err)
    end
    assert.are.equal(90000, duration.ms("1.5m"))
    assert.are.equal(3723000, duration.ms("1h2m3s"))
  end)

  it("refuses durations over 100 years, which no timer or wake time could hold", function()
    assert.are.equal(duration.MAX_MS, duration.ms(duration.MAX_MS / 1000))
    assert.are.equal(duration.MAX_MS, duration.ms("36500d"))
    local ok, err = pcall(duration.ms, "36501d", "sleep")
    assert.is_false(ok)
    assert.are.equal('sleep: "36501d" is longer than 100 years', err)
    ok, err = pcall(duration.ms, "99999999999999999999d", "sleep")
    assert.is_false(ok)
    assert.matches("is longer than 100 years", err)
    ok, err = pcall(duration.ms, math.huge, "sleep")
    assert.is_false(ok)
    assert.are.equal("sleep: inf seconds is longer than 100 years", err)
  end)

  it("survives 20,000 random inputs", function()
    math.randomseed(42)
    local alphabet = "0123456789.msdhx -+e\0\255"
    for _ = 1, 20000 do
      local n = math.random(0, 12)
      local chars = {}
      for i = 1, n do
        local k = math.random(1, #alphabet)
        chars[i] = alphabet:sub(k, k)
      end
      local input = table.concat(chars)
      local ok, res = pcall(duration.ms, input, "fuzz")
      if ok then
        assert.is_true(type(res) == "number" and res >= 0 and res == res, ("%q gave %s"):format(input, tostring(res)))
      else
        assert.is_true(type(res) == "string" and res:find("fuzz: ", 1, true) ~= nil, ("%q raised %s"):format(input, tostring(res)))
      end
    end
  end)
end)
