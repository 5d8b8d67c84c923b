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

--- Runs fn inside a fresh task and waits for it (in-host specs).
--- The backend the store specs run on: "lmdb", or "postgres" when ctest
--- runs them once more under the label postgres (SLUICE_TEST_BACKEND).
H.backend = os.getenv("SLUICE_TEST_BACKEND") == "postgres" and "postgres" or "lmdb"

--- What to give store.open for a fresh store of H.backend: a temporary
--- directory, or the URL of a throwaway PostgreSQL (tests/pg_helper.lua)
--- with the schema migrated. Call it inside H.task (PostgreSQL starts as a
--- child process, without blocking the loop).
function H.store_target()
  if H.backend ~= "postgres" then return H.tmpdir() end
  local P = require "pg_helper"
  local inst = P.start()
  H.pg_instance = inst
  local pg = require "sluice._pg"
  local c = assert(pg.connect(inst.url))
  assert(require("sluice.pg_schema").migrate(c))
  c:close()
  return inst.url
end

function H.task(fn, ...)
  local ok, res = sched.go({}, fn, ...):await()
  if not ok then error(res, 0) end
  return res
end

return H
