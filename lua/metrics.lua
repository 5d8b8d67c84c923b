--- sluice.metrics: what GET /metrics reports, in the Prometheus text format
--- 0.0.4. Counters and histograms of this process (runs ended, steps,
--- HTTP requests), gauges read when scraped (active runs, connections,
--- consumer lag, the store's map), and the writer's commit histograms
--- from C (writer.c).
local store = require "sluice._store"
local sorted_keys = require "sluice.sorted_keys"

local M = {}

local DURATION_BOUNDS = { 0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60 }

local function new_hist() return { counts = {}, sum = 0, n = 0 } end

local function observe(h, v, bounds)
  local i = 1
  while bounds[i] and v > bounds[i] do i = i + 1 end
  h.counts[i] = (h.counts[i] or 0) + 1
  h.sum = h.sum + v
  h.n = h.n + 1
end

local runs_total = {}  -- pipeline \0 status -> n
local steps = {}       -- pipeline -> histogram of step seconds
local retries = 0
local http_total = {}  -- route \0 code -> n
local http_hist = {}   -- route -> histogram of seconds

function M.run_status(rec, _, status)
  if status == "completed" or status == "failed" or status == "cancelled" then
    local k = rec.pipeline .. "\0" .. status
    runs_total[k] = (runs_total[k] or 0) + 1
  end
end

function M.step(pipeline, attempts, us)
  local h = steps[pipeline]
  if not h then
    h = new_hist()
    steps[pipeline] = h
  end
  observe(h, us / 1e6, DURATION_BOUNDS)
  retries = retries + (attempts - 1)
end

function M.http(route, code, seconds)
  local k = route .. "\0" .. code
  http_total[k] = (http_total[k] or 0) + 1
  local h = http_hist[route]
  if not h then
    h = new_hist()
    http_hist[route] = h
  end
  observe(h, seconds, DURATION_BOUNDS)
end

---------------------------------------------------------------------------
-- the text format

local function esc(v)
  return (tostring(v):gsub("[\\\"\n]", { ["\\"] = "\\\\", ['"'] = '\\"', ["\n"] = "\\n" }))
end

local function labels(t)
  if not t or #t == 0 then return "" end
  local parts = {}
  for i = 1, #t, 2 do parts[#parts + 1] = ('%s="%s"'):format(t[i], esc(t[i + 1])) end
  return "{" .. table.concat(parts, ",") .. "}"
end

local function num(v)
  if math.type(v) == "integer" then return tostring(v) end
  if v ~= v then return "NaN" end
  if v == math.huge then return "+Inf" end
  return ("%.17g"):format(v)
end

local Out = {}
Out.__index = Out

function Out:family(name, kind, help)
  self[#self + 1] = ("# HELP %s %s\n# TYPE %s %s\n"):format(name, help, name, kind)
end

function Out:sample(name, lbl, v)
  self[#self + 1] = ("%s%s %s\n"):format(name, labels(lbl), num(v))
end

-- a histogram from counts per bucket (counts[i] for bounds[i], the last for +Inf)
function Out:hist(name, lbl, counts, bounds, sum, n, scale)
  local acc = 0
  lbl = lbl or {}
  for i = 1, #bounds + 1 do
    acc = acc + (counts[i] or 0)
    local le = bounds[i] and num(bounds[i] * (scale or 1)) or "+Inf"
    local l = { table.unpack(lbl) }
    l[#l + 1], l[#l + 2] = "le", le
    self:sample(name .. "_bucket", l, acc)
  end
  self:sample(name .. "_sum", lbl, sum)
  self:sample(name .. "_count", lbl, n)
end

-- a sample for each key "<a>\0<b>" of t, labelled la=a, lb=b
function Out:by_two(name, t, la, lb)
  for _, k in ipairs(sorted_keys(t)) do
    local a, b = k:match("^(.*)%z(.*)$")
    self:sample(name, { la, a, lb, b }, t[k])
  end
end

-- a histogram (DURATION_BOUNDS) for each key of t, labelled label=key
function Out:hists(name, t, label)
  for _, k in ipairs(sorted_keys(t)) do
    local h = t[k]
    self:hist(name, { label, k }, h.counts, DURATION_BOUNDS, h.sum, h.n)
  end
end

--- The text of /metrics. gauges = {active = {pipeline = n}, connections =
--- n, lag = {consumer = n}, events = n}.
function M.render(g)
  local o = setmetatable({}, Out)
  o:family("sluice_runs_total", "counter", "Runs that ended in this process, by pipeline and final status.")
  o:by_two("sluice_runs_total", runs_total, "pipeline", "status")
  o:family("sluice_runs_active", "gauge", "Runs executing in this process, by pipeline.")
  for _, p in ipairs(sorted_keys(g.active)) do o:sample("sluice_runs_active", { "pipeline", p }, g.active[p]) end
  o:family("sluice_step_duration_seconds", "histogram", "Executed steps (not replayed ones), first attempt to result, by pipeline.")
  o:hists("sluice_step_duration_seconds", steps, "pipeline")
  o:family("sluice_step_retries_total", "counter", "Step attempts after the first.")
  o:sample("sluice_step_retries_total", nil, retries)
  o:family("sluice_events_appended_total", "counter", "Events appended to the stream of this store since it was created.")
  o:sample("sluice_events_appended_total", nil, g.events)
  o:family("sluice_consumer_lag_events", "gauge", "Events after each stream consumer's checkpoint.")
  for _, c in ipairs(sorted_keys(g.lag)) do o:sample("sluice_consumer_lag_events", { "consumer", c }, g.lag[c]) end
  local w = store.stats()
  o:family("sluice_writer_batch_size", "histogram", "Batches (waiting writers) made durable by each commit.")
  o:hist("sluice_writer_batch_size", nil, w.batch_hist, w.batch_hist_bounds, w.batches, w.commits)
  o:family("sluice_writer_commit_seconds", "histogram", "Write transactions, begin to durable (fsync).")
  o:hist("sluice_writer_commit_seconds", nil, w.commit_hist, w.commit_hist_bounds, w.commit_us_sum / 1e6, w.commits, 1e-6)
  o:family("sluice_store_map_bytes", "gauge", "Size of the store's memory map.")
  o:sample("sluice_store_map_bytes", nil, w.map_bytes or 0)
  o:family("sluice_http_requests_total", "counter", "HTTP requests answered, by route and status code.")
  o:by_two("sluice_http_requests_total", http_total, "route", "code")
  o:family("sluice_http_request_duration_seconds", "histogram", "HTTP requests, received to answered, by route.")
  o:hists("sluice_http_request_duration_seconds", http_hist, "route")
  o:family("sluice_http_connections", "gauge", "Open HTTP connections.")
  o:sample("sluice_http_connections", nil, g.connections)
  return table.concat(o)
end

return M
