-- serve_spec.lua: `sluice serve` as an operator runs it: schedules fire on
-- time, a SIGKILL and restart never run a fire twice, catch-up follows the
-- policy, one serve per store, SIGTERM lets running steps finish and the
-- next start resumes what was cut off.
local H = require "helper"
local json = require "sluice.json"

local function runs_of(store, sched)
  local code, out, err = H.sluice({ "runs", "--json", "--limit", "100000", "--store", store })
  if code == 2 and err:find("no store at") then return {} end -- serve has not created it yet
  assert.are.equal(0, code, err)
  local list = {}
  for _, r in ipairs(json.decode(out).runs) do
    if not sched or r.id:find(sched .. "@", 1, true) == 1 then list[#list + 1] = r end
  end
  return list
end

local function log_has(p, pattern)
  return table.concat(p.err):find(pattern) ~= nil
end

describe("sluice serve", function()
  local dir, store, marks
  before_each(function()
    dir = H.tmpdir()
    store = dir .. "/store"
    marks = dir .. "/marks"
    os.execute("mkdir -p '" .. dir .. "/p'")
  end)

  local function write_pipelines(catch_up)
    H.write(dir .. "/p/tick.lua", ([[
local tick = pipeline("tick", function()
  return step("mark", function()
    local f = io.open(%q, "a"); f:write(ctx().run_id, "\n"); f:close()
    return true
  end)
end)
every(1).seconds(tick, nil, { catch_up = %q, name = "tick" })
]]):format(marks, catch_up))
  end

  it("fires every second and never runs a fire twice across SIGKILL and restart", function()
    write_pipelines("latest")
    local p = H.spawn({ "serve", dir .. "/p", "--store", store })
    H.wait_until(function() return #H.lines(marks) >= 3 end, "3 fires", 15000, 20)
    p:kill("sigkill")
    p:wait()
    local p2 = H.spawn({ "serve", dir .. "/p", "--store", store })
    local before = #H.lines(marks)
    H.wait_until(function() return #H.lines(marks) >= before + 2 end, "2 more fires", 15000, 20)
    p2:kill("sigterm")
    assert.are.equal(0, (p2:wait()))
    local seen, dups = {}, 0
    for _, id in ipairs(H.lines(marks)) do
      assert.matches("^tick@%d%d%d%d%-%d%d%-%d%dT%d%d:%d%d:%d%dZ$", id)
      if seen[id] then dups = dups + 1 end
      seen[id] = true
    end
    -- at most the one step in flight at the kill ran again
    assert.is_true(dups <= 1, dups .. " fires ran twice")
    for _, r in ipairs(runs_of(store, "tick")) do assert.are.equal("completed", r.status) end
  end)

  for _, case in ipairs({ { "latest", 1, 1 }, { "all", 3, 99 }, { "none", 0, 0 } }) do
    local policy, at_least, at_most = case[1], case[2], case[3]
    it("catches up missed fires with catch_up = " .. policy, function()
      local clock = require "sluice._clock"
      write_pipelines(policy)
      local p = H.spawn({ "serve", dir .. "/p", "--store", store })
      H.wait_until(function() return #runs_of(store, "tick") >= 1 end, "a first fire", 15000, 20)
      p:kill("sigterm")
      p:wait()
      local _, out = H.sluice({ "schedules", "--json", "--store", store })
      local next_at = clock.parse_time(json.decode(out).schedules[1].next_at)
      -- stay down for 3 whole seconds past the stored next fire
      H.wait_until(function() return os.time() >= next_at + 3 end, "3 missed fires", 10000, 50)
      local before = {}
      for _, r in ipairs(runs_of(store, "tick")) do before[r.id] = true end
      local t_spawn = os.time()
      local p2 = H.spawn({ "serve", dir .. "/p", "--store", store })
      -- the scheduler logs the catch-up (or none, for catch_up = none)
      -- before it logs the schedules armed: wait for that line, not "serving"
      H.wait_until(function() return log_has(p2, "schedules armed") end, "the schedules to be armed", 15000, 10)
      local t_armed = os.time()
      local n = tonumber(table.concat(p2.err):match("catching up (%d+) missed")) or 0
      -- the runs started since the restart, by scheduled time
      local function new_runs()
        local list = {}
        for _, r in ipairs(runs_of(store, "tick")) do
          if not before[r.id] then
            list[#list + 1] = { at = clock.parse_time(r.id:match("@(.*)$")), status = r.status }
          end
        end
        table.sort(list, function(a, b) return a.at < b.at end)
        return list
      end
      -- the catch-up runs, then one live fire, all completed
      H.wait_until(function()
        local list = new_runs()
        if #list < n + 1 then return false end
        for _, r in ipairs(list) do if r.status ~= "completed" then return false end end
        return true
      end, "the catch-up runs and a live fire to complete", 20000, 20)
      p2:kill("sigterm")
      assert.are.equal(0, (p2:wait()))
      assert.is_true(n >= at_least and n <= at_most,
        ("%s: %d missed fires run (expected %d to %d)"):format(policy, n, at_least, at_most))
      local list = new_runs()
      if policy == "all" then
        -- every missed fire ran, with its scheduled time as id
        for i = 0, 3 do assert.are.equal(next_at + i, list[i + 1].at) end
      elseif policy == "latest" then
        -- the first run after the restart is the latest missed fire: at
        -- or after the 3 s down, at or before the scheduler started
        assert.is_true(list[1].at >= t_spawn and list[1].at <= t_armed,
          ("the catch-up fire is at %s, not within %s..%s"):format(clock.utc(list[1].at), clock.utc(t_spawn), clock.utc(t_armed)))
      else
        -- no missed fire ran: the first run is a live fire
        assert.is_true(list[1].at >= t_spawn, "a missed fire ran with catch_up = none")
      end
    end)
  end

  it("skips a fire while the previous run of the schedule still runs (overlap = skip)", function()
    local gate = dir .. "/gate"
    H.write(dir .. "/p/slow.lua", ([[
local uv = require "luv"
every(1).seconds(function()
  step("slow", function()
    local f = io.open(%q, "a"); f:write(ctx().run_id, "\n"); f:close()
    -- runs until the test opens the gate (after serve stops firing)
    local co = coroutine.running()
    local t = uv.new_timer()
    t:start(10, 10, function()
      local g = io.open(%q)
      if g then g:close(); t:close(); coroutine.resume(co) end
    end)
    coroutine.yield()
  end)
end)
]]):format(marks, gate))
    local p = H.spawn({ "serve", dir .. "/p", "--store", store })
    H.wait_until(function() return log_has(p, "skipped the fire of") end, "a skipped fire", 15000, 20)
    p:kill("sigterm")
    H.wait_until(function() return log_has(p, "no new steps start") end, "serve to stop firing", 10000, 10)
    H.write(gate, "open")
    assert.are.equal(0, (p:wait()))
    assert.is_true(log_has(p, "slow@every 1s: skipped the fire of .*previous run is still running %(overlap = skip%)"))
    assert.are.equal(1, #H.lines(marks))
  end)

  it("loads every example in pipelines/ and serves them", function()
    local p = H.spawn({ "serve", H.root .. "/pipelines", "--store", store })
    H.wait_until(function() return log_has(p, "armed") end, "serve to start", 10000, 10)
    p:kill("sigterm")
    assert.are.equal(0, (p:wait()))
    local n = tonumber(table.concat(p.err):match("(%d+) of %d+ files loaded"))
    local total = tonumber(table.concat(p.err):match("%d+ of (%d+) files loaded"))
    assert.are.equal(total, n, table.concat(p.err))
    assert.is_true(total >= 3)
  end)

  it("takes runs handed over by sluice run while it owns the store", function()
    write_pipelines("none")
    local p = H.spawn({ "serve", dir .. "/p", "--store", store })
    H.wait_until(function() return log_has(p, "armed") end, "serve to start", 10000, 10)
    local code, out, err = H.sluice({ "run", dir .. "/p/tick.lua", "--id", "handed", "--store", store })
    assert.are.equal(0, code, err)
    assert.are.equal("true\n", out)
    assert.matches("handed to it", err)
    H.write(dir .. "/other.lua", "pipeline('not_served', function() return 1 end)")
    code, out, err = H.sluice({ "run", dir .. "/other.lua", "--store", store })
    assert.are.equal(2, code)
    assert.matches("pipeline 'not_served' is not loaded by this serve", err)
    p:kill("sigterm")
    assert.are.equal(0, (p:wait()))
  end)

  it("refuses a second serve on the same store while read-only commands work", function()
    write_pipelines("latest")
    local p = H.spawn({ "serve", dir .. "/p", "--store", store })
    H.wait_until(function() return log_has(p, "serving") end, "serve to start", 10000, 10)
    local code, _, err = H.sluice({ "serve", dir .. "/p", "--store", store })
    assert.are.equal(2, code)
    assert.matches("held by another sluice process %(sluice serve, pid " .. p.pid .. "%)", err)
    code = H.sluice({ "schedules", "--store", store })
    assert.are.equal(0, code)
    p:kill("sigterm")
    assert.are.equal(0, (p:wait()))
  end)

  it("on SIGTERM lets the running step finish, starts no other, and resumes the run at the next start", function()
    local gate = dir .. "/gate"
    H.write(dir .. "/p/long.lua", ([[
local uv = require "luv"
local function wait_ms(ms)
  local co = coroutine.running()
  local t = uv.new_timer()
  t:start(ms, 0, function() t:close(); coroutine.resume(co) end)
  coroutine.yield()
end
pipeline("long", function()
  step("one", function()
    local f = io.open(%q, "a"); f:write("one\n"); f:close()
    -- holds until the test opens the gate
    while not io.open(%q) do wait_ms(10) end
    return 1
  end)
  step("two", function()
    local f = io.open(%q, "a"); f:write("two\n"); f:close()
    return 2
  end)
  return "done"
end)
]]):format(marks, gate, marks))
    -- start the run with `sluice run`, kill it inside step one, let serve resume it
    local r = H.spawn({ "run", dir .. "/p/long.lua", "--id", "L1", "--store", store })
    H.wait_until(function() return #H.lines(marks) >= 1 end, "step one to start", 10000, 5)
    r:kill("sigkill")
    r:wait()
    local p = H.spawn({ "serve", dir .. "/p", "--store", store })
    H.wait_until(function() return #H.lines(marks) >= 2 end, "serve to resume step one", 10000, 5)
    p:kill("sigterm")
    H.wait_until(function() return log_has(p, "no new steps start") end, "serve to take the SIGTERM", 10000, 10)
    H.write(gate, "open")
    assert.are.equal(0, (p:wait()))
    assert.is_true(log_has(p, "every running step finished"))
    assert.are.same({ "one", "one" }, H.lines(marks))
    local code, out = H.sluice({ "status", "L1", "--json", "--store", store })
    local doc = json.decode(out)
    assert.are.equal("running", doc.status)
    assert.are.equal("one", doc.steps[1].id)
    -- the next start finishes it without running step one again
    local p2 = H.spawn({ "serve", dir .. "/p", "--store", store })
    H.wait_until(function() return log_has(p2, "run L1 pipeline=long completed") end, "L1 to complete", 10000, 10)
    p2:kill("sigterm")
    p2:wait()
    assert.are.same({ "one", "one", "two" }, H.lines(marks))
  end)
end)
