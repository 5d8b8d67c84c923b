-- hosts_gaps_spec.lua: what several `sluice serve` hosts on one PostgreSQL
-- store must get right beyond sharing runs (issue 15), with real serve
-- processes on a real PostgreSQL 15: a run whose record holds NUL (\u0000)
-- is claimed like any other; one Idempotency-Key raced on two hosts is one
-- run; a cancel through one host stops a run executing on another and
-- stays; `sluice status` tells a live run by its host's lease; a schedule
-- created over one host's API fires once, on the host holding the
-- schedules.
local H = require "helper"
local P = require "pg_helper"
local HH = require "http_helper"
local json = require "sluice.json"

local PIPES = [[
pipeline("echo", function(input)
  return step("e", function() return input.k .. "!" end)
end)
pipeline("long", function()
  local id = ctx().run_id
  for i = 1, 60 do
    step("s" .. i, function() mark(id .. " s" .. i) return i end)
    sleep("200ms")
  end
  return "long done"
end)
pipeline("forever", function() wait_for("never-sent") end)
pipeline("tick", function()
  step("tick", function() mark(ctx().run_id .. " tick") end)
end)
]]

local executions = P.executions

describe("several serve hosts on one PostgreSQL store", function()
  local url, c, dir, log
  local hosts -- pg_helper's set of serve hosts

  local f -- P.fixture: the database, its connection, the pipes file, the hosts
  before_each(function()
    f = P.fixture(PIPES)
    url, c, dir, log, hosts = f.url, f.c, f.dir, f.log, f.hosts
  end)
  after_each(function() if f then f:close() end end)

  local function serve(i, lease) return hosts:serve(i, lease) end

  local function one(sql, ...)
    return assert(c:query(sql, ...))[1]
  end

  local function status_json(id, state)
    local code, out, err = H.sluice({ "status", id, "--json", "--store", url, "--state-dir", state })
    assert.are.equal(0, code, err)
    return json.decode(out)
  end

  it("claims and completes a run whose record holds NUL characters", function()
    -- a pending run nobody holds, its input holding "\0" (stored as \u0000)
    assert(c:exec([[INSERT INTO sluice.runs (id, pipeline, status, active, created_at_us, record)
      VALUES ('nul-run', 'echo', 'pending', true, 1,
        '{"id":"nul-run","pipeline":"echo","status":"pending","attempt":0,"created_us":1,"input":{"k":"a\u0000b"}}')]]))
    serve(1)
    H.wait_until(function() return one("SELECT status FROM sluice.runs WHERE id = 'nul-run'").status == "completed" end,
      function() return "the run to complete: " .. hosts.list[1]:log() end, 30000, 50)
    local doc = status_json("nul-run", dir .. "/cli")
    assert.are.equal("a\0b!", doc.result)
    assert.are.equal("a\0b", doc.input.k)
  end)

  it("gives one Idempotency-Key raced on two hosts one run, and every request its id", function()
    local a, b = serve(1), serve(2)
    local code, out, err = HH.python([[
import json, sys, threading, urllib.request, urllib.error
urls = json.loads(sys.argv[1])
keys, per_key = 15, 8
results = []
lock = threading.Lock()
def post(url, key, barrier):
    req = urllib.request.Request(url + "/runs/echo", data=json.dumps({"k": key}).encode(),
        headers={"Content-Type": "application/json", "Idempotency-Key": key}, method="POST")
    barrier.wait()
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            res = (key, r.status, json.loads(r.read())["run_id"])
    except urllib.error.HTTPError as e:
        res = (key, e.code, e.read().decode())
    with lock:
        results.append(res)
for k in range(keys):
    key = "key-%d" % k
    barrier = threading.Barrier(per_key)
    ts = [threading.Thread(target=post, args=(urls[i % 2], key, barrier)) for i in range(per_key)]
    for t in ts: t.start()
    for t in ts: t.join()
for r in results: print(json.dumps(r))
]], { json.encode({ a.url, b.url }) }, 120000)
    assert.are.equal(0, code, err)
    local by_key, n = {}, 0
    for line in out:gmatch("[^\n]+") do
      local key, status, id = table.unpack(json.decode(line))
      n = n + 1
      assert.is_true(status == 200 or status == 202, ("key %s: HTTP %s: %s"):format(key, status, id))
      by_key[key] = by_key[key] or id
      assert.are.equal(by_key[key], id, "key " .. key .. " named two runs: " .. out)
    end
    assert.are.equal(15 * 8, n)
    assert.are.equal(15, one("SELECT count(*)::int AS n FROM sluice.runs WHERE pipeline = 'echo'").n)
    assert.are.equal(15, one("SELECT count(*)::int AS n FROM sluice.idempotency").n)
  end)

  -- the line a host logs when a run it executed ended: its status
  local function ended_on(h, id)
    return h:log():match("run " .. id:gsub("%p", "%%%0") .. " pipeline=%S+ (%a+) in ")
  end

  it("cancels, through one host, runs that another host executes, and the cancel stays", function()
    -- leases of 10 s: a 2 s lease can lapse on a loaded machine and the
    -- other host take the run over, which is hosts_takeover_spec's subject
    -- (this test's flake was not that: b went on to mark the stopped run
    -- sleeping, engine_steps.set_status, also covered there)
    local a, b = serve(1, "10s"), serve(2, "10s")
    local function start_on_b()
      local status, _, _, doc = HH.post(b.url .. "/runs/long", {})
      assert.are.equal(202, status)
      local id = doc.run_id
      H.wait_until(function()
        for _, e in ipairs(executions(log)) do if e.run == id and e.step == "s2" then return true end end
      end, "run " .. id .. " to execute its second step", 30000, 20)
      assert.are.equal(b.host_id, one("SELECT host_id FROM sluice.leases WHERE kind = 'run' AND name = $1", id).host_id)
      return id
    end
    local by_http, by_cli = start_on_b(), start_on_b()
    local status = HH.post(a.url .. "/runs/" .. by_http .. "/cancel", {})
    assert.are.equal(202, status)
    local code, _, err = H.sluice({ "cancel", by_cli, "--store", url, "--state-dir", a.state })
    assert.are.equal(0, code, err)
    for _, id in ipairs({ by_http, by_cli }) do
      -- b stops it (within its poll, at a step boundary or sooner), and what
      -- b wrote meanwhile did not undo the cancel
      H.wait_until(function() return ended_on(b, id) end, "host b to end run " .. id, 60000, 50)
      assert.are.equal("cancelled", ended_on(b, id))
      assert.are.equal("cancelled", one("SELECT status FROM sluice.runs WHERE id = $1", id).status)
      local ran = 0
      for _, e in ipairs(executions(log)) do if e.run == id then ran = ran + 1 end end
      assert.is_true(ran < 60, id .. " ran every step")
      H.wait_until(function()
        return one("SELECT count(*)::int AS n FROM sluice.leases WHERE name = $1", id).n == 0
      end, "host b to give the lease of " .. id .. " back", 20000, 50)
      assert.is_nil(ended_on(a, id))
      assert.are.equal("cancelled", status_json(id, dir .. "/cli").status)
    end
  end)

  it("tells a live run by its host's lease, not by a pid on this machine", function()
    local a = serve(1)
    local function start()
      local status, _, _, doc = HH.post(a.url .. "/runs/forever", {})
      assert.are.equal(202, status)
      H.wait_until(function()
        return one("SELECT count(*)::int AS n FROM sluice.runs r JOIN sluice.leases l ON l.name = r.id "
          .. "WHERE r.id = $1 AND r.status = 'waiting'", doc.run_id).n == 1
      end, "run " .. doc.run_id .. " to wait, leased", 30000, 20)
      return doc.run_id
    end
    local elsewhere, here = start(), start()
    -- as if the host ran on another machine: a pid that means nothing here
    assert(c:exec(("UPDATE sluice.runs SET record = (record::jsonb || "
      .. "'{\"host\": {\"pid\": 999999, \"start\": \"another-boot:1\"}}')::json WHERE id = '%s'"):format(elsewhere)))
    local cli = dir .. "/cli"
    local doc = status_json(elsewhere, cli)
    assert.is_true(doc.host_alive)
    assert.are.equal(a.host_id, doc.host_id)
    local _, _, _, api = HH.get(a.url .. "/runs/" .. elsewhere)
    assert.is_true(api.host_alive)
    local code, out, err = H.sluice({ "runs", "--store", url, "--state-dir", cli })
    assert.are.equal(0, code, err)
    assert.is_nil(out:find("no live host"), out)
    -- the host stalls (its process lives on): once its lease expired, nobody executes its runs
    a:kill("sigstop")
    H.wait_until(function()
      return one("SELECT count(*)::int AS n FROM sluice.hosts WHERE id = $1 AND expires_at < now()", a.host_id).n == 1
    end, "host a's lease to expire", 30000, 50)
    for _, id in ipairs({ here, elsewhere }) do
      doc = status_json(id, cli)
      assert.is_false(doc.host_alive, id)
    end
    code, out, err = H.sluice({ "runs", "--store", url, "--state-dir", cli })
    assert.are.equal(0, code, err)
    local _, n = out:gsub("waiting %(no live host", "")
    assert.are.equal(2, n, out)
  end)

  it("fires a schedule created, paused and deleted over another host's API, once, on the host holding the schedules", function()
    local a, b = serve(1), serve(2)
    local holder
    H.wait_until(function()
      holder = c:query("SELECT host_id FROM sluice.leases WHERE kind = 'schedules'")[1]
      return holder ~= nil
    end, "a host to hold the schedules", 30000, 20)
    local firing, other = a, b
    if holder.host_id == b.host_id then firing, other = b, a end
    local function fires(name)
      local list = {}
      for _, e in ipairs(executions(log)) do
        if e.step == "tick" and e.run:sub(1, #name + 1) == name .. "@" then
          list[#list + 1] = e
          assert.are.equal(firing.pid, e.pid, "fire " .. e.run .. " ran on the host not holding the schedules")
        end
      end
      return list
    end
    local status, body = HH.post(other.url .. "/schedules", { name = "t1", pipeline = "tick", every = "1s", input = { n = 1 } })
    assert.are.equal(201, status, body)
    H.wait_until(function() return #fires("t1") >= 3 end,
      function() return #fires("t1") .. " fires of t1: " .. firing:log() end, 30000, 50)
    -- each fire once: one execution per fire's run id
    local once = {}
    for _, e in ipairs(fires("t1")) do
      assert.is_nil(once[e.run], e.run .. " ran twice")
      once[e.run] = true
    end
    -- every host lists it
    local _, _, _, doc = HH.get(firing.url .. "/schedules")
    local listed = {}
    for _, sch in ipairs(doc.schedules) do listed[sch.name] = sch end
    assert.is_truthy(listed.t1)
    assert.are.equal("api", listed.t1.source)
    -- paused over the other host: the firing host follows
    status, body = HH.request("PUT", other.url .. "/schedules/t1", { body = json.encode({ enabled = false }) })
    assert.are.equal(200, status, body)
    H.wait_until(function() return firing:log():find("schedule t1: paused on another host", 1, true) end,
      "the firing host to pause t1", 30000, 50)
    for _, h in ipairs({ firing, other }) do
      H.wait_until(function()
        local _, _, _, d = HH.get(h.url .. "/schedules")
        return d.schedules[1] and d.schedules[1].enabled == false
      end, "GET /schedules to show t1 paused", 30000, 100)
    end
    status, body = HH.request("DELETE", other.url .. "/schedules/t1")
    assert.are.equal(200, status, body)
    H.wait_until(function() return firing:log():find("schedule t1: deleted on another host", 1, true) end,
      "the firing host to drop t1", 30000, 50)
    _, _, _, doc = HH.get(firing.url .. "/schedules")
    for _, sch in ipairs(doc.schedules) do assert.are_not.equal("t1", sch.name) end
    -- time goes on (t2 fires twice from the other host's API) and t1 fires no more
    local paused_at = #fires("t1")
    status, body = HH.post(other.url .. "/schedules", { name = "t2", pipeline = "tick", every = "1s" })
    assert.are.equal(201, status, body)
    H.wait_until(function() return #fires("t2") >= 2 end, "t2 to fire twice", 30000, 50)
    local first_t2 = fires("t2")[1].run:match("@(.*)$")
    for _, e in ipairs(fires("t1")) do
      assert.is_true(e.run:match("@(.*)$") < first_t2, e.run .. " fired after t1 was deleted")
    end
    assert.is_true(#fires("t1") <= paused_at + 1)
    assert.are.equal(0, one("SELECT count(*)::int AS n FROM sluice.schedules WHERE name = 't1'").n)
  end)

  it("takes a new run's lease in the commit that creates it: never a lease without its run", function()
    local a = serve(1)
    -- a creating commit that fails (as a crash there would cut it off)
    assert(c:exec([[CREATE FUNCTION public.refuse_run() RETURNS trigger LANGUAGE plpgsql AS $$
      BEGIN RAISE EXCEPTION 'refused by the test' USING ERRCODE = '23514'; END $$]]))
    assert(c:exec([[CREATE TRIGGER refuse BEFORE INSERT ON sluice.runs FOR EACH ROW
      WHEN (NEW.id LIKE 'doomed%') EXECUTE FUNCTION public.refuse_run()]]))
    -- handed to serve (its control socket), which executes it
    local code, _, err = H.sluice({ "run", dir .. "/pipes/p.lua", "--pipeline", "echo", "--id", "doomed-1",
      "--input", '{"k": "x"}', "--store", url, "--state-dir", a.state }, { timeout = 30000 })
    assert.are_not.equal(0, code)
    assert.matches("refused by the test", err)
    assert.are.equal(0, one("SELECT count(*)::int AS n FROM sluice.leases l WHERE l.kind = 'run' "
      .. "AND NOT EXISTS (SELECT 1 FROM sluice.runs r WHERE r.id = l.name)").n)
    -- and a run created over HTTP is leased once it exists: by the 202
    local status, _, _, doc = HH.post(a.url .. "/runs/forever", {})
    assert.are.equal(202, status)
    assert.are.equal(a.host_id, one("SELECT host_id FROM sluice.leases WHERE kind = 'run' AND name = $1", doc.run_id).host_id)
  end)

  it("lists, in the REPL of one host, every host with its leases and every host's runs", function()
    local a, b = serve(1), serve(2)
    local status, _, _, doc = HH.post(b.url .. "/runs/forever", {})
    assert.are.equal(202, status)
    H.wait_until(function()
      return one("SELECT count(*)::int AS n FROM sluice.runs WHERE id = $1 AND status = 'waiting'", doc.run_id).n == 1
    end, "run " .. doc.run_id .. " to wait on b", 30000, 20)
    local code, out, err = H.sluice({ "repl", "--store", url, "--state-dir", a.state, "--json",
      "-e", "return hosts(), runs{}" })
    assert.are.equal(0, code, err)
    local v = json.decode(out)
    local listed = {}
    for _, h in ipairs(v[1]) do listed[h.id] = h end
    assert.is_true(listed[a.host_id].here, out)
    assert.is_true(listed[a.host_id].alive)
    assert.is_nil(listed[b.host_id].here)
    assert.are.equal(1, listed[b.host_id].runs, out)
    assert.are.equal(0, listed[a.host_id].runs, out)
    assert.are.equal(doc.run_id, v[2][1].id, out)
    -- offline (no host in this state dir) it reads the store all the same
    code, out, err = H.sluice({ "repl", "--store", url, "--state-dir", dir .. "/cli", "--json", "-e", "return #hosts()" })
    assert.are.equal(0, code, err)
    assert.are.equal("2\n", out)
  end)
end)
