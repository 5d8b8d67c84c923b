-- hosts_share_spec.lua: a backlog of runs that no host holds is shared by
-- the `sluice serve` hosts of one PostgreSQL store, not taken by the first
-- that polls (issue 15): runs created without an owner, and a SIGKILLed
-- host's runs once its lease expired. Real serve processes on a real
-- PostgreSQL 15; each run waits for the send "go" after its first step, so
-- that every run is held somewhere before any ends, and who executed what
-- is counted from the steps' side effects: each appends "<pid> <run id>
-- <step>" to a file opened with O_APPEND.
local H = require "helper"
local P = require "pg_helper"
local HH = require "http_helper"

local N = 48 -- under a claim pass's 64: one host could take them all in one pass

local PIPES = [[
pipeline("held", function()
  local id = ctx().run_id
  step("s1", function() mark(id .. " s1") end)
  wait_for("go")
  step("s2", function() mark(id .. " s2") end)
  return "done"
end)
pipeline("go", function() send("go", {}) return true end)
]]

describe("serve hosts sharing a backlog on one PostgreSQL store", function()
  local url, c, dir, log
  local hosts -- pg_helper's set of serve hosts

  local f -- P.fixture: the database, its connection, the pipes file, the hosts
  before_each(function()
    f = P.fixture(PIPES)
    url, c, dir, log, hosts = f.url, f.c, f.dir, f.log, f.hosts
  end)
  after_each(function() if f then f:close() end end)

  local function count(sql, ...)
    return assert(c:query("SELECT count(*)::int AS n FROM " .. sql, ...))[1].n
  end

  -- executions of step st: run id -> list of pids, and pid -> count
  local function executed(st)
    local by_run, by_pid = {}, {}
    for _, e in ipairs(P.executions(log)) do
      if e.step == st then
        by_run[e.run] = by_run[e.run] or {}
        table.insert(by_run[e.run], e.pid)
        by_pid[e.pid] = (by_pid[e.pid] or 0) + 1
      end
    end
    return by_run, by_pid
  end

  local function waiting()
    return count("sluice.runs WHERE pipeline = 'held' AND status = 'waiting'")
  end

  -- each of list executed at least `least` of the N runs' step st
  local function shared(list, st, least)
    local _, by_pid = executed(st)
    local t = {}
    for _, h in ipairs(list) do t[#t + 1] = ("%s: %d"):format(h.host_id, by_pid[h.pid] or 0) end
    local said = table.concat(t, ", ")
    for _, h in ipairs(list) do
      assert.is_true((by_pid[h.pid] or 0) >= least, ("%s of %d runs' %s, each host >= %d wanted"):format(
        said, N, st, least))
    end
  end

  -- sends "go", waits until the N runs completed, and checks that each
  -- executed each step once
  local function release_and_check()
    local code, _, err = H.sluice({ "run", dir .. "/pipes/p.lua", "--pipeline", "go", "--store", url,
      "--state-dir", dir .. "/go" }, { timeout = 60000 })
    assert.are.equal(0, code, err)
    local function done() return count("sluice.runs WHERE pipeline = 'held' AND status = 'completed'") end
    H.wait_until(function() return done() == N end, function() return done() .. " of " .. N .. " runs completed" end,
      60000, 100)
    for _, st in ipairs({ "s1", "s2" }) do
      local by_run = executed(st)
      local n = 0
      for run, pids in pairs(by_run) do
        n = n + 1
        assert.are.equal(1, #pids, run .. " executed " .. st .. " " .. #pids .. " times")
      end
      assert.are.equal(N, n, N .. " runs' " .. st)
    end
  end

  it("shares runs created without an owner between three hosts", function()
    local list = { hosts:serve(1, "5s"), hosts:serve(2, "5s"), hosts:serve(3, "5s") }
    -- the backlog appears at once, no host holding any of it
    assert(c:exec([[INSERT INTO sluice.runs (id, pipeline, status, active, created_at_us, record)
      SELECT 'b' || lpad(i::text, 3, '0'), 'held', 'pending', true, i,
        json_build_object('id', 'b' || lpad(i::text, 3, '0'), 'pipeline', 'held', 'status', 'pending',
          'attempt', 0, 'created_us', i, 'input', json_build_object())
      FROM generate_series(1, $1::int) i]], N))
    H.wait_until(function() return waiting() == N end, function() return waiting() .. " of " .. N .. " runs waiting" end,
      60000, 100)
    -- a third each, give or take: at least a sixth each
    shared(list, "s1", N // 6)
    assert.are.equal(N, count("sluice.leases l JOIN sluice.runs r ON r.id = l.name WHERE l.kind = 'run'"))
    release_and_check()
  end)

  it("shares a SIGKILLed host's runs between the two others once its lease expired", function()
    local a, b, d = hosts:serve(1, "2s"), hosts:serve(2, "2s"), hosts:serve(3, "2s")
    -- N runs created over a's API: a holds and executes them
    for _ = 1, N do
      local status, body = HH.post(a.url .. "/runs/held", {})
      assert.are.equal(202, status, body)
    end
    H.wait_until(function() return waiting() == N end, function() return waiting() .. " of " .. N .. " runs waiting" end,
      60000, 100)
    assert.are.equal(N, count("sluice.leases WHERE kind = 'run' AND host_id = $1", a.host_id))
    a:kill("sigkill")
    a:wait(20000)
    H.wait_until(function()
      return count("sluice.leases WHERE kind = 'run' AND host_id IN ($1, $2)", b.host_id, d.host_id) == N
    end, "b and d to take a's runs", 60000, 100)
    release_and_check()
    -- half each, give or take: at least a quarter each
    shared({ b, d }, "s2", N // 4)
    local _, s1 = executed("s1")
    assert.are.equal(N, s1[a.pid])
  end)
end)
