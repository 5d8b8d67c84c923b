-- failures_spec.lua: the C modules report a runtime failure as luv does,
-- nil, "CODE: message", "CODE" (never a bare message, never a raise), a
-- refused input as a validator does (nil, the message alone, "EINVAL"), and
-- a scan by key (sluice._store_raw) returns what it read.
local H = require "helper"
local raw = require "sluice._store_raw"
local clock = require "sluice._clock"
local codec = require "sluice._codec"
local cron = require "sluice._cron"
local lock = require "sluice._lock"
local storage = require "sluice._store"

local function fails(code, ok, msg, got)
  assert.is_nil(ok)
  assert.are.equal(code, got)
  assert.are.equal(code .. ": ", msg:sub(1, #code + 2))
  assert.is_nil(msg:find(code, #code + 1, true), "the code once: " .. msg)
end

describe("C module failures", function()
  it("have the code in front of the message and as the third value", function()
    fails("ENOTFOUND", storage.open(H.tmpdir() .. "/none", true))
    fails("ENOENT", lock.holder(H.tmpdir() .. "/no/such/writer.lock"))
  end)

  it("of validators are nil, the message alone (it goes into the caller's sentence), EINVAL", function()
    local function invalid(ok, msg, code)
      assert.is_nil(ok)
      assert.are.equal("EINVAL", code)
      assert.is_nil(msg:find("EINVAL", 1, true), msg)
    end
    invalid(cron.canonical("61 * * * *"))
    invalid(cron.next("* * * * *", 0, "Mars/Olympus"))
    invalid(cron.tz_check("Mars/Olympus"))
    invalid(clock.parse_time("yesterday"))
    invalid(codec.try_encode({ f = print }, "result"))
    invalid(codec.try_decode("{"))
  end)

  it("tell a free writer lock (false) from one taken here", function()
    local path = H.tmpdir() .. "/writer.lock"
    assert.are.equal(false, lock.holder(path))
    assert.is_true(lock.take(path, "run"))
    assert.are.equal("run", (lock.holder(path)))
  end)

  H.lmdb_it("LMDB's databases by key")("a scan by key (sluice._store_raw) returns the keys and values it read, after the read ended", function()
    local dir = H.tmpdir()
    assert(storage.open(dir))
    assert.is_true(H.task(function()
      return raw.commit({ "meta", "t\0a", "1", "meta", "t\0b", "2", "meta", "t\0c", "3" })
    end))
    local keys, vals = raw.scan("meta", "t\0", true, 2)
    assert.are.same({ "t\0c", "t\0b" }, keys)
    assert.are.same({ "3", "2" }, vals)
    storage.close()
  end)
end)
