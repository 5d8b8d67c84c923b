-- host_spec.lua: sluice run and sluice serve on a PostgreSQL store, as real
-- processes against a real PostgreSQL 15 (the suite's server under ctest). The ids
-- emit and send return are the ones the commit allocated, and a run
-- killed with SIGKILL replays them (never emitting again) while another
-- process emits at the same time; serve's consumer, on() handlers and
-- wait_for see what other processes commit; the state dir (writer lock,
-- control socket) defaults to one per URL that any working directory finds.
local H = require "helper"
local json = require "sluice.json"
local uv = require "luv"

describe("a PostgreSQL store", function()
  -- a fresh migrated database (of the suite's server under ctest)
  local database = H.pg_database

  local function sluice_json(args)
    local code, out, err = H.sluice(args)
    assert.are.equal(0, code, err)
    return json.decode(out)
  end

  it("gives emit and send the committed ids, which a run killed with SIGKILL replays, beside another emitter", function()
    local url, dir = database(), H.tmpdir()
    local n = 300
    local f = H.write(dir .. "/em.lua", ([[
pipeline("em", function(input)
  local ids = {}
  for i = 1, input.n do
    local id = emit("t", "k:" .. (i %% 3), { i = i, run = input.tag })
    local sid = send("ping", { i = i, run = input.tag })
    ids[i] = id
    step("note" .. i, function()
      local f = io.open(%q .. input.tag, "a"); f:write(i, " ", id, " ", sid, "\n"); f:close()
    end)
  end
  return ids
end)]]):format(dir .. "/log-"))
    local function lines(tag) return H.lines(dir .. "/log-" .. tag) end
    -- two hosts of one database: each its own state dir
    local function args(tag)
      return { "run", f, "--id", tag, "--input", json.encode({ n = n, tag = tag }), "--store", url,
        "--state-dir", dir .. "/state-" .. tag }
    end
    math.randomseed(os.time())
    local kills = 0
    for _ = 1, 3 do
      local a, b = H.spawn(args("a")), H.spawn(args("b"))
      local target = #lines("a") + math.random(20, 80)
      H.wait_until(function() return a.exited or #lines("a") >= target end, "run a to reach " .. target, 60000, 2)
      a:kill("sigkill")
      local _, sig = a:wait()
      if sig == 9 then kills = kills + 1 end
      b:wait()
    end
    assert.is_true(kills >= 1, "run a was never killed")
    local results = {}
    for _, tag in ipairs({ "a", "b" }) do
      local code, out, err = H.sluice(args(tag))
      assert.are.equal(0, code, err)
      results[tag] = json.decode(out)
      assert.are.equal(n, #results[tag])
    end
    -- the stream: every event once, ids 1.. with no gap (an aborted
    -- transaction gives its positions back), in each run's order
    local events = sluice_json({ "events", "k:*", "--json", "--limit", "100000", "--store", url }).events
    assert.are.equal(2 * n, #events)
    local by_id = {}
    for i, e in ipairs(events) do
      assert.are.equal(("%016x"):format(i), e.id)
      by_id[e.id] = e
    end
    for tag, ids in pairs(results) do
      for i, id in ipairs(ids) do
        local e = by_id[id]
        assert.are.same({ i = i, run = tag }, e and e.data, ("run %s: emit %d returned %s"):format(tag, i, id))
      end
      -- what each attempt saw is what the stored record replays
      for _, l in ipairs(lines(tag)) do
        local i, id = l:match("^(%d+) (%x+) ")
        assert.are.equal(ids[tonumber(i)], id, ("run %s: step %s saw another id than the result"):format(tag, i))
      end
    end
    -- sends: each once, and each id the one the send returned
    local pg = require "sluice._pg"
    local c = assert(pg.connect(url))
    local rows = assert(c:query([[SELECT seq, record::text AS r FROM sluice.sends ORDER BY seq]]))
    c:close()
    assert.are.equal(2 * n, #rows)
    local seen = {}
    for _, tag in ipairs({ "a", "b" }) do
      for _, l in ipairs(lines(tag)) do
        local i, sid = l:match("^(%d+) %x+ (%x+)$")
        local rec = json.decode(rows[tonumber(sid, 16)].r)
        assert.are.same({ i = tonumber(i), run = tag }, rec.data)
        seen[tag .. i] = true
      end
    end
    for i, r in ipairs(rows) do
      assert.are.equal(i, r.seq)
      local d = json.decode(r.r).data
      assert.is_true(seen[d.run .. d.i], "send " .. i .. " was not returned by any attempt")
    end
  end)

  it("feeds serve's consumer, on() handlers and wait_for from what other processes commit", function()
    local url, dir = database(), H.tmpdir()
    os.execute("mkdir -p '" .. dir .. "/p'")
    H.write(dir .. "/p/serve.lua", ([[
consume("c", "k:*", function(events)
  step("deliver", function()
    local f = io.open(%q, "a")
    for _, e in ipairs(events) do f:write(e.id, "\n") end
    f:close()
  end)
end, { batch = 50 })
on("ping", function(data, ev)
  step("handle", function()
    local f = io.open(%q, "a"); f:write(ev.id, "\n"); f:close()
  end)
end)
pipeline("waiter", function()
  local data = wait_for("go", { timeout = "60s" })
  return data
end)
]]):format(dir .. "/delivered", dir .. "/handled"))
    local function up(p)
      H.wait_until(function() return table.concat(p.err):find("schedules armed", 1, true) end, "serve to start", 30000, 20)
    end
    local serve = H.spawn({ "serve", dir .. "/p", "--no-http", "--store", url, "--state-dir", dir .. "/state-s" })
    up(serve)
    -- a run waiting in serve (handed to it: the same state dir)
    local w = H.spawn({ "run", dir .. "/p/serve.lua", "--pipeline", "waiter", "--id", "w1", "--store", url,
      "--state-dir", dir .. "/state-s" })
    H.wait_until(function() return table.concat(w.err):find("handed to it", 1, true) end,
      "the waiter to be handed to serve", 30000, 20)
    -- another host of the store emits and sends while serve runs
    local f = H.write(dir .. "/feed.lua", [[
pipeline("feed", function(input)
  for i = 1, input.n do
    emit("t", "k:" .. (i % 4), { i = i })
    send("ping", { i = i })
  end
  send("go", { ok = true })
  return input.n
end)]])
    local code, out, err = H.sluice({ "run", f, "--input", '{"n": 40}', "--store", url, "--state-dir", dir .. "/state-f" })
    assert.are.equal(0, code, err)
    assert.are.equal("40\n", out)
    H.wait_until(function() return #H.lines(dir .. "/delivered") >= 40 and #H.lines(dir .. "/handled") >= 40 end,
      "serve to deliver the 40 events and handle the 40 sends", 30000, 20)
    local wcode, _, wout, werr = w:wait(30000)
    assert.are.equal(0, wcode, werr)
    assert.are.same({ ok = true }, json.decode(wout))
    -- across a SIGKILL of serve: every event delivered, every send handled
    serve:kill("sigkill")
    serve:wait()
    code = H.sluice({ "run", f, "--input", '{"n": 30}', "--store", url, "--state-dir", dir .. "/state-f" })
    assert.are.equal(0, code)
    serve = H.spawn({ "serve", dir .. "/p", "--no-http", "--store", url, "--state-dir", dir .. "/state-s" })
    local function distinct(path)
      local seen, k = {}, 0
      for _, id in ipairs(H.lines(path)) do
        if not seen[id] then k = k + 1 end
        seen[id] = true
      end
      return k, seen
    end
    local function handler_runs()
      return sluice_json({ "runs", "--pipeline", "on:ping", "--status", "completed", "--json", "--limit", "1000",
        "--store", url }).runs
    end
    H.wait_until(function() return distinct(dir .. "/delivered") == 70 end, "every one of the 70 events delivered",
      30000, 20)
    -- each send has its one handler run, completed (a step the SIGKILL cut
    -- off ran again: at-least-once at the step boundary)
    H.wait_until(function() return #handler_runs() == 70 end, "the 70 handler runs to complete", 30000, 50)
    serve:kill("sigterm")
    assert.are.equal(0, (serve:wait()))
    local n, handled = distinct(dir .. "/handled")
    assert.are.equal(70, n)
    for _, r in ipairs(handler_runs()) do assert.is_true(handled[r.id:match("@(%x+)$")], r.id) end
  end)

  it("keeps the writer lock and control socket in one state dir per URL, which any working directory finds", function()
    local url, dir = database(), H.tmpdir()
    local runtime = H.tmpdir()
    local env = {}
    for k, v in pairs(uv.os_environ()) do
      if k ~= "SLUICE_STATE_DIR" and k ~= "SLUICE_STORE" then env[#env + 1] = k .. "=" .. v end
    end
    env[#env + 1] = "XDG_RUNTIME_DIR=" .. runtime
    env[#env + 1] = "SLUICE_STORE=" .. url
    os.execute("mkdir -p '" .. dir .. "/p' '" .. dir .. "/elsewhere'")
    local f = H.write(dir .. "/p/one.lua", 'pipeline("one", function() return step("s", function() return 1 end) end)')
    -- no serve yet (its state dir does not exist): said as such
    local rc, _, rerr = H.sluice({ "reload" }, { env = env })
    assert.are.equal(2, rc, rerr)
    assert.matches("no sluice serve owns .*: nothing to reload", rerr)
    local serve = H.spawn({ "serve", dir .. "/p", "--no-http" }, { env = env })
    local key = require("sluice._ids").hash(url)
    local sock = runtime .. "/sluice/" .. key .. "/control.sock"
    H.wait_until(function() return uv.fs_stat(sock) ~= nil end, sock, 30000, 20)
    -- from another directory, without --state-dir: handed to that serve
    local code, out, err = H.sluice({ "run", f }, { env = env, cwd = dir .. "/elsewhere", bin = uv.fs_realpath(H.bin) })
    assert.are.equal(0, code, err)
    assert.are.equal("1\n", out)
    assert.matches("is served by sluice serve %(pid " .. serve.pid .. "%): run %S+ handed to it", err)
    -- a second serve on the same state dir is refused
    local c2, _, e2 = H.sluice({ "serve", dir .. "/p", "--no-http" }, { env = env })
    assert.are.equal(2, c2)
    assert.matches("one process writes a store at a time", e2)
    serve:kill("sigterm")
    assert.are.equal(0, (serve:wait()))
    -- an LMDB store has its own: --state-dir is refused there
    code, _, err = H.sluice({ "runs", "--store", dir .. "/lmdb", "--state-dir", dir .. "/s" })
    assert.are.equal(2, code)
    assert.matches("%-%-state%-dir is for a PostgreSQL store", err)
  end)
end)
