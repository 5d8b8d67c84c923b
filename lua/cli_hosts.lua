--- sluice.cli_hosts: `sluice hosts`, the `sluice serve` hosts sharing a
--- PostgreSQL store (lua/hosts.lua) with their leases, as the store's
--- sluice.hosts and sluice.leases hold them. Ages are the server's clock.
local cli = require "sluice.cli"
local store = require "sluice._store"
local json = require("sluice._codec").edge

local M = {}

local function out(...) io.stdout:write(...) end
local function errf(fmt, ...) io.stderr:write("sluice: ", fmt:format(...), "\n") end

local RECENT_S = 600

cli.USAGE.hosts = [[
usage: sluice hosts [--store postgres://USER@HOST:PORT/DB] [--json]

The sluice serve hosts sharing a PostgreSQL store: each live host (its id,
machine, pid, how long it has run, its last heartbeat and the lease it has
left) with its leases: runs by count, and the others by name (dispatch:
the host that dispatches sends to on() handlers; schedules: the one that
fires the schedules; consumer NAME: the one that runs that consumer's
batches). Hosts whose lease expired in the last 10 minutes are listed too,
marked expired: a host killed or cut off from PostgreSQL, whose runs the
other hosts take at their next claim pass. A host that stopped cleanly is
gone from the list. --store defaults to $SLUICE_STORE. An LMDB store has
one host (sluice serve holds its lock), so nothing to list.
]]

-- "3m05s" of seconds s >= 0
local function age(s)
  s = math.floor(math.max(0, s))
  if s < 60 then return s .. "s" end
  if s < 3600 then return ("%dm%02ds"):format(s // 60, s % 60) end
  if s < 86400 then return ("%dh%02dm"):format(s // 3600, s % 3600 // 60) end
  return ("%dd%02dh"):format(s // 86400, s % 86400 // 3600)
end

function M.hosts(args)
  local opts, pos = cli.begin("hosts", args, { store = "value", json = "bool" })
  if not opts then return pos end
  if #pos > 0 then return cli.usage_error("hosts", "hosts takes no positional argument: " .. pos[1]) end
  local target = opts.store or os.getenv("SLUICE_STORE") or ".sluice"
  if not require("sluice.pg_schema").is_url(target) then
    errf("hosts: %s is an LMDB store, which has one host (sluice serve holds its lock); "
      .. "several hosts share a PostgreSQL store: --store postgres://USER@HOST:PORT/DB", target)
    return 2
  end
  local ok, err = store.open(target, true)
  if not ok then
    errf("%s", err)
    return 2
  end
  local list, lerr = require("sluice._hosts").list(RECENT_S)
  if not list then
    errf("reading the hosts of %s: %s", store.dir(), lerr)
    return 1
  end
  if opts.json then
    for _, h in ipairs(list) do h.named = json.array(h.named or {}) end
    out(json.encode({ hosts = json.array(list) }), "\n")
    return 0
  end
  local rows = {}
  for i, h in ipairs(list) do
    local leases = h.leases or {}
    local state = h.alive and ("alive (%s left)"):format(age(h.expires_s))
      or ("expired %s ago"):format(age(-h.expires_s))
    rows[i] = { h.id, h.name, h.pid or "-", age(h.started_s), age(h.heartbeat_s) .. " ago", state,
      leases.run or 0, #(h.named or {}) > 0 and table.concat(h.named, ", ") or "-" }
  end
  if #rows == 0 then
    out(("no host serves %s (none alive, none expired in the last %d minutes)\n"):format(store.dir(), RECENT_S // 60))
    return 0
  end
  cli.table_print({ "HOST", "MACHINE", "PID", "UP", "HEARTBEAT", "STATE", "RUNS", "LEASES" }, rows)
  return 0
end

return M
