--- sluice.liveness: which process executes a run, and whether it still
--- lives. A run records its host ({pid=, start=}) when it starts; a reader
--- (sluice status, sluice runs) tells a live run from one whose process was
--- killed: the pid must exist and be the same process, which its start time
--- since boot (/proc/<pid>/stat) and the boot id tell apart from a later
--- process that got the same pid. On PostgreSQL, where a run may execute
--- on another machine, it is the run's host lease instead (M.run_alive).
local M = {}

local function read(path)
  local f = io.open(path)
  if not f then return nil end
  local s = f:read("a")
  f:close()
  return s
end

-- "<boot id>:<start time in clock ticks since boot>" of a live process, or
-- nil (no such process, a zombie, or no /proc)
local function start_token(pid)
  local stat = read(("/proc/%d/stat"):format(pid))
  -- the command name (field 2) may hold spaces and parentheses: the fields
  -- that matter follow its last ')'
  local rest = stat and stat:match("^.*%)%s+(.*)$")
  if not rest then return nil end
  local fields = {}
  for w in rest:gmatch("%S+") do fields[#fields + 1] = w end
  if fields[1] == "Z" or fields[1] == "X" then return nil end
  local boot = (read("/proc/sys/kernel/random/boot_id") or "?"):gsub("%s+$", "")
  return fields[20] and (boot .. ":" .. fields[20])
end

local me

--- This process as a run's host: {pid=, start=}.
function M.self()
  if not me then
    local pid = math.tointeger(require("luv").os_getpid())
    me = { pid = pid, start = start_token(pid) }
  end
  return me
end

--- true if the recorded host h still runs, false if it is gone, nil when
--- that cannot be told (no host recorded, no /proc).
function M.alive(h)
  local pid = type(h) == "table" and math.tointeger(h.pid)
  if not pid or type(h.start) ~= "string" then return nil end
  if not read("/proc/self/stat") then return nil end
  return start_token(pid) == h.start
end

-- On PostgreSQL a run executes where its lease is, maybe on another
-- machine, whose pids mean nothing here: whether that host lives is its
-- registration's expiry on the database server's clock (lua/hosts.lua).
-- run id -> {host=, alive=} | false (no lease), of the runs read so far.
local leases = {}

local function remote()
  local store = require "sluice._store"
  return store.remote()
end

--- Reads, in one query, who executes each of runs (a listing's) on a
--- PostgreSQL store, for run_alive; nothing on LMDB. Raises when the
--- store cannot say.
function M.prefetch(runs)
  if not remote() or #runs == 0 then return end
  local ids = {}
  for i, r in ipairs(runs) do ids[i] = r.id end
  local got, err = require("sluice._hosts").run_hosts(ids)
  if not got then error("reading which hosts execute the runs: " .. tostring(err), 0) end
  for _, id in ipairs(ids) do leases[id] = got[id] or false end
end

--- Whether the host executing run r lives: on PostgreSQL its lease (a run
--- nobody holds has no live host), elsewhere the process its record names
--- (M.alive). The id of the host holding it (PostgreSQL) comes second.
function M.run_alive(r)
  if not remote() then return M.alive(r.host) end
  if leases[r.id] == nil then M.prefetch({ r }) end
  local l = leases[r.id]
  if not l then return false end
  if l.alive ~= true then return false, l.host end
  -- a host on this machine that was killed is known dead before its lease
  -- expires: its process is gone
  if l.machine == require("luv").os_gethostname() and math.tointeger(l.pid) then
    local h = type(r.host) == "table" and math.tointeger(r.host.pid) == math.tointeger(l.pid) and r.host
      or { pid = math.tointeger(l.pid) }
    local here
    if h.start then
      here = M.alive(h)
    else
      here = read(("/proc/%d/stat"):format(h.pid)) ~= nil or not read("/proc/self/stat")
    end
    if here == false then return false, l.host end
  end
  return true, l.host
end

--- A run's status for people: "running (no live host: resumes at next
--- start)" when the process that ran it is gone.
function M.status_text(r)
  local s = r.status
  if (s == "running" or s == "sleeping" or s == "waiting" or s == "pending") and M.run_alive(r) == false then
    return s .. " (no live host: resumes at next start)"
  end
  return s
end

return M
