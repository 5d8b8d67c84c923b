--- sluice.errors: a user's mistake is reported at the user's line, once,
--- and the frames shown with it are the user's (DESIGN §3: every error
--- names the user's file and line, or the field, that is wrong, once;
--- internal frames are trimmed from tracebacks unless --debug).
---
--- Two mechanisms, used everywhere:
---  - entry(fn): the functions of the pipeline API are installed wrapped in
---    a C entry point (l_errors.c) whose message handler, relocate, gives an
---    error raised anywhere inside sluice the position of the first frame of
---    user code: `etl.lua:3: step 'x': retries must be an integer >= 0, got
---    "three"`, not `lua/engine.lua:225: ...` or no position at all. So the
---    Lua code of the API may raise at whatever level is handy.
---  - traceback(level): a traceback without sluice's own frames (lua/*.lua,
---    [C] plumbing, tail-call markers), for every traceback sluice makes;
---    describe(err) is how an error is printed: its message, then the frames
---    the message does not already name.
--- With --debug (sluice run, sluice serve) or SLUICE_DEBUG=1 nothing is
--- trimmed, and a relocated message carries the frames where sluice raised it.
local C = require "sluice._errors"

local M = {}

local env_debug = os.getenv("SLUICE_DEBUG")
M.debug = env_debug ~= nil and env_debug ~= "" and env_debug ~= "0"

local getinfo = debug.getinfo

-- what Lua shows as short_src for a chunk name (luaO_chunkid, LUA_IDSIZE 60)
local function short_src(source)
  local kind = source:sub(1, 1)
  if kind == "=" then return source:sub(2, 60) end
  if kind == "@" then
    if #source <= 60 then return source:sub(2) end
    return "..." .. source:sub(-56)
  end
  return nil
end

-- sluice's own chunks (their `source`) and how tracebacks show them; "=sluice"
-- is the boot chunk of main.c
local internal, internal_short = { ["=sluice"] = true }, { sluice = true }
for _, src in ipairs(C.internal_sources()) do
  internal[src] = true
  internal_short[short_src(src)] = true
end

-- the first frame of user code at or above `level` (1: the caller of
-- user_frame): its debug info, or nil when there is none
local function user_frame(level)
  level = level + 1
  while true do
    local info = getinfo(level, "Sl")
    if not info then return nil end
    if info.what ~= "C" and not internal[info.source] then return info end
    level = level + 1
  end
end

--- Whether a chunk name (debug.getinfo's `source`) is one of sluice's own.
function M.is_internal(source)
  return internal[source] == true
end

--- "file:line" of the first frame of user code that led to the caller, or
--- nil when no user code is on the stack.
function M.where()
  return C.where(internal, 1)
end

-- e (a string) with the position of the first frame of user code at or
-- above `from` in place of a position inside sluice (or none)
local function locate(e, from)
  local info = user_frame(from + 1) -- from the function that raised
  if not info then return e end
  -- a position is "<short_src of a frame on the stack>:<line>: "; a message
  -- may quote other file:line pairs
  local src, rest = e:match("^([^\n]-):%d+: (.*)$")
  if src then
    local on_stack = false
    for level = 2, math.huge do
      local f = getinfo(level, "S")
      if not f then break end
      if f.short_src == src then on_stack = true break end
    end
    if not on_stack then src, rest = nil, nil end
  end
  if src and not internal_short[src] then return e end
  local msg = ("%s:%d: %s"):format(info.short_src, info.currentline, rest or e)
  if M.debug then msg = msg .. "\n" .. debug.traceback("(--debug) where sluice raised it:", from + 1) end
  return msg
end

--- Message handler of the entry points: a string error, and the message of
--- an engine error (M.Error, once), gets the position of the first frame of
--- user code in place of a position inside sluice (or none). Errors already
--- positioned in user code, and other error tables (they carry their own
--- fields), pass unchanged.
function M.relocate(e)
  if type(e) == "string" then
    local msg = locate(e, 2) -- not a tail call: the levels count this frame
    return msg
  end
  if getmetatable(e) == M.Error and not e.located then
    e.message, e.located = locate(e.message, 2), true
  end
  return e
end

--- fn wrapped as an entry point of the pipeline API (see above); with
--- fast, a function of fixed arity called instead of fn (a vararg one)
--- when the call has at most nfast arguments.
function M.entry(fn, fast, nfast)
  if fast then return C.entry(fn, M.relocate, fast, nfast) end
  return C.entry(fn, M.relocate)
end

local function frame_location(line)
  return line:match("^\t(.-):%d+: in ") or line:match("^\t(.-): in ")
end

local function is_internal_frame(line)
  if line == "\t(...tail calls...)" then return true end
  local loc = frame_location(line)
  return loc ~= nil and (loc == "[C]" or internal_short[loc] == true)
end

--- A traceback text (debug.traceback's) without sluice's own frames, or the
--- whole of it when no frame of user code is in it (an internal error: its
--- frames are then all there is to go on) or when debugging.
function M.trim(tb)
  if M.debug then return tb end
  local kept, frames = {}, 0
  for line in tb:gmatch("[^\n]+") do
    if line:sub(1, 1) == "\t" then
      frames = frames + 1
      if not is_internal_frame(line) then kept[#kept + 1] = line end
    end
  end
  if #kept == 0 and frames > 0 then return tb end
  if #kept == 0 then return nil end
  return "stack traceback:\n" .. table.concat(kept, "\n")
end

--- The traceback of the running code from `level` (1: the caller of
--- traceback), trimmed: "stack traceback:\n\t..." without a message.
function M.traceback(level)
  local tb = debug.traceback("", (level or 1) + 1)
  return M.trim((tb:gsub("^\n", "")))
end

-- a value as an error message shows it: strings quoted, so "8" is not 8
function M.show(v)
  return type(v) == "string" and ("%q"):format(v) or tostring(v)
end

--- The errors the engine raises are tables {code=, message=, ...} (a step
--- failure also has step=, run=, traceback=): the HTTP API maps the code to
--- a status; tostring gives the message, so printing them is unchanged.
local Error = {}
Error.__index = Error
Error.__tostring = function(e) return e.message end
M.Error = Error

--- A new engine error: `fields` (a table, or nil) with code and message set,
--- and the metatable `mt` (default M.Error).
function M.new(code, message, fields, mt)
  local e = fields or {}
  e.code, e.message = code, message
  return setmetatable(e, mt or Error)
end

--- Raises the error of a failed store operation: "<what>: <CODE>: <msg>"
--- (msg is the store's "CODE: message") with code = the store's code (EIO,
--- EFULL...) and store = true (the engine tells a store's EIO from a user's).
function M.store(what, msg, code)
  error(M.new(code and tostring(code) or "ESTORE", ("%s: %s"):format(what, tostring(msg)), { store = true }), 0)
end

--- An error as users read it: its message (once), then the frames of its
--- traceback (trimmed) at places the message does not already name.
---@param e any an error value: a table {message=, traceback=} or anything else
function M.describe(e)
  local msg, tb
  if type(e) == "table" then
    msg, tb = tostring(e.message or e), e.traceback
  else
    msg = tostring(e)
  end
  if type(tb) ~= "string" then return msg end
  tb = M.trim(tb) or "" -- stored by a run under --debug, or by an older sluice
  local kept = {}
  for line in tb:gmatch("[^\n]+") do
    if line:sub(1, 1) == "\t" then
      local at = line:match("^\t(.-:%d+): in ")
      if M.debug or not (at and msg:find(at .. ":", 1, true)) then kept[#kept + 1] = line end
    end
  end
  if #kept == 0 then return msg end
  return msg .. "\nstack traceback:\n" .. table.concat(kept, "\n")
end

return M
