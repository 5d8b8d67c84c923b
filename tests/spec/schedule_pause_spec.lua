-- schedule_pause_spec.lua: scheduler.save (the REPL's pause and
-- resume) inside the host on a real store: the flag is in the schedule's
-- stored record, a paused schedule does not fire, a resumed one fires
-- again; an unknown name is said.
local H = require "helper"
local store = require "sluice._store"
local scheduler = require "sluice.scheduler"
local uv = require "luv"

assert(store.open(H.store_target()))

local function stored(name) return assert(require("sluice._store").schedule(name)) end

describe("pausing a schedule", function()
  it("is stored, and a resumed schedule fires again", function()
    local p = pipeline("tick", function() end)
    every(1).seconds(p, nil, { name = "tick" })
    local fired = 0
    H.task(function()
      scheduler.start(function(_, _, _, on_end)
        fired = fired + 1
        on_end()
      end)
    end)
    H.wait_until(function() return fired >= 1 end, "a first fire", 5000)
    H.task(function() assert(scheduler.save("tick", false)) end)
    assert.is_false(stored("tick").enabled)
    local n = fired
    -- two fire times pass while it is paused
    local t0 = uv.hrtime()
    H.wait_until(function() return uv.hrtime() - t0 > 2.2e9 end, "two fire times", 5000, 50)
    assert.are.equal(n, fired)
    H.task(function() assert(scheduler.save("tick", true)) end)
    assert.is_true(stored("tick").enabled)
    H.wait_until(function() return fired > n end, "the resumed schedule to fire", 5000)
    local ok, err = scheduler.save("nope", true)
    assert.is_nil(ok)
    assert.are.equal("no schedule 'nope'", err)
    scheduler.stop()
  end)
end)
