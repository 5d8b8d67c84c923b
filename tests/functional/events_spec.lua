-- events_spec.lua: send/on, consumers and durable sleep across real
-- processes and SIGKILL.
local H = require "helper"
local json = require "sluice.json"

describe("events across processes", function()
  local dir, store, marks
  before_each(function()
    dir = H.tmpdir()
    store = dir .. "/store"
    marks = dir .. "/marks"
    os.execute("mkdir -p '" .. dir .. "/p'")
  end)

  local function log_has(p, pattern) return table.concat(p.err):find(pattern) ~= nil end

  it("a run that emits, sends and sleeps, killed while sleeping, sleeps only the remainder and emits once", function()
    local f = H.write(dir .. "/p/side.lua", ([[
pipeline("side", function()
  emit("made", "side:1", { n = 1 })
  send("side.sent", { n = 1 })
  step("before", function() local f = io.open(%q, "a"); f:write("before\n"); f:close() end)
  sleep("6s")
  return "woke"
end)]]):format(marks))
    local clock = require "sluice._clock"
    local p = H.spawn({ "run", f, "--id", "S1", "--store", store })
    local sleep_started -- wall clock, ms: the sleep's step record
    H.wait_until(function()
      local code, out = H.sluice({ "status", "S1", "--json", "--store", store })
      local doc = code == 0 and json.decode(out)
      if not doc or doc.status ~= "sleeping" then return false end
      for _, st in ipairs(doc.steps) do
        if st.id:find("^sleep@") then
          sleep_started = clock.parse_time(st.started_at) * 1000 + tonumber(st.started_at:match("%.(%d%d%d)") or "0")
        end
      end
      return sleep_started ~= nil
    end, "the run to sleep", 10000, 20)
    -- kill it with about 1 s of the 6 s left
    H.wait_until(function() return clock.now() / 1000 >= sleep_started + 5000 end, "5 s of the sleep", 10000, 20)
    p:kill("sigkill")
    p:wait()
    local t0 = require("luv").hrtime()
    local code, out, err = H.sluice({ "run", f, "--id", "S1", "--store", store })
    local ms = (require("luv").hrtime() - t0) / 1e6
    assert.are.equal(0, code, err)
    assert.are.equal('"woke"\n', out)
    -- it slept until the stored wake time, not less (the clock has ms
    -- steps), and not the whole 6 s again
    assert.is_true(clock.now() / 1000 >= sleep_started + 6000 - 2, "woke before the stored wake time")
    assert.is_true(ms < 4500, ("slept %.0f ms after the restart, more than the remainder"):format(ms))
    assert.are.same({ "before" }, H.lines(marks))
    local _, events = H.sluice({ "events", "side:1", "--json", "--store", store })
    assert.are.equal(1, #json.decode(events).events, "the event was emitted more than once")
  end)

  it("sluice events of a key that holds nothing names the keys under it, on stderr", function()
    local f = H.write(dir .. "/orders.lua", [[
pipeline("orders", function()
  for i = 1, 3 do emit("created", "orders:" .. i, { n = i }) end
end)]])
    local code, _, err = H.sluice({ "run", f, "--store", store })
    assert.are.equal(0, code, err)
    local out
    code, out, err = H.sluice({ "events", "orders", "--store", store })
    assert.are.equal(0, code, err)
    assert.are.equal("", out)
    assert.are.equal("sluice: no events under key 'orders'; 3 keys match 'orders:*'\n", err)
    code, out, err = H.sluice({ "events", "orders:*", "--store", store })
    assert.are.equal(0, code, err)
    assert.are.equal("", err)
    local _, lines = out:gsub("\n", "")
    assert.are.equal(3, lines)
  end)

  it("serve runs each on() handler once per event, across a SIGKILL", function()
    H.write(dir .. "/p/handlers.lua", ([[
on("order.*", function(data, ev)
  step("record", function()
    local f = io.open(%q, "a"); f:write(ev.name, " ", data.n, "\n"); f:close()
  end)
end)
]]):format(marks))
    local sender = H.write(dir .. "/send.lua", [[
pipeline("sender", function(input)
  for i = 1, input.n do send(i % 2 == 0 and "order.paid" or "order.created", { n = i }) end
  send("unrelated", {})
  return input.n
end)]])
    -- events sent while no serve runs are delivered when it starts
    local code, _, err = H.sluice({ "run", sender, "--input", '{"n": 20}', "--store", store })
    assert.are.equal(0, code, err)
    local p = H.spawn({ "serve", dir .. "/p", "--store", store })
    H.wait_until(function() return #H.lines(marks) >= 5 end, "some deliveries", 10000, 5)
    p:kill("sigkill")
    p:wait()
    -- handler runs not completed at the kill may run their step again
    -- (at-least-once at the step boundary); completed ones never do
    local _, listing = H.sluice({ "runs", "--json", "--limit", "1000", "--store", store })
    local in_flight = 0
    for _, r in ipairs(json.decode(listing).runs) do
      if r.pipeline == "on:order.*" and r.status ~= "completed" then in_flight = in_flight + 1 end
    end
    local function handler_runs()
      local _, list = H.sluice({ "runs", "--json", "--limit", "1000", "--store", store })
      local n, done = 0, 0
      for _, r in ipairs(json.decode(list).runs) do
        if r.pipeline == "on:order.*" then
          n = n + 1
          if r.status == "completed" then done = done + 1 end
        end
      end
      return n, done
    end
    local p2 = H.spawn({ "serve", dir .. "/p", "--store", store })
    H.wait_until(function() return select(2, handler_runs()) == 20 end, "all 20 handler runs to complete", 10000, 20)
    p2:kill("sigterm")
    assert.are.equal(0, (p2:wait()))
    local seen, dups = {}, 0
    for _, l in ipairs(H.lines(marks)) do
      if seen[l] then dups = dups + 1 end
      seen[l] = true
    end
    for i = 1, 20 do
      assert.is_true(seen[(i % 2 == 0 and "order.paid " or "order.created ") .. i], "event " .. i)
    end
    assert.is_true(dups <= in_flight, ("%d handler steps ran twice, %d runs were in flight"):format(dups, in_flight))
    -- one run per event and handler
    assert.are.equal(20, (handler_runs()))
  end)

  it("a consumer killed mid-stream skips nothing and redelivers at most its batch in flight", function()
    H.write(dir .. "/p/consumer.lua", ([[
consume("audit", "acct:*", function(events)
  step("write", function()
    local f = io.open(%q, "a")
    for _, e in ipairs(events) do f:write(e.data.i, "\n") end
    f:close()
  end)
  step("slow", function()
    local uv = require "luv"
    local co = coroutine.running()
    local t = uv.new_timer()
    t:start(20, 0, function() t:close(); coroutine.resume(co) end)
    coroutine.yield()
  end)
end, { batch = 50 })
]]):format(marks))
    local producer = H.write(dir .. "/produce.lua", [[
pipeline("produce", function(input)
  local list = {}
  for i = 1, input.n do list[i] = { "entry", "acct:" .. (i % 7), { i = i } } end
  emit_many(list)
  return #list
end)]])
    local code, _, err = H.sluice({ "run", producer, "--input", '{"n": 1000}', "--store", store })
    assert.are.equal(0, code, err)
    local p = H.spawn({ "serve", dir .. "/p", "--store", store })
    H.wait_until(function() return #H.lines(marks) >= 300 end, "300 events consumed", 20000, 5)
    p:kill("sigkill")
    p:wait()
    local p2 = H.spawn({ "serve", dir .. "/p", "--store", store })
    local function consumer()
      local _, out = H.sluice({ "consumers", "--json", "--store", store })
      return json.decode(out).consumers[1]
    end
    H.wait_until(function() return consumer().lag == 0 end, "the consumer to catch up", 30000, 50)
    p2:kill("sigterm")
    assert.are.equal(0, (p2:wait()))
    local count = {}
    local dups = 0
    for _, l in ipairs(H.lines(marks)) do
      local i = tonumber(l)
      if count[i] then dups = dups + 1 end
      count[i] = true
    end
    for i = 1, 1000 do assert.is_true(count[i], "event " .. i .. " was skipped") end
    assert.is_true(dups <= 50, dups .. " events delivered twice, more than one batch")
    local c = consumer()
    assert.are.equal("audit", c.name)
    assert.are.equal("acct:*", c.pattern)
  end)
end)
