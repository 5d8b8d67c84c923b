--- sluice.cli_store: `sluice store ...`, the commands about the store
--- itself. migrate creates or upgrades the schema `sluice` of a PostgreSQL
--- store (lua/pg_schema.lua); it is safe to run again, and from several
--- hosts at once.
local cli = require "sluice.cli"
local schema = require "sluice.pg_schema"

local M = {}

local function out(...) io.stdout:write(...) end
local function errf(fmt, ...) io.stderr:write("sluice: ", fmt:format(...), "\n") end

cli.USAGE.store = [[
usage: sluice store migrate [--store postgres://USER@HOST:PORT/DB]

migrate creates the schema `sluice` in a PostgreSQL database, or brings it
to the version this sluice knows (versioned migrations, each one
transaction; running it again does nothing). A schema newer than this
sluice knows is refused: upgrade sluice. --store defaults to $SLUICE_STORE.
An LMDB store (a directory) needs no migration.
]]

local function migrate(opts)
  local url = opts.store or os.getenv("SLUICE_STORE")
  if not url then return cli.usage_error("store", "store migrate needs --store postgres://... (or SLUICE_STORE)") end
  if not schema.is_url(url) then
    errf("store migrate: %q is an LMDB store (a directory), which needs no migration; "
      .. "migrate applies to PostgreSQL stores: --store postgres://USER@HOST:PORT/DB", url)
    return 2
  end
  local pg = require "sluice._pg"
  local c, msg = pg.connect(url, { queue_timeout_ms = 10000 })
  if not c then
    errf("%s", msg)
    return 1
  end
  local from, to, code = schema.migrate(c)
  c:close()
  if not from then
    errf("%s", to)
    return code == "ENEWER" and 2 or 1
  end
  if from == to then
    out(("schema sluice is at version %d, the latest this sluice knows: nothing to do\n"):format(to))
  else
    out(("schema sluice migrated from version %d to %d\n"):format(from, to))
  end
  return 0
end

function M.store(args)
  local opts, pos = cli.begin("store", args, { store = "value" })
  if not opts then return pos end
  if pos[1] == "migrate" then
    if #pos ~= 1 then return cli.usage_error("store", "store migrate takes no argument") end
    return migrate(opts)
  end
  return cli.usage_error("store", pos[1] and ("unknown store command: " .. pos[1]) or "store needs a command: migrate")
end

return M
