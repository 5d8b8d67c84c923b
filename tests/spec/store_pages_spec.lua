-- store_pages_spec.lua: store.release_pages() on a real store: after a pass
-- over 20,000 schedule records, the store's pages leave the process's
-- resident set (what the scheduler does at start, so that 100,000
-- schedules do not keep the database counted in serve's RSS), and every
-- record reads back the same afterwards, also those written after it.
local H = require "helper"
local store = require "sluice._store"

local target = H.store_target()
assert(store.open(target))

-- kB of this process's mapping of the store's data.mdb that are resident
local function resident()
  local kb, inside = 0, false
  for line in io.lines("/proc/self/smaps") do
    local path = line:match("^%x+%-%x+ %S+ %S+ %S+ %S+%s+(.*)$")
    if path then
      inside = path:sub(-#"/data.mdb") == "/data.mdb" and path:find(target, 1, true) == 1
    elseif inside then
      local n = line:match("^Rss:%s+(%d+) kB")
      if n then kb = kb + tonumber(n) end
    end
  end
  return kb
end

local N = 20000
local function name(i) return ("c%06d"):format(i) end
local function rec(i) return { pipeline = "job", spec = ("%d * * * *"):format(i % 60), runs = i } end

-- every record, read through the scheduler's pass; returns how many
local function pass()
  local after, page, seen = nil, {}, 0
  repeat
    local count, last = store.schedule_states(after, 1000, page)
    assert(count, last)
    for k = 1, 7 * count, 7 do
      seen = seen + 1
      local i = tonumber(page[k]:sub(2))
      assert.are.equal(name(i), page[k])
      assert.are.equal(rec(i).spec, page[k + 1])
      assert.are.equal(i, page[k + 4])
    end
    after = last
  until not after
  return seen
end

describe("store.release_pages", function()
  it("drops the store's pages from the resident set, and every record reads back", function()
    H.task(function()
      for first = 1, N, 1000 do
        local b = store.batch()
        for i = first, first + 999 do b:put_schedule(name(i), rec(i)) end
        assert(b:commit())
      end
    end)
    assert.are.equal(N, pass())
    local before = resident()
    assert(store.release_pages())
    local after = resident()
    if H.backend ~= "postgres" then
      -- 20,000 records are ~1.5 MB of pages; what stays is at most what
      -- the writer thread touched meanwhile
      assert.is_true(before > 1000, "the pass left " .. before .. " kB resident")
      assert.is_true(after < before / 4, ("%d kB resident after the release (%d before)"):format(after, before))
    end
    -- read again from the page cache: the same records
    assert.are.equal(N, pass())
    H.task(function() assert(store.batch():put_schedule(name(N + 1), rec(N + 1)):commit()) end)
    assert(store.release_pages())
    assert.are.equal(N + 1, pass())
    assert.are.equal(N + 1, store.schedule(name(N + 1)).runs)
  end)
end)
