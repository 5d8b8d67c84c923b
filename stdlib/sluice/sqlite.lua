--- sluice.sqlite: SQLite databases (Debian's libsqlite3) for loads and
--- lookups. Every statement runs on a worker thread (host/l_sqlite.c), so
--- the loop never waits for SQLite's locks or fsync: the calling coroutine
--- suspends and the rest of the host goes on. Statements on one database
--- run one at a time, in the order they were called.
---
--- Values bound: integers and floats as they are, booleans as 1/0, strings
--- as TEXT (BLOB when not valid UTF-8), nil and json.null as NULL, tables as
--- their JSON text. Read back: INTEGER as a Lua integer, REAL as a float,
--- TEXT and BLOB as strings, NULL as an absent field.
---
--- Errors raise, as a step expects (a failing load fails the step and its
--- retries apply): a table {code, message, sql} whose tostring is the
--- message, "SQLITE_CONSTRAINT: UNIQUE constraint failed: users.id". The
--- code is SQLite's primary result name (SQLITE_BUSY, SQLITE_CONSTRAINT,
--- SQLITE_CANTOPEN, ...); SQLITE_MISUSE for a value that cannot be bound.
local core = require "sluice._sqlite"

local M = {}

local SqliteError = {}
SqliteError.__index = SqliteError
SqliteError.__tostring = function(e) return e.message end
M.Error = SqliteError

local function handle(db)
  if db._closed then error("sluice.sqlite: the database " .. db.path .. " is closed", 3) end
  return db._h
end

local function check(sql, ok, a, b)
  if ok == nil then
    error(setmetatable({ code = b, message = a, sql = sql }, SqliteError), 0)
  end
  return a, b
end

---@class sluice.sqlite.Database
---@field path string
local DB = {}
DB.__index = DB

---@class sluice.sqlite.OpenOptions
---@field readonly? boolean open for reading only (the file must exist)
---@field wal? boolean switch the database to write-ahead logging (PRAGMA journal_mode=WAL)
---@field busy_timeout? number|string how long to wait for another process's lock, default "5s"

--- Opens (creating it unless readonly) the database at path; ":memory:"
--- for a private in-memory one.
---@param path string
---@param opts? sluice.sqlite.OpenOptions
---@return sluice.sqlite.Database
function M.open(path, opts)
  if type(path) ~= "string" then error("sluice.sqlite.open: path must be a string", 2) end
  opts = opts or {}
  for k in pairs(opts) do
    if k ~= "readonly" and k ~= "wal" and k ~= "busy_timeout" then
      error(("sluice.sqlite.open: unknown option '%s' (known: readonly, wal, busy_timeout)"):format(tostring(k)), 2)
    end
  end
  local busy = 5000
  if opts.busy_timeout ~= nil then
    busy = math.floor(require("sluice.duration").ms(opts.busy_timeout, "sluice.sqlite busy_timeout") + 0.5)
  end
  local h = check(nil, core.open(path, opts.readonly, opts.wal, busy))
  return setmetatable({ _h = h, path = path }, DB)
end

--- Runs SQL that returns no rows. Without params the text may hold several
--- statements (a schema); with params, one statement.
---@param sql string
---@param params? table an array for ?, or names for :name / @name / $name
---@return integer changes rows changed by the last statement
---@return integer last_insert_rowid
function DB:exec(sql, params)
  return check(sql, core.exec(handle(self), sql, params))
end

--- Runs one query and returns all its rows as records {column = value}.
---@param sql string
---@param params? table an array for ?, or names for :name / @name / $name
---@return table[] rows
function DB:rows(sql, params)
  return (check(sql, core.rows(handle(self), sql, params)))
end

---@class sluice.sqlite.InsertOptions
---@field upsert_on? string|string[] the key column(s): a record whose key exists replaces the other columns (needs a PRIMARY KEY or UNIQUE index on them)
---@field columns? string[] the columns to write; default: every key of every record

--- Inserts records {column = value} into table in one transaction: all or
--- none. A column missing from a record is NULL. Returns the number of
--- records written.
---@param table_name string
---@param records table[]
---@param opts? sluice.sqlite.InsertOptions
---@return integer count
function DB:insert_many(table_name, records, opts)
  handle(self)
  if type(table_name) ~= "string" then error("sluice.sqlite.insert_many: table must be a string", 2) end
  if type(records) ~= "table" then error("sluice.sqlite.insert_many: records must be an array", 2) end
  opts = opts or {}
  for k in pairs(opts) do
    if k ~= "upsert_on" and k ~= "columns" then
      error(("sluice.sqlite.insert_many: unknown option '%s' (known: upsert_on, columns)"):format(tostring(k)), 2)
    end
  end
  local cols = opts.columns -- nil: every key of every record, sorted (in C)
  local keys = opts.upsert_on
  if type(keys) == "string" then keys = { keys } end
  if keys ~= nil and (type(keys) ~= "table" or #keys == 0) then
    error("sluice.sqlite.insert_many: upsert_on must be a column name or an array of them", 2)
  end
  if #records == 0 then return 0 end
  return (check("insert_many " .. table_name, core.insert_many(handle(self), table_name, records, cols, keys)))
end

--- Closes the database once the statements already called have run.
--- Also runs when a `local db <close>` goes out of scope, and (outside a
--- coroutine, if idle) when the database is collected.
function DB:close()
  if self._closed then return end
  self._closed = true
  check(nil, core.close(self._h))
end
DB.__close = DB.close

--- The SQLite library's version.
function M.version() return core.version() end

return M
