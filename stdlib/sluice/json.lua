--- sluice.json: the store's own codec (host/codec.c, bound as the C module
--- sluice._json) plus JSON Lines. What the store, the HTTP API and the REPL
--- write is what this writes: integers keep 64 bits, floats 17 digits,
--- byte strings and json.null survive, object keys are sorted.
local c = require "sluice._json"

local M = {}

--- json.null: the JSON null (a Lua nil would drop the key).
M.null = c.null

--- Encodes a value as JSON text. Object keys are always written sorted by
--- bytes (so a value has one text): `sort_keys` is accepted and always on.
--- Raises naming the path of a value that cannot be encoded
--- (`value.rows[3].fn: cannot store a function`).
---@param value any
---@param opts? {pretty?: boolean, sort_keys?: boolean} pretty: two-space indents
---@return string
M.encode = c.encode

--- Decodes JSON text. Integers stay integers, `[]` comes back as an array
--- (json.array). Raises naming line and column of the first error.
---@param text string
---@return any
M.decode = c.decode

--- Marks t (or a new table) as a JSON array, so an empty one encodes as [].
---@generic T: table
---@param t? T
---@return T
M.array = c.array

--- Whether encode writes v as a JSON array.
---@param v any
---@return boolean
M.is_array = c.is_array

--- Decodes JSON Lines (NDJSON): one value per line; blank lines are skipped,
--- a trailing "\r" is ignored. Returns the values as an array. A bad line
--- raises `line N, column C: message`, N counting every line of text.
---@param text string
---@return any[]
function M.decode_lines(text)
  if type(text) ~= "string" then
    error(("json.decode_lines: expected a string, got %s"):format(type(text)), 2)
  end
  local out = c.array({})
  local n, lineno, pos, len = 0, 0, 1, #text
  while pos <= len do
    local nl = text:find("\n", pos, true)
    local stop = nl and nl - 1 or len
    lineno = lineno + 1
    if text:byte(stop) == 13 and stop >= pos then stop = stop - 1 end
    local line = text:sub(pos, stop)
    if line:find("%S") then
      local ok, v = pcall(c.decode, line)
      if not ok then
        local msg = tostring(v):gsub("^line %d+, column (%d+) %(byte %d+%)", "column %1")
        error(("line %d, %s"):format(lineno, msg), 2)
      end
      n = n + 1
      out[n] = v
    end
    pos = (nl or len) + 1
  end
  return out
end

--- Encodes a list of values as JSON Lines: one compact value per line,
--- each ended by "\n" ("" for an empty list).
---@param list any[]
---@return string
function M.encode_lines(list)
  if type(list) ~= "table" then
    error(("json.encode_lines: expected a list, got %s"):format(type(list)), 2)
  end
  local parts = {}
  for i = 1, #list do
    local ok, s = pcall(c.encode, list[i])
    if not ok then error(("json.encode_lines: item %d: %s"):format(i, s), 2) end
    parts[i] = s
  end
  if #parts == 0 then return "" end
  return table.concat(parts, "\n") .. "\n"
end

return M
