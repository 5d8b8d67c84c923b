--- sluice.cli_store: `sluice store ...`, the commands about the store
--- itself. migrate creates or upgrades the schema `sluice` of a PostgreSQL
--- store (lua/pg_schema.lua); it is safe to run again, and from several
--- hosts at once. copy moves every record of a store into an empty one
--- (LMDB <-> PostgreSQL), check verifies that a store's indexes agree with
--- its records (host/store_copy.c, host/store_check.c through
--- sluice._store_tools).
local cli = require "sluice.cli"
local schema = require "sluice.pg_schema"
local uv = require "luv"

local M = {}

local function out(...) io.stdout:write(...) end
local function errf(fmt, ...) io.stderr:write("sluice: ", fmt:format(...), "\n") end

cli.USAGE.store = [[
usage: sluice store migrate [--store postgres://USER@HOST:PORT/DB]
       sluice store copy --from SRC --to DST [--page N] [--batch N]
       sluice store check [--store S]

migrate  create or upgrade the schema of a PostgreSQL store
copy     every record of a store into an empty one (LMDB <-> PostgreSQL)
check    whether a store's indexes agree with its records
`sluice store COMMAND --help` says more.
]]

cli.USAGE["store migrate"] = [[
usage: sluice store migrate [--store postgres://USER@HOST:PORT/DB]

migrate creates the schema `sluice` in a PostgreSQL database, or brings it
to the version this sluice knows (versioned migrations, each one
transaction; running it again does nothing). A schema newer than this
sluice knows is refused: upgrade sluice. --store defaults to $SLUICE_STORE.
An LMDB store (a directory) needs no migration.
]]

cli.USAGE["store copy"] = [[
usage: sluice store copy --from SRC --to DST [--page N] [--batch N]

Copies every record of the store SRC into DST, which must be empty: LMDB to
PostgreSQL (SRC a directory, DST a postgres:// URL), PostgreSQL to LMDB, or
between two stores of one kind. Runs with their steps, run logs and
listings, idempotency keys, events with their ids (positions), times and
stream keys, trim marks and the positions taken, sends and the dispatch
cursor, consumers' checkpoints, schedules, API keys with their last use,
namespaces and quota counters, each record as it is stored. Positions stay
what they were: event ids and consumers' checkpoints mean the same in DST.

DST must hold nothing: a new or empty directory, or a database whose schema
sluice holds no record (a database without it is migrated first, as
sluice store migrate does). SRC must not be in use: an LMDB store whose
writer lock a sluice process holds (serve, run) is refused, and so is a
PostgreSQL store (SRC or DST) where a sluice serve host is alive (its
heartbeat in sluice.hosts has not expired). The copy holds an LMDB
store's writer lock while it runs.

SRC is read in pages of --page records (default 1000; less for records of
megabytes) and DST written in commits of at most --batch writes (default
2000) or about 8 MB: memory holds a page, one run's steps and logs and one
commit, whatever the size of the store. A line on stderr says how far it
got every second or so. At the end the
records of each type are counted in DST and compared with SRC and with what
was copied; the summary says each count and whether all agree.

Exit 0: copied and verified. 1: the copy failed or a count differs (DST
then holds part of SRC: empty it before copying again). 2: bad usage, or
refused before anything was written (DST not empty, SRC in use, ...).
]]

cli.USAGE["store check"] = [[
usage: sluice store check [--store S] [--page N]

Verifies that the store S (a directory or a postgres:// URL; default
$SLUICE_STORE, then ./.sluice) is consistent: every record decodes (runs,
steps, run logs, events, sends, consumers, schedules, keys, namespaces),
event times do not go back as positions grow, and no position is past the
last one taken. On LMDB, whose indexes are databases of their own, each is
checked both ways: every run is in the history, the listings by namespace,
pipeline and status, and the active runs (iff not finished), and every
entry of those names a run whose record says what the entry says; every
event is in its stream key's index and every entry of that index names an
event of that key; every idempotency key names a run. On PostgreSQL the
listings are SQL indexes kept by the server; what can disagree there is
checked: run columns against the run's record, the position counters
against what is stored, steps, logs and idempotency keys of runs that do
not exist. It only reads: a serve may run meanwhile (each finding is read
again in one snapshot before it is reported).

Prints each problem (the record or index entry, then what is wrong) and a
summary. Exit 0: nothing wrong. 1: problems found, or the store could not
be read. 2: bad usage.
]]

local function migrate(opts)
  local url = opts.store or os.getenv("SLUICE_STORE")
  if not url then return cli.usage_error("store migrate", "store migrate needs --store postgres://... (or SLUICE_STORE)") end
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

-- ---- store copy ------------------------------------------------------------

-- Holds the writer lock of the LMDB store dir for this process, if dir is
-- a store: true, or nil and why (exit 2) when a sluice process writes it.
local function hold_lmdb(dir, what)
  local st = uv.fs_stat(dir .. "/data.mdb")
  if not st then return true end -- no store (yet): store_copy says so, or creates it
  local lock = require "sluice._lock"
  local ok, msg, code, role, pid = lock.take(dir .. "/writer.lock", "run")
  if ok then return true end
  if code == "EBUSY" then
    return nil, ("%s %s is in use by sluice %s (pid %d): stop it first; a copy needs a store "
      .. "nobody writes"):format(what, dir, role, pid)
  end
  return nil, msg
end

-- Connects to the PostgreSQL store url: the connection, or nil and why.
local function pg_connect(url)
  local pg = require "sluice._pg"
  local c, msg = pg.connect(url, { queue_timeout_ms = 10000 })
  if not c then return nil, msg end
  return c
end

-- nil if no sluice serve host is alive on the database behind c, else why
-- (hosts register in sluice.hosts and renew expires_at by heartbeat)
local function pg_in_use(c, url, what)
  local v = schema.version(c)
  if not v or v == 0 then return nil end
  local rows, msg = c:query("SELECT name, pid FROM sluice.hosts WHERE expires_at > now() ORDER BY name")
  if not rows then return msg end
  if #rows == 0 then return nil end
  local who = {}
  for i, r in ipairs(rows) do who[i] = ("%s (pid %s)"):format(r.name, r.pid or "?") end
  return ("%s %s is in use by %d live sluice serve host%s: %s; stop %s first (or wait until %s "
    .. "heartbeat expires), a copy needs a store nobody writes"):format(what, url, #rows,
    #rows == 1 and "" or "s", table.concat(who, ", "), #rows == 1 and "it" or "them",
    #rows == 1 and "its" or "their")
end

-- Makes sure a PostgreSQL destination has the schema (as store migrate):
-- true, or nil, why, exit code.
local function pg_prepare(url)
  local c, msg = pg_connect(url)
  if not c then return nil, msg, 1 end
  local busy = pg_in_use(c, url, "the destination")
  if busy then
    c:close()
    return nil, busy, 2
  end
  local from, to, code = schema.migrate(c)
  c:close()
  if not from then return nil, to, code == "ENEWER" and 2 or 1 end
  if from ~= to then
    io.stderr:write(("sluice: store copy: schema sluice of %s migrated from version %d to %d\n")
      :format(url, from, to))
  end
  return true
end

local LABELS = {
  runs = "runs", steps = "steps", logs = "run log lines", idempotency = "idempotency keys",
  events = "events", trims = "trim marks", sends = "sends", consumers = "consumers",
  schedules = "schedules", keys = "API keys", key_uses = "API key uses", namespaces = "namespaces",
  quotas = "quota counters",
}

local function summary(res, from, to)
  local tools = require "sluice._store_tools"
  out(("%-18s %12s %12s %12s\n"):format("records", "source", "copied", "destination"))
  for _, k in ipairs(tools.kinds) do
    local s, c, d = res.source[k] or 0, res.copied[k] or 0, res.destination[k] or 0
    out(("%-18s %12d %12d %12d%s\n"):format(LABELS[k] or k, s, c, d,
      (s == c and c == d) and "" or "  <- differs"))
  end
  local function pos(name, field)
    local s, d = res.source[field], res.destination[field]
    out(("%-18s %12d %12s %12d%s\n"):format(name, s, "", d, s == d and "" or "  <- differs"))
  end
  pos("event positions", "events_last")
  pos("send positions", "sends_last")
  pos("dispatch cursor", "dispatched")
  if res.verified then
    out(("copied %s to %s: every count in the destination equals the source's\n"):format(from, to))
  end
end

local function copy(opts, pos)
  if #pos ~= 0 then return cli.usage_error("store copy", "store copy takes no argument: --from SRC --to DST") end
  if not opts.from or not opts.to then
    return cli.usage_error("store copy", "store copy needs --from SRC and --to DST (a directory or a postgres:// URL)")
  end
  local page, batch = tonumber(opts.page or "1000"), tonumber(opts.batch or "2000")
  if not page or page < 1 or page ~= math.floor(page) then return cli.usage_error("store copy", "--page must be a positive integer") end
  if not batch or batch < 1 or batch ~= math.floor(batch) then return cli.usage_error("store copy", "--batch must be a positive integer") end
  if opts.from == opts.to then
    errf("store copy: --from and --to name the same store (%s)", opts.from)
    return 2
  end
  for _, side in ipairs { { opts.from, "the source" }, { opts.to, "the destination" } } do
    local where, what = side[1], side[2]
    if not schema.is_url(where) then
      local ok, why = hold_lmdb(where, what)
      if not ok then
        errf("store copy: %s", why)
        return 2
      end
    elseif where == opts.from then
      local c, msg = pg_connect(where)
      if not c then
        errf("store copy: %s", msg)
        return 1
      end
      local busy = pg_in_use(c, where, what)
      c:close()
      if busy then
        errf("store copy: %s", busy)
        return 2
      end
    else
      local ok, why, code = pg_prepare(where)
      if not ok then
        errf("store copy: %s", why)
        return code
      end
    end
  end
  local tools = require "sluice._store_tools"
  local res, msg, code = tools.copy(opts.from, opts.to, { page = page, batch = batch, progress = true })
  if not res then
    errf("store copy: %s", msg)
    return (code == "ENOTFOUND" or code == "EBADSTORE" or code == "EINVAL") and 2 or 1
  end
  if res.refused then
    errf("store copy: %s", res.error)
    return 2
  end
  summary(res, opts.from, opts.to)
  if res.ok then return 0 end
  errf("store copy: %s", res.error)
  return 1
end

-- ---- store check -------------------------------------------------------------

local function check(opts, pos)
  if #pos ~= 0 then return cli.usage_error("store check", "store check takes no argument: --store S") end
  local page = tonumber(opts.page or "1000")
  if not page or page < 1 or page ~= math.floor(page) then return cli.usage_error("store check", "--page must be a positive integer") end
  local where = opts.store or os.getenv("SLUICE_STORE") or ".sluice"
  local tools = require "sluice._store_tools"
  local res, msg = tools.check(where, { page = page, progress = true })
  if not res then
    errf("store check: %s", msg)
    return 1
  end
  for _, p in ipairs(res.problems) do out(("%s: %s\n"):format(p[1], p[2])) end
  if res.count > #res.problems then
    out(("... and %d more problems (the first %d are shown)\n"):format(res.count - #res.problems, #res.problems))
  end
  local total = 0
  for _, k in ipairs(tools.kinds) do total = total + (res.checked[k] or 0) end
  if res.ok then
    out(("store %s: %d records checked, no problems\n"):format(where, total))
    return 0
  end
  out(("store %s: %d records checked, %d problem%s\n"):format(where, total, res.count, res.count == 1 and "" or "s"))
  return 1
end

local SPECS = {
  migrate = { store = "value" },
  copy = { from = "value", to = "value", page = "value", batch = "value" },
  check = { store = "value", page = "value" },
}

function M.store(args)
  local sub = args[1]
  local spec = sub and SPECS[sub]
  if not spec then
    local opts, pos = cli.begin("store", args, { store = "value" })
    if not opts then return pos end
    return cli.usage_error("store", pos[1] and ("unknown store command: " .. pos[1]) or "store needs a command: migrate, copy or check")
  end
  local opts, pos = cli.begin("store " .. sub, { table.unpack(args, 2) }, spec)
  if not opts then return pos end
  if sub == "migrate" then
    if #pos ~= 0 then return cli.usage_error("store migrate", "store migrate takes no argument") end
    return migrate(opts)
  elseif sub == "copy" then
    return copy(opts, pos)
  end
  return check(opts, pos)
end

return M
