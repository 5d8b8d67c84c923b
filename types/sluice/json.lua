---@meta sluice.json
-- types/sluice/json.lua: LuaCATS stub of require "sluice.json" (stdlib/sluice/json.lua).

local json = {}

--- The JSON null (a Lua nil would drop the key).
---@type lightuserdata
json.null = nil

--- Encodes a value as JSON text; object keys are always sorted. Raises
--- naming the path of a value that cannot be encoded.
---@param value any
---@param opts? {pretty?: boolean, sort_keys?: boolean}
---@return string
function json.encode(value, opts) end

--- Decodes JSON text; integers stay integers, [] is an array. Raises naming
--- line and column.
---@param text string
---@return any
function json.decode(text) end

--- Marks t (or a new table) as a JSON array, so an empty one encodes as [].
---@generic T: table
---@param t? T
---@return T
function json.array(t) end

--- Whether encode writes v as a JSON array.
---@param v any
---@return boolean
function json.is_array(v) end

--- Decodes JSON Lines (NDJSON): one value per line, blank lines skipped.
---@param text string
---@return any[]
function json.decode_lines(text) end

--- Encodes a list as JSON Lines, each value ended by "\n".
---@param list any[]
---@return string
function json.encode_lines(list) end

return json
