--- sluice.api.web: the dashboard (web/) on `sluice serve`'s HTTP port.
---   GET /                                      the page (index.html)
---   GET /{org}/pipelines[/history|/schedules]  the page, scoped to namespace org
---   GET /ui/{path...}                          its scripts, styles and vendored libraries
--- The files are embedded in the binary at build time (host/web_embed.cmake,
--- host/l_web.c), or read from SLUICE_WEB_ROOT while developing. They are
--- public: they hold no data; the page reads everything through the JSON
--- API with the key the user gives it, like any other client.
---
--- Every file is sent with an ETag and `Cache-Control: no-cache` (a browser
--- revalidates and gets a 304 without a body, so a new binary is never
--- mixed with files cached from an older one), and the page with a strict
--- Content-Security-Policy: scripts, styles and connections from this
--- origin only, no inline script or style, no frames, no plugins.
local http = require "sluice.router"
local web = require "sluice._web"

local M = {}

M.CSP = table.concat({
  "default-src 'none'", "script-src 'self'", "style-src 'self'", "img-src 'self' data:",
  "connect-src 'self'", "font-src 'self'", "base-uri 'none'", "form-action 'none'",
  "frame-ancestors 'none'",
}, "; ")

local COMMON = "Cache-Control: no-cache\r\nX-Content-Type-Options: nosniff\r\n" ..
  "Referrer-Policy: no-referrer\r\nContent-Security-Policy: " .. M.CSP .. "\r\n"

-- whether an If-None-Match header names etag (a list, weak tags, or *)
local function matches(header, etag)
  if not header then return false end
  for tag in header:gmatch("[^,]+") do
    tag = tag:match("^%s*(.-)%s*$"):gsub("^W/", "")
    if tag == "*" or tag == etag then return true end
  end
  return false
end

local function send(req, path)
  local body, ctype, etag = web.get(path)
  if not body then
    if web.root() then http.log("http %s: %s", req.id, ctype) end
    http.fail(404, "not_found", ("no file %s in the dashboard"):format(path))
  end
  local headers = "ETag: " .. etag .. "\r\n" .. COMMON
  if matches(req.headers["if-none-match"], etag) then
    req.stream_status = 304
    req.res:send(304, headers, "")
    return
  end
  req.stream_status = 200
  req.res:send(200, "Content-Type: " .. ctype .. "\r\n" .. headers, body)
end

local function page(req) return send(req, "index.html") end

http.route("GET", "/", page, { public = true })
http.route("GET", "/ui/{path...}", function(req) return send(req, req.params.path) end, { public = true })
http.route("GET", "/{org}/pipelines", page, { public = true })
http.route("GET", "/{org}/pipelines/history", page, { public = true })
http.route("GET", "/{org}/pipelines/schedules", page, { public = true })

return M
