---@meta sluice.http
-- types/sluice/http.lua: LuaCATS stub of require "sluice.http" (stdlib/sluice/http.lua).
-- Requests suspend only their coroutine; failures return nil, "CODE: message", "CODE"
-- (ETIMEDOUT, ECONNREFUSED, EDNS, ETLS, ETOOBIG, ...); http.must.* raises instead.

local http = {}

---@class sluice.http.Response
---@field status integer
---@field headers table<string, string> lower-case names
---@field body string
---@field url string the URL that answered, after redirects
---@field time_ms number
---@field bytes? integer http.download: bytes written
---@field path? string http.download: the file written

---@class sluice.http.Options
---@field method? string
---@field url? string
---@field headers? table<string, string|number>
---@field body? string
---@field json? any request body encoded as JSON
---@field query? table<string, string|number|boolean|table>
---@field timeout? number|string default "60s"
---@field connect_timeout? number|string default "10s"
---@field follow? boolean|integer follow redirects (default true, at most 10)
---@field max_bytes? integer ETOOBIG past this many body bytes
---@field raise? boolean raise instead of returning nil, message, code
---@field raise_status? boolean a status >= 400 is an EHTTP failure

---@param opts sluice.http.Options with url
---@return sluice.http.Response? response
---@return string? message
---@return string? code
function http.request(opts) end

---@param url string
---@param opts? sluice.http.Options
---@return sluice.http.Response? response
---@return string? message
---@return string? code
function http.get(url, opts) end

---@param url string
---@param opts? sluice.http.Options
---@return sluice.http.Response? response
---@return string? message
---@return string? code
function http.post(url, opts) end

---@param url string
---@param opts? sluice.http.Options
---@return sluice.http.Response? response
---@return string? message
---@return string? code
function http.put(url, opts) end

---@param url string
---@param opts? sluice.http.Options
---@return sluice.http.Response? response
---@return string? message
---@return string? code
function http.patch(url, opts) end

---@param url string
---@param opts? sluice.http.Options
---@return sluice.http.Response? response
---@return string? message
---@return string? code
function http.delete(url, opts) end

---@param url string
---@param opts? sluice.http.Options
---@return sluice.http.Response? response
---@return string? message
---@return string? code
function http.head(url, opts) end

--- GETs url and decodes the body as JSON (a status >= 400 is EHTTP, a body
--- that is not JSON EJSON). Returns value, response.
---@param url string
---@param opts? sluice.http.Options
---@return any value
---@return sluice.http.Response|string response_or_message
---@return string? code
function http.json(url, opts) end

--- Streams the body into path (written aside, fsync'ed, renamed into place).
---@param url string
---@param path string
---@param opts? sluice.http.Options
---@return sluice.http.Response? response
---@return string? message
---@return string? code
function http.download(url, path, opts) end

--- libcurl's version, TLS library and features.
---@return table
function http.version() end

--- The same functions, raising an error table {code, message, url, status} on failure.
http.must = http

return http
