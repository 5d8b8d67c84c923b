--- sluice.api.ops: operations routes.
---   GET /health   (no key) {"status": "ok", "store", "uptime_s"}
---   GET /ready    (no key) 200 once serve has started, 503 while stopping
local http = require "sluice.http"
local host = require "sluice.host"
local engine = require "sluice.engine"

local M = {}

local function ctx() return require("sluice.api").ctx end

http.route("GET", "/health", function()
  local c = ctx()
  return 200, { status = "ok", store = c.store, uptime_s = (host.now() - c.started_us) // 1000000 }
end, { public = true })

http.route("GET", "/ready", function()
  local c = ctx()
  if engine.stopping then return 503, { status = "stopping", error = "the server is shutting down", code = "stopping" } end
  if not c.ready then return 503, { status = "starting", error = "the server is still starting", code = "starting" } end
  return 200, { status = "ready" }
end, { public = true })

return M
