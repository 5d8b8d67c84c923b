--- sluice.api.ops: operations and discovery routes.
---   GET /health     (no key) {"status": "ok", "store", "uptime_s"}
---   GET /ready      (no key) 200 once serve has started, 503 while stopping
---   GET /metrics    Prometheus text format 0.0.4 (lua/metrics.lua)
---   GET /pipelines  each pipeline with its file, options, schedules,
---                   triggers and consumers (no key with --public-discovery)
---   POST /reload    (admin) every pipeline file loaded again, as SIGHUP and
---                   `sluice reload` do: {files: [{file, changes} | {file, error}]}
local http = require "sluice.router"
local clock = require "sluice._clock"
local json = require("sluice._codec").edge -- responses: JSON at the edge
local engine = require "sluice.engine"
local every = require "sluice.every"
local events = require "sluice.events"
local stream = require "sluice.stream"
local metrics = require "sluice.metrics"

http.observe = metrics.http
engine.on_step = metrics.step
require("sluice._store").set_run_observer(metrics.run_status)

local M = {}

local function ctx() return require("sluice.api").ctx end

http.route("GET", "/health", function()
  local c = ctx()
  return 200, { status = "ok", store = c.store, uptime_s = (clock.now() - c.started_us) // 1000000 }
end, { public = true })

http.route("GET", "/ready", function()
  local c = ctx()
  if engine.stopping then return 503, { status = "stopping", error = "the server is shutting down", code = "stopping" } end
  if not c.ready then return 503, { status = "starting", error = "the server is still starting", code = "starting" } end
  return 200, { status = "ready" }
end, { public = true })

http.route("GET", "/metrics", function(req)
  local c = ctx()
  local active = {}
  for _, a in pairs(engine.active) do
    local name = a.run.pipeline.name
    active[name] = (active[name] or 0) + 1
  end
  local lag = {}
  for _, pos in ipairs(stream.positions()) do lag[pos.name] = pos.lag end
  local text = metrics.render({
    active = active, lag = lag, events = stream.last_seq(),
    connections = c.server and c.server:stats().connections or 0,
  })
  req.res:send(200, "Content-Type: text/plain; version=0.0.4; charset=utf-8\r\n", text)
  req.stream_status = 200
end)

http.route("POST", "/reload", function()
  local files, err = require("sluice.reload").all()
  if not files then http.fail(500, "reload_failed", err) end
  local failed = 0
  for _, f in ipairs(files) do if f.error then failed = failed + 1 end end
  -- a file that fails keeps its old version: the reload happened, 200 either way
  return 200, { files = json.array(files), failed = failed }
end, { role = "admin" })

local function or_null(v) if v == nil then return json.null end return v end

local function pipeline_view(p, req)
  local o = p.opts or {}
  local file, line = (p.site or ""):match("^(.*):(%d+)$")
  local scheds = json.array({})
  for _, name in ipairs(every.order) do
    local s = every.defined[name]
    if s and s.pipeline == p.name and (s.source ~= "api" or not req.key or s.namespace == req.namespace) then
      scheds[#scheds + 1] = { name = s.name, spec = s.spec:canonical(), tz = s.tz or "UTC", source = s.source or "code" }
    end
  end
  local on = json.array({})
  for _, h in ipairs(events.handlers) do
    if h.pipeline == p then on[#on + 1] = h.pattern end
  end
  local consumers = json.array({})
  for _, name in ipairs(stream.consumer_order) do
    local c = stream.consumers[name]
    if c.pipeline == p then consumers[#consumers + 1] = { name = c.name, stream = c.pattern, batch = c.batch } end
  end
  local conc = o.concurrency
  return {
    name = p.name, file = or_null(p.file or file), line = or_null(tonumber(line)), description = or_null(o.description),
    parameters = or_null(o.parameters), schedules = scheds, on = on, consumers = consumers,
    params = p.params and require("sluice.params").describe(p) or json.null,
    concurrency = conc and { limit = conc.limit or 1, key = type(conc.key) == "function" and "function(input)" or or_null(conc.key) } or json.null,
    timeout = or_null(o.timeout), namespaces = or_null(o.namespaces),
  }
end

http.route("GET", "/pipelines", function(req)
  local names = {}
  for name in pairs(engine.pipelines) do names[#names + 1] = name end
  table.sort(names)
  local visible = require("sluice.api.runs").pipeline_visible
  local out = json.array({})
  for _, name in ipairs(names) do
    local p = engine.pipelines[name]
    if visible(p, req) then
      local ok, v = pcall(pipeline_view, p, req)
      out[#out + 1] = ok and v or { name = name, error = tostring(v) }
    end
  end
  return 200, { pipelines = out }
end)

return M
