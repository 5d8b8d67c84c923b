-- consumer_spec.lua: a stream consumer under `sluice serve` killed with
-- SIGKILL, again and again, while producers keep emitting: every stored
-- (acknowledged) event is delivered at least once, in key order within each
-- delivery, and the checkpoint never moves past what a batch delivered.
local H = require "helper"
local json = require "sluice.json"
local uv = require "luv"

-- step body that waits ms on a luv timer (the consumer's slow work)
local PAUSE = [[
local uv = require "luv"
local function pause(ms)
  local co = coroutine.running()
  local t = uv.new_timer()
  t:start(ms, 0, function() t:close(); coroutine.resume(co) end)
  coroutine.yield()
end
]]

-- A consumer whose every delivery is one file in `out` (written aside and
-- renamed: a file there is a whole delivery), one line per event, after
-- the step has waited `wait_ms`; `started` gets a line when a delivery
-- begins.
local function consumer_file(path, pattern, out, started, batch, wait_ms)
  return H.write(path, PAUSE .. ([[
local n = 0
consume("c", %q, function(events)
  step("deliver", function()
    local s = io.open(%q, "a"); s:write(events[1].id, "\n"); s:close()
    pause(%d)
    local lines = {}
    for i, e in ipairs(events) do lines[i] = e.id .. " " .. e.stream .. "\n" end
    n = n + 1
    local name = ("%%s/%%s-%%d-%%d"):format(%q, events[1].id, uv.os_getpid(), n)
    local f = io.open(name .. ".tmp", "w"); f:write(table.concat(lines)); f:close()
    assert(os.rename(name .. ".tmp", name))
  end)
end, { batch = %d })
]]):format(pattern, started, wait_ms, out, batch))
end

-- every delivery in `out`: a list of {id, stream} lists
local function deliveries(out)
  local list = {}
  local dir = uv.fs_scandir(out)
  while dir do
    local name = uv.fs_scandir_next(dir)
    if not name then break end
    if not name:find("%.tmp$") then
      local d = {}
      for _, l in ipairs(H.lines(out .. "/" .. name)) do
        local id, stream = l:match("^(%x+) (%S+)$")
        assert(id, ("delivery %s: bad line %q"):format(name, l))
        d[#d + 1] = { id = id, stream = stream }
      end
      list[#list + 1] = d
    end
  end
  return list
end

local function consumer_state(store)
  local code, out, err = H.sluice({ "consumers", "--json", "--store", store })
  assert.are.equal(0, code, err)
  return json.decode(out).consumers[1]
end

local function unfinished_runs(store)
  local code, out, err = H.sluice({ "runs", "--json", "--limit", "100000", "--store", store })
  assert.are.equal(0, code, err)
  local n = 0
  for _, r in ipairs(json.decode(out).runs) do
    if r.status ~= "completed" then n = n + 1 end
  end
  return n
end

-- every event stored under the pattern, in append order
local function stored_events(store, pattern)
  local code, out, err = H.sluice({ "events", pattern, "--json", "--limit", "1000000", "--store", store })
  assert.are.equal(0, code, err)
  -- one document {events = [...]} or JSON Lines, one event a line
  local ok, doc = pcall(json.decode, out)
  if ok and type(doc) == "table" and doc.events then return doc.events end
  local list = {}
  for l in out:gmatch("[^\n]+") do list[#list + 1] = json.decode(l) end
  return list
end

-- Asserts that each stored event is in some delivery and that each
-- delivery holds its events in append order (so in order within a key).
local function assert_delivered(store, pattern, out, what)
  local seen = {}
  for _, d in ipairs(deliveries(out)) do
    for i, e in ipairs(d) do
      if i > 1 then assert.is_true(d[i - 1].id < e.id, what .. ": a delivery out of append order at " .. e.id) end
      seen[e.id] = true
    end
  end
  local missing = {}
  local events = stored_events(store, pattern)
  for _, e in ipairs(events) do
    if not seen[e.id] then missing[#missing + 1] = e.id end
  end
  assert.are.equal(0, #missing, ("%s: %d of %d stored events never delivered: %s"):format(
    what, #missing, #events, table.concat(missing, " ", 1, math.min(#missing, 10))))
  return #events
end

describe("a consumer under SIGKILL", function()
  local dir, store, out, started
  before_each(function()
    dir = H.tmpdir()
    store = dir .. "/store"
    out = dir .. "/out"
    started = dir .. "/started"
    os.execute("mkdir -p '" .. dir .. "/p' '" .. out .. "'")
  end)

  local function produce(from, n, key_count)
    local f = H.write(dir .. "/produce.lua", [[
pipeline("produce", function(input)
  local list = {}
  for i = input.from, input.from + input.n - 1 do list[#list + 1] = { "e", "k:" .. (i % input.keys), { i = i } } end
  return #emit_many(list)
end)]])
    local code, _, err = H.sluice({ "run", f, "--input", json.encode({ from = from, n = n, keys = key_count }), "--store", store })
    assert.are.equal(0, code, err)
  end

  it("delivers the events emitted after a crash in the middle of a smaller batch", function()
    consumer_file(dir .. "/p/c.lua", "k:*", out, started, 100, 2000)
    produce(1, 10, 3)
    local p = H.spawn({ "serve", dir .. "/p", "--store", store })
    H.wait_until(function() return #H.lines(started) >= 1 end, "the first batch to start", 20000, 10)
    p:kill("sigkill")
    p:wait()
    assert.are.same({}, deliveries(out))
    produce(11, 10, 3)
    local p2 = H.spawn({ "serve", dir .. "/p", "--store", store })
    H.wait_until(function() return consumer_state(store).lag == 0 end, "the consumer to catch up", 30000, 50)
    p2:kill("sigterm")
    assert.are.equal(0, (p2:wait()))
    assert.are.equal(20, assert_delivered(store, "k:*", out, "after one crash"))
    -- the checkpoint is the last event, and nothing was delivered past it
    assert.are.equal(stored_events(store, "k:*")[20].id, consumer_state(store).after)
  end)

  it("delivers every acknowledged event at least once across repeated SIGKILLs while producers emit", function()
    local seed = os.time()
    math.randomseed(seed)
    local what = "seed " .. seed
    consumer_file(dir .. "/p/c.lua", "k:*", out, started, 20, 30)
    -- a producer inside serve: a run every second, each emitting 12 events
    -- one by one with a pause between them, so kills cut runs short
    local function producer_file(scheduled)
      H.write(dir .. "/p/live.lua", PAUSE .. [[
local live = pipeline("live", function()
  for i = 1, 12 do
    emit("live", "k:" .. (i % 5), { i = i })
    step("gap" .. i, function() pause(20) end)
  end
end)
]] .. (scheduled and 'every(1).seconds(live, nil, { catch_up = "none", overlap = "allow" })\n' or ""))
    end
    producer_file(true)
    produce(1, 30, 4)
    local function live_events()
      local n = 0
      for _, e in ipairs(stored_events(store, "k:*")) do
        if e.type == "live" then n = n + 1 end
      end
      return n
    end
    for cycle = 1, 6 do
      local delivered, emitted = #deliveries(out), live_events()
      local p = H.spawn({ "serve", dir .. "/p", "--store", store })
      H.wait_until(function() return #deliveries(out) > delivered and live_events() > emitted end,
        what .. ": a delivery and a live emit in cycle " .. cycle, 30000, 50)
      H.sleep(math.random(0, 400)) -- the kill lands anywhere in what follows
      p:kill("sigkill")
      p:wait()
      -- and a producer emits while serve is down
      produce(1000 * cycle, math.random(1, 40), 4)
    end
    -- last start without the schedule: the cut-off producer runs finish,
    -- the consumer catches up, nothing is left unfinished
    producer_file(false)
    local p = H.spawn({ "serve", dir .. "/p", "--store", store })
    H.wait_until(function() return unfinished_runs(store) == 0 and consumer_state(store).lag == 0 end,
      what .. ": every run to finish and the consumer to catch up", 60000, 50)
    p:kill("sigterm")
    assert.are.equal(0, (p:wait()))
    local n = assert_delivered(store, "k:*", out, what)
    assert.is_true(n > 100, what .. ": only " .. n .. " events were emitted")
  end)
end)
