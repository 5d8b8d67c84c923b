---@meta sluice.sink
-- types/sluice/sink.lua: LuaCATS stub of require "sluice.sink" (stdlib/sluice/sink.lua).
-- Writes from a step are idempotent: a step that runs again replaces its own writes.

local sink = {}

---@class sluice.sink.Sink
local Sink = {}

--- Appends records (a step that runs again replaces its writes instead of
--- adding lines). Outside a step, pass a key of your own. Returns the count.
---@param records table[] csv: lists of values, or records keyed by header names
---@param opts? {key?: string|number} replaces the part written with the same key, from any run
---@return integer
function Sink:write(records, opts) end

--- JSON Lines sinks: the records in the file.
---@return table[]
function Sink:records() end

---@class sluice.sink.Upsert
local Upsert = {}

--- Inserts or replaces records by key (the file is rewritten atomically).
---@param records table[]
---@return integer added
---@return integer replaced
function Upsert:write(records) end

--- The records in the file.
---@return table[]
function Upsert:records() end

--- A JSON Lines sink.
---@param path string
---@return sluice.sink.Sink
function sink.jsonl(path) end

--- A CSV sink (RFC 4180); the header row is written once.
---@param path string
---@param opts? {header?: string[], delimiter?: string}
---@return sluice.sink.Sink
function sink.csv(path, opts) end

--- A JSON Lines table keyed by a field or a function of the record.
---@param path string
---@param key string|fun(record: table): string|number
---@return sluice.sink.Upsert
function sink.upsert_jsonl(path, key) end

return sink
