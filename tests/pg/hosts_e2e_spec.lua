-- hosts_e2e_spec.lua: three real `sluice serve` hosts on one PostgreSQL 15
-- database sharing 300 runs, their schedules, `on` handlers and a stream
-- consumer (issue 15). One host is SIGKILLed in the middle; in another
-- test PostgreSQL itself crash-restarts (pg_ctl restart -m immediate) under
-- the load. Either way every run completes, no step that completed runs
-- again, no schedule fires twice, and no acknowledged event is lost.
--
-- Executions are counted by their side effects: each step appends a line
-- "<pid> <run id> <step>" to a file opened with O_APPEND (one write per
-- line, so lines never interleave and the file's order is the order they
-- ran in).
local H = require "helper"
local P = require "pg_helper"
local HH = require "http_helper"
local pg = require "sluice._pg"
local json = require "sluice.json"

local RUNS = 300

-- The pipelines: "job" (4 steps with durable sleeps between; after the
-- second it waits for the event "go", so that the test strikes when every
-- run is in the middle; then a send and an emit), "go" (sends it), a
-- schedule every second, an on() handler and a consumer.
local PIPES = [[
-- a wait inside a step (not durable): a kill or a restart lands in it
local function pause_ms(ms)
  local co, t = coroutine.running(), require("luv").new_timer()
  t:start(ms, 0, function() t:close(); coroutine.resume(co) end)
  coroutine.yield()
end
pipeline("job", function(input)
  local id = ctx().run_id
  for i = 1, 4 do
    step("s" .. i, function()
      mark(id .. " s" .. i)
      if i > 2 then pause_ms(200) end
      return i
    end)
    sleep("300ms")
    if i == 2 then wait_for("go") end
  end
  send("ping", { n = input.n })
  emit("done", "jobs:" .. input.n, { n = input.n })
  return input.n * 2
end)
pipeline("go", function() send("go", {}) return true end)
pipeline("slow", function()
  local id = ctx().run_id
  for i = 1, 3 do
    step("s" .. i, function() mark(id .. " s" .. i) return i end)
    sleep("1s")
  end
  return "slow done"
end)
pipeline("tick", function()
  step("tick", function() mark(ctx().run_id .. " tick") end)
end)
every(1).seconds("tick", nil, { name = "tick" })
on("ping", function(data)
  step("pong", function() mark("pong:" .. data.n .. " pong") end)
end)
consume("c", "*", function(events)
  for _, e in ipairs(events) do mark("event:" .. e.id .. " consumed") end
end)
]]

local executions = P.executions

describe("three serve hosts on one PostgreSQL store", function()
  local inst, url, c, dir, log
  local hosts -- pg_helper's set of serve hosts

  setup(function()
    inst = P.start()
  end)
  teardown(function()
    if inst then inst:stop() end
  end)

  local f -- P.fixture: the database (on inst, migrated), its connection, the pipes file, the hosts
  before_each(function()
    f = P.fixture(PIPES, function()
      local u = inst:database("e2e")
      local mc = assert(pg.connect(u))
      assert(require("sluice.pg_schema").migrate(mc))
      mc:close()
      return u
    end)
    url, c, dir, log, hosts = f.url, f.c, f.dir, f.log, f.hosts
  end)
  after_each(function() if f then f:close() end end)

  local function serve(i, lease) return hosts:serve(i, lease) end

  local function count(sql, ...)
    return assert(c:query("SELECT count(*)::int AS n FROM " .. sql, ...))[1].n
  end

  -- 300 runs of "job" posted round-robin to the hosts' APIs (one python
  -- process, one connection per host); returns their ids
  local function post_runs(list)
    local urls = {}
    for i, h in ipairs(list) do urls[i] = h.url end
    local code, out, err = HH.python([[
import json, sys, urllib.request
urls = json.loads(sys.argv[1])
for n in range(1, int(sys.argv[2]) + 1):
    req = urllib.request.Request(urls[n % len(urls)] + "/runs/job", data=json.dumps({"n": n}).encode(),
                                 headers={"Content-Type": "application/json"}, method="POST")
    with urllib.request.urlopen(req, timeout=60) as r:
        print(json.loads(r.read())["run_id"])
]], { json.encode(urls), tostring(RUNS) }, 120000)
    assert.are.equal(0, code, err)
    local ids = {}
    for id in out:gmatch("%S+") do ids[#ids + 1] = id end
    assert.are.equal(RUNS, #ids)
    return ids
  end

  -- events posted to the stream over HTTP while the load runs: their ids
  local function post_events(h, n)
    local ids = {}
    for i = 1, n do
      local status, _, _, doc = HH.post(h.url .. "/events", { type = "ext", stream = "ext:" .. i, data = { i = i } })
      assert.are.equal(201, status)
      ids[#ids + 1] = doc.id
    end
    return ids
  end

  local function completed()
    return count("sluice.runs WHERE pipeline = 'job' AND status = 'completed'")
  end

  -- Waits until every run waits for "go" (each host executed some), sends
  -- it, and waits until `host` (nil: any) executed `n` steps after it.
  local function release_the_runs(list, host, n)
    H.wait_until(function() return count("sluice.runs WHERE pipeline = 'job' AND status = 'waiting'") == RUNS end,
      function() return count("sluice.runs WHERE pipeline = 'job' AND status = 'waiting'") .. " runs waiting" end,
      180000, 200)
    local per_host = {}
    for _, e in ipairs(executions(log)) do per_host[e.pid] = true end
    for _, h in ipairs(list) do assert.is_true(per_host[h.pid], "host " .. h.host_id .. " executed nothing") end
    local code, _, err = H.sluice({ "run", dir .. "/pipes/p.lua", "--pipeline", "go", "--store", url,
      "--state-dir", dir .. "/go" }, { timeout = 60000 })
    assert.are.equal(0, code, err)
    local function after_go()
      local k = 0
      for _, e in ipairs(executions(log)) do
        if (e.step == "s3" or e.step == "s4") and (not host or e.pid == host.pid) then k = k + 1 end
      end
      return k
    end
    H.wait_until(function() return after_go() >= n end, "steps after go", 60000, 5)
  end

  -- The guarantees, from the executions logged and the store. dead: the
  -- pid of a host that was killed (its step in flight may run again
  -- elsewhere), or nil (then a step runs again only after a commit whose
  -- outcome was unknown).
  local function check(ids, ext_ids, dead)
    local ex = executions(log)
    -- every run completed with its result
    for _, row in ipairs(assert(c:query("SELECT id, status, record->>'result' AS result, "
      .. "(record->'input'->>'n')::int AS n FROM sluice.runs WHERE pipeline = 'job'"))) do
      assert.are.equal("completed", row.status, row.id)
      assert.are.equal(tostring(row.n * 2), row.result, row.id)
    end
    assert.are.equal(RUNS, completed())
    -- a step that completed never runs again: within a run, once step k+1
    -- ran, step k does not run any more; and a step ran twice only when
    -- its first execution was cut off (the killed host's, or one whose
    -- commit outcome was unknown)
    local last, runs_of, twice = {}, {}, 0
    for _, e in ipairs(ex) do
      local k = tonumber(e.step:match("^s(%d)$"))
      if k then
        local id = e.run
        assert.is_true((last[id] or 0) <= k, ("run %s: step s%d ran after s%d"):format(id, k, last[id] or 0))
        last[id] = k
        runs_of[id] = runs_of[id] or {}
        local prev = runs_of[id][k]
        if prev then
          twice = twice + 1
          if dead then
            assert.are.equal(dead, prev, ("run %s step s%d ran twice, first on a live host"):format(id, k))
          end
        end
        runs_of[id][k] = e.pid
      end
    end
    for _, id in ipairs(ids) do
      for k = 1, 4 do assert.is_truthy(runs_of[id] and runs_of[id][k], ("run %s: step s%d never ran"):format(id, k)) end
    end
    assert.is_true(twice <= RUNS, twice .. " steps ran twice")
    -- no schedule fired twice: each fire's run ran its step on one host
    -- (twice only if the first host was killed in it); fires went on
    local fires = {}
    for _, e in ipairs(ex) do
      if e.step == "tick" then
        if fires[e.run] then
          assert.are.equal(dead, fires[e.run], "fire " .. e.run .. " ran on two live hosts")
        end
        fires[e.run] = e.pid
      end
    end
    local nfires = count("sluice.runs WHERE id LIKE 'tick@%'")
    assert.is_true(nfires >= 3, nfires .. " fires")
    -- every send of a completed run reached its on() handler, once (a
    -- handler run's id is its event's)
    local pongs = {}
    for _, e in ipairs(ex) do
      if e.step == "pong" then
        local n = e.run:match("^pong:(%d+)$")
        if pongs[n] then assert.are.equal(dead, pongs[n], "pong " .. n .. " twice") end
        pongs[n] = e.pid
      end
    end
    for n = 1, RUNS do assert.is_truthy(pongs[tostring(n)], "the send of run n=" .. n .. " was not handled") end
    -- every event appended (by a run, or posted and acknowledged) was
    -- consumed: at least once (a batch cut off is handed out again)
    local consumed = {}
    for _, e in ipairs(ex) do
      if e.step == "consumed" then consumed[e.run:match("^event:(%S+)$")] = true end
    end
    for _, row in ipairs(assert(c:query("SELECT lpad(to_hex(seq), 16, '0') AS id FROM sluice.events"))) do
      assert.is_true(consumed[row.id], "event " .. row.id .. " not consumed")
    end
    for _, id in ipairs(ext_ids) do assert.is_true(consumed[id], "posted event " .. id .. " lost") end
    assert.are.equal(RUNS + #ext_ids, count("sluice.events"))
  end

  it("shares 300 runs; a host SIGKILLed in the middle loses nothing and nothing runs twice", function()
    local a, b, d = serve(1, "3s"), serve(2, "3s"), serve(3, "3s")
    -- the host firing the schedules is the one killed: its singletons move too
    local holder = assert(c:query("SELECT host_id FROM sluice.leases WHERE kind = 'schedules'"))[1]
    H.wait_until(function()
      holder = assert(c:query("SELECT host_id FROM sluice.leases WHERE kind = 'schedules'"))[1]
      return holder ~= nil
    end, "a host to hold the schedules", 30000)
    local victim
    for _, h in ipairs({ a, b, d }) do if h.host_id == holder.host_id then victim = h end end
    assert.is_truthy(victim)
    local ids = post_runs({ a, b, d })
    local ext = post_events(a, 5)
    -- in the middle: every run is past its second step, the victim's are executing their third
    release_the_runs({ a, b, d }, victim, 5)
    victim:kill("sigkill")
    victim:wait(20000)
    assert.is_true(completed() < RUNS, "every run had completed before the kill")
    for _, id in ipairs(post_events(a == victim and b or a, 5)) do ext[#ext + 1] = id end
    H.wait_until(function() return completed() == RUNS end,
      function() return completed() .. " of " .. RUNS .. " runs completed" end, 180000, 200)
    -- the handlers and the consumer catch up
    H.wait_until(function()
      return count("sluice.runs WHERE pipeline LIKE 'on:%' AND status = 'completed'") == RUNS
    end, "the on() handlers' runs", 60000, 200)
    H.wait_until(function()
      local n = 0
      for _, e in ipairs(executions(log)) do if e.step == "consumed" then n = n + 1 end end
      return n >= RUNS + #ext
    end, "the consumer to consume every event", 60000, 200)
    -- the survivors stop cleanly, and leave no lease behind
    for _, h in ipairs({ a, b, d }) do
      if h ~= victim then
        h:kill("sigterm")
        local code, _, _, err = h:wait(30000)
        assert.are.equal(0, code, err)
      end
    end
    check(ids, ext, victim.pid)
    assert.are.equal(0, count("sluice.leases l JOIN sluice.hosts h ON h.id = l.host_id WHERE h.expires_at > now()"))
    assert.are.equal(0, count("sluice.hosts WHERE expires_at > now()"))
  end)

  it("makes a foreground sluice run a host: no serve takes its run, and one run id started twice runs once", function()
    local a = serve(1, "2s")
    -- two `sluice run` of one id at once (their own state dirs: nothing
    -- local tells them of each other), each for longer than a lease
    local function run(i)
      return H.spawn({ "run", dir .. "/pipes/p.lua", "--pipeline", "slow", "--id", "same-run", "--store", url,
        "--state-dir", dir .. "/run" .. i })
    end
    local r1, r2 = run(1), run(2)
    local code1, _, out1, err1 = r1:wait(60000)
    local code2, _, out2, err2 = r2:wait(60000)
    assert.are.equal(0, code1, err1)
    assert.are.equal(0, code2, err2)
    assert.are.equal('"slow done"\n', out1)
    assert.are.equal(out1, out2)
    local by = {}
    for _, e in ipairs(executions(log)) do
      if e.run == "same-run" then
        assert.is_nil(by[e.step], e.step .. " ran twice")
        by[e.step] = e.pid
      end
    end
    assert.are.same({ "s1", "s2", "s3" }, (function()
      local l = {}
      for k in pairs(by) do l[#l + 1] = k end
      table.sort(l)
      return l
    end)())
    for _, pid in pairs(by) do
      assert.is_true(pid == r1.pid or pid == r2.pid, "a step of the foreground run ran in serve")
    end
    assert.are.equal(0, count("sluice.hosts WHERE id <> $1", a.host_id)) -- the runs deregistered
  end)

  it("survives a PostgreSQL crash-restart under the load with the same guarantees", function()
    -- a lease longer than the restart takes: no host expires meanwhile
    local a, b, d = serve(1, "30s"), serve(2, "30s"), serve(3, "30s")
    local ids = post_runs({ a, b, d })
    local ext = post_events(b, 5)
    release_the_runs({ a, b, d }, nil, 30)
    c:close()
    inst:restart()
    c = assert(pg.connect(url))
    f.c = c -- closed by f:close()
    H.wait_until(function() return completed() == RUNS end,
      function() return completed() .. " of " .. RUNS .. " runs completed" end, 180000, 200)
    for _, id in ipairs(post_events(d, 5)) do ext[#ext + 1] = id end
    H.wait_until(function()
      return count("sluice.runs WHERE pipeline LIKE 'on:%' AND status = 'completed'") == RUNS
    end, "the on() handlers' runs", 60000, 200)
    H.wait_until(function()
      local n = 0
      for _, e in ipairs(executions(log)) do if e.step == "consumed" then n = n + 1 end end
      return n >= RUNS + #ext
    end, function()
      local t = {}
      for i, h in ipairs(hosts.list) do
        for line in table.concat(h.err):gmatch("[^\n]*consum[^\n]*") do
          if not line:find("pipeline=consume") then t[#t + 1] = i .. ": " .. line end
        end
      end
      return "the consumer to consume every event: " .. table.concat(t, "\n")
    end, 60000, 200)
    for _, h in ipairs({ a, b, d }) do
      h:kill("sigterm")
      local code, _, _, err = h:wait(30000)
      assert.are.equal(0, code, err)
    end
    check(ids, ext, nil)
  end)
end)
