-- http_ops_spec.lua: discovery and operations over HTTP against a real
-- `sluice serve`: GET /pipelines with options, schedules, triggers and
-- consumers; GET /metrics read by the Prometheus Python client's own
-- parser; 64 concurrent posters sharing commits (the writer's batch-size
-- histogram); a second --listen address; GET /consumers.
local H = require "helper"
local HH = require "http_helper"
local json = require "sluice.json"

local PIPELINES = [[
local etl = pipeline("etl", function(input) return step("x", function() return 1 end) end, {
  description = "loads the day's orders", timeout = "1h",
  parameters = { day = { type = "string", required = true } },
  concurrency = { key = function(input) return input.day end, limit = 2 },
})
every.day.at("2am")(etl, { day = "today" }, { name = "etl" })
on("order.*", function(data) step("seen", function() return data end) end)
consume("audit", "orders:*", function(events) step("count", function() return #events end) end)
pipeline("flaky", function()
  return step("try", { retries = 2, backoff = "10ms" }, function()
    local f = io.open(%q, "a"); f:write("x"); f:close()
    local n = #io.open(%q):read("a")
    if n < 3 then error("not yet") end
    return n
  end)
end)
]]

local PARSE = [[
import sys, json, urllib.request
from prometheus_client.parser import text_string_to_metric_families
r = urllib.request.urlopen(sys.argv[1] + "/metrics")
assert r.headers["Content-Type"].startswith("text/plain; version=0.0.4"), r.headers["Content-Type"]
out = {}
for fam in text_string_to_metric_families(r.read().decode()):
    out[fam.name] = {"type": fam.type, "samples": [[s.name, s.labels, s.value] for s in fam.samples]}
print(json.dumps(out))
]]

describe("operations over HTTP", function()
  local dir, store, serve
  local function url(p) return serve.url .. p end
  before_each(function()
    dir = H.tmpdir()
    store = dir .. "/store"
    os.execute("mkdir -p '" .. dir .. "/p'")
    H.write(dir .. "/p/ops.lua", PIPELINES:format(dir .. "/tries", dir .. "/tries"))
  end)
  after_each(function()
    serve:kill("sigterm")
    serve:wait()
  end)

  it("describes every pipeline with its options, schedules, triggers and consumers", function()
    serve = HH.serve(dir .. "/p", store, { "--listen", "127.0.0.1:0" })
    H.task(function()
      local st, _, _, doc = HH.get(url("/pipelines"))
      assert.are.equal(200, st)
      local by = {}
      for _, p in ipairs(doc.pipelines) do by[p.name] = p end
      local etl = by.etl
      assert.are.equal(dir .. "/p/ops.lua", etl.file)
      assert.are.equal(1, etl.line)
      assert.are.equal("loads the day's orders", etl.description)
      assert.are.same({ day = { type = "string", required = true } }, etl.parameters)
      assert.are.same({ limit = 2, key = "function(input)" }, etl.concurrency)
      assert.are.equal("1h", etl.timeout)
      assert.are.same({ { name = "etl", spec = "0 2 * * *", tz = "UTC", source = "code" } }, etl.schedules)
      assert.are.same({ "order.*" }, by["on:order.*"].on)
      assert.are.same({ { name = "audit", stream = "orders:*", batch = 500 } }, by["consume:audit"].consumers)
      -- the second --listen address serves too
      local addrs = {}
      for a in serve:log():gmatch("listening on http://([%d.]+:%d+)") do addrs[#addrs + 1] = a end
      assert.are.equal(2, #addrs)
      assert.are.equal(200, (HH.get("http://" .. addrs[2] .. "/health")))
    end)
  end)

  it("reloads every pipeline file on POST /reload, naming a broken one's file:line", function()
    serve = HH.serve(dir .. "/p", store)
    H.task(function()
      H.write(dir .. "/p/broken.lua", 'pipeline("b", function() end)\nthis is not lua\n')
      local st, _, _, doc = HH.request("POST", url("/reload"))
      assert.are.equal(200, st)
      assert.are.equal(1, doc.failed)
      local by = {}
      for _, f in ipairs(doc.files) do by[f.file] = f end
      assert.is_nil(by[dir .. "/p/ops.lua"].error)
      assert.matches("broken.lua:2:", by[dir .. "/p/broken.lua"].error, 1, true)
      -- the good file stays served
      local _, _, _, pl = HH.get(url("/pipelines"))
      local names = {}
      for _, p in ipairs(pl.pipelines) do names[p.name] = true end
      assert.is_true(names.etl)
      assert.is_nil(names.b)
      assert.are.equal(405, (HH.get(url("/reload"))))
    end)
  end)

  it("exposes metrics that the Prometheus client parses, with 64 posters sharing commits", function()
    serve = HH.serve(dir .. "/p", store)
    H.task(function()
      HH.post(url("/runs/flaky?wait=20s"), "")
      HH.post(url("/runs/nope"), "")
      local code, _, err = HH.python([[
import http.client, sys, threading, json
port = int(sys.argv[1])
def poster(t):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    for n in range(20):
        c.request("POST", "/events", json.dumps({"type": "t", "stream": "orders:%d" % t, "data": n}),
                  {"Content-Type": "application/json"})
        r = c.getresponse(); r.read()
        assert r.status == 201, r.status
threads = [threading.Thread(target=poster, args=(t,)) for t in range(64)]
for t in threads: t.start()
for t in threads: t.join()
]], { serve.port }, 120000)
      assert.are.equal(0, code, err)
      local pcode, out, perr = HH.python(PARSE, { serve.url })
      assert.are.equal(0, pcode, perr)
      local m = json.decode(out)
      local function value(fam, name, want)
        for _, s in ipairs(m[fam].samples) do
          local ok = s[1] == name
          for k, v in pairs(want or {}) do ok = ok and s[2][k] == v end
          if ok then return s[3] end
        end
      end
      for _, fam in ipairs({ "sluice_runs", "sluice_runs_active", "sluice_step_duration_seconds", "sluice_step_retries",
          "sluice_events_appended", "sluice_consumer_lag_events", "sluice_writer_batch_size",
          "sluice_writer_commit_seconds", "sluice_store_map_bytes", "sluice_http_requests",
          "sluice_http_request_duration_seconds", "sluice_http_connections" }) do
        assert.truthy(m[fam], fam .. " is missing")
      end
      assert.are.equal("counter", m.sluice_runs.type)
      assert.are.equal("histogram", m.sluice_writer_batch_size.type)
      assert.are.equal(1, value("sluice_runs", "sluice_runs_total", { pipeline = "flaky", status = "completed" }))
      assert.are.equal(2, value("sluice_step_retries", "sluice_step_retries_total"))
      assert.are.equal(1, value("sluice_step_duration_seconds", "sluice_step_duration_seconds_count", { pipeline = "flaky" }))
      assert.are.equal(1280, value("sluice_events_appended", "sluice_events_appended_total"))
      local lag = value("sluice_consumer_lag_events", "sluice_consumer_lag_events", { consumer = "audit" })
      assert.is_true(lag >= 0 and lag <= 1280) -- the consumer runs meanwhile
      assert.are.equal(1280, value("sluice_http_requests", "sluice_http_requests_total", { route = "POST /events", code = "201" }))
      assert.are.equal(1, value("sluice_http_requests", "sluice_http_requests_total", { route = "POST /runs/{rest...}", code = "404" }))
      -- LMDB's memory map (a PostgreSQL store has none: 0)
      assert.is_true(value("sluice_store_map_bytes", "sluice_store_map_bytes") >= (H.backend == "lmdb" and 1024 * 1024 or 0))
      assert.is_true(value("sluice_http_connections", "sluice_http_connections") >= 1)
      -- group commit: the writer made the 1280 posted events (and the rest)
      -- durable in fewer commits than batches
      local batches = value("sluice_writer_batch_size", "sluice_writer_batch_size_sum")
      local commits = value("sluice_writer_batch_size", "sluice_writer_batch_size_count")
      assert.is_true(batches >= 1280)
      assert.is_true(commits < batches, ("%d commits for %d batches"):format(commits, batches))
      assert.are.equal(commits, value("sluice_writer_commit_seconds", "sluice_writer_commit_seconds_count"))
      -- consumers over HTTP
      local st, _, _, c = HH.get(url("/consumers"))
      assert.are.equal(200, st)
      assert.are.same({ "audit", "orders:*" }, { c.consumers[1].name, c.consumers[1].stream })
    end)
  end)
end)
