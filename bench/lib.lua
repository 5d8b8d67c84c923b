-- bench/lib.lua: what the Lua benchmark scripts share (steps.lua, stream.lua,
-- map.lua): arguments, shell and git, /proc readers, percentiles, running
-- tasks to the end, a fresh store. Loaded with dofile(here .. "/lib.lua").
local store = require "sluice._store"
local sched = require "sluice.sched"

local L = {}

--- Splits arg into positional arguments and `--name value` options for the
--- names in value_flags ({store = true, ...}).
function L.args(argv, value_flags)
  local pos, opts = {}, {}
  local i = 1
  while i <= #argv do
    local a = argv[i]
    local name = a:match("^%-%-(.+)$")
    if name and value_flags[name] then
      opts[name] = argv[i + 1]
      i = i + 2
    else
      pos[#pos + 1] = a
      i = i + 1
    end
  end
  return pos, opts
end

--- Output of a shell command, trailing white space removed (nil if it cannot run).
function L.sh(cmd)
  local p = io.popen(cmd .. " 2>/dev/null")
  if not p then return nil end
  local s = p:read("a")
  p:close()
  return (s:gsub("%s+$", ""))
end

--- The sluice commit measured: $SLUICE_GIT_REV, else git's short HEAD of
--- root, with "+dirty" when host/, lua/ or CMakeLists.txt have changes.
function L.git_rev(root)
  local r = os.getenv("SLUICE_GIT_REV")
  if r and r ~= "" then return r end
  r = L.sh("git -C '" .. root .. "' rev-parse --short HEAD") or "?"
  local dirty = L.sh("git -C '" .. root .. "' status --porcelain --untracked-files=no -- host lua CMakeLists.txt")
  if dirty and dirty ~= "" then r = r .. "+dirty" end
  return r
end

--- The "kB" fields of /proc/PID/status (default: this process).
function L.proc_status(pid)
  local f = io.open("/proc/" .. (pid or "self") .. "/status", "r")
  if not f then return {} end
  local t = {}
  for line in f:lines() do
    local k, v = line:match("^(%w+):%s+(%d+) kB")
    if k then t[k] = tonumber(v) end
  end
  f:close()
  return t
end

function L.pct(sorted, p)
  local n = #sorted
  if n == 0 then return nil end
  return sorted[math.min(n, math.max(1, math.ceil(p / 100 * n)))]
end

function L.r3(x) return x and math.floor(x * 1000 + 0.5) / 1000 end
function L.r1(x) return x and math.floor(x * 10 + 0.5) / 10 end

--- Summary of latencies in ms (sorts ms in place); nil for none.
function L.latency(ms)
  if #ms == 0 then return nil end
  table.sort(ms)
  local sum = 0
  for i = 1, #ms do sum = sum + ms[i] end
  return {
    n = #ms, mean_ms = L.r3(sum / #ms), p50_ms = L.r3(L.pct(ms, 50)), p90_ms = L.r3(L.pct(ms, 90)),
    p99_ms = L.r3(L.pct(ms, 99)), max_ms = L.r3(ms[#ms]),
  }
end

--- Runs the functions as concurrent tasks and waits for all of them;
--- raises the first error (with its traceback) after all have ended.
function L.run_tasks(list)
  local tasks = {}
  for i = 1, #list do tasks[i] = sched.go({}, list[i]) end
  local first
  for i = 1, #tasks do
    local ok, e = tasks[i]:await()
    if not ok and not first then first = e end
  end
  if first then
    error(type(first) == "table" and (first.traceback or first.message) or tostring(first), 0)
  end
end

--- A store for one benchmark: dir, or a new mktemp -d made by open() and
--- removed by close(). close() returns the size of data.mdb in kB.
function L.store(dir, name)
  local s = { dir = dir, own = false }
  function s.open()
    if not s.dir then
      s.dir = L.sh("mktemp -d " .. (os.getenv("TMPDIR") or "/tmp") .. "/sluice-" .. name .. ".XXXXXX")
      s.own = true
    end
    assert(store.open(s.dir))
  end
  function s.close()
    store.close()
    local kB
    local f = io.open(s.dir .. "/data.mdb", "rb")
    if f then
      kB = math.floor(f:seek("end") / 1024)
      f:close()
    end
    if s.own then os.execute("rm -rf '" .. s.dir .. "'") end
    return kB
  end
  return s
end

return L
