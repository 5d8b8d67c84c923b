-- helper.lua: what the specs share. Specs run inside the sluice host
-- (busted --lua=sluice), so a test may wait on the loop: spawn a real
-- sluice process, await a condition with a bounded timeout, kill -9.
local uv = require "luv"
local sched = require "sluice.sched"

local H = {}

H.bin = os.getenv("SLUICE_BIN") or "./build/sluice"
H.root = os.getenv("SLUICE_ROOT") or "."

local tmpdirs = {}

--- A fresh directory under /tmp, removed when the process exits.
function H.tmpdir()
  local p = assert(io.popen("mktemp -d /tmp/sluice-test.XXXXXX"))
  local dir = p:read("l")
  p:close()
  tmpdirs[#tmpdirs + 1] = dir
  return dir
end

local spawned = {} -- processes a spec started, killed at the end if still alive

function H.cleanup()
  for _, p in ipairs(spawned) do
    if not p.exited then uv.kill(p.pid, "sigkill") end
  end
  spawned = {}
  if H.drop_databases then H.drop_databases() end
  for _, d in ipairs(tmpdirs) do os.execute("rm -rf '" .. d .. "'") end
  tmpdirs = {}
end

-- busted ends with os.exit(code, true), which closes the Lua state: the
-- temp dirs go then
H._sentinel = setmetatable({}, { __gc = function() H.cleanup() end })

function H.write(path, text)
  local f = assert(io.open(path, "wb"))
  f:write(text)
  f:close()
  return path
end

function H.read(path)
  local f = io.open(path, "rb")
  if not f then return nil end
  local s = f:read("a")
  f:close()
  return s
end

function H.lines(path)
  local s = H.read(path) or ""
  local out = {}
  for l in s:gmatch("[^\n]+") do out[#out + 1] = l end
  return out
end

--- The messages of sluice's log lines in text (stderr of a serve): a
--- logfmt line `time=... level=... msg="..." k=v` becomes its msg, then its
--- fields; other lines stay as they are. For patterns anchored at a line's
--- end.
function H.messages(text)
  return (text:gsub("[^\n]+", function(line)
    local rest = line:match("^time=%S+ level=%a+ (.*)$")
    if not rest then return line end
    rest = rest:gsub("^run=%S+ ", ""):gsub("^pipeline=%S+ ", ""):gsub("^step=%S+ ", "")
    local quoted, after = rest:match('^msg="(.-[^\\])"(.*)$')
    if not quoted then quoted, after = rest:match('^msg=""()(.*)$') and "", rest:sub(7) end
    if not quoted then quoted, after = rest:match("^msg=(%S*)(.*)$") end
    if not quoted then return line end
    quoted = quoted:gsub("\\(.)", { n = "\n", t = "\t", r = "\r", ['"'] = '"', ["\\"] = "\\" })
    return quoted .. (after or "")
  end))
end

--- Waits ms on a loop timer (yields the test's coroutine).
function H.sleep(ms)
  local co = coroutine.running()
  local t = uv.new_timer()
  t:start(ms, 0, function()
    t:close()
    coroutine.resume(co)
  end)
  coroutine.yield()
end

--- Waits until pred() is true, checking every `every` ms, for at most
--- timeout_ms; fails the test naming `what` (or what() says) otherwise.
function H.wait_until(pred, what, timeout_ms, every)
  local deadline = uv.hrtime() + (timeout_ms or 10000) * 1e6
  while not pred() do
    if uv.hrtime() > deadline then
      if type(what) == "function" then what = what() end
      error(("timed out after %d ms waiting for %s"):format(timeout_ms or 10000, what), 2)
    end
    H.sleep(every or 5)
  end
end

--- Starts `sluice ARGS...` with stdout and stderr captured. Returns a
--- process object: p.pid, p:kill(sig), p:wait() -> code, signal, stdout, stderr.
function H.spawn(args, opts)
  opts = opts or {}
  local stdout, stderr = uv.new_pipe(false), uv.new_pipe(false)
  local proc = { out = {}, err = {}, done = false }
  local env = opts.env
  args, env = H._on_backend(args, env)
  local handle, pid = uv.spawn(opts.bin or H.bin, {
    args = args, stdio = { nil, stdout, stderr }, cwd = opts.cwd, env = env,
  }, function(code, signal)
    proc.code, proc.signal = code, signal
    proc.exited = true
  end)
  assert(handle, pid)
  proc.handle, proc.pid = handle, pid
  spawned[#spawned + 1] = proc
  local open = 2
  local function reader(buf)
    return function(err, data)
      assert(not err, err)
      if data then buf[#buf + 1] = data else open = open - 1 end
    end
  end
  stdout:read_start(reader(proc.out))
  stderr:read_start(reader(proc.err))
  function proc:kill(sig)
    if not self.exited then uv.process_kill(self.handle, sig or "sigkill") end
  end
  function proc:wait(timeout_ms)
    H.wait_until(function() return self.exited and open == 0 end,
      "sluice " .. table.concat(args, " ") .. " to exit", timeout_ms or 60000, 2)
    if not self.handle:is_closing() then self.handle:close() end
    if not stdout:is_closing() then stdout:close() end
    if not stderr:is_closing() then stderr:close() end
    return self.code, self.signal, table.concat(self.out), table.concat(self.err)
  end
  return proc
end

--- Runs `sluice ARGS...` to the end: code, stdout, stderr.
function H.sluice(args, opts)
  local p = H.spawn(args, opts)
  local code, _, out, err = p:wait(opts and opts.timeout)
  return code, out, err
end

---------------------------------------------------------------------------
-- the backend: every spec runs on LMDB, and once more on PostgreSQL (ctest
-- label pgsuite: SLUICE_TEST_BACKEND=postgres). There a store a spec names by
-- a directory is a fresh database of the suite's one server (started by the
-- pgsuite_start fixture, SLUICE_TEST_PG_DIR; else this spec starts its own),
-- copied from a template that `sluice store migrate` prepared, and the
-- directory is that store's state dir (writer lock, control socket), so a
-- spec's checks of those still hold.

H.backend = os.getenv("SLUICE_TEST_BACKEND") == "postgres" and "postgres" or "lmdb"

local pg_server -- {url = of its postgres database, template = name | nil, inst = pg_helper's}
local pg_stores, pg_dbs = {}, {} -- store path -> URL; the databases this process made
local pg_admin -- a connection to the server's postgres database

local function url_of(db) return (pg_server.url:gsub("^postgresql:///[^?]*", "postgresql:///" .. db)) end

local function server()
  if pg_server then return pg_server end
  local dir = os.getenv("SLUICE_TEST_PG_DIR")
  if dir then
    local f = assert(io.open(dir .. "/url"), "no " .. dir .. "/url: did the pgsuite_start fixture run?")
    pg_server = { url = f:read("l"), template = "sluice_template" }
    f:close()
  else
    local inst = require("pg_helper").start()
    pg_server = { url = inst.url, inst = inst }
    H.pg_instance = inst
  end
  return pg_server
end

-- A fresh database with the schema migrated: its URL. Yields (a task, or
-- the spec's own coroutine).
local function new_database()
  local srv = server()
  local pg = require "sluice._pg"
  pg_admin = pg_admin or assert(pg.connect(srv.url))
  local name = ("t%d_%d"):format(uv.os_getpid(), #pg_dbs + 1)
  if srv.template then
    assert(pg_admin:exec(('CREATE DATABASE "%s" TEMPLATE "%s" STRATEGY FILE_COPY'):format(name, srv.template)))
  else
    assert(pg_admin:exec(('CREATE DATABASE "%s"'):format(name)))
  end
  pg_dbs[#pg_dbs + 1] = name
  local url = url_of(name)
  if not srv.template then
    local c = assert(pg.connect(url))
    assert(require("sluice.pg_schema").migrate(c))
    c:close()
  end
  return url
end

--- The URL of a fresh database with the schema migrated, on the suite's
--- server (or this spec's own), whatever H.backend is.
H.pg_database = new_database

--- What to give store.open (or --store) for the store at path (a fresh
--- temporary directory if nil) on H.backend: the path, or on PostgreSQL the
--- URL of the database that stands for it (made and migrated on the first
--- call for path). Inside a task or a spec's body (it may wait for the server).
function H.store_target(path)
  path = path or H.tmpdir()
  if H.backend ~= "postgres" then return path end
  if not pg_stores[path] then
    local url = new_database()
    pg_stores[path], pg_stores[url] = url, path
  end
  return pg_stores[path]
end

--- The directory of store target's writer lock and control socket (what
--- sluice.state_dir gives sluice): an LMDB store's own; on PostgreSQL the
--- directory the URL stands for (H.store_target).
function H.state_dir(target)
  if H.backend ~= "postgres" then return target end
  return assert(pg_stores[target], "not a store of H.store_target")
end

local function is_url(s) return type(s) == "string" and s:find("^postgres") ~= nil end

-- On PostgreSQL: args and env of a spawn with each --store DIR and
-- SLUICE_STORE=DIR turned into the database that stands for DIR, with DIR
-- as --state-dir / SLUICE_STATE_DIR (unless the spec gives one).
local function on_backend(args, env)
  if H.backend ~= "postgres" then return args, env end
  local out, state, given = {}, nil, false
  local i = 1
  while i <= #args do
    local a = args[i]
    local v = a == "--store" and args[i + 1] or a:match("^%-%-store=(.*)$")
    if a == "--state-dir" or a:find("^%-%-state%-dir=") then given = true end
    if v and not is_url(v) then
      out[#out + 1] = "--store"
      out[#out + 1] = H.store_target(v)
      state = v
      i = i + (a == "--store" and 2 or 1)
    else
      out[#out + 1] = a
      i = i + 1
    end
  end
  if state and not given then
    out[#out + 1] = "--state-dir"
    out[#out + 1] = state
  end
  if env then
    local e, dir, has_state = {}, nil, false
    for j, kv in ipairs(env) do
      local v = kv:match("^SLUICE_STORE=(.*)$")
      if v and not is_url(v) then
        e[j], dir = "SLUICE_STORE=" .. H.store_target(v), v
      else
        e[j] = kv
      end
      has_state = has_state or kv:find("^SLUICE_STATE_DIR=") ~= nil
    end
    if dir and not has_state then e[#e + 1] = "SLUICE_STATE_DIR=" .. dir end
    env = e
  end
  return out, env
end
H._on_backend = on_backend

--- `it`, or on PostgreSQL a pending test naming why it is about LMDB
--- itself (raw records, file corruption, the store directory's layout).
function H.lmdb_it(reason)
  local busted = require "busted" -- the spec's it and pending (not globals)
  if H.backend ~= "postgres" then return busted.it end
  return function(name) busted.pending(("%s [LMDB only: %s]"):format(name, reason)) end
end

-- the databases of this spec go when it exits (blocking is fine then)
function H.drop_databases()
  if #pg_dbs == 0 or not pg_server then return end
  local psql = (os.getenv("SLUICE_PG_BIN") or "/usr/lib/postgresql/15/bin") .. "/psql"
  local sql = {}
  for i, name in ipairs(pg_dbs) do sql[i] = ('DROP DATABASE IF EXISTS "%s" WITH (FORCE);'):format(name) end
  os.execute(("'%s' -q -X '%s' -c '%s' >/dev/null 2>&1"):format(psql, pg_server.url, table.concat(sql, " ")))
  pg_dbs = {}
end

--- Runs fn inside a fresh task and waits for it (in-host specs).
function H.task(fn, ...)
  local ok, res = sched.go({}, fn, ...):await()
  if not ok then error(res, 0) end
  return res
end

return H
