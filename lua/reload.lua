--- sluice.reload: the pipeline directory of sluice serve, kept loaded.
--- Loads every file under it through the registry at start, then watches
--- it (sluice.watch): a changed or new file is loaded again (stage,
--- validate, swap: on any error its old version stays live), a deleted one
--- is unloaded (its runs' history stays). Each reload logs one line: the
--- file, its old and new source hash, what changed and how long it took.
--- Depends on: sluice.registry, sluice.watch, luv.
local registry = require "sluice.registry"
local watch = require "sluice.watch"
local uv = require "luv"

local M = {}

local function hidden(name) return name:sub(1, 1) == "." end

--- Every .lua file under dir, sorted, recursively; names starting with a
--- dot (editors' lock and swap files, .git) are skipped.
function M.lua_files(dir, out)
  out = out or {}
  local req, err = uv.fs_scandir(dir)
  if not req then return nil, err end
  local names = {}
  while true do
    local name, kind = uv.fs_scandir_next(req)
    if not name then break end
    if not hidden(name) then names[#names + 1] = { name, kind } end
  end
  table.sort(names, function(a, b) return a[1] < b[1] end)
  for _, e in ipairs(names) do
    local path = dir .. "/" .. e[1]
    if e[2] == "directory" then
      M.lua_files(path, out)
    elseif e[1]:match("%.lua$") then
      out[#out + 1] = path
    end
  end
  return out
end

local dir, log, watcher
local failed = {} -- path -> stat stamp of the version that failed to load

local function stamp(path)
  local st = uv.fs_stat(path)
  return st and ("%d.%d/%d"):format(st.mtime.sec, st.mtime.nsec, st.size)
end

local function first_line(s)
  return (tostring(s):gsub("\n.*", ""))
end

-- logs one result of registry.load_all (or an unload's diff) in one line;
-- returns what a reload request answers about it
local function report(r)
  local d = r.diff
  if d then
    failed[r.file] = nil
    if d.unchanged then return { file = r.file, unchanged = true } end
    local summary = registry.summary(d)
    if #d.warnings > 0 then summary = summary .. "; warning: " .. table.concat(d.warnings, "; ") end
    log("reload %s %s -> %s in %.1fms: %s", r.file, d.old_hash or "new", d.new_hash or "deleted", d.ms, summary)
    return { file = r.file, old_hash = d.old_hash, new_hash = d.new_hash, ms = d.ms, changes = summary }
  end
  failed[r.file] = stamp(r.file)
  local live = registry.files[r.file]
  log("reload %s failed (%s): %s", r.file, live and ("version " .. live.hash .. " stays live") or "not loaded",
    first_line(r.err))
  return { file = r.file, error = r.err }
end

local function under(path, root)
  return path == root or path:sub(1, #root + 1) == root .. "/"
end

-- the loaded files under root (a file, or a directory that went)
local function loaded_under(root)
  local out = {}
  for f in pairs(registry.files) do
    if under(f, root) then out[#out + 1] = f end
  end
  table.sort(out)
  return out
end

-- unloads `gone`, loads `paths` (if their source changed, unless force)
local function apply(paths, gone, force)
  local out = {}
  for _, f in ipairs(gone) do
    local d = registry.unload(f)
    if d then out[#out + 1] = report({ file = f, diff = d }) end
  end
  for _, r in ipairs(registry.load_all(paths, { if_changed = not force })) do out[#out + 1] = report(r) end
  return out
end

-- the watcher's batch: which files to load and to unload
local function on_batch(paths)
  local load, gone = {}, {}
  for path in pairs(paths) do
    local st = uv.fs_stat(path)
    if st and st.type == "directory" then
      for _, f in ipairs(M.lua_files(path) or {}) do load[f] = true end
    elseif st then
      if path:match("%.lua$") then load[path] = true end
    else
      for _, f in ipairs(loaded_under(path)) do gone[f] = true end
    end
  end
  local sorted = require "sluice.sorted_keys"
  apply(sorted(load), sorted(gone), false)
end

--- Loads every file under d (serve's start, after watch(d): a change made
--- while it loads is seen); failures are logged "not loaded: file:line:
--- ...". Returns the number loaded and the number of files, or nil and why
--- the directory cannot be read.
function M.load_dir(d, logf)
  dir, log = d, logf
  local files, err = M.lua_files(d)
  if not files then return nil, ("cannot read %s: %s"):format(d, err) end
  local loaded = 0
  for _, r in ipairs(registry.load_all(files)) do
    if r.diff then
      loaded = loaded + 1
    else
      failed[r.file] = stamp(r.file)
      log("not loaded: %s", r.err)
    end
  end
  return loaded, #files
end

--- Watches d, before load_dir(d) reads it. Returns true, or nil and why.
function M.watch(d, logf)
  dir, log = d, logf
  local w, err = watch.watch(dir, on_batch, { log = log })
  if not w then return nil, err end
  watcher = w
  return true
end

--- Reloads every file of the directory (SIGHUP, sluice reload): each one
--- is staged again, changed or not (its top level may read other files);
--- files that went are unloaded. Returns one entry per file:
--- {file=, changes=} | {file=, error=}.
function M.all()
  if watcher then watcher:flush() end
  local files, err = M.lua_files(dir)
  if not files then
    -- not "every file went": nothing is unloaded
    log("reload of %s failed: cannot read it: %s", dir, err)
    return nil, ("cannot read %s: %s"):format(dir, err)
  end
  local present = {}
  for _, f in ipairs(files) do present[f] = true end
  local gone = {}
  for _, f in ipairs(loaded_under(dir)) do
    if not present[f] then gone[#gone + 1] = f end
  end
  return apply(files, gone, true)
end

--- Brings the registry up to date with the directory now, without waiting
--- for the debounce: what the watcher saw so far, and files that are not
--- loaded yet (a run handed over for a file written a moment ago).
function M.sync()
  if watcher then watcher:flush() end
  local new = {}
  for _, f in ipairs(M.lua_files(dir) or {}) do
    if not registry.files[f] and failed[f] ~= stamp(f) then new[#new + 1] = f end
  end
  if #new > 0 then apply(new, {}, false) end
end

function M.stop()
  if watcher then watcher:close() end
  watcher = nil
end

return M
