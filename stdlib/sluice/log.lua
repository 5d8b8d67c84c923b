--- sluice.log: structured log lines. `log.info("loaded", {rows = n})`
--- writes one line to stderr with the time, the level, and the run id,
--- pipeline and step id of the caller attached: logfmt by default, JSON
--- lines with `sluice serve --log-format json` (or SLUICE_LOG_FORMAT=json).
--- SLUICE_LOG_LEVEL (debug, info, warn, error; default info) drops the
--- levels below it. The host's own lines (run started, completed, ...) go
--- through the same formatter.
---
--- Lines logged inside a step are also stored with the run, committed in
--- the same transaction as the step's record (no extra fsync; the lines of
--- a step cut off by a crash are on stderr only), at most the last 1,000
--- per run: `sluice status RUN --logs` shows them. Lines logged between
--- steps are re-executed by every replay, so they go to stderr only.
local clock = require "sluice._clock"
local store = require "sluice._store"
local json = require "sluice.json"
local codec = require "sluice._codec" -- stored lines: the store's exact records
local sched = require "sluice.sched"

local M = {}

--- At most this many lines are kept per run (the oldest go first).
M.MAX_PER_RUN = 1000

local LEVELS = { debug = 10, info = 20, warn = 30, error = 40 }
local FORMATS = { logfmt = true, json = true }

local format = "logfmt"
local threshold = LEVELS.info

--- Sets the output format of every line: "logfmt" or "json".
---@param f "logfmt"|"json"
function M.set_format(f)
  if not FORMATS[f] then
    error(("log format must be logfmt or json, got %s"):format(tostring(f)), 2)
  end
  format = f
end

--- The current output format.
---@return "logfmt"|"json"
function M.get_format() return format end

--- Drops lines below this level: "debug", "info", "warn" or "error".
---@param level "debug"|"info"|"warn"|"error"
function M.set_level(level)
  if not LEVELS[level] then
    error(("log level must be debug, info, warn or error, got %s"):format(tostring(level)), 2)
  end
  threshold = LEVELS[level]
end

do
  local f, l = os.getenv("SLUICE_LOG_FORMAT"), os.getenv("SLUICE_LOG_LEVEL")
  if f and FORMATS[f] then format = f end
  if l and LEVELS[l] then threshold = LEVELS[l] end
end

local RESERVED = { time = true, level = true, msg = true, run = true, pipeline = true, step = true }

-- a field value the store can hold: anything the codec refuses becomes text
local function storable(v)
  local t = type(v)
  if t == "string" or t == "number" or t == "boolean" or v == json.null then return v end
  if t == "table" and codec.try_encode(v, "field") then return v end
  return tostring(v)
end

local function logfmt_value(v)
  local t = type(v)
  local s
  if t == "string" then
    s = v
  elseif t == "number" or t == "boolean" then
    return tostring(v)
  elseif v == json.null then
    return "null"
  else
    s = codec.try_encode(v, "field") or tostring(v)
  end
  if s ~= "" and not s:find('[%s="\\%c]') then return s end
  return '"' .. s:gsub('[\\"%c]', function(c)
    if c == "\\" or c == '"' then return "\\" .. c end
    if c == "\n" then return "\\n" end
    if c == "\t" then return "\\t" end
    if c == "\r" then return "\\r" end
    return ("\\x%02x"):format(c:byte())
  end) .. '"'
end

local function sorted_keys(t)
  local ks = {}
  for k in pairs(t) do ks[#ks + 1] = tostring(k) end
  table.sort(ks)
  return ks
end

--- The text of one record {time, level, msg, run?, pipeline?, step?,
--- fields?} in the current format (no newline). A field whose name is one
--- of the record's own is written with a leading "_".
---@param rec table
---@param fmt? "logfmt"|"json" default: the current format
---@return string
function M.render(rec, fmt)
  fmt = fmt or format
  local fields = rec.fields or {}
  if fmt == "json" then
    local o = { time = rec.time, level = rec.level, msg = rec.msg, run = rec.run, pipeline = rec.pipeline,
      step = rec.step }
    for k, v in pairs(fields) do
      k = tostring(k)
      o[RESERVED[k] and "_" .. k or k] = storable(v)
    end
    return json.encode(o)
  end
  local parts = { "time=" .. rec.time, "level=" .. rec.level }
  for _, k in ipairs({ "run", "pipeline", "step" }) do
    if rec[k] ~= nil then parts[#parts + 1] = k .. "=" .. logfmt_value(rec[k]) end
  end
  parts[#parts + 1] = "msg=" .. logfmt_value(rec.msg)
  for _, k in ipairs(sorted_keys(fields)) do
    local name = k:gsub("[%s=\"]", "_")
    parts[#parts + 1] = (RESERVED[name] and "_" .. name or name) .. "=" .. logfmt_value(fields[k])
  end
  return table.concat(parts, " ")
end

local seq = 0

-- Keeps the line for the step's commit (engine: M.add).
local function keep(run, step_id, attempt, rec, us)
  local pending = run.log_pending
  if not pending then
    pending = {}
    run.log_pending = pending
  end
  local list = pending[step_id]
  if not list then
    list = {}
    pending[step_id] = list
  end
  seq = (seq + 1) & 0xffffffff
  local stored = { time = rec.time, level = rec.level, msg = rec.msg, step = step_id, attempt = attempt }
  if rec.fields and next(rec.fields) then
    local f = {}
    for k, v in pairs(rec.fields) do f[tostring(k)] = storable(v) end
    stored.fields = f
  end
  list[#list + 1] = { us, seq, codec.encode(stored) }
  if #list > M.MAX_PER_RUN then table.remove(list, 1) end
end

--- Writes one line at `level` with msg and fields, the caller's run, pipeline
--- and step attached (`extra` adds or overrides them: {run=, pipeline=}).
---@param level "debug"|"info"|"warn"|"error"
---@param msg any
---@param fields? table
---@param extra? table
function M.write(level, msg, fields, extra)
  local lv = LEVELS[level]
  if not lv then error(("log: unknown level %s"):format(tostring(level)), 2) end
  if fields ~= nil and type(fields) ~= "table" then
    error(("log.%s: fields must be a table, got %s"):format(level, type(fields)), 3)
  end
  if lv < threshold then return end
  local us = clock.now()
  local rec = { time = clock.iso(us), level = level, msg = tostring(msg), fields = fields }
  local br = sched.context()
  local run = br and br.run
  if run then
    rec.run, rec.pipeline = run.id, run.pipeline and run.pipeline.name
    if br.in_step then
      rec.step = br.in_step
      keep(run, br.in_step, br.attempt, rec, us)
    end
  end
  if extra then
    for k, v in pairs(extra) do rec[k] = v end
  end
  io.stderr:write(M.render(rec) .. "\n") -- one write: a reader of the pipe never gets half a line
end

--- log.debug/info/warn/error(msg [, fields])
---@param msg any
---@param fields? table
function M.debug(msg, fields) M.write("debug", msg, fields) end
---@param msg any
---@param fields? table
function M.info(msg, fields) M.write("info", msg, fields) end
---@param msg any
---@param fields? table
function M.warn(msg, fields) M.write("warn", msg, fields) end
---@param msg any
---@param fields? table
function M.error(msg, fields) M.write("error", msg, fields) end

--- The host's own lines (serve, scheduler): printf-style, level info.
function M.host(fmt, ...)
  M.write("info", fmt:format(...))
end

--- For the engine: adds to the store batch b the lines logged by step_id
--- of run (and the deletion of the oldest lines past MAX_PER_RUN), so they
--- commit with the step's record. Returns true, or nil, message, code when
--- the run's stored lines cannot be read.
---@param b userdata a sluice._store batch
---@param run table the engine's run
---@param step_id string
function M.add(b, run, step_id)
  local pending = run.log_pending
  local list = pending and pending[step_id]
  if not list then return true end
  local ids = run.log_ids -- us, seq, us, seq, ... of the stored lines, oldest first
  if not ids then
    local err, code
    ids, err, code = store.log_ids(run.id)
    if not ids then return nil, err, code end
    run.log_ids = ids
  end
  pending[step_id] = nil
  for _, l in ipairs(list) do
    b:put_log(run.id, l[1], l[2], l[3])
    ids[#ids + 1], ids[#ids + 2] = l[1], l[2]
  end
  local drop = #ids // 2 - M.MAX_PER_RUN
  if drop > 0 then
    for i = 1, drop do b:del_log(run.id, ids[2 * i - 1], ids[2 * i]) end
    table.move(ids, 2 * drop + 1, #ids, 1)
    for i = #ids, #ids - 2 * drop + 1, -1 do ids[i] = nil end
  end
  return true
end

--- The stored lines of a run, oldest first: {time, level, msg, step,
--- attempt, fields} each (the last MAX_PER_RUN).
---@param run_id string
---@return table[]
function M.read(run_id)
  local lines, err = store.read_logs(run_id)
  if not lines then error(("reading the logs of run %s: %s"):format(run_id, err), 0) end
  return json.array(lines)
end

return M
