-- http_examples_spec.lua: the HTTP side of the examples, as the README
-- shows it with curl: billing_export triggered by a namespace's API key
-- under a daily quota (parameters defaulted from templates, a wrong one a
-- 400 naming it, the run's logs at GET /runs/{id}/logs, the parameters in
-- GET /pipelines), and orders posted to POST /events reaching
-- order_stream's analytics consumer.
local H = require "helper"
local HH = require "http_helper"
local json = require "sluice.json"
local sqlite = require "sluice.sqlite"

local P = H.root .. "/pipelines"
local yesterday = os.date("!%Y-%m-%d", os.time() - 86400)

local function key(store, name, ns, role)
  local code, out, err = H.sluice({ "keys", "add", name, "--namespace", ns, "--role", role, "--store", store })
  assert.are.equal(0, code, err)
  return out:match("([^\n]+)\n$")
end

describe("the examples over HTTP", function()
  it("billing_export runs for a namespace's key, under its daily quota", function()
    local cwd = H.tmpdir()
    local store = cwd .. "/store"
    local acme = key(store, "acme-bot", "acme", "runner")
    assert.are.equal(0, (H.sluice({ "namespaces", "set", "acme", "--runs-per-day", "2", "--store", store })))
    local serve = HH.serve(P, store, nil, { cwd = cwd })
    local function url(p) return serve.url .. p end
    local auth = { headers = { ["X-API-Key"] = acme } }
    H.task(function()
      -- a wrong parameter: 400 naming it, and no run counted
      local st, _, _, doc = HH.post(url("/runs/billing_export"), { date = 20261130 }, auth)
      assert.are.equal(400, st)
      assert.are.equal("invalid_input", doc.code)
      assert.matches("parameter 'date' must be a string, got integer 20261130", doc.error)

      st, _, _, doc = HH.post(url("/runs/billing_export?wait=30s"), {}, auth)
      assert.are.equal(200, st)
      assert.are.equal("completed", doc.status)
      assert.are.same({ date = yesterday, table = "acme_dev", rows = 4, total = 13.51,
        destination = "sqlite://out/billing_export.db#acme_dev" }, doc.result)
      assert.are.equal("acme", doc.namespace)
      local id = doc.run_id

      local db <close> = sqlite.open(cwd .. "/out/billing_export.db", { readonly = true })
      assert.are.same({ { n = 4 } }, db:rows("SELECT count(*) AS n FROM acme_dev WHERE date = ?", { yesterday }))

      st, _, _, doc = HH.get(url("/runs/" .. id .. "/logs"), auth)
      assert.are.equal(200, st)
      assert.are.equal(1, #doc.logs)
      assert.are.equal("exported", doc.logs[1].msg)
      assert.are.same({ table = "acme_dev", date = yesterday, rows = 4 }, doc.logs[1].fields)

      st, _, _, doc = HH.get(url("/pipelines"), auth)
      assert.are.equal(200, st)
      local listed
      for _, p in ipairs(doc.pipelines or doc) do
        if p.name == "billing_export" then listed = p end
      end
      assert.is_not_nil(listed)
      local by_name = {}
      for _, d in ipairs(listed.params) do by_name[d.name] = d end
      assert.are.equal("{{org_slug}}_{{env}}", by_name.target.default)

      -- the second run of the day is the last one the quota admits
      st = HH.post(url("/runs/billing_export?wait=30s"), { date = "2026-11-30" }, auth)
      assert.are.equal(200, st)
      st, _, _, doc = HH.post(url("/runs/billing_export"), {}, auth)
      assert.are.equal(429, st)
      assert.matches("daily run limit %(2%) reached for namespace acme", doc.error)
    end)
    serve:kill("sigterm")
    assert.are.equal(0, (serve:wait()))
  end)

  it("orders posted to /events reach the analytics consumer of order_stream", function()
    local cwd = H.tmpdir()
    local store = cwd .. "/store"
    local serve = HH.serve(P, store, nil, { cwd = cwd })
    H.task(function()
      local events = {
        { type = "order.created", stream = "orders:ada", data = { customer = "ada", total_cents = 1900 } },
        { type = "order.created", stream = "orders:bob", data = { customer = "bob", total_cents = 550 } },
      }
      local st = HH.post(serve.url .. "/events", events)
      assert.are.equal(201, st)
      local stats_path = cwd .. "/out/order_stream/stats.json"
      H.wait_until(function()
        local t = H.read(stats_path)
        return t and json.decode(t).orders == 2
      end, "the analytics consumer to count the posted orders", 20000, 20)
      assert.are.equal(2450, json.decode(H.read(stats_path)).revenue_cents)
      local _, _, _, doc = HH.get(serve.url .. "/events?stream=orders:*&from=TRIM_HORIZON")
      assert.are.equal(2, #doc.events)
      assert.are.equal("orders:ada", doc.events[1].stream)
    end)
    serve:kill("sigterm")
    assert.are.equal(0, (serve:wait()))
  end)
end)
