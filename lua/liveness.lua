--- sluice.liveness: which process executes a run, and whether it still
--- lives. A run records its host ({pid=, start=}) when it starts; a reader
--- (sluice status, sluice runs) tells a live run from one whose process was
--- killed: the pid must exist and be the same process, which its start time
--- since boot (/proc/<pid>/stat) and the boot id tell apart from a later
--- process that got the same pid.
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

--- A run's status for people: "running (no live host: resumes at next
--- start)" when the process that ran it is gone.
function M.status_text(r)
  local s = r.status
  if (s == "running" or s == "sleeping" or s == "waiting" or s == "pending") and M.alive(r.host) == false then
    return s .. " (no live host: resumes at next start)"
  end
  return s
end

return M
