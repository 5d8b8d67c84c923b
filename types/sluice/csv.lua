---@meta sluice.csv
-- types/sluice/csv.lua: LuaCATS stub of require "sluice.csv" (stdlib/sluice/csv.lua).
-- RFC 4180 in C. Errors raise {code, message, path, line, column}
-- ("orders.csv: line 3, column 7: unterminated quoted field ...").

local csv = {}

---@class sluice.csv.Options
---@field delimiter? string one byte, default ","
---@field header? boolean|string[] true: the first record names the fields; a list: names for every record
---@field ragged? boolean with a header, allow records with fewer or more fields

---@class sluice.csv.EncodeOptions
---@field delimiter? string
---@field header? boolean|string[] a list: written first, rows are records; true: the sorted keys
---@field eol? string "\n" (default) or "\r\n"

--- Parses CSV text into rows (arrays of strings, or records with a header).
---@param text string
---@param opts? sluice.csv.Options
---@return table[]
function csv.parse(text, opts) end

--- Reads a whole CSV file into rows.
---@param path string
---@param opts? sluice.csv.Options
---@return table[]
function csv.read(path, opts) end

--- Streams a file one row at a time: for row, line in csv.rows(path, {header = true}) do ... end
---@param path string
---@param opts? sluice.csv.Options
---@return fun(): table?, integer?
function csv.rows(path, opts) end

--- CSV text of rows (arrays of values, or records with header = names).
---@param rows table[]
---@param opts? sluice.csv.EncodeOptions
---@return string
function csv.encode(rows, opts) end

return csv
