-- scheduler_spec.lua: the scheduler follows the registry inside the host:
-- a schedule changed by a reload re-arms without firing again a time it
-- already fired, a removed one stops firing, an added one starts.
local H = require "helper"
local storage = require "sluice._store"
local registry = require "sluice.registry"
local scheduler = require "sluice.scheduler"

local store = H.store_target()
assert(storage.open(store))
local dir = H.tmpdir()

describe("the scheduler, across reloads", function()
  local fires = {} -- schedule name -> list of run ids, in fire order
  local function fired(name) return fires[name] or {} end

  setup(function()
    H.write(dir .. "/witness.lua", 'pipeline("w", function() end)\nevery(1).seconds("w", nil, { name = "witness" })\n')
    assert(registry.load(dir .. "/witness.lua"))
    H.task(scheduler.start, function(def, id, _, on_end)
      fires[def.name] = fires[def.name] or {}
      table.insert(fires[def.name], id)
      on_end()
    end)
  end)
  teardown(function() scheduler.stop() end)

  it("stores the first fire of each schedule new to the store (after arming, in the background)", function()
    local f = dir .. "/many.lua"
    H.write(f, 'pipeline("m", function() end)\nfor i = 1, 2500 do every.cron(("%d * * * *"):format(i % 60))("m", nil, { name = "m" .. i }) end\n')
    assert(registry.load(f))
    H.wait_until(function() return storage.schedule("m2500") ~= nil end, "the records of 2,500 new schedules", 10000)
    local rec = storage.schedule("m1")
    assert.are.equal("1 * * * *", rec.spec)
    assert.is_truthy(require("sluice._clock").parse_time(rec.next_at))
    H.write(f, 'pipeline("m", function() end)\n')
    assert(registry.load(f))
    H.wait_until(function() return storage.schedule("m2500") == nil end, "their records gone", 10000)
  end)

  it("re-arms a changed schedule without firing a recorded time again, and stops a removed one", function()
    local f = dir .. "/s.lua"
    local function version(tz)
      return ('pipeline("p", function() end)\nevery(1).seconds("p", nil, { name = "s", tz = %q })\n'):format(tz)
    end
    H.write(f, version("UTC"))
    assert(registry.load(f)) -- added: armed
    -- right after each of 4 fires, a change of its timing (the time zone)
    for i = 1, 4 do
      H.wait_until(function() return #fired("s") >= i end, "fire " .. i, 10000, 1)
      H.write(f, version(i % 2 == 1 and "Europe/Berlin" or "UTC"))
      local d = assert(registry.load(f))
      assert.are.equal(1, #d.schedules.changed)
    end
    H.wait_until(function() return #fired("s") >= 5 end, "a fire after the last change", 10000, 1)
    local seen = {}
    for _, id in ipairs(fired("s")) do
      assert.is_nil(seen[id], id .. " fired twice")
      seen[id] = true
    end
    -- removed: the witness fires twice more, s not once
    H.write(f, 'pipeline("p", function() end)\n')
    local d = assert(registry.load(f))
    assert.are.equal(1, #d.schedules.removed)
    local n, w = #fired("s"), #fired("witness")
    H.wait_until(function() return #fired("witness") >= w + 2 end, "two more witness fires", 10000, 5)
    assert.are.equal(n, #fired("s"))
    -- its record is gone from the store, the witness's stays
    assert.is_nil((storage.schedule("s")))
    assert.are.equal("witness", storage.schedule("witness").name)
  end)
end)
