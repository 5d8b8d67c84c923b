--- sluice.api: the HTTP API of `sluice serve` (DESIGN §4): its command-line
--- options, its start and stop, and who may call what. The routes are in
--- lua/api/*.lua (one file per group), the router in lua/router.lua, keys in
--- lua/keys.lua, namespaces and quotas in lua/quota.lua.
---
--- Authorization: with no API key in the store the API is open (meant for
--- loopback: a non-loopback --listen without keys logs a warning). Once a
--- key exists every route but /health and /ready (and /pipelines with
--- --public-discovery) needs X-API-Key or Authorization: Bearer; a reader
--- may GET, a runner may also start, cancel and rerun runs and post events,
--- an admin may also change schedules. Each key belongs to a namespace.
local http = require "sluice.router"
local keys = require "sluice.keys"
local quota = require "sluice.quota"
local duration = require "sluice.duration"
local clock = require "sluice._clock"

local M = {}

M.DEFAULT_LISTEN = "127.0.0.1:8787"

--- serve's options for the API (merged into its option table by cli.lua).
M.cli_options = {
  listen = "list", ["no-http"] = "bool", ["max-body"] = "value", ["max-connections"] = "value",
  ["public-discovery"] = "bool", ["http-timeout"] = "value", ["idle-timeout"] = "value",
}


local function size_of(text, what)
  local n, unit = tostring(text):lower():match("^(%d+)([km]?)i?b?$")
  if not n then error(("%s: expected a size in bytes, such as 1048576, 512k or 4m, got %q"):format(what, text), 0) end
  return math.tointeger(tonumber(n) * (unit == "k" and 1024 or unit == "m" and 1048576 or 1))
end

--- The API's settings from serve's parsed options, or nil, message.
function M.options(o)
  local ok, res = pcall(function()
    local h = { enabled = not o["no-http"], listen = o.listen or { M.DEFAULT_LISTEN },
      default_listen = o.listen == nil, public_discovery = o["public-discovery"] or false }
    if o["max-body"] then h.max_body = size_of(o["max-body"], "--max-body") end
    if o["max-connections"] then
      h.max_connections = math.tointeger(tonumber(o["max-connections"]))
      if not h.max_connections or h.max_connections < 1 then
        error("--max-connections must be a positive integer, got " .. o["max-connections"], 0)
      end
    end
    if o["http-timeout"] then
      local ms = math.max(1, math.floor(duration.ms(o["http-timeout"], "--http-timeout")))
      h.header_timeout_ms, h.body_timeout_ms = ms, ms
    end
    if o["idle-timeout"] then
      h.idle_timeout_ms = math.max(1, math.floor(duration.ms(o["idle-timeout"], "--idle-timeout")))
    end
    return h
  end)
  if not ok then return nil, tostring(res) end
  return res
end

local function loopback(addr)
  return addr:match("^127%.") or addr:match("^%[::1%]") or addr:match("^localhost:")
end

---------------------------------------------------------------------------
-- authorization

local ROLE_RANK = { reader = 1, runner = 2, admin = 3 }

local function presented_key(req)
  local k = req.headers["x-api-key"]
  if k then return k end
  local auth = req.headers["authorization"]
  return auth and auth:match("^[Bb]earer%s+(%S+)%s*$")
end

--- Sets req.key, req.namespace and req.role, or raises 401/403.
function M.authorize(req, route)
  local presented = presented_key(req)
  if not keys.any() then
    -- open: no keys configured; a namespace may still be chosen per request
    req.namespace, req.role = quota.DEFAULT_NS, "admin"
  else
    if not presented then
      http.fail(401, "unauthorized", "this API needs a key: send it as X-API-Key or Authorization: Bearer")
    end
    local rec = keys.verify(presented)
    if not rec then http.fail(401, "unauthorized", "unknown or revoked API key") end
    req.key, req.namespace, req.role = rec, rec.namespace, rec.role
    keys.touch(rec)
  end
  if ROLE_RANK[req.role] < ROLE_RANK[route.role] then
    http.fail(403, "forbidden", ("%s %s needs the %s role; key '%s' is a %s"):format(req.method, route.pattern,
      route.role, req.key and req.key.name or "?", req.role))
  end
  local ns = quota.get(req.namespace)
  req.ns_record = ns or false
  if ns and ns.status == "suspended" then
    http.fail(403, "namespace_suspended", ("namespace %s is suspended"):format(req.namespace))
  end
end

---------------------------------------------------------------------------
-- start and stop

local groups = { "sluice.api.ops", "sluice.api.events", "sluice.api.runs", "sluice.api.schedules",
  "sluice.api.web" }
for _, g in ipairs(groups) do require(g) end

--- Starts the API inside serve: indexes the runs of an older store,
--- listens. `launch` is serve's way to
--- start a run. Returns a handle {stop = fn, addresses = {...}}, or nil,
--- message.
function M.start(opts, launch)
  local h = opts.http or M.options({})
  local ctx = { launch = launch, opts = h, store = require("sluice._store").dir() or opts.store, started_us = clock.now(), ready = false }
  M.ctx = ctx
  local n = require("sluice.engine").index_runs()
  if n > 0 then http.log("run listings: indexed the %d runs the store had", n) end
  -- the schedules created over the API: registered by the scheduler's pass
  -- over the stored records (api.schedules.adopt), one pass for both
  if not h.enabled then
    http.log("http: off (--no-http)")
    return { stop = function() end, ready = function() ctx.ready = true end, addresses = {}, ctx = ctx }
  end
  http.authorize = M.authorize
  for _, r in ipairs(http.routes) do
    if r.label == "GET /pipelines" then r.public = h.public_discovery end
  end
  local srv, bound = http.start(h)
  if not srv and h.default_listen then
    -- the default address taken (another serve): run without the API
    -- rather than refuse to serve; an explicit --listen is never skipped
    http.log("warning: http: %s; the HTTP API is off (pass --listen HOST:PORT, port 0 for any free port)", bound)
    return { stop = function() end, ready = function() ctx.ready = true end, addresses = {}, ctx = ctx }
  end
  if not srv then return nil, bound end
  ctx.server = srv
  for _, b in ipairs(bound) do
    http.log("http: listening on http://%s", b)
    if not loopback(b) and not keys.any() then
      http.log("warning: http on %s, which is not a loopback address, and no API key exists: anyone who can reach it may start runs and read the store; add one with `sluice keys add NAME`", b)
    end
  end
  local handle = { addresses = bound, ctx = ctx }
  function handle.ready() ctx.ready = true end
  function handle.stop()
    if ctx.server then
      ctx.server:close()
      ctx.server = nil
    end
  end
  return handle
end

return M
