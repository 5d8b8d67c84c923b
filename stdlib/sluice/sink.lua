--- sluice.sink: output files for the load stage whose writes from a step
--- are idempotent across retries, replays and crashes.
---
--- `sink.jsonl(path)` and `sink.csv(path, {header = ...})` append records.
--- Each write is a part file in `<path>.parts/`, keyed by the run, the step
--- and the write's number within the step, written atomically (temporary
--- file, fsync, rename); the sink file is the concatenation of the parts in
--- the order they were first written. A step that runs again (a retry, a
--- resume after kill -9) rewrites its own parts instead of adding lines,
--- and the sink file is rebuilt from the parts whenever it does not match
--- them (a crash between the part and the sink file, say). The parts stay
--- next to the sink: they are what makes the rebuild possible.
---
--- `{key = ...}` replaces the run-and-step key with one of the caller's (a
--- date, a batch id): a later write with the same key, from any run,
--- replaces that part. `sink.upsert_jsonl(path, key)` keeps a table keyed by
--- a field: a record whose key is there replaces it, in place.
---
--- One process writes a sink at a time (within it, writes to one path are
--- serialized).
local fs = require "sluice.fs"
local csv = require "sluice.csv"
local json = require "sluice.json"
local sched = require "sluice.sched"
local clock = require "sluice._clock"
local ids = require "sluice._ids"

local M = {}

---------------------------------------------------------------------------
-- per-path lock: parallel branches writing one sink take turns

local locks = {}

local function locked(path, fn, ...)
  local l = locks[path]
  if l then
    l[#l + 1] = coroutine.running()
    sched.wait()
  else
    locks[path] = {}
  end
  local ok, a, b = pcall(fn, ...)
  local queue = locks[path]
  local nxt = table.remove(queue, 1)
  if nxt then sched.wake(nxt) else locks[path] = nil end
  if not ok then error(a, 0) end
  return a, b
end

local function must(what, ok, err)
  if not ok then error(what .. ": " .. tostring(err), 0) end
  return ok
end

---------------------------------------------------------------------------
-- encoders

-- a row (a list of values, or a record keyed by header names) as a list
local function row_values(row, header, i, where)
  if type(row) ~= "table" then
    error(("%s: row %d is a %s, expected a list of values or a record"):format(where, i, type(row)), 0)
  end
  if #row > 0 or next(row) == nil then return row, #row end
  if not header then
    error(("%s: row %d is a record; give the sink a header = {...} to order its fields"):format(where, i), 0)
  end
  local out = {}
  for j, name in ipairs(header) do out[j] = row[name] end
  return out, #header
end

-- RFC 4180 text of rows, by sluice.csv ("\n" line ends; fields with the
-- delimiter, a quote or a line break quoted, quotes doubled)
local function csv_text(rows, header, delim, where)
  local list = {}
  for i, row in ipairs(rows) do
    local vals, n = row_values(row, header, i, where)
    local cells = {}
    for j = 1, n do
      local v = vals[j]
      if v == nil then v = json.null end
      cells[j] = v
    end
    list[i] = cells
  end
  if #list == 0 then return "" end
  local ok, text = pcall(csv.encode, list, { delimiter = delim })
  if not ok then error(("%s: %s"):format(where, tostring(text):gsub("^.-sluice%.csv%.encode: ", "")), 0) end
  return text
end

local function jsonl_text(records, where)
  local parts = {}
  for i, r in ipairs(records) do
    local ok, s = pcall(json.encode, r)
    if not ok then error(("%s: record %d: %s"):format(where, i, s), 0) end
    parts[i] = s
  end
  if #parts == 0 then return "" end
  return table.concat(parts, "\n") .. "\n"
end

---------------------------------------------------------------------------
-- append sinks

local Sink = {}
Sink.__index = Sink

-- The key of this write: the caller's, or the run and step (and the
-- write's number in this attempt of the step).
local function write_key(self, opts)
  if opts and opts.key ~= nil then
    if type(opts.key) ~= "string" and type(opts.key) ~= "number" then
      error(("%s: key must be a string or a number"):format(self.where), 3)
    end
    return ids.hash("key\0" .. tostring(opts.key)), 1
  end
  local br = sched.context()
  if not (br and br.run and br.in_step) then
    error(("%s: write called outside a step: call it inside step(...) (its parts are keyed by run " ..
      "and step, so a step that runs again replaces them), or pass {key = ...}"):format(self.where), 3)
  end
  if br.sink_step ~= br.in_step or br.sink_attempt ~= br.attempt then
    br.sink_step, br.sink_attempt, br.sink_seq = br.in_step, br.attempt, {}
  end
  local seq = (br.sink_seq[self.path] or 0) + 1
  br.sink_seq[self.path] = seq
  return ids.hash("step\0" .. br.run.id .. "\0" .. br.in_step), seq
end

local function part_names(dir)
  local names = must("sink: listing " .. dir, fs.list(dir))
  local out = {}
  for _, n in ipairs(names) do
    if n:match("^%x+%-%x+%-%d+%.part$") then out[#out + 1] = n end
  end
  return out
end

-- Writes the sink file from the prefix and every part, atomically.
local function rebuild(self, names)
  local chunks = { self.prefix }
  for _, n in ipairs(names) do
    chunks[#chunks + 1] = must("sink: reading a part", fs.read(self.dir .. "/" .. n))
  end
  local text = table.concat(chunks)
  must("sink: writing " .. self.path, fs.write(self.path, text))
  return #text
end

local last_stamp = 0

-- path -> {count, last, size}: the sink's size after this process's last
-- write with `count` parts, the last one named `last` (one process writes
-- a sink), so a write needs no stat of every part
local sizes = {}

local function write_part(self, h, seq, text)
  must("sink: creating " .. self.dir, fs.mkdir(self.dir))
  local names = part_names(self.dir)
  local mine = ("-%s-%d.part"):format(h, seq)
  local existing, changed, others = nil, false, {}
  for _, n in ipairs(names) do
    local nh, nseq = n:match("^%x+%-(%x+)%-(%d+)%.part$")
    if n:sub(-#mine) == mine then
      existing = n
    elseif nh == h and seq == 1 and tonumber(nseq) > 1 then
      -- a later write of an earlier attempt of this step: gone with it
      must("sink: removing a stale part", fs.remove(self.dir .. "/" .. n))
      changed = true
    else
      others[#others + 1] = n
    end
  end
  local name = existing
  if not name then
    local stamp = math.max(clock.now(), last_stamp + 1)
    last_stamp = stamp
    name = ("%016x%s"):format(stamp, mine)
  end
  must("sink: writing a part of " .. self.path, fs.write(self.dir .. "/" .. name, text))
  -- fast path: a new part after every other, onto a sink that holds them
  local last = others[#others]
  if not existing and not changed and (last == nil or last < name) then
    local known = sizes[self.path]
    local expected
    if known and known.count == #others and known.last == last then
      expected = known.size
    else
      expected = #self.prefix
      for _, n in ipairs(others) do
        local st = must("sink: reading a part", fs.stat(self.dir .. "/" .. n))
        expected = expected + st.size
      end
    end
    local st = fs.stat(self.path)
    if st and st.size == expected then
      must("sink: appending to " .. self.path, fs.append(self.path, text))
      sizes[self.path] = { count = #others + 1, last = name, size = expected + #text }
      return
    end
  end
  others[#others + 1] = name
  table.sort(others)
  sizes[self.path] = { count = #others, last = others[#others], size = rebuild(self, others) }
end

--- Appends records to the sink; idempotent per step (see the module's
--- comment). Returns the number of records written.
---@param records table[] a list (rows for csv: lists of values, or records keyed by header names)
---@param opts? {key?: string|number} a key of the caller's instead of the run and step
---@return integer
function Sink:write(records, opts)
  if type(records) ~= "table" then
    error(("%s: write expects a list of records, got %s"):format(self.where, type(records)), 2)
  end
  local h, seq = write_key(self, opts)
  local text = self.encode(records)
  locked(self.path, write_part, self, h, seq, text)
  return #records
end

--- jsonl sinks: the records in the sink file, in order.
---@return table[]
function Sink:records()
  if self.kind ~= "jsonl" then error(("%s: records() reads JSON Lines sinks only"):format(self.where), 2) end
  local text = fs.read(self.path)
  return text and json.decode_lines(text) or json.array({})
end

local function check_path(what, path)
  if type(path) ~= "string" or path == "" then
    error(("sink.%s: expected a file path, got %s"):format(what, type(path)), 3)
  end
end

--- A JSON Lines sink: one compact JSON value per line.
---@param path string
---@return sluice.sink.Sink
function M.jsonl(path)
  check_path("jsonl", path)
  local where = ("sink.jsonl(%s)"):format(path)
  return setmetatable({ kind = "jsonl", path = path, dir = path .. ".parts", prefix = "", where = where,
    encode = function(records) return jsonl_text(records, where) end }, Sink)
end

--- A CSV sink (RFC 4180 by sluice.csv, "\n" line ends). With `header`, the file starts
--- with the header row and rows may be records keyed by the header names.
---@param path string
---@param opts? {header?: string[], delimiter?: string}
---@return sluice.sink.Sink
function M.csv(path, opts)
  check_path("csv", path)
  opts = opts or {}
  local delim = opts.delimiter or ","
  if type(delim) ~= "string" or #delim ~= 1 or delim:find('["\r\n]') then
    error("sink.csv: delimiter must be one character, not a quote or a line break", 2)
  end
  local header = opts.header
  if header ~= nil and (type(header) ~= "table" or #header == 0) then
    error("sink.csv: header must be a list of column names", 2)
  end
  local where = ("sink.csv(%s)"):format(path)
  return setmetatable({
    kind = "csv", path = path, dir = path .. ".parts", where = where,
    prefix = header and csv_text({ header }, nil, delim, where) or "",
    encode = function(rows) return csv_text(rows, header, delim, where) end,
  }, Sink)
end

---------------------------------------------------------------------------
-- upsert

local Upsert = {}
Upsert.__index = Upsert

local function key_of(self, r, i)
  local k
  if type(self.key) == "function" then k = self.key(r) else k = type(r) == "table" and r[self.key] or nil end
  if type(k) ~= "string" and type(k) ~= "number" then
    error(("%s: record %d has no key (%s is %s)"):format(self.where, i,
      type(self.key) == "function" and "the key function's result" or ("field '" .. self.key .. "'"),
      k == nil and "missing" or type(k)), 0)
  end
  return k
end

local function upsert(self, records)
  local text = fs.read(self.path)
  local list = text and json.decode_lines(text) or {}
  local index = {}
  for i, r in ipairs(list) do index[key_of(self, r, i)] = i end
  local added, replaced = 0, 0
  for i, r in ipairs(records) do
    local k = key_of(self, r, i)
    local at = index[k]
    if at then
      list[at] = r
      replaced = replaced + 1
    else
      list[#list + 1] = r
      index[k] = #list
      added = added + 1
    end
  end
  must("sink: writing " .. self.path, fs.write(self.path, jsonl_text(list, self.where)))
  return added, replaced
end

--- Inserts or replaces records by key, rewriting the file atomically.
--- Returns how many were added and how many replaced.
---@param records table[]
---@return integer added, integer replaced
function Upsert:write(records)
  if type(records) ~= "table" then
    error(("%s: write expects a list of records, got %s"):format(self.where, type(records)), 2)
  end
  for i, r in ipairs(records) do key_of(self, r, i) end
  jsonl_text(records, self.where) -- refuse what cannot be encoded before touching the file
  return locked(self.path, upsert, self, records)
end

--- The records in the file, in order.
---@return table[]
function Upsert:records()
  local text = fs.read(self.path)
  return text and json.decode_lines(text) or json.array({})
end

--- A JSON Lines table keyed by a field (or a function of the record): a
--- write replaces the records whose key is already there and appends the
--- others, so a rerun never duplicates.
---@param path string
---@param key string|fun(record: table): string|number
---@return sluice.sink.Upsert
function M.upsert_jsonl(path, key)
  check_path("upsert_jsonl", path)
  if type(key) ~= "string" and type(key) ~= "function" then
    error("sink.upsert_jsonl: key must be a field name or a function(record)", 2)
  end
  return setmetatable({ path = path, key = key, where = ("sink.upsert_jsonl(%s)"):format(path) }, Upsert)
end

return M
