--- sluice.csv: RFC 4180 CSV in C (host/csv.c, host/l_csv.c): quoted fields,
--- doubled quotes, line breaks inside quotes, CRLF or LF, any one-byte
--- delimiter. Fields are read as strings, never guessed into numbers.
---
--- Blank lines are skipped and a UTF-8 byte order mark at the start is
--- dropped. A quote inside an unquoted field is kept as is (as Python's csv
--- module does); a quoted field never closed, or a character right after a
--- closing quote, is malformed.
---
--- Errors raise (as json.decode does) a table {code, message, path, line,
--- column} whose tostring is the message: code "ECSV" for malformed input
--- ("orders.csv: line 3, column 7: unterminated quoted field (its closing
--- quote is missing)"), an errno name (ENOENT, EACCES, EISDIR) for a file
--- that cannot be read. Inside a step, the error fails the step.
---
--- Files are read in 64 KiB chunks with read(2) on the loop thread: memory
--- stays one chunk plus one record however big the file, and the loop waits
--- a few microseconds per chunk (page cache), not for the whole file.
local core = require "sluice._csv"

local M = {}

---@class sluice.csv.Options
---@field delimiter? string one byte, default ","
---@field header? boolean|string[] true: the first record names the fields and rows are records {name = value}; an array of names: every record is data, named by it
---@field ragged? boolean with a header, let a record have fewer fields (absent) or more (dropped) than the header; default: an error naming the line

---@class sluice.csv.EncodeOptions
---@field delimiter? string one byte, default ","
---@field header? boolean|string[] an array of names: write it first, rows are records; true: the sorted names of every row's keys
---@field eol? string "\n" (default) or "\r\n"

---@class sluice.csv.Error
---@field code string "ECSV", or an errno name for a file
---@field message string "path: line L, column C: what is wrong"
---@field path string the file, or "<string>" for csv.parse
---@field line? integer
---@field column? integer

--- Parses CSV text into rows (arrays of strings, or records with a header).
---@param text string
---@param opts? sluice.csv.Options
---@return table[] rows
function M.parse(text, opts) return core.parse(text, opts) end

--- Reads a whole CSV file into rows.
---@param path string
---@param opts? sluice.csv.Options
---@return table[] rows
function M.read(path, opts) return core.read(path, opts) end

--- Streams a CSV file one row at a time in constant memory:
--- `for row, line in csv.rows(path, {header = true}) do ... end`
--- (line is where the record begins). The file closes when the loop ends,
--- breaks or raises.
---@param path string
---@param opts? sluice.csv.Options
---@return fun(): table?, integer? iterator
function M.rows(path, opts) return core.rows(path, opts) end

--- CSV text of rows: arrays of values, or records with header = names.
--- Numbers keep their exact value (floats the shortest text that reads
--- back the same), booleans are true/false, nil and json.null are empty.
---@param rows table[]
---@param opts? sluice.csv.EncodeOptions
---@return string
function M.encode(rows, opts) return core.encode(rows, opts) end

--- The metatable of the error tables this module raises.
M.Error = core.Error

return M
