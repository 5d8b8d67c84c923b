---@meta sluice.sqlite
-- types/sluice/sqlite.lua: LuaCATS stub of require "sluice.sqlite" (stdlib/sluice/sqlite.lua).
-- Statements run on a worker thread; errors raise {code, message, sql}.

local sqlite = {}

---@class sluice.sqlite.Database
---@field path string
local Database = {}

---@class sluice.sqlite.OpenOptions
---@field readonly? boolean
---@field wal? boolean PRAGMA journal_mode=WAL
---@field busy_timeout? number|string default "5s"

---@class sluice.sqlite.InsertOptions
---@field upsert_on? string|string[] key column(s): a record whose key exists replaces the row
---@field columns? string[]

--- Opens (creating unless readonly) a database; ":memory:" for a private one.
---@param path string
---@param opts? sluice.sqlite.OpenOptions
---@return sluice.sqlite.Database
function sqlite.open(path, opts) end

--- SQLite's version.
---@return string
function sqlite.version() end

--- SQL that returns no rows (several statements without params).
---@param sql string
---@param params? table an array for ?, or names for :name
---@return integer changes
---@return integer last_insert_rowid
function Database:exec(sql, params) end

--- One query's rows as records {column = value}.
---@param sql string
---@param params? table
---@return table[]
function Database:rows(sql, params) end

--- Inserts records in one transaction; with upsert_on, replaces by key.
---@param table_name string
---@param records table[]
---@param opts? sluice.sqlite.InsertOptions
---@return integer count
function Database:insert_many(table_name, records, opts) end

--- Closes once the statements already called have run.
function Database:close() end

return sqlite
