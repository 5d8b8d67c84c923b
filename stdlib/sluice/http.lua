--- sluice.http: HTTP(S) and file:// requests over libcurl on the host's
--- loop (host/l_http.c). A request suspends only the coroutine that makes
--- it (a run, a step, a parallel branch, or a script's main chunk); hundreds
--- can be in flight at once. One connection cache serves every request
--- (keep-alive, HTTP/2 where the server offers it over TLS), TLS checks
--- against the system CA store, and curl's proxy variables apply
--- (http_proxy, https_proxy, no_proxy).
---
--- Failures: a transport error returns nil, "CODE: message (METHOD url)",
--- "CODE" (ETIMEDOUT, ECONNREFUSED, EDNS, ETLS, ETOOBIG, ECONNRESET,
--- EREDIRECT, EURL, ENOENT, EPROTO, EIO, ...). A 4xx or 5xx reply is a
--- response, not an error, unless raise_status = true (then EHTTP). With
--- raise = true, or through http.must, failures raise an error table
--- {code=, message=, url=, status=} (tostring gives the message), so a
--- step's retries apply.
local core = require "sluice._http"
local json = require "sluice.json"
local duration = require "sluice.duration"

local M = {}

local this_file = debug.getinfo(1, "S").source

-- Raises msg at the first caller outside this file (tail calls inside it
-- make fixed error levels point past the user's line).
local function usage(msg)
  local level = 2
  while true do
    local info = debug.getinfo(level, "S")
    if not info or info.source ~= this_file then break end
    level = level + 1
  end
  error(msg, level)
end

---@class sluice.http.Response
---@field status integer HTTP status (200 for a file:// read)
---@field headers table<string, string> lower-case names; repeated headers joined with ", "
---@field body string the body (http.download: absent; see bytes and path)
---@field url string the URL that answered, after redirects
---@field time_ms number from the call to the reply, in milliseconds
---@field bytes? integer http.download: bytes written
---@field path? string http.download: the file written

---@class sluice.http.Options
---@field method? string "GET" by default
---@field url? string for http.request
---@field headers? table<string, string|number> request headers
---@field body? string request body
---@field json? any request body encoded as JSON (Content-Type: application/json)
---@field query? table<string, string|number|boolean|table> appended to the URL, keys sorted; a table value repeats the key
---@field timeout? number|string whole request, default "60s" (http.download: none, but 60 s without a byte fails)
---@field connect_timeout? number|string default "10s"
---@field follow? boolean|integer follow redirects (default true, at most 10; an integer sets the maximum)
---@field max_bytes? integer fail with ETOOBIG past this many body bytes
---@field raise? boolean raise instead of returning nil, message, code
---@field raise_status? boolean a status >= 400 is an EHTTP failure

local known = {
  method = true, url = true, headers = true, body = true, json = true, query = true,
  timeout = true, connect_timeout = true, follow = true, max_bytes = true, raise = true,
  raise_status = true,
}

local HttpError = {}
HttpError.__index = HttpError
HttpError.__tostring = function(e) return e.message end
M.Error = HttpError

local function fail(opts, message, code, extra)
  if opts.raise then
    local e = setmetatable({ code = code, message = message }, HttpError)
    if extra then for k, v in pairs(extra) do e[k] = v end end
    error(e, 0)
  end
  return nil, message, code
end

local function escape(s)
  return (tostring(s):gsub("[^%w%-%._~]", function(c) return ("%%%02X"):format(c:byte()) end))
end

local function with_query(url, query)
  local keys = {}
  for k in pairs(query) do
    if type(k) ~= "string" then usage("sluice.http: query keys must be strings") end
    keys[#keys + 1] = k
  end
  table.sort(keys)
  local parts = {}
  for _, k in ipairs(keys) do
    local v = query[k]
    if type(v) == "table" then
      for _, item in ipairs(v) do parts[#parts + 1] = escape(k) .. "=" .. escape(item) end
    else
      parts[#parts + 1] = escape(k) .. "=" .. escape(v)
    end
  end
  if #parts == 0 then return url end
  return url .. (url:find("?", 1, true) and "&" or "?") .. table.concat(parts, "&")
end

local function ms(v, what, dflt)
  if v == nil then return dflt end
  local ok, res = pcall(duration.ms, v, "sluice.http " .. what)
  if not ok then usage((tostring(res):gsub("^[^:]*:%d+: ", ""))) end
  return math.max(1, math.floor(res + 0.5))
end

-- The spec the C core takes, from the user's options.
local function build(opts, path)
  for k in pairs(opts) do
    if not known[k] then
      usage(("sluice.http: unknown option '%s' (known: method, url, headers, body, json, query, "
        .. "timeout, connect_timeout, follow, max_bytes, raise, raise_status)"):format(tostring(k)), 4)
    end
  end
  local url = opts.url
  if type(url) ~= "string" then usage("sluice.http: url must be a string, got " .. type(url)) end
  if opts.query ~= nil then
    if type(opts.query) ~= "table" then usage("sluice.http: query must be a table") end
    url = with_query(url, opts.query)
  end
  local method = opts.method or "GET"
  if type(method) ~= "string" or not method:match("^%a+$") then
    usage("sluice.http: method must be a word like \"GET\", got " .. tostring(method))
  end
  local headers, have = {}, {}
  if opts.headers ~= nil then
    if type(opts.headers) ~= "table" then usage("sluice.http: headers must be a table of name = value") end
    for k, v in pairs(opts.headers) do
      if type(k) ~= "string" or (type(v) ~= "string" and type(v) ~= "number") then
        usage("sluice.http: headers must be a table of name = value strings")
      end
      if tostring(v):find("[\r\n]") then usage(("sluice.http: header '%s' has a line break"):format(k)) end
      headers[#headers + 1] = k .. ": " .. tostring(v)
      have[k:lower()] = true
    end
  end
  local body = opts.body
  if body ~= nil and type(body) ~= "string" then usage("sluice.http: body must be a string (use json = for a table)") end
  if opts.json ~= nil then
    if body ~= nil then usage("sluice.http: give body or json, not both") end
    body = json.encode(opts.json)
    if not have["content-type"] then headers[#headers + 1] = "Content-Type: application/json" end
  end
  local follow = opts.follow
  if follow == nil or follow == true then
    follow = 10
  elseif follow == false then
    follow = 0
  elseif math.type(follow) ~= "integer" or follow < 0 then
    usage("sluice.http: follow must be a boolean or a number of redirects")
  end
  local max_bytes = opts.max_bytes
  if max_bytes ~= nil and (math.type(max_bytes) ~= "integer" or max_bytes < 0) then
    usage("sluice.http: max_bytes must be an integer >= 0")
  end
  return {
    method = method:upper(), url = url, headers = headers, body = body,
    timeout_ms = ms(opts.timeout, "timeout", path and 0 or 60000),
    connect_timeout_ms = ms(opts.connect_timeout, "connect_timeout", 10000),
    follow = follow, max_bytes = max_bytes, path = path,
  }
end

local function perform(opts, path)
  local spec = build(opts, path)
  local res, msg, code = core.request(spec)
  if not res then return fail(opts, msg, code, { url = spec.url }) end
  if opts.raise_status and res.status >= 400 then
    return fail(opts, ("EHTTP: the server answered %d (%s %s)"):format(res.status, spec.method, res.url),
      "EHTTP", { url = res.url, status = res.status, response = res })
  end
  return res
end

--- Makes a request. Returns the response, or nil, "CODE: message", "CODE".
---@param opts sluice.http.Options with url
---@return sluice.http.Response? response
---@return string? message
---@return string? code
function M.request(opts)
  if type(opts) ~= "table" then usage("sluice.http.request: expected a table of options") end
  return perform(opts)
end

local function with(url, opts, method)
  if type(url) ~= "string" then usage("sluice.http: url must be a string, got " .. type(url)) end
  if opts ~= nil and type(opts) ~= "table" then usage("sluice.http: options must be a table") end
  local o = {}
  if opts then for k, v in pairs(opts) do o[k] = v end end
  o.url = url
  if method then o.method = method end
  return o
end

--- GET url. Returns the response, or nil, "CODE: message", "CODE".
---@param url string
---@param opts? sluice.http.Options
---@return sluice.http.Response? response
---@return string? message
---@return string? code
function M.get(url, opts) return perform(with(url, opts, "GET")) end

--- POST url (body = or json =).
---@param url string
---@param opts? sluice.http.Options
---@return sluice.http.Response? response
---@return string? message
---@return string? code
function M.post(url, opts) return perform(with(url, opts, "POST")) end

--- PUT url.
---@param url string
---@param opts? sluice.http.Options
---@return sluice.http.Response? response
---@return string? message
---@return string? code
function M.put(url, opts) return perform(with(url, opts, "PUT")) end

--- PATCH url.
---@param url string
---@param opts? sluice.http.Options
---@return sluice.http.Response? response
---@return string? message
---@return string? code
function M.patch(url, opts) return perform(with(url, opts, "PATCH")) end

--- DELETE url.
---@param url string
---@param opts? sluice.http.Options
---@return sluice.http.Response? response
---@return string? message
---@return string? code
function M.delete(url, opts) return perform(with(url, opts, "DELETE")) end

--- HEAD url (the response's body is empty).
---@param url string
---@param opts? sluice.http.Options
---@return sluice.http.Response? response
---@return string? message
---@return string? code
function M.head(url, opts) return perform(with(url, opts, "HEAD")) end

--- GETs url (or opts.method) and decodes the body as JSON with the store's
--- codec (integers stay integers). A status >= 400 fails with EHTTP, a body
--- that is not JSON with EJSON. Returns value, response.
---@param url string
---@param opts? sluice.http.Options
---@return any value
---@return sluice.http.Response|string response_or_message
---@return string? code
function M.json(url, opts)
  local o = with(url, opts)
  o.headers = o.headers or { Accept = "application/json" }
  o.raise_status = true
  local res, msg, code = perform(o)
  if not res then return nil, msg, code end
  local ok, value = pcall(json.decode, res.body)
  if not ok then
    return fail(o, ("EJSON: the body is not JSON: %s (%s)"):format(tostring(value), res.url),
      "EJSON", { url = res.url, status = res.status, response = res })
  end
  return value, res
end

--- Streams the body of url into the file at path without holding it in
--- memory: written beside path, fsync'ed, renamed into place (a reader
--- never sees half a file; a failure leaves no file and the old one, if
--- any, intact). A status >= 400 fails with EHTTP. The response has bytes
--- and path instead of body.
---@param url string
---@param path string
---@param opts? sluice.http.Options
---@return sluice.http.Response? response
---@return string? message
---@return string? code
function M.download(url, path, opts)
  if type(path) ~= "string" then usage("sluice.http.download: path must be a string") end
  return perform(with(url, opts), path)
end

--- The same functions, raising instead of returning nil, message, code:
--- http.must.get(url) inside a step fails the step, so its retries apply.
---@class sluice.http.must
---@field request fun(opts: sluice.http.Options): sluice.http.Response
---@field get fun(url: string, opts?: sluice.http.Options): sluice.http.Response
---@field post fun(url: string, opts?: sluice.http.Options): sluice.http.Response
---@field put fun(url: string, opts?: sluice.http.Options): sluice.http.Response
---@field patch fun(url: string, opts?: sluice.http.Options): sluice.http.Response
---@field delete fun(url: string, opts?: sluice.http.Options): sluice.http.Response
---@field head fun(url: string, opts?: sluice.http.Options): sluice.http.Response
---@field json fun(url: string, opts?: sluice.http.Options): any, sluice.http.Response
---@field download fun(url: string, path: string, opts?: sluice.http.Options): sluice.http.Response
M.must = {}
function M.must.request(opts)
  if type(opts) ~= "table" then usage("sluice.http.must.request: expected a table of options") end
  local o = with(opts.url, opts)
  o.raise = true
  return perform(o)
end
for _, name in ipairs({ "get", "post", "put", "patch", "delete", "head" }) do
  local method = name:upper()
  M.must[name] = function(url, opts)
    local o = with(url, opts, method)
    o.raise = true
    return perform(o)
  end
end
function M.must.json(url, opts)
  local o = with(url, opts)
  o.raise = true
  return M.json(url, o)
end
function M.must.download(url, path, opts)
  local o = with(url, opts)
  o.raise = true
  return M.download(url, path, o)
end

--- libcurl's version, TLS library and features.
function M.version() return core.version() end

return M
