-- hosts_spec.lua: the lease layer of several hosts on one PostgreSQL store
-- (lua/hosts.lua, host/store_pg_hosts.c) with real processes
-- (tests/pg/lease_client.lua) against a real PostgreSQL 15: hosts racing to
-- claim runs never claim one twice; a host's heartbeat keeps its runs while
-- it lives; a SIGKILLed host's runs go to the others once its lease
-- expired, not before; a stalled host (SIGSTOP) that lost its lease has
-- every write refused and stops; one host at a time holds a singleton
-- lease; `sluice hosts` lists them.
local H = require "helper"
local P = require "pg_helper"
local pg = require "sluice._pg"

local LEASE_MS = 2000

describe("several hosts on one PostgreSQL store", function()
  local inst, url, c
  local procs = {}

  setup(function()
    inst = P.start()
    url = inst:database("hosts")
    c = assert(pg.connect(url))
    assert(require("sluice.pg_schema").migrate(c))
  end)
  teardown(function()
    for _, p in ipairs(procs) do p:kill() end
    if c then c:close() end
    if inst then inst:stop() end
  end)

  before_each(function()
    -- a killed client's backend may still be running its last statement,
    -- holding locks TRUNCATE then deadlocks against (40P01): end them first
    assert(c:exec("SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
      .. " WHERE datname = current_database() AND pid <> pg_backend_pid()"))
    assert(c:exec("TRUNCATE sluice.leases, sluice.hosts, sluice.runs, sluice.schedules"))
  end)
  after_each(function()
    for _, p in ipairs(procs) do
      p:kill()
      p:wait(10000)
    end
    procs = {}
  end)

  local client_for
  local function client(mode, ...)
    return client_for(LEASE_MS, mode, ...)
  end
  function client_for(lease_ms, mode, ...)
    local p = H.spawn({ H.root .. "/tests/pg/lease_client.lua", url, tostring(lease_ms), mode, ... })
    procs[#procs + 1] = p
    H.wait_until(function() return table.concat(p.out):find("registered ") end,
      function() return "a client to register: " .. table.concat(p.err) .. table.concat(p.out) end, 30000)
    p.id = table.concat(p.out):match("registered (%S+)")
    return p
  end

  -- the ids a client printed after `word`, as a list and a set
  local function printed(p, word)
    local list, set = {}, {}
    for id in table.concat(p.out):gmatch(word .. " (%S+)\n") do
      list[#list + 1] = id
      set[id] = true
    end
    return list, set
  end

  local function add_runs(from, to)
    local stmts = {}
    for i = from, to do
      stmts[#stmts + 1] = { "INSERT INTO sluice.runs (id, pipeline, status, active, created_at_us, record) "
        .. "VALUES ($1, 'p', 'pending', true, $2, '{}')", ("r%04d"):format(i), i }
    end
    assert(c:batch(stmts))
  end

  local function count(sql, ...)
    return assert(c:query("SELECT count(*)::int AS n FROM " .. sql, ...))[1].n
  end

  it("three hosts racing to claim 300 runs claim each exactly once", function()
    local a, b, d = client("claim"), client("claim"), client("claim")
    -- runs arrive while the three claim, in small commits
    for i = 1, 300, 10 do add_runs(i, i + 9) end
    local function all() return #printed(a, "claimed") + #printed(b, "claimed") + #printed(d, "claimed") end
    H.wait_until(function() return all() >= 300 end, function() return all() .. " of 300 runs claimed" end, 60000)
    local seen = {}
    for _, p in ipairs({ a, b, d }) do
      for _, id in ipairs((printed(p, "claimed"))) do
        assert.is_nil(seen[id], id .. " claimed twice")
        seen[id] = p.id
      end
    end
    assert.are.equal(300, all())
    -- and the store agrees: one lease per run, each the claimer's
    assert.are.equal(300, count("sluice.leases WHERE kind = 'run'"))
    for _, row in ipairs(assert(c:query("SELECT name, host_id FROM sluice.leases WHERE kind = 'run'"))) do
      assert.are.equal(seen[row.name], row.host_id)
    end
  end)

  it("keeps a live host's runs by its heartbeat, and gives a killed host's runs to another after expiry", function()
    local a = client("claim")
    add_runs(1, 50)
    H.wait_until(function() return #printed(a, "claimed") == 50 end, "host a to claim the 50 runs", 30000)
    local b = client("claim")
    -- a renews: wait until its lease has been renewed past two whole lease
    -- durations after b came; b claimed nothing meanwhile
    local since = assert(c:query("SELECT now() AS t"))[1].t
    H.wait_until(function()
      return count("sluice.hosts WHERE id = $1 AND heartbeat_at > $2::timestamptz + $3 * interval '1 millisecond'",
        a.id, since, 2 * LEASE_MS) == 1
    end, "host a to renew for two lease durations", 30000)
    assert.are.equal(0, #printed(b, "claimed"))
    assert.are.equal(1, count("sluice.hosts WHERE id = $1 AND expires_at > now()", a.id))

    a:kill("sigkill")
    a:wait(10000)
    H.wait_until(function() return #printed(b, "claimed") == 50 end,
      function() return #printed(b, "claimed") .. " of a's 50 runs taken by b" end, 30000)
    -- not before a's lease ran out: every lease b holds came after a's expiry
    assert.are.equal(0, count("sluice.leases l, sluice.hosts h WHERE h.id = $1 AND l.host_id = $2 "
      .. "AND l.acquired_at < h.expires_at", a.id, b.id))
    assert.are.equal(0, count("sluice.leases WHERE host_id = $1", a.id))
  end)

  it("hands a killed host's runs to the next host of its state dir at once, without waiting for the expiry", function()
    local state = H.tmpdir()
    local a = client_for(20000, "claim", state)
    add_runs(1, 10)
    H.wait_until(function() return #printed(a, "claimed") == 10 end, "host a to claim the 10 runs", 30000)
    local expiry = assert(c:query("SELECT expires_at::text AS t FROM sluice.hosts WHERE id = $1", a.id))[1].t
    a:kill("sigkill")
    a:wait(10000)
    -- the state dir's lock proves a is gone: b, its successor there, ends a's lease
    local b = client_for(20000, "claim", state)
    H.wait_until(function() return #printed(b, "claimed") == 10 end, "host b to take a's 10 runs", 15000)
    assert.are.equal(0, count("sluice.leases WHERE host_id = $2 AND acquired_at >= $1::timestamptz", expiry, b.id))
    -- a host of another state dir ends nobody's lease
    local d = client_for(20000, "claim", H.tmpdir())
    assert.are.equal(1, count("sluice.hosts WHERE id = $1 AND expires_at > now()", b.id))
    assert.are.equal(0, #printed(d, "claimed"))
  end)

  it("refuses every write of a stalled host once another took its leases over, and stops it", function()
    local a = client("write")
    local function wrote() return #printed(a, "wrote") end
    H.wait_until(function() return wrote() >= 3 end, "host a to write", 30000)
    -- a lease to lose
    assert(c:exec("INSERT INTO sluice.leases (kind, name, host_id) VALUES ('consumer', 'c', $1)", a.id))
    a:kill("sigstop")
    local b = client("hold", "consumer", "c")
    H.wait_until(function() return table.concat(b.out):find("holding consumer c") end,
      "host b to take a's consumer lease after a expired", 30000)
    local n_at_takeover = assert(c:query("SELECT (record->>'n')::int AS n FROM sluice.schedules WHERE name = $1",
      "w-" .. a.pid))[1].n
    a:kill("sigcont")
    local code, _, out = a:wait(30000)
    assert.are.equal(3, code)
    assert.matches("lost: this host's registration " .. a.id:gsub("%p", "%%%0") .. " expired", out)
    -- nothing a wrote after the takeover committed, though it tried
    local n_after = assert(c:query("SELECT (record->>'n')::int AS n FROM sluice.schedules WHERE name = $1",
      "w-" .. a.pid))[1].n
    assert.are.equal(n_at_takeover, n_after)
    for n in out:gmatch("wrote (%d+)\n") do assert.is_true(tonumber(n) <= n_at_takeover, "write " .. n .. " committed") end
    for msg in out:gmatch("refused %d+: ([^\n]+)") do assert.matches("not registered any more", msg) end
  end)

  it("refuses every commit of a host once its registration expired, whole transactions (the fence)", function()
    H.task(function()
      local store = require "sluice._store"
      local hosts = require "sluice._hosts"
      assert(store.open(url))
      assert(hosts.register({ id = "fenced", name = "t", pid = 1, lease_ms = 60000 }))
      hosts.fence("fenced")
      -- many batches at once (one transaction): each commits, or each fails
      local function commit_many(n, tag)
        local results, left = {}, n
        for i = 1, n do
          require("sluice.sched").spawn({}, function()
            local ok, err = store.batch():put_schedule(tag .. i, { n = i }):commit()
            results[i] = ok and true or err
          end, function() left = left - 1 end)
        end
        H.wait_until(function() return left == 0 end, "the commits", 30000)
        return results
      end
      for _, r in ipairs(commit_many(20, "alive")) do assert.is_true(r) end
      assert(c:exec("UPDATE sluice.hosts SET expires_at = now() - interval '1 second' WHERE id = 'fenced'"))
      for _, r in ipairs(commit_many(20, "dead")) do
        assert.matches("EIO: PostgreSQL: sluice host fenced is not registered any more", r)
      end
      assert.are.equal(20, count("sluice.schedules WHERE name LIKE 'alive%'"))
      assert.are.equal(0, count("sluice.schedules WHERE name LIKE 'dead%'"))
      -- and it cannot come back: its renewal says it expired
      assert.is_false(hosts.renew("fenced", 60000))
      hosts.fence(nil)
      assert(store.batch():put_schedule("after", { n = 1 }):commit())
      store.close()
    end)
  end)

  it("gives a singleton lease to one host at a time, and to the next when it goes", function()
    local a = client("hold", "schedules", "*")
    H.wait_until(function() return table.concat(a.out):find("holding schedules") end, "host a to hold schedules", 30000)
    local b = client("hold", "schedules", "*")
    H.wait_until(function() return table.concat(b.err):find("host " .. a.id:gsub("%p", "%%%0") .. " has it") end,
      "host b to see a holds it", 30000)
    assert.is_nil(table.concat(b.out):find("holding"))
    -- a clean exit hands it over at once (no expiry to wait for)
    a:kill("sigterm")
    local code, _, out = a:wait(30000)
    assert.are.equal(0, code, out)
    H.wait_until(function() return table.concat(b.out):find("holding schedules") end, "host b to take over", 30000)
    assert.are.equal(0, count("sluice.hosts WHERE id = $1", a.id))
  end)

  it("lists the live hosts with their leases and the expired ones marked (sluice hosts)", function()
    local a = client("claim")
    add_runs(1, 5)
    H.wait_until(function() return #printed(a, "claimed") == 5 end, "host a to claim", 30000)
    local b = client("hold", "dispatch", "*")
    H.wait_until(function() return table.concat(b.out):find("holding") end, "host b to hold dispatch", 30000)
    local d = client("claim")
    d:kill("sigkill")
    d:wait(10000)
    H.wait_until(function() return count("sluice.hosts WHERE id = $1 AND expires_at < now()", d.id) == 1 end,
      "host d's lease to expire", 30000)
    local code, out, err = H.sluice({ "hosts", "--store", url, "--json" })
    assert.are.equal(0, code, err)
    local list = require("sluice.json").decode(out).hosts
    local by = {}
    for _, h in ipairs(list) do by[h.id] = h end
    assert.is_true(by[a.id].alive)
    assert.are.equal(5, by[a.id].leases.run)
    assert.are.same({ "dispatch *" }, by[b.id].named)
    assert.is_false(by[d.id].alive)
    local code2, text = H.sluice({ "hosts", "--store", url })
    assert.are.equal(0, code2)
    assert.matches("HOST%s+MACHINE%s+PID%s+UP%s+HEARTBEAT%s+STATE%s+RUNS%s+LEASES", text)
    assert.matches(a.id:gsub("%p", "%%%0") .. "[^\n]+alive %(%d+s left%)%s+5%s+%-", text)
    assert.matches(b.id:gsub("%p", "%%%0") .. "[^\n]+alive[^\n]+dispatch %*", text)
    assert.matches(d.id:gsub("%p", "%%%0") .. "[^\n]+expired %d+s ago", text)
    -- an LMDB store has one host: said, not listed
    local code3, _, err3 = H.sluice({ "hosts", "--store", H.tmpdir() })
    assert.are.equal(2, code3)
    assert.matches("LMDB store, which has one host", err3)
  end)
end)
