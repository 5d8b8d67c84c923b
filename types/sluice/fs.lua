---@meta sluice.fs
-- types/sluice/fs.lua: LuaCATS stub of require "sluice.fs" (stdlib/sluice/fs.lua).
-- Calls suspend only the calling coroutine; failures return nil, "CODE: message", "CODE".

local fs = {}

---@class sluice.fs.Stat
---@field type "file"|"directory"|"link"|"fifo"|"socket"|"char"|"block"
---@field size integer bytes
---@field mtime number seconds since the epoch
---@field mode integer permission bits

--- The whole content of a file.
---@param path string
---@return string? content
---@return string? err
---@return string? code
function fs.read(path) end

--- Writes a file atomically (temporary file, fsync, rename, fsync of the directory).
---@param path string
---@param data string
---@param opts? {mode?: integer}
---@return true? ok
---@return string? err
---@return string? code
function fs.write(path, data, opts) end

--- Appends to a file (created if missing), fsync'ed unless sync = false.
---@param path string
---@param data string
---@param opts? {sync?: boolean, mode?: integer}
---@return true? ok
---@return string? err
---@return string? code
function fs.append(path, data, opts) end

--- Iterates over the lines of a file (read in 64 KiB chunks), without "\n"
--- or "\r\n". Raises if the file cannot be read.
---@param path string
---@return fun(): string?
function fs.lines(path) end

--- The names in a directory, sorted.
---@param dir string
---@return string[]? names
---@return string? err
---@return string? code
function fs.list(dir) end

--- The paths matching a shell pattern (*, ?, [set], ** for any depth), sorted.
---@param pattern string
---@return string[]? paths
---@return string? err
---@return string? code
function fs.glob(pattern) end

--- mkdir -p.
---@param path string
---@param opts? {mode?: integer}
---@return true? ok
---@return string? err
---@return string? code
function fs.mkdir(path, opts) end

---@param path string
---@return sluice.fs.Stat? stat
---@return string? err
---@return string? code
function fs.stat(path) end

---@param path string
---@return boolean
function fs.exists(path) end

---@param from string
---@param to string
---@return true? ok
---@return string? err
---@return string? code
function fs.rename(from, to) end

--- Removes a file or an empty directory; recursive = true removes a tree.
---@param path string
---@param opts? {recursive?: boolean}
---@return true? ok
---@return string? err
---@return string? code
function fs.remove(path, opts) end

--- fsync of a directory (makes renames and removals in it durable).
---@param dir string
---@return true? ok
---@return string? err
---@return string? code
function fs.sync_dir(dir) end

--- The directory part of a path ("." if none).
---@param path string
---@return string
function fs.dirname(path) end

--- The same functions, raising on failure instead of returning nil, message, code.
fs.must = fs

return fs
