--- sluice.cli_keys: the commands for the HTTP API's keys and namespaces
--- (lua/keys.lua, lua/quota.lua). They write the store directly, also while
--- a serve runs; serve reads keys and namespaces on every request.
local json = require("sluice._codec").edge -- what is printed: JSON at the edge
local cli = require "sluice.cli"
local keys = require "sluice.keys"
local quota = require "sluice.quota"

local M = {}

local function out(...) io.stdout:write(...) end
local function errf(fmt, ...) io.stderr:write("sluice: ", fmt:format(...), "\n") end

cli.USAGE.keys = [[
usage: sluice keys add NAME [--namespace NS] [--role admin|runner|reader] [--store DIR|URL]
       sluice keys list [--store DIR|URL] [--json]
       sluice keys revoke NAME [--store DIR|URL]

API keys of the HTTP API. Once a key exists, every route but /health and
/ready needs one (X-API-Key: KEY or Authorization: Bearer KEY). add prints
the new key once, as the last line of stdout; the store keeps only a hash.
Roles: reader (GET), runner (also start, cancel and rerun runs, post events),
admin (also change schedules). --namespace (default "default") scopes the
key's runs, stream keys and schedules. Works while sluice serve runs.
]]

cli.USAGE.namespaces = [[
usage: sluice namespaces set NS [--runs-per-day N] [--concurrent-runs N]
                                [--events-per-second N] [--status active|trial|suspended] [--store DIR|URL]
       sluice namespaces list [--store DIR|URL] [--json]

Namespaces (organisations) of the HTTP API and their quotas; 0 removes a
limit. Over a limit the API answers 429 with Retry-After; a suspended
namespace gets 403. list shows the runs started today (UTC) over the API.
]]

local function count_opt(v, name)
  if v == nil then return nil end
  local n = math.tointeger(tonumber(v))
  if not n or n < 0 then return nil, ("--%s must be an integer >= 0, got %s"):format(name, v) end
  return n
end

function M.keys(args)
  local opts, pos = cli.begin("keys", args, { namespace = "value", role = "value", store = "value", json = "bool" })
  if not opts then return pos end
  local sub = pos[1]
  if sub == "add" then
    if #pos ~= 2 then return cli.usage_error("keys", "keys add needs exactly one NAME") end
    local ns = opts.namespace or quota.DEFAULT_NS
    if not quota.valid_name(ns) then return cli.usage_error("keys", ("--namespace %q: use lowercase letters, digits and _ . -"):format(ns)) end
    if not cli.open_store(opts, false) then return 2 end
    local key, rec = keys.add(pos[2], ns, opts.role or "runner")
    if not key then
      errf("%s", rec)
      return 2
    end
    out(("key %s (namespace %s, role %s) created; it is shown only now:\n"):format(rec.name, rec.namespace, rec.role))
    out(key, "\n")
    return 0
  elseif sub == "list" then
    if #pos ~= 1 then return cli.usage_error("keys", "keys list takes no argument") end
    if not cli.open_store(opts, true) then return 2 end
    local list = keys.list()
    if opts.json then
      out(json.encode({ keys = json.array(list) }), "\n")
      return 0
    end
    local rows = {}
    for i, k in ipairs(list) do rows[i] = { k.name, k.namespace, k.role, k.created_at, k.last_used_at or "never" } end
    cli.table_print({ "NAME", "NAMESPACE", "ROLE", "CREATED", "LAST USED" }, rows)
    return 0
  elseif sub == "revoke" then
    if #pos ~= 2 then return cli.usage_error("keys", "keys revoke needs exactly one NAME") end
    if not cli.open_store(opts, false) then return 2 end
    local ok, err = keys.revoke(pos[2])
    if not ok then
      errf("%s", err)
      return 2
    end
    out(("key %s revoked\n"):format(pos[2]))
    return 0
  end
  return cli.usage_error("keys", sub and ("unknown keys command: " .. sub) or "keys needs add, list or revoke")
end

function M.namespaces(args)
  local opts, pos = cli.begin("namespaces", args, { ["runs-per-day"] = "value", ["concurrent-runs"] = "value",
    ["events-per-second"] = "value", status = "value", store = "value", json = "bool" })
  if not opts then return pos end
  local sub = pos[1]
  if sub == "set" then
    if #pos ~= 2 then return cli.usage_error("namespaces", "namespaces set needs exactly one NS") end
    local fields = { status = opts.status }
    for _, name in ipairs({ "runs-per-day", "concurrent-runs", "events-per-second" }) do
      local n, err = count_opt(opts[name], name)
      if err then return cli.usage_error("namespaces", err) end
      fields[name:gsub("-", "_")] = n
    end
    if not cli.open_store(opts, false) then return 2 end
    local rec, err = quota.set(pos[2], fields)
    if not rec then
      errf("%s", err)
      return 2
    end
    out(json.encode(rec), "\n")
    return 0
  elseif sub == "list" then
    if #pos ~= 1 then return cli.usage_error("namespaces", "namespaces list takes no argument") end
    if not cli.open_store(opts, true) then return 2 end
    local list = quota.list()
    if opts.json then
      out(json.encode({ namespaces = json.array(list) }), "\n")
      return 0
    end
    local rows = {}
    for i, n in ipairs(list) do
      rows[i] = { n.name, n.status, n.runs_per_day and ("%d/%d"):format(n.runs_today, n.runs_per_day) or tostring(n.runs_today),
        n.concurrent_runs or "-", n.events_per_second or "-" }
    end
    cli.table_print({ "NAMESPACE", "STATUS", "RUNS TODAY", "CONCURRENT", "EVENTS/S" }, rows)
    return 0
  end
  return cli.usage_error("namespaces", sub and ("unknown namespaces command: " .. sub) or "namespaces needs set or list")
end

return M
