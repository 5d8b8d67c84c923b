-- pg_helper.lua: a throwaway PostgreSQL 15 for the specs that need one
-- (ctest label `postgres`), through tests/pg/pg_instance.sh: its own
-- directory under /tmp, a Unix socket there, no TCP port. The script runs as
-- a child process, so the loop (and the spec's timers) go on while
-- PostgreSQL starts or restarts. Every server started is stopped when the
-- spec ends, even when it fails.
local uv = require "luv"
local H = require "helper"

local P = {}

P.script = H.root .. "/tests/pg/pg_instance.sh"

--- Runs the script with args without blocking the loop: code, stdout, stderr.
function P.run(args, timeout_ms)
  local p = H.spawn(args, { bin = P.script })
  local code, _, out, err = p:wait(timeout_ms or 120000)
  return code, out, err
end

local live = {} -- dir -> true while its server may be running

-- busted closes the Lua state at the end: stop what is still running then
-- (blocking is fine at that point)
P._sentinel = setmetatable({}, { __gc = function()
  for dir in pairs(live) do os.execute(("'%s' stop '%s' >/dev/null 2>&1"):format(P.script, dir)) end
end })

--- Starts a fresh server. Returns an instance: inst.url (database postgres),
--- inst:restart() (-m immediate: a crash), inst:pause() and inst:start()
--- (down, then up again), inst:stop() (for good), inst:database(name)
--- (a new empty database, its URL). Fails the spec, saying what to install,
--- without PostgreSQL 15.
function P.start()
  local f = assert(io.popen("mktemp -d /tmp/sluice-pg.XXXXXX"))
  local dir = f:read("l")
  f:close()
  live[dir] = true
  local code, out, err = P.run({ "start", dir })
  if code ~= 0 then
    error(("cannot start a PostgreSQL 15 for the tests (%s start %s, exit %s): %s"):format(
      P.script, dir, tostring(code), err), 2)
  end
  local inst = { dir = dir, url = out:match("[^\n]+") }
  function inst:restart()
    local c, _, e = P.run({ "restart", self.dir })
    assert(c == 0, "pg_ctl restart failed: " .. e)
  end
  function inst:pause() -- down until start()
    local c, _, e = P.run({ "pause", self.dir })
    assert(c == 0, "pg_ctl stop failed: " .. e)
  end
  function inst:start()
    local c, _, e = P.run({ "start", self.dir })
    assert(c == 0, "pg_ctl start failed: " .. e)
  end
  function inst:stop()
    P.run({ "stop", self.dir })
    live[self.dir] = nil
  end
  function inst:database(name)
    local pg = require "sluice._pg"
    local c = assert(pg.connect(self.url))
    assert(c:exec(('DROP DATABASE IF EXISTS "%s"'):format(name)))
    assert(c:exec(('CREATE DATABASE "%s"'):format(name)))
    c:close()
    return (self.url:gsub("^postgresql:///[^?]*", "postgresql:///" .. name))
  end
  return inst
end

--- Several `sluice serve` hosts on the PostgreSQL store url, serving the
--- pipelines in dir/pipes. set:serve(i, lease) starts host i (state dir
--- dir/state<i>, HTTP on 127.0.0.1:0, --lease lease or 2s, --grace 1s)
--- and waits until it listens and is registered; the process gets .url,
--- .host_id, .state and :log() (its stderr so far). set.list: the hosts
--- started. set:kill_all() SIGKILLs each (SIGCONT first: one may be
--- stopped) and waits for it: for an after_each.
function P.hosts(dir, url)
  local set = { list = {} }
  function set:serve(i, lease)
    local state = dir .. "/state" .. i
    local p = H.spawn({ "serve", dir .. "/pipes", "--store", url, "--state-dir", state,
      "--listen", "127.0.0.1:0", "--lease", lease or "2s", "--grace", "1s" })
    self.list[#self.list + 1] = p
    H.wait_until(function()
      local t = table.concat(p.err)
      return p.exited or (t:find("listening on http://") and t:find("host %S+: lease"))
    end, "serve " .. i .. " to start", 30000)
    local t = table.concat(p.err)
    assert(not p.exited, "serve exited: " .. t)
    p.url = "http://" .. t:match("listening on http://([%d.]+:%d+)")
    p.host_id = t:match("host (%S+): lease")
    p.state = state
    function p:log() return table.concat(self.err) end
    return p
  end
  function set:kill_all()
    for _, h in ipairs(self.list) do
      h:kill("sigcont")
      h:kill("sigkill")
    end
    for _, h in ipairs(self.list) do h:wait(20000) end
    self.list = {}
  end
  return set
end

--- The per-test state of a serve-host spec, for its before_each: a fresh
--- database (from url_fn() if given, else H.pg_database()), a connection
--- to it (f.c), a temporary dir (f.dir) whose pipes/p.lua is the mark
--- prelude (f.log the file mark writes) followed by pipes_text, and the
--- set of serve hosts on them (f.hosts, P.hosts). f:close() kills the hosts
--- and closes the connection: for the after_each.
function P.fixture(pipes_text, url_fn)
  local url = url_fn and url_fn() or H.pg_database()
  local f = { url = url, c = assert(require("sluice._pg").connect(url)), dir = H.tmpdir() }
  f.log = f.dir .. "/exec.log"
  os.execute("mkdir -p " .. f.dir .. "/pipes")
  H.write(f.dir .. "/pipes/p.lua", P.mark_prelude(f.log) .. pipes_text)
  f.hosts = P.hosts(f.dir, url)
  function f:close()
    self.hosts:kill_all()
    self.c:close()
  end
  return f
end

--- The Lua text that pipeline files of the serve-host specs start with:
--- mark(what) appends "PID what" to the file log (P.executions reads it).
function P.mark_prelude(log)
  return ([[
local LOG = %q
local function mark(what)
  local f = assert(io.open(LOG, "a"))
  f:write(math.tointeger(require("luv").os_getpid()), " ", what, "\n")
  f:close()
end
]]):format(log)
end

--- The lines mark("RUN STEP") wrote to log, as {pid=, run=, step=}, in order.
function P.executions(log)
  local list = {}
  for pid, run, st in (H.read(log) or ""):gmatch("(%d+) (%S+) (%S+)\n") do
    list[#list + 1] = { pid = tonumber(pid), run = run, step = st }
  end
  return list
end

return P
