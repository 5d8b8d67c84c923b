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
-- step b holds (not durably: a kill lands in it) until the file LOG .. ".gate" exists
pipeline("held", function()
  local id = ctx().run_id
  step("a", function() mark(id .. " a") return 1 end)
  step("b", function()
    mark(id .. " b")
    local uv = require "luv"
    while not io.open(LOG .. ".gate") do
      local co, t = coroutine.running(), uv.new_timer()
      t:start(20, 0, function() t:close(); coroutine.resume(co) end)
      coroutine.yield()
    end
    return 2
  end)
  step("c", function() mark(id .. " c") return 3 end)
  return "held done"
end)
-- times out while the record of its sleep is being written (the test holds
-- that row): the gate is LOG .. ".late"
pipeline("late", function()
  step("a", function() mark(ctx().run_id .. " a") return 1 end)
  local uv = require "luv"
  while not io.open(LOG .. ".late") do
    local co, t = coroutine.running(), uv.new_timer()
    t:start(20, 0, function() t:close(); coroutine.resume(co) end)
    coroutine.yield()
  end
  sleep("30s")
  return "late done"
end, { timeout = "3s" })
-- between its steps (no store access there) it waits for LOG .. ".gate"
pipeline("gated", function()
  local id = ctx().run_id
  step("p1", function() mark(id .. " p1") return 1 end)
  local uv = require "luv"
  while not io.open(LOG .. ".gate") do
    local co, t = coroutine.running(), uv.new_timer()
    t:start(20, 0, function() t:close(); coroutine.resume(co) end)
    coroutine.yield()
  end
  step("p2", function() mark(id .. " p2") return 2 end)
  return "gated done"
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
    assert.are.equal(202, status, body .. b:log())
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
    assert.is_falsy(b.exited, b:log())
  end)

  it("stores a cancel through the stale holder once it wakes, or refuses it; it stays either way", function()
    local a, b, id = takeover()
    local a_before = executed_on(id, a.pid)
    -- the request waits in a's socket while a is stopped: a reads it when
    -- it wakes, before it has heard back from PostgreSQL
    local curl = H.spawn({ "-sv", "-X", "POST", "-H", "Content-Type: application/json", "-d", "{}",
      "-w", "\n%{http_code}", "--max-time", "60", a.url .. "/runs/" .. id .. "/cancel" }, { bin = "curl" })
    H.wait_until(function() return table.concat(curl.err):find("> POST", 1, true) end,
      function() return "curl to send its request: " .. table.concat(curl.err) end, 30000, 20)
    a:kill("sigcont")
    local exit = curl:wait(70000)
    local body, code = table.concat(curl.out):match("^(.*)\n(%d+)$")
    local status = exit == 0 and tonumber(code) or nil
    if status == 202 then
      -- acknowledged: it is stored, and b (executing the run) stops it
      assert.are.equal("cancelled", one("SELECT status FROM sluice.runs WHERE id = $1", id).status)
    else
      -- refused (a lost its lease), or a exited without answering (curl:
      -- 52 empty reply, 56 reset): nothing was cancelled; through b it is
      assert.is_true(exit == 52 or exit == 56 or (status and status >= 500),
        ("curl exit %s, HTTP %s: %s"):format(exit, tostring(status), tostring(body)))
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

  it("keeps a cancel its executing host acknowledged mid-step when that host dies before the step ends", function()
    local a = f.hosts:serve(1, "2s")
    local b = f.hosts:serve(2, "30s")
    local status, _, _, doc = HH.post(a.url .. "/runs/held", {})
    assert.are.equal(202, status)
    local id = doc.run_id
    H.wait_until(function() return ran(id).b ~= nil end, "run " .. id .. " to enter step b on a", 30000, 20)
    -- the run's row locked by another transaction: a write of it waits
    local c2 = assert(require("sluice._pg").connect(f.url))
    assert(c2:exec("BEGIN"))
    assert(c2:query("SELECT 1 FROM sluice.runs WHERE id = $1 FOR UPDATE", id))
    local curl = H.spawn({ "-s", "-X", "POST", "-H", "Content-Type: application/json", "-d", "{}",
      "-w", "\n%{http_code}", "--max-time", "60", a.url .. "/runs/" .. id .. "/cancel" }, { bin = "curl" })
    local function waiting()
      return one("SELECT count(*)::int AS n FROM pg_stat_activity WHERE datname = current_database() "
        .. "AND wait_event_type = 'Lock'").n > 0
    end
    H.wait_until(function() return curl.exited or waiting() end, "the cancel to be answered or to wait", 30000, 20)
    -- an answer is given once the cancel is stored: not while its write waits
    local answered = curl.exited
    assert(c2:exec("ROLLBACK"))
    c2:close()
    assert.are.equal(0, curl:wait(70000))
    local body, code = table.concat(curl.out):match("^(.*)\n(%d+)$")
    assert.are.equal("202", code, body)
    assert.is_falsy(answered, "answered 202 before the cancel was stored")
    -- acknowledged: stored, though step b still runs on a
    assert.are.equal("cancelled", one("SELECT status FROM sluice.runs WHERE id = $1", id).status)
    a:kill("sigkill")
    a:wait(20000)
    H.write(f.log .. ".gate", "")
    -- b frees a's leases once a's lease expired (its claim pass, which
    -- claims in the same transaction the active runs that frees)
    H.wait_until(function()
      return one("SELECT count(*)::int AS n FROM sluice.leases WHERE host_id = $1", a.host_id).n == 0
    end, function() return "host b to free host a's leases: " .. b:log() end, 60000, 50)
    assert.are.equal(0, one("SELECT count(*)::int AS n FROM sluice.leases WHERE name = $1", id).n)
    assert.are.equal("cancelled", one("SELECT status FROM sluice.runs WHERE id = $1", id).status)
    assert.is_nil(ran(id).c, "the cancelled run went on")
    assert.is_nil(b:log():find("run " .. id, 1, true), b:log())
  end)

  it("starts no step on a host that wakes after its lease lapsed, though nothing it did since touched the store", function()
    local a = f.hosts:serve(1, "2s")
    local b = f.hosts:serve(2, "30s")
    local status, _, _, doc = HH.post(a.url .. "/runs/gated", {})
    assert.are.equal(202, status)
    local id = doc.run_id
    H.wait_until(function()
      return ran(id).p1 ~= nil and one("SELECT count(*)::int AS n FROM sluice.steps WHERE run_id = $1", id).n == 1
    end, "run " .. id .. " to complete step p1 on a", 30000, 20)
    a:kill("sigstop")
    -- b takes the run over (p1 replayed) and, once the gate opens, completes it
    H.wait_until(function()
      local l = f.c:query("SELECT host_id FROM sluice.leases WHERE kind = 'run' AND name = $1", id)[1]
      return l and l.host_id == b.host_id
    end, function() return "host b to take run " .. id .. " over: " .. b:log() end, 60000, 50)
    H.write(f.log .. ".gate", "")
    H.wait_until(function() return one("SELECT status FROM sluice.runs WHERE id = $1", id).status == "completed" end,
      function() return "host b to complete run " .. id .. ": " .. b:log() end, 30000, 50)
    local rec, steps = stored(id)
    -- a wakes in its wait for the gate, which is open: its next step is p2, which b completed
    a:kill("sigcont")
    H.wait_until(function() return a.exited end, function() return "host a to exit: " .. a:log() end, 60000, 50)
    assert.are.equal(2, a.code, a:log())
    assert.are.same({ b.pid }, ran(id).p2, "step p2 ran on the stale host too")
    assert.are.same({ a.pid }, ran(id).p1)
    local rec2, steps2 = stored(id)
    assert.are.equal(rec, rec2)
    assert.are.equal(steps, steps2)
  end)

  it("keeps a run's final record when the stop lands while the engine writes its sleep", function()
    local a = f.hosts:serve(1, "30s")
    local status, _, _, doc = HH.post(a.url .. "/runs/late", {})
    assert.are.equal(202, status)
    local id = doc.run_id
    H.wait_until(function() return ran(id).a ~= nil end, "run " .. id .. " to execute step a", 30000, 20)
    -- the row of the sleep's record, taken by another transaction: that write waits
    local c2 = assert(require("sluice._pg").connect(f.url))
    assert(c2:exec("BEGIN"))
    assert(c2:exec("INSERT INTO sluice.steps (run_id, step_id, status, attempts, position, branch, "
      .. "started_at_us, duration_us, payload) VALUES ($1, 'sleep@2', 1, 1, 2, '', 0, 0, '1')", id))
    H.write(f.log .. ".late", "")
    H.wait_until(function()
      return one("SELECT count(*)::int AS n FROM pg_stat_activity WHERE datname = current_database() "
        .. "AND wait_event_type = 'Lock'").n > 0
    end, "the sleep's record to wait", 30000, 20)
    -- the run's timeout passes meanwhile: it ends failed, its final record queued
    H.wait_until(function()
      local code, out = H.sluice({ "repl", "--store", f.url, "--state-dir", a.state, "-e",
        ("local e = require('sluice.engine').active[%q]; return e and e.run.record.status"):format(id) })
      return code == 0 and out == '"failed"\n'
    end, function() return "the run to time out: " .. a:log() end, 30000, 100)
    assert(c2:exec("ROLLBACK"))
    c2:close()
    local pat = "run " .. id .. " pipeline=late (%a+) in "
    H.wait_until(function() return a:log():match(pat) end, "the run to end", 30000, 20)
    assert.are.equal("failed", a:log():match(pat))
    -- what the sleep went on to write (its status) did not land over the end
    H.wait_until(function()
      return one("SELECT count(*)::int AS n FROM sluice.steps WHERE run_id = $1 AND step_id = 'sleep@2'", id).n == 1
    end, "the sleep's record", 30000, 20)
    local row = one("SELECT status, active FROM sluice.runs WHERE id = $1", id)
    assert.are.equal("failed", row.status)
    assert.is_false(row.active)
  end)
end)
