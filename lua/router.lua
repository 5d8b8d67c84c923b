--- sluice.router: the router of the HTTP API. Routes are registered in one
--- table (lua/api/*.lua, a file per group); each request runs in its own
--- task (sched.spawn), so a handler may wait for a commit or a run without
--- holding up other connections. A handler returns status, document [,
--- header lines] (the document is sent as JSON), raises http.fail(...) for
--- an error the client should see, or answers itself through req.res (a
--- stream). Anything else it raises is a 500 carrying the request id, with
--- the traceback in the log. Every response has X-Request-Id (set by the C
--- server); errors are {"error": message, "code": snake_case}.
---
--- Path patterns: literal segments, {name} (one segment) and {name...} (one
--- or more segments, so pipeline names and run ids may contain "/"), matched
--- after percent-decoding each segment.
local hs = require "sluice._http_server"
local clock = require "sluice._clock"
local codec = require "sluice._codec"
local json = require("sluice._codec").edge -- responses: JSON at the edge
local sched = require "sluice.sched"

local M = {}

local routes = {} -- {method, pattern, parts, handler, role, public, label}
M.routes = routes
local by_first = {} -- first literal segment -> its routes, in order (lookups scan only those)
local ANY = {} -- the key of routes whose first segment is a parameter

--- Registers a route. opts: role = "reader"|"runner"|"admin" (default
--- reader), public = true (no key needed).
function M.route(method, pattern, handler, opts)
  opts = opts or {}
  local parts = {}
  for seg in pattern:gmatch("[^/]+") do
    local rest = seg:match("^{(.+)%.%.%.}$")
    local name = seg:match("^{(.+)}$")
    parts[#parts + 1] = rest and { rest = rest } or name and { name = name } or { lit = seg }
  end
  local r = {
    method = method, pattern = pattern, parts = parts, handler = handler,
    role = opts.role or "reader", public = opts.public, label = method .. " " .. pattern,
  }
  routes[#routes + 1] = r
  -- "/" is filed under "", a pattern starting with a parameter ("/{org}/pipelines",
  -- the dashboard's) under ANY, looked up after the literal ones
  local first = not parts[1] and "" or parts[1].lit or (parts[1].name and ANY)
  if not first then error("http.route: a pattern starts with a literal segment or {name}: " .. pattern, 2) end
  by_first[first] = by_first[first] or {}
  table.insert(by_first[first], r)
end

--- The error a handler raises for the client: status, code, message and
--- optional extra fields ({headers = "Name: v\r\n", ...} for the response).
local Fail = {}
Fail.__index = Fail
Fail.__tostring = function(e) return e.message end

function M.fail(status, code, message, extra)
  local e = setmetatable({}, Fail)
  for k, v in pairs(extra or {}) do e[k] = v end
  -- an answer, not a bug: no traceback (sched.traceback would take one)
  e.status, e.code, e.message, e.traceback = status, code, message, false
  error(e, 0)
end

--- The integer query parameter `name` of q (default `default`), from 1 to
--- max; a 400 naming the field otherwise.
function M.int_param(q, name, default, max)
  if not q[name] then return default end
  local v = math.tointeger(tonumber(q[name]))
  if not v or v < 1 or v > max then
    M.fail(400, "invalid_field", ("%s must be an integer from 1 to %d, got %s"):format(name, max, q[name]), { field = name })
  end
  return v
end

local function unescape(s)
  if not s:find("[%%+]") then return s end
  return (s:gsub("%%(%x%x)", function(h) return string.char(tonumber(h, 16)) end))
end

local function query_unescape(s)
  return unescape((s:gsub("+", " ")))
end

local function parse_query(q)
  local out = {}
  if not q or q == "" then return out end
  for pair in q:gmatch("[^&]+") do
    local k, v = pair:match("^([^=]*)=?(.*)$")
    out[query_unescape(k)] = query_unescape(v)
  end
  return out
end

-- segments of a path, percent-decoded; nil for a path that is not one
local function segments(path)
  local segs = {}
  for seg in path:gmatch("[^/]+") do segs[#segs + 1] = unescape(seg) end
  return segs
end

local function match(route, segs)
  local parts = route.parts
  local np, ns = #parts, #segs
  local params = nil
  local si = 1
  for pi = 1, np do
    local p = parts[pi]
    if p.rest then
      local take = ns - si + 1 - (np - pi)
      if take < 1 then return nil end
      params = params or {}
      params[p.rest] = table.concat(segs, "/", si, si + take - 1)
      si = si + take
    else
      local seg = segs[si]
      if seg == nil then return nil end
      if p.lit then
        if seg ~= p.lit then return nil end
      else
        params = params or {}
        params[p.name] = seg
      end
      si = si + 1
    end
  end
  if si ~= ns + 1 then return nil end
  return params or {}
end

-- the first route of list matching method m and segs: route, params | nil,
-- allowed (the methods of the routes that match segs, added to allowed)
local function scan(list, m, segs, allowed)
  for _, r in ipairs(list or {}) do
    local params = match(r, segs)
    if params then
      if r.method == m then return r, params end
      allowed = allowed or {}
      allowed[#allowed + 1] = r.method
    end
  end
  return nil, allowed
end

--- The route for method and path: route, params | nil, allowed methods
--- (a path no route has: nil, nil).
function M.find(method, segs)
  local m = method == "HEAD" and "GET" or method
  local r, params = scan(by_first[segs[1] or ""], m, segs, nil)
  if r or not segs[1] then return r, params end
  local r2, p2 = scan(by_first[ANY], m, segs, params)
  return r2, p2
end

local JSON_HDR = "Content-Type: application/json\r\n"

local function encode_doc(doc)
  local ok, body = pcall(json.encode, doc)
  if not ok then return nil, body end
  return body .. "\n"
end

local function send_json(res, status, doc, headers)
  local body, err = encode_doc(doc)
  if not body then
    status, body = 500, json.encode({ error = "the response cannot be encoded: " .. tostring(err), code = "internal" }) .. "\n"
  end
  res:send(status, headers and (JSON_HDR .. headers) or JSON_HDR, body)
  return status
end
M.send_json = send_json

---------------------------------------------------------------------------
-- observation: what /metrics reports

M.observe = nil -- function(label, status, seconds) set by lua/api/ops.lua

local log = require("sluice.log").host -- printf-style, in the --log-format of serve
M.log = log

--- The request's body as JSON: the value, or a 400 naming the byte offset.
local function json_body(req, what)
  local body = req.body
  if body == "" then return nil end
  local v, err = codec.try_decode(body)
  if err then M.fail(400, "invalid_json", ("%s is not valid JSON: %s"):format(what or "the body", err)) end
  return v
end

-- the object methods a handler sees on req
local Req = {}
Req.__index = Req
Req.json = json_body

--- req:object(what) -> the body decoded, which must be a JSON object.
function Req:object(what)
  local v = json_body(self, what)
  if type(v) ~= "table" or json.is_array(v) then
    M.fail(400, "invalid_body", ("%s must be a JSON object, got %s"):format(what or "the body",
      v == nil and "an empty body" or type(v) == "table" and "an array" or v == json.null and "null" or type(v)))
  end
  return v
end

---------------------------------------------------------------------------
-- dispatch

M.authorize = nil -- function(req, route) set by lua/api.lua: raises http.fail

local function finish(req, status, t0)
  if M.observe then M.observe(req.route_label, status, (clock.hrtime() - t0) / 1e9) end
end

local function on_error(req, err)
  local res = req.res
  if getmetatable(err) == Fail then
    local doc = { error = err.message, code = err.code }
    for k, v in pairs(err) do
      if k ~= "status" and k ~= "message" and k ~= "code" and k ~= "headers" and k ~= "traceback" then doc[k] = v end
    end
    return send_json(res, err.status, doc, err.headers)
  end
  local msg = type(err) == "table" and (tostring(err.message) .. "\n" .. tostring(err.traceback or "")) or tostring(err)
  M.log("http %s %s (request %s): handler error: %s", req.method, req.path, req.id, msg)
  return send_json(res, 500, { error = ("internal error (request %s); the log has the details"):format(req.id),
    code = "internal", request_id = req.id })
end

local function run_handler(req, route)
  if M.authorize and not route.public then M.authorize(req, route) end
  local status, doc, headers = route.handler(req)
  return status and { status, doc, headers }
end

--- The server's on_request: routes, then runs the handler in a task.
function M.dispatch(r, res)
  local t0 = clock.hrtime()
  local target = r.target
  local path, query = target:match("^([^?]*)%??(.*)$")
  r.path, r.res = path, res
  setmetatable(r, Req)
  local segs = segments(path)
  local route, params = M.find(r.method, segs)
  if not route then
    r.route_label = "unmatched"
    local status
    if params then
      table.sort(params)
      status = send_json(res, 405, { error = ("%s is not allowed on %s (allowed: %s)"):format(r.method, path,
        table.concat(params, ", ")), code = "method_not_allowed" }, "Allow: " .. table.concat(params, ", ") .. "\r\n")
    else
      status = send_json(res, 404, { error = ("no route %s %s"):format(r.method, path), code = "not_found" })
    end
    return finish(r, status, t0)
  end
  r.route_label, r.params, r.query = route.label, params, parse_query(query)
  sched.spawn({}, run_handler, function(ok, out)
    local sok, status = pcall(function()
      if not ok then return on_error(r, out) end
      if out then return send_json(res, out[1], out[2], out[3]) end
      return r.stream_status or 200 -- answered through res itself
    end)
    if not sok then
      -- a handler's return the router cannot send: still an answer
      M.log("http %s %s (request %s): %s", r.method, r.path, r.id, tostring(status))
      status = send_json(res, 500, { error = ("internal error (request %s)"):format(r.id), code = "internal", request_id = r.id })
    end
    finish(r, status, t0)
  end, r, route)
end

---------------------------------------------------------------------------
-- the server

--- Starts one server on every address of opts.listen ({"host:port", ...}).
--- Returns the server and the bound addresses, or nil, message.
function M.start(opts)
  local srv = hs.new({
    on_request = M.dispatch, max_body = opts.max_body, max_connections = opts.max_connections,
    header_timeout_ms = opts.header_timeout_ms, body_timeout_ms = opts.body_timeout_ms,
    idle_timeout_ms = opts.idle_timeout_ms,
  })
  local bound = {}
  for _, addr in ipairs(opts.listen) do
    local h, port = addr:match("^%[(.+)%]:(%d+)$")
    if not h then h, port = addr:match("^([^:]+):(%d+)$") end
    if not h then
      srv:close()
      return nil, ("--listen %s: expected HOST:PORT (127.0.0.1:8787, [::1]:8787, 0.0.0.0:0)"):format(addr)
    end
    if h == "localhost" then h = "127.0.0.1" end
    local b, err = srv:listen(h, tonumber(port))
    if not b then
      srv:close()
      return nil, err
    end
    bound[#bound + 1] = b
  end
  return srv, bound
end

return M
