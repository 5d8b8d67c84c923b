-- hosts_takeover_spec.lua: a run taken over from a host that stalled past
-- its lease (issue 15), with real serve processes on a real PostgreSQL 15:
-- host a executes a run and is SIGSTOPped until host b has taken the run
-- over; then a cancel (through b, or through a once it wakes) is stored
-- and stays whatever either host writes afterwards, the stale host a
-- writes no step and no status once it wakes (the fence), and no step
-- completed by one host runs again on the other.
local H = require "helper"
local P = require "pg_helper"
local HH = require "http_helper"

local PIPES = [[
pipeline("long", function()
  local id = ctx().run_id
  for i = 1, 200 do
    step("s" .. string.format("%03d", i), function() mark(id .. " s" .. string.format("%03d", i)) return i end)
    sleep("100ms")
  end
  return "long done"
end)
]]

describe("a run taken over from a stalled serve host", function()
  local f
  before_each(function() f = P.fixture(PIPES) end)
  after_each(function() if f then f:close() end end)

  local function one(sql, ...) return assert(f.c:query(sql, ...))[1] end

  -- the executions of run id's steps: {step = {pid, ...}} and the list in order
  local function ran(id)
    local by_step, list = {}, {}
    for _, e in ipairs(P.executions(f.log)) do
      if e.run == id then
        by_step[e.step] = by_step[e.step] or {}
        table.insert(by_step[e.step], e.pid)
        list[#list + 1] = e
      end
    end
    return by_step, list
  end

  -- what the store holds of run id: its record and its steps, as text
  local function stored(id)
    local rows = assert(f.c:query("SELECT step_id, status, attempts, position, started_at_us, duration_us, "
      .. "payload::text AS payload FROM sluice.steps WHERE run_id = $1 ORDER BY step_id", id))
    local steps = {}
    for _, r in ipairs(rows) do
      steps[#steps + 1] = table.concat({ r.step_id, r.status, r.attempts, r.position, r.started_at_us,
        r.duration_us, tostring(r.payload) }, " ")
    end
    return one("SELECT record::text AS r FROM sluice.runs WHERE id = $1", id).r, table.concat(steps, "\n")
  end

  -- a (lease 2 s) executes a run and stalls; b (lease 30 s: it does not
  -- lapse under load) takes the run over once a's lease expired and
  -- executes a step of it. Returns a, b and the run id.
  local function takeover()
    local a = f.hosts:serve(1, "2s")
    local b = f.hosts:serve(2, "30s")
    local status, _, _, doc = HH.post(a.url .. "/runs/long", {})
    assert.are.equal(202, status)
    local id = doc.run_id
    H.wait_until(function()
      local by_step = ran(id)
      return by_step.s003 ~= nil
    end, "run " .. id .. " to execute its third step on a", 30000, 20)
    a:kill("sigstop")
    H.wait_until(function()
      local l = f.c:query("SELECT host_id FROM sluice.leases WHERE kind = 'run' AND name = $1", id)[1]
      if not (l and l.host_id == b.host_id) then return false end
      for _, e in ipairs(select(2, ran(id))) do if e.pid == b.pid then return true end end
    end, function() return "host b to take run " .. id .. " over: " .. b:log() end, 60000, 50)
    return a, b, id
  end

  -- a step completed (its record committed) is executed by one host only;
  -- the one a was cut off in may run on both (at-least-once at the step
  -- boundary), and nothing of it runs on a once a is stale
  local function no_step_twice(id, a, b, a_before)
    local by_step, list = ran(id)
    local both = {}
    for st, pids in pairs(by_step) do
      local on = {}
      for _, pid in ipairs(pids) do
        assert.is_nil(on[pid], ("step %s ran twice on pid %d"):format(st, pid))
        on[pid] = true
      end
      if on[a.pid] and on[b.pid] then both[#both + 1] = st end
    end
    assert.is_true(#both <= 1, "steps run on both hosts: " .. table.concat(both, " "))
    local on_a = 0
    for _, e in ipairs(list) do if e.pid == a.pid then on_a = on_a + 1 end end
    assert.are.equal(a_before, on_a, "the stale host executed steps after it woke")
  end

  local function executed_on(id, pid)
    local n = 0
    for _, e in ipairs(select(2, ran(id))) do if e.pid == pid then n = n + 1 end end
    return n
  end

  it("keeps a cancel through the new holder, and the stale holder writes nothing once it wakes", function()
    local a, b, id = takeover()
    local a_before = executed_on(id, a.pid)
    local status, body = HH.post(b.url .. "/runs/" .. id .. "/cancel", {})
    assert.are.equal(202, status, body)
    H.wait_until(function()
      return one("SELECT status FROM sluice.runs WHERE id = $1", id).status == "cancelled"
        and one("SELECT count(*)::int AS n FROM sluice.leases WHERE name = $1", id).n == 0
    end, function() return "host b to end run " .. id .. " cancelled: " .. b:log() end, 30000, 50)
    local rec, steps = stored(id)
    a:kill("sigcont")
    -- a finds its registration expired and exits (status 2)
    H.wait_until(function() return a.exited end, function() return "host a to exit: " .. a:log() end, 60000, 50)
    assert.are.equal(2, a.code, a:log())
    local rec2, steps2 = stored(id)
    assert.are.equal(steps, steps2, "the stale host wrote steps")
    assert.are.equal(rec, rec2, "the stale host wrote the run")
    no_step_twice(id, a, b, a_before)
    assert.is_false(b.exited, b:log())
  end)

  it("stores a cancel through the stale holder once it wakes, or refuses it; it stays either way", function()
    local a, b, id = takeover()
    local a_before = executed_on(id, a.pid)
    a:kill("sigcont")
    local status, body = HH.post(a.url .. "/runs/" .. id .. "/cancel", {}, { timeout = 60 })
    if status == 202 then
      -- acknowledged: it is stored, and b (executing the run) stops it
      assert.are.equal("cancelled", one("SELECT status FROM sluice.runs WHERE id = $1", id).status)
    else
      -- refused (a lost its lease): nothing was cancelled; through b it is
      assert.is_true(status >= 500 or status == 409, ("HTTP %s: %s"):format(status, body))
      assert.are_not.equal("cancelled", one("SELECT status FROM sluice.runs WHERE id = $1", id).status)
      status, body = HH.post(b.url .. "/runs/" .. id .. "/cancel", {})
      assert.are.equal(202, status, body)
    end
    H.wait_until(function()
      return one("SELECT status FROM sluice.runs WHERE id = $1", id).status == "cancelled"
        and one("SELECT count(*)::int AS n FROM sluice.leases WHERE name = $1", id).n == 0
    end, function() return "run " .. id .. " to end cancelled on b: " .. b:log() end, 30000, 50)
    H.wait_until(function() return a.exited end, function() return "host a to exit: " .. a:log() end, 60000, 50)
    assert.are.equal(2, a.code, a:log())
    assert.are.equal("cancelled", one("SELECT status FROM sluice.runs WHERE id = $1", id).status)
    no_step_twice(id, a, b, a_before)
  end)
end)
