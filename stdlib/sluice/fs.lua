--- sluice.fs: files over luv. Inside a run (or the main chunk of a script)
--- each call suspends only its own coroutine while libuv's thread pool does
--- the I/O, so other runs go on; where the caller cannot be suspended (a
--- coroutine of the user's own, a metamethod) the same luv call runs
--- synchronously.
---
--- Failures return `nil, "CODE: message", "CODE"` (luv's convention:
--- `ENOENT`, `EACCES`, `EEXIST`, ...); `fs.must.<fn>` raises instead, so a
--- step fails and its retries apply. `fs.lines` raises (it is an iterator).
local uv = require "luv"
local sched = require "sluice.sched"

local M = {}

local CHUNK = 64 * 1024

-- The coroutine can be suspended and woken by the host: a task of the
-- engine or the main chunk. A coroutine of the user's own would get our
-- yield instead of its own values.
local function can_wait()
  local co, main = coroutine.running()
  if main or not coroutine.isyieldable() then return false end
  return sched.context(co) ~= nil or co == debug.getregistry()["sluice.main_co"]
end

local function code_of(err)
  return type(err) == "string" and err:match("^(%u[%u%d_]*):") or "EIO"
end

-- Calls a luv fs function: with a callback and a wait when the caller can
-- be suspended, synchronously otherwise. Returns its value (true for
-- functions without one) or nil, message, code.
local function call(fn, ...)
  if not can_wait() then
    local v, err, code = fn(...)
    if v == nil then return nil, err, code or code_of(err) end
    return v
  end
  local co = coroutine.running()
  local n = select("#", ...)
  local args = { ... }
  args[n + 1] = function(err, v) sched.wake(co, err, v) end
  local req, rerr, rcode = fn(table.unpack(args, 1, n + 1))
  if not req then return nil, rerr, rcode or code_of(rerr) end
  local err, v = sched.wait()
  if err then return nil, err, code_of(err) end
  if v == nil then return true end
  return v
end

local function dirname(path)
  local d = path:match("^(.*)/[^/]*$")
  if d == nil then return "." end
  if d == "" then return "/" end
  return d
end
M.dirname = dirname

local function check_path(what, path)
  if type(path) ~= "string" or path == "" then
    error(("fs.%s: expected a path, got %s"):format(what, path == "" and "an empty string" or type(path)), 3)
  end
end

local function write_all(fd, data)
  local done = 0
  while done < #data do
    local n, err, code = call(uv.fs_write, fd, done == 0 and data or data:sub(done + 1), -1)
    if not n then return nil, err, code end
    done = done + n
  end
  return true
end

--- The whole content of a file.
---@param path string
---@return string? content, string? err, string? code
function M.read(path)
  check_path("read", path)
  local fd, err, code = call(uv.fs_open, path, "r", 0)
  if not fd then return nil, err, code end
  local st = call(uv.fs_fstat, fd)
  local size = st and st.size or 0
  local parts, off = {}, 0
  while true do
    -- at the current position (-1): a FIFO or a character device has no offsets
    local data, rerr, rcode = call(uv.fs_read, fd, math.max(CHUNK, size - off), -1)
    if not data then
      call(uv.fs_close, fd)
      return nil, rerr, rcode
    end
    if data == "" then break end
    parts[#parts + 1] = data
    off = off + #data
  end
  call(uv.fs_close, fd)
  return table.concat(parts)
end

local tmp_seq = 0

--- Writes a file atomically: the data goes to a temporary file in the same
--- directory, which is fsync'ed and renamed over `path`, then the directory
--- is fsync'ed. A reader (or a crash) sees the old content or the new one,
--- never a part.
---@param path string
---@param data string
---@param opts? {mode?: integer} permissions of a new file (default 0644)
---@return true? ok, string? err, string? code
function M.write(path, data, opts)
  check_path("write", path)
  if type(data) ~= "string" then error(("fs.write: data must be a string, got %s"):format(type(data)), 2) end
  tmp_seq = tmp_seq + 1
  local tmp = ("%s.tmp.%d.%d"):format(path, uv.os_getpid(), tmp_seq)
  local fd, err, code = call(uv.fs_open, tmp, "wx", opts and opts.mode or tonumber("644", 8))
  if not fd then return nil, err, code end
  local ok
  ok, err, code = write_all(fd, data)
  if ok then ok, err, code = call(uv.fs_fsync, fd) end
  call(uv.fs_close, fd)
  if ok then ok, err, code = call(uv.fs_rename, tmp, path) end
  if not ok then
    call(uv.fs_unlink, tmp)
    return nil, err, code
  end
  return M.sync_dir(dirname(path))
end

--- fsync of a directory: makes the creation, rename or removal of its
--- entries durable.
---@param dir string
---@return true? ok, string? err, string? code
function M.sync_dir(dir)
  local fd, err, code = call(uv.fs_open, dir, "r", 0)
  if not fd then return nil, err, code end
  local ok
  ok, err, code = call(uv.fs_fsync, fd)
  call(uv.fs_close, fd)
  if not ok then return nil, err, code end
  return true
end

--- Appends data to a file (created if missing), then fsyncs it unless
--- `sync = false`.
---@param path string
---@param data string
---@param opts? {sync?: boolean, mode?: integer}
---@return true? ok, string? err, string? code
function M.append(path, data, opts)
  check_path("append", path)
  if type(data) ~= "string" then error(("fs.append: data must be a string, got %s"):format(type(data)), 2) end
  local fd, err, code = call(uv.fs_open, path, "a", opts and opts.mode or tonumber("644", 8))
  if not fd then return nil, err, code end
  local ok
  ok, err, code = write_all(fd, data)
  if ok and not (opts and opts.sync == false) then ok, err, code = call(uv.fs_fdatasync, fd) end
  call(uv.fs_close, fd)
  if not ok then return nil, err, code end
  return true
end

local Lines = {}
Lines.__index = Lines
Lines.__close = function(self) self:close() end

function Lines:close()
  if self.fd then
    call(uv.fs_close, self.fd)
    self.fd = nil
  end
end

--- Iterates over the lines of a file without loading it whole (it is read
--- in 64 KiB chunks). Each line comes without its "\n" (or "\r\n"). Raises
--- if the file cannot be opened or read. Leaving the loop early (break, an
--- error) closes the file.
---   for line in fs.lines(path) do ... end
---@param path string
---@return fun():string? iterator
function M.lines(path)
  check_path("lines", path)
  local fd, err = call(uv.fs_open, path, "r", 0)
  if not fd then error("fs.lines: " .. err, 2) end
  local state = setmetatable({ fd = fd }, Lines)
  local buf, pos, eof = "", 1, false
  local function nextline()
    while true do
      local nl = buf:find("\n", pos, true)
      if nl then
        local line = buf:sub(pos, nl - 1)
        pos = nl + 1
        if line:byte(-1) == 13 then line = line:sub(1, -2) end
        return line
      end
      if eof then
        if pos <= #buf then
          local line = buf:sub(pos)
          pos = #buf + 1
          if line:byte(-1) == 13 then line = line:sub(1, -2) end
          return line
        end
        state:close()
        return nil
      end
      if not state.fd then return nil end
      local data, rerr = call(uv.fs_read, state.fd, CHUNK, -1)
      if not data then
        state:close()
        error("fs.lines: " .. rerr, 2)
      end
      if data == "" then
        eof = true
      else
        buf = buf:sub(pos) .. data
        pos = 1
      end
    end
  end
  return nextline, nil, nil, state
end

--- The names in a directory (not "." and ".."), sorted.
---@param dir string
---@return string[]? names, string? err, string? code
function M.list(dir)
  check_path("list", dir)
  local req, err, code = call(uv.fs_scandir, dir)
  if not req then return nil, err, code end
  local names = {}
  while true do
    local name = uv.fs_scandir_next(req)
    if not name then break end
    names[#names + 1] = name
  end
  table.sort(names)
  return names
end

--- {type = "file"|"directory"|"link"|..., size = bytes, mtime = seconds
--- (a float), mode = permission bits} of a path (links are followed).
---@param path string
---@return {type: string, size: integer, mtime: number, mode: integer}? stat, string? err, string? code
function M.stat(path)
  check_path("stat", path)
  local st, err, code = call(uv.fs_stat, path)
  if not st then return nil, err, code end
  return { type = st.type, size = st.size, mtime = st.mtime.sec + st.mtime.nsec / 1e9, mode = st.mode & 4095 }
end

--- Whether something exists at path.
---@param path string
---@return boolean
function M.exists(path)
  check_path("exists", path)
  return call(uv.fs_stat, path) ~= nil
end

--- Creates a directory and any missing parents (mkdir -p); an existing
--- directory is fine.
---@param path string
---@param opts? {mode?: integer} default 0755 (less the umask)
---@return true? ok, string? err, string? code
function M.mkdir(path, opts)
  check_path("mkdir", path)
  local mode = opts and opts.mode or tonumber("755", 8)
  local prefix = path:sub(1, 1) == "/" and "/" or ""
  for part in path:gmatch("[^/]+") do
    prefix = prefix .. part
    local ok, err, code = call(uv.fs_mkdir, prefix, mode)
    if not ok and code ~= "EEXIST" then return nil, err, code end
    if not ok then
      local st = call(uv.fs_stat, prefix)
      if not st or st.type ~= "directory" then
        return nil, ("ENOTDIR: not a directory: %s"):format(prefix), "ENOTDIR"
      end
    end
    prefix = prefix .. "/"
  end
  return true
end

--- Renames (moves) a path, replacing the target if it is a file.
---@param from string
---@param to string
---@return true? ok, string? err, string? code
function M.rename(from, to)
  check_path("rename", from)
  check_path("rename", to)
  return call(uv.fs_rename, from, to)
end

--- Removes a file or an empty directory; with `recursive = true` a
--- directory and everything in it (links are removed, not followed).
---@param path string
---@param opts? {recursive?: boolean}
---@return true? ok, string? err, string? code
function M.remove(path, opts)
  check_path("remove", path)
  local st, err, code = call(uv.fs_lstat, path)
  if not st then return nil, err, code end
  if st.type ~= "directory" then return call(uv.fs_unlink, path) end
  if opts and opts.recursive then
    local names
    names, err, code = M.list(path)
    if not names then return nil, err, code end
    for _, name in ipairs(names) do
      local ok
      ok, err, code = M.remove(path .. "/" .. name, opts)
      if not ok then return nil, err, code end
    end
  end
  return call(uv.fs_rmdir, path)
end

-- a glob segment ("*.csv", "data-??", "[ab]*") as an anchored Lua pattern
local function segment_pattern(seg)
  local out, i = { "^" }, 1
  while i <= #seg do
    local ch = seg:sub(i, i)
    if ch == "*" then
      out[#out + 1] = ".*"
    elseif ch == "?" then
      out[#out + 1] = "."
    elseif ch == "[" then
      local close = seg:find("]", i + 2, true)
      if not close then
        out[#out + 1] = "%["
      else
        local set = seg:sub(i + 1, close - 1):gsub("^!", "^"):gsub("%%", "%%%%")
        out[#out + 1] = "[" .. set .. "]"
        i = close
      end
    elseif ch:find("%W") then
      out[#out + 1] = "%" .. ch
    else
      out[#out + 1] = ch
    end
    i = i + 1
  end
  out[#out + 1] = "$"
  return table.concat(out)
end

local function has_magic(seg) return seg:find("[%*%?%[]") ~= nil end

--- The paths matching a shell pattern, sorted: `*` and `?` within a name,
--- `[abc]` / `[!abc]` sets, `**` for any depth of directories
--- (`data/**/*.csv`). Names starting with "." match only a pattern that
--- starts with ".". A pattern without wildcards gives the path if it
--- exists. No match is an empty list.
---@param pattern string
---@return string[]? paths, string? err, string? code
function M.glob(pattern)
  check_path("glob", pattern)
  local absolute = pattern:sub(1, 1) == "/"
  local segs = {}
  for s in pattern:gmatch("[^/]+") do segs[#segs + 1] = s end
  local out = {}
  local function join(dir, name)
    if dir == nil then return absolute and "/" .. name or name end
    return dir == "/" and "/" .. name or dir .. "/" .. name
  end
  local function walk(dir, i)
    if i > #segs then
      if dir then out[#out + 1] = dir end
      return
    end
    local seg = segs[i]
    local here = dir or (absolute and "/" or ".")
    if seg == "**" then
      walk(dir, i + 1)
      for _, name in ipairs(M.list(here) or {}) do
        local p = join(dir, name)
        local st = name:sub(1, 1) ~= "." and call(uv.fs_stat, p)
        if st and st.type == "directory" then walk(p, i) end
      end
    elseif not has_magic(seg) then
      local p = join(dir, seg)
      if call(uv.fs_lstat, p) then walk(p, i + 1) end
    else
      local pat = segment_pattern(seg)
      for _, name in ipairs(M.list(here) or {}) do
        if name:match(pat) and (name:sub(1, 1) ~= "." or seg:sub(1, 1) == ".") then
          walk(join(dir, name), i + 1)
        end
      end
    end
  end
  walk(nil, 1)
  table.sort(out)
  -- "**" can reach a path twice (a/**/b/** ...)
  local uniq = {}
  for _, p in ipairs(out) do
    if uniq[#uniq] ~= p then uniq[#uniq + 1] = p end
  end
  return uniq
end

--- fs.must.<fn>(...): the same functions, raising on failure instead of
--- returning nil, message, code.
M.must = setmetatable({}, {
  __index = function(t, name)
    local fn = M[name]
    if type(fn) ~= "function" then return nil end
    local wrapped = function(...)
      local v, err = fn(...)
      if v == nil then error(("fs.%s: %s"):format(name, err), 2) end
      return v
    end
    rawset(t, name, wrapped)
    return wrapped
  end,
})

return M
