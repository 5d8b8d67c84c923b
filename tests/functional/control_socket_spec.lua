-- control_socket_spec.lua: the store's control socket between real
-- processes: sluice run handing its run to serve, serve killed (-9) or
-- stopped (SIGTERM) or reloaded (SIGHUP) while a client waits, serve and run started
-- together in both orders, cancel of a foreground sluice run and through
-- serve, a stale socket, the socket's owner-only mode, runs whose host was
-- killed, and sluice trigger.
local H = require "helper"
local json = require "sluice.json"
local lock = require "sluice._lock"
local uv = require "luv"

local function err_of(p) return H.messages(table.concat(p.err)) end
local function log_has(p, pattern) return err_of(p):find(pattern) ~= nil end
local function ms_since(t0) return (uv.hrtime() - t0) / 1e6 end

describe("the control socket", function()
  local dir, store, gate, marks
  before_each(function()
    dir = H.tmpdir()
    store = dir .. "/store"
    gate = dir .. "/gate"
    marks = dir .. "/marks"
    os.execute("mkdir -p '" .. dir .. "/p'")
  end)

  -- pipeline `name`: step "before", then step "gate" which notes its start
  -- in marks and waits (a luv timer, yielding) until the gate file exists
  local function gated(file, name)
    return H.write(dir .. "/p/" .. file, ([[
local uv = require "luv"
pipeline(%q, function(input)
  step("before", function() return 1 end)
  local v = step("gate", function()
    local f = io.open(%q, "a"); f:write(ctx().run_id, "\n"); f:close()
    local co = coroutine.running()
    local t = uv.new_timer()
    t:start(5, 5, function()
      local g = io.open(%q)
      if g then g:close(); t:close(); coroutine.resume(co) end
    end)
    coroutine.yield()
    return "opened"
  end)
  return { v = v, n = 42, input = input }
end)
]]):format(name, marks, gate))
  end

  local function status(id)
    local code, out = H.sluice({ "status", id, "--json", "--store", store })
    return code == 0 and json.decode(out) or nil
  end

  local function serve(args)
    local p = H.spawn({ "serve", dir .. "/p", "--store", store, table.unpack(args or {}) })
    H.wait_until(function() return log_has(p, "schedules armed") end, "serve to start", 15000, 10)
    return p
  end

  -- who holds the store's writer lock (nil before the store exists)
  local function holder()
    local ok, role, pid = pcall(lock.holder, store .. "/writer.lock")
    if ok then return role, pid end
  end

  it("hands a run to serve and prints its result; a second hand-off of the same id joins it", function()
    local f = gated("g.lua", "g")
    local s = serve()
    local c1 = H.spawn({ "run", f, "--id", "h1", "--input", '{"big": 9007199254740993}', "--store", store })
    H.wait_until(function() return #H.lines(marks) >= 1 end, "the step to start in serve", 10000, 5)
    assert.is_true(log_has(s, "run h1 pipeline=g started"))
    -- the same id handed again while it runs: joined, not started twice
    local c2 = H.spawn({ "run", f, "--id", "h1", "--store", store })
    H.wait_until(function() return err_of(c2):find("handed to it") end, "the second hand-off", 10000, 5)
    H.write(gate, "open")
    local code, _, out, err = c1:wait()
    assert.are.equal(0, code, err)
    assert.matches("served by sluice serve %(pid " .. s.pid .. "%): run h1 handed to it", err)
    local doc = json.decode(out)
    assert.are.equal("opened", doc.v)
    assert.are.equal(9007199254740993, doc.input.big) -- integers survive the socket exactly
    local code2, _, out2 = c2:wait()
    assert.are.equal(0, code2)
    assert.are.equal(out, out2)
    assert.are.equal(1, #H.lines(marks))
    s:kill("sigterm")
    assert.are.equal(0, (s:wait()))
    -- serve removed its socket on the way out
    assert.is_nil(uv.fs_stat(store .. "/control.sock"))
  end)

  it("a client whose serve is killed with -9 says so at once and exits 1", function()
    local f = gated("g.lua", "g")
    local s = serve()
    local c = H.spawn({ "run", f, "--id", "k1", "--store", store })
    H.wait_until(function() return #H.lines(marks) >= 1 end, "the step to start in serve", 10000, 5)
    local t0 = uv.hrtime()
    s:kill("sigkill")
    s:wait()
    local code, _, out, err = c:wait(10000)
    assert.is_true(ms_since(t0) < 3000, ("the client took %.0f ms to notice"):format(ms_since(t0)))
    assert.are.equal(1, code)
    assert.are.equal("", out)
    assert.matches("serve stopped; run k1 is unfinished and resumes when a serve or 'sluice run %-%-id k1' picks it up", err)
    -- the run's host is gone: readers say so
    local code2, listing = H.sluice({ "runs", "--store", store })
    assert.are.equal(0, code2)
    assert.matches("k1%s+g%s+running %(no live host: resumes at next start%)", listing)
    local _, st = H.sluice({ "status", "k1", "--store", store })
    assert.matches("status%s+running %(no live host: resumes at next start%)", st)
    assert.is_false(status("k1").host_alive)
    -- and it does resume: the next serve finishes it
    H.write(gate, "open")
    local s2 = serve()
    H.wait_until(function() return log_has(s2, "run k1 pipeline=g completed") end, "k1 to complete", 10000, 10)
    s2:kill("sigterm")
    s2:wait()
    assert.are.equal("completed", status("k1").status)
  end)

  it("a client whose serve stops cleanly (SIGTERM) takes the run over and finishes it", function()
    local f = gated("g.lua", "g")
    local s = serve({ "--grace", "200ms" })
    local c = H.spawn({ "run", f, "--id", "t1", "--store", store })
    H.wait_until(function() return #H.lines(marks) >= 1 end, "the step to start in serve", 10000, 5)
    s:kill("sigterm")
    assert.are.equal(0, (s:wait()))
    -- the step was cut off after the grace; the client runs it again here
    H.wait_until(function() return #H.lines(marks) >= 2 end, "the client to resume the run", 15000, 5)
    assert.matches("serve stopped %(SIGTERM%); run t1 goes on here", err_of(c))
    -- it listens now: the holder is the client, a run
    local role, pid = holder()
    assert.are.equal("run", role)
    assert.are.equal(c.pid, pid)
    H.write(gate, "open")
    local code, _, out, err = c:wait()
    assert.are.equal(0, code, err)
    assert.are.equal("opened", json.decode(out).v)
    local doc = status("t1")
    assert.are.equal("completed", doc.status)
    assert.are.equal(c.pid, doc.host.pid)
  end)

  it("SIGHUP reloads instead of stopping: a run in flight finishes, serve keeps serving", function()
    local f = gated("g.lua", "g")
    local s = serve({ "--grace", "5s" })
    local c = H.spawn({ "run", f, "--id", "u1", "--store", store })
    H.wait_until(function() return #H.lines(marks) >= 1 end, "the step to start in serve", 10000, 5)
    s:kill("sighup")
    H.wait_until(function() return log_has(s, "reload [^\n]*g%.lua [^\n]* in [%d.]+ms: no definition changed\n") end,
      "the reload", 5000, 5)
    H.write(gate, "open")
    local code, _, out, err = c:wait()
    assert.are.equal(0, code, err)
    assert.are.equal("opened", json.decode(out).v)
    assert.are.equal(1, #H.lines(marks))
    assert.is_false(log_has(s, "no new steps start"))
    s:kill("sigterm")
    assert.are.equal(0, (s:wait()))
  end)

  it("serve started while a sluice run holds the store waits for it, then serves", function()
    local f = gated("g.lua", "g")
    local r = H.spawn({ "run", f, "--id", "first", "--store", store })
    H.wait_until(function() return #H.lines(marks) >= 1 end, "the run to start", 10000, 5)
    local s = H.spawn({ "serve", dir .. "/p", "--store", store })
    H.wait_until(function() return log_has(s, "waiting up to 30s for sluice run %(pid " .. r.pid .. "%) to finish") end,
      "serve to wait for the run", 10000, 5)
    -- the serve waiting keeps a second serve out, naming itself
    local code, _, err = H.sluice({ "serve", dir .. "/p", "--store", store })
    assert.are.equal(2, code)
    assert.matches("held by another sluice process %(sluice serve, pid " .. s.pid .. "%)", err)
    H.write(gate, "open")
    local rc, _, out, rerr = r:wait()
    assert.are.equal(0, rc, rerr)
    assert.are.equal("opened", json.decode(out).v)
    H.wait_until(function() return log_has(s, "schedules armed") end, "serve to start after the run", 10000, 10)
    local c2, out2, err2 = H.sluice({ "run", f, "--id", "second", "--store", store })
    assert.are.equal(0, c2, err2)
    assert.matches("handed to it", err2)
    assert.are.equal("opened", json.decode(out2).v)
    s:kill("sigterm")
    assert.are.equal(0, (s:wait()))
  end)

  it("sluice run started while serve loads its files hands the run to it once it listens", function()
    H.write(dir .. "/p/quick.lua", 'pipeline("quick", function(input) return step("x", function() return input.n * 2 end) end)')
    -- a file that takes a second to load: serve holds the lock, not yet listening
    H.write(dir .. "/p/slow.lua", "local t = os.clock(); while os.clock() - t < 1 do end")
    local s = H.spawn({ "serve", dir .. "/p", "--store", store })
    H.wait_until(function() return holder() == "serve" end, "serve to take the lock", 10000, 2)
    assert.is_false(log_has(s, "serving"))
    local code, out, err = H.sluice({ "run", dir .. "/p/quick.lua", "--input", '{"n": 21}', "--store", store })
    assert.are.equal(0, code, err)
    assert.are.equal("42\n", out)
    assert.matches("handed to it", err)
    s:kill("sigterm")
    assert.are.equal(0, (s:wait()))
  end)

  it("serve and run started at the same moment, in both orders, never refuse or name 'pid ?'", function()
    H.write(dir .. "/p/quick.lua", 'pipeline("quick", function() return step("x", function() return 7 end) end)')
    for i = 1, 6 do
      local st = store .. i
      local procs = {}
      local run_args = { "run", dir .. "/p/quick.lua", "--store", st }
      local serve_args = { "serve", dir .. "/p", "--store", st }
      if i % 2 == 0 then
        procs.serve = H.spawn(serve_args)
        procs.run = H.spawn(run_args)
      else
        procs.run = H.spawn(run_args)
        procs.serve = H.spawn(serve_args)
      end
      local code, _, out, err = procs.run:wait()
      assert.are.equal(0, code, err)
      assert.are.equal("7\n", out)
      H.wait_until(function() return log_has(procs.serve, "schedules armed") end,
        function() return "serve to start: " .. err_of(procs.serve) end, 15000, 10)
      procs.serve:kill("sigterm")
      assert.are.equal(0, (procs.serve:wait()))
      for _, text in ipairs({ err, err_of(procs.serve) }) do
        assert.is_nil(text:find("pid ?", 1, true), text)
        assert.is_nil(text:find("held by another", 1, true), text)
      end
    end
  end)

  it("cancels a run executing in a foreground sluice run", function()
    local f = gated("g.lua", "g")
    local r = H.spawn({ "run", f, "--id", "fg", "--store", store })
    H.wait_until(function() return #H.lines(marks) >= 1 end, "the run to start", 10000, 5)
    -- the step waits on a timer: it finishes when the gate opens, the run stops there
    local c = H.spawn({ "cancel", "fg", "--store", store })
    H.wait_until(function() return err_of(c):find("cancel of fg registered by sluice run %(pid " .. r.pid .. "%)") end,
      "the cancel to be registered", 10000, 5)
    H.write(gate, "open")
    local code, _, out, err = c:wait()
    assert.are.equal(0, code, err)
    assert.are.equal("cancelled fg\n", out)
    local rc, _, _, rerr = r:wait()
    assert.are.equal(1, rc)
    assert.matches("run fg of pipeline 'g' was cancelled", rerr)
    assert.are.equal("cancelled", status("fg").status)
  end)

  it("cancel through serve reports success promptly", function()
    H.write(dir .. "/p/many.lua", [[
local uv = require "luv"
pipeline("many", function()
  for i = 1, 500 do
    step("s" .. i, function()
      local co = coroutine.running()
      local t = uv.new_timer()
      t:start(20, 0, function() t:close(); coroutine.resume(co) end)
      coroutine.yield()
    end)
  end
  return "all"
end)
]])
    local s = serve()
    local c = H.spawn({ "run", dir .. "/p/many.lua", "--id", "m1", "--store", store })
    H.wait_until(function()
      local doc = status("m1")
      return doc and #doc.steps >= 3
    end, "the run to get going", 10000, 20)
    local t0 = uv.hrtime()
    local code, out, err = H.sluice({ "cancel", "m1", "--store", store })
    local ms = ms_since(t0)
    assert.are.equal(0, code, err)
    assert.are.equal("cancelled m1\n", out)
    assert.is_true(ms < 3000, ("cancel took %.0f ms"):format(ms))
    local rc, _, _, rerr = c:wait()
    assert.are.equal(1, rc)
    assert.matches("run m1 of pipeline 'many' was cancelled", rerr)
    -- an unknown run, and one that is over: said, exit 2
    code, _, err = H.sluice({ "cancel", "nope", "--store", store })
    assert.are.equal(2, code)
    assert.matches("no run nope", err)
    code, _, err = H.sluice({ "cancel", "m1", "--store", store })
    assert.are.equal(2, code)
    assert.matches("run m1 is already cancelled", err)
    s:kill("sigterm")
    assert.are.equal(0, (s:wait()))
  end)

  it("replaces a stale socket left by a killed process", function()
    local f = gated("g.lua", "g")
    local r = H.spawn({ "run", f, "--id", "st1", "--store", store })
    H.wait_until(function() return #H.lines(marks) >= 1 end, "the run to start", 10000, 5)
    local before = uv.fs_stat(store .. "/control.sock")
    assert.are.equal("socket", before.type)
    r:kill("sigkill")
    r:wait()
    -- left behind, nobody listens: a client sees the lock free and goes on
    assert.is_not_nil(uv.fs_stat(store .. "/control.sock"))
    local conn, _, code = require("sluice._control").connect(store)
    assert.is_nil(conn)
    assert.are.equal("ECONNREFUSED", code)
    local _, listing = H.sluice({ "runs", "--store", store })
    assert.matches("st1%s+g%s+running %(no live host: resumes at next start%)", listing)
    local s = serve()
    local after = uv.fs_stat(store .. "/control.sock")
    assert.are.equal("socket", after.type)
    assert.are_not.equal(before.ino, after.ino)
    -- serve resumed st1; a hand-off of it joins that execution
    H.wait_until(function() return #H.lines(marks) >= 2 end, "serve to resume st1", 10000, 5)
    H.write(gate, "open")
    local rc, out, err = H.sluice({ "run", f, "--id", "st1", "--store", store })
    assert.are.equal(0, rc, err)
    assert.are.equal("opened", json.decode(out).v)
    s:kill("sigterm")
    assert.are.equal(0, (s:wait()))
  end)

  it("is mode 0600 and refuses a client of another user", function()
    if uv.getuid() ~= 0 then
      pending("needs root to run a client as another user (setpriv)")
      return
    end
    local f = gated("g.lua", "g")
    local r = H.spawn({ "run", f, "--id", "own", "--store", store })
    H.wait_until(function() return #H.lines(marks) >= 1 end, "the run to start", 10000, 5)
    local st = uv.fs_stat(store .. "/control.sock")
    assert.are.equal("socket", st.type)
    assert.are.equal(tonumber("600", 8), st.mode & tonumber("777", 8))
    -- even with the file opened up, the host checks the peer's uid
    local peer = H.write(dir .. "/peer.lua", [[
local sock = require "sluice._control"
local conn, err, code = sock.connect(...)
if not conn then io.write("connect failed: ", code, "\n") os.exit(3) end
conn:read_start(function(frame, msg, c) io.write(frame or ("end " .. tostring(c)), "\n") if frame then conn:close() end end)
]])
    os.execute(("chmod 755 '%s' '%s'; chmod 666 '%s/control.sock'"):format(dir, store, store))
    local code, out, err = H.sluice({ "--reuid=65534", "--regid=65534", "--clear-groups", H.bin, peer, store },
      { bin = "/usr/bin/setpriv" })
    assert.are.equal(0, code, err)
    assert.matches('"code":"EPERM"', out)
    assert.matches("this control socket is for uid 0 only; the connection came from uid 65534", out)
    H.write(gate, "open")
    local rc = r:wait()
    assert.are.equal(0, rc)
  end)

  it("trigger starts a schedule's run now, in serve", function()
    H.write(dir .. "/p/sched.lua", [[
local p = pipeline("report", function(input) return step("r", function() return { day = input.day } end) end)
every.day.at("2am")(p, { day = "scheduled" }, { name = "nightly" })
]])
    -- no serve: said, exit 2
    local code, _, err = H.sluice({ "trigger", "nightly", "--store", store })
    assert.are.equal(2, code)
    local s = serve()
    code, _, err = H.sluice({ "trigger", "nightly", "--store", store })
    assert.are.equal(0, code, err)
    local code2, out2, err2 = H.sluice({ "trigger", "nightly", "--wait", "--store", store })
    assert.are.equal(0, code2, err2)
    assert.are.equal('{"day":"scheduled"}\n', out2)
    local id = err2:match("run (nightly@manual%-%S+),")
    assert.matches("^nightly@manual%-%d%d%d%d%-%d%d%-%d%dT%d%d:%d%d:%d%d%.%d%d%dZ", id)
    local code3, out3, err3 = H.sluice({ "trigger", "nightly", "--wait", "--input", '{"day": "manual"}', "--store", store })
    assert.are.equal(0, code3, err3)
    assert.are.equal('{"day":"manual"}\n', out3)
    local code4, _, err4 = H.sluice({ "trigger", "weekly", "--store", store })
    assert.are.equal(2, code4)
    assert.matches("no schedule 'weekly' in this serve %(it serves .-%); its schedules: nightly", err4)
    s:kill("sigterm")
    assert.are.equal(0, (s:wait()))
    -- the trigger without --wait printed its run id; that run completed too
    local _, listing = H.sluice({ "runs", "--json", "--store", store })
    local n = 0
    for _, r in ipairs(json.decode(listing).runs) do
      if r.id:find("^nightly@manual%-") then
        n = n + 1
        assert.are.equal("completed", r.status)
      end
    end
    assert.are.equal(3, n)
  end)
end)
