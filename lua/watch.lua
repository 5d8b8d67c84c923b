--- sluice.watch: tells which paths under a directory tree changed, from
--- libuv fs events, debounced: one callback per burst of events (an
--- editor's save is several: a write, a rename into place, a chmod).
---
--- libuv watches one directory per handle on Linux (its recursive flag
--- works on macOS and Windows only), so each directory of the tree gets its
--- own handle: a directory that appears is watched from the next callback
--- on, and one that goes loses its handles. The callback gets every path
--- an event named, existing or not; what they mean is the caller's.
--- Depends on: luv.
local uv = require "luv"

local M = {}

local Watcher = {}
Watcher.__index = Watcher

local function is_dir(path)
  local st = uv.fs_stat(path)
  return st ~= nil and st.type == "directory"
end

-- hidden entries are an editor's (swap files, .git): not watched
local function hidden(name)
  return name:sub(1, 1) == "."
end

--- Watches root and the directories under it. on_batch(paths) is called
--- with a set {path = true} once no event came for opts.debounce_ms (40:
--- an editor's burst takes a few ms; a rename into place is live in < 50 ms),
--- or opts.max_delay_ms (500) after the first event of a burst that does
--- not end. opts.log(fmt, ...) reports watch errors.
---@return table? watcher, string? err
function M.watch(root, on_batch, opts)
  opts = opts or {}
  local w = setmetatable({
    root = root, handles = {}, dirty = {}, first = nil, on_batch = on_batch,
    debounce_ms = opts.debounce_ms or 40, max_delay_ms = opts.max_delay_ms or 500,
    log = opts.log or function() end, timer = uv.new_timer(),
  }, Watcher)
  local ok, err = w:add(root)
  if not ok then
    w:close()
    return nil, err
  end
  return w
end

-- the debounce: restarted by each event until the burst has lasted max_delay_ms
function Watcher:touch(path)
  self.dirty[path] = true
  local now = uv.now()
  self.first = self.first or now
  local wait = math.min(self.debounce_ms, math.max(0, self.first + self.max_delay_ms - now))
  self.timer:stop()
  self.timer:start(wait, 0, function() self:flush() end)
end

--- Watches dir and every directory under it (not hidden ones).
function Watcher:add(dir)
  if self.closed or self.handles[dir] then return true end
  local h = uv.new_fs_event()
  local ok, err = h:start(dir, {}, function(ferr, name)
    if ferr then
      self.log("watching %s: %s", dir, ferr)
      return
    end
    if name and hidden(name) then return end
    self:touch(name and (dir .. "/" .. name) or dir)
  end)
  if not ok then
    h:close()
    return nil, ("cannot watch %s: %s"):format(dir, err)
  end
  self.handles[dir] = h
  local req = uv.fs_scandir(dir)
  while req do
    local name, kind = uv.fs_scandir_next(req)
    if not name then break end
    if kind == "directory" and not hidden(name) then self:add(dir .. "/" .. name) end
  end
  return true
end

-- stops watching dir and the directories under it
function Watcher:drop(dir)
  for path, h in pairs(self.handles) do
    if path == dir or path:sub(1, #dir + 1) == dir .. "/" then
      if not h:is_closing() then h:close() end
      self.handles[path] = nil
    end
  end
end

--- Hands the pending paths to on_batch now (a caller that must see every
--- change made so far: a hand-off of a pipeline not loaded yet).
function Watcher:flush()
  self.timer:stop()
  local paths = self.dirty
  self.dirty, self.first = {}, nil
  if self.closed or next(paths) == nil then return end
  for path in pairs(paths) do
    if is_dir(path) then
      local ok, err = self:add(path)
      if not ok then self.log("%s", err) end
    elseif self.handles[path] and path ~= self.root then
      self:drop(path)
    end
  end
  self.on_batch(paths)
end

function Watcher:close()
  self.closed = true
  for _, h in pairs(self.handles) do
    if not h:is_closing() then h:close() end
  end
  self.handles = {}
  if not self.timer:is_closing() then self.timer:close() end
end

return M
