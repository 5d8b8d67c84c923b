-- http_auth_spec.lua: keys, roles, namespaces and quotas of the HTTP API
-- against a real `sluice serve`, with keys made by `sluice keys add` while
-- it runs: 401 without a key or with a revoked one, 403 by role, runs,
-- events and schedules isolated by namespace (404 for another's run),
-- ctx().namespace, pipelines limited to namespaces, a daily quota's 429
-- with Retry-After that a restart does not reset, concurrent and event
-- rate limits, a suspended namespace, and the warning for a public address
-- without keys.
local H = require "helper"
local HH = require "http_helper"
local json = require "sluice.json"

local PIPELINES = [[
pipeline("whoami", function() return step("ns", function() return ctx().namespace end) end)
pipeline("acme-only", function() return 1 end, { namespaces = { "acme" } })
pipeline("nap", function() sleep("30s") end)
]]

describe("keys, namespaces and quotas", function()
  local dir, store, serve
  local function url(p) return serve.url .. p end
  local function key(name, ns, role)
    local args = { "keys", "add", name, "--store", store }
    if ns then args[#args + 1], args[#args + 2] = "--namespace", ns end
    if role then args[#args + 1], args[#args + 2] = "--role", role end
    local code, out, err = H.sluice(args)
    assert.are.equal(0, code, err)
    local last = out:match("([^\n]+)\n$")
    assert.matches("^sk_%x+_%x+$", last)
    return last
  end
  local function as(k, extra)
    local h = { ["X-API-Key"] = k }
    for a, b in pairs(extra or {}) do h[a] = b end
    return { headers = h }
  end
  local function restart(args)
    serve:kill("sigterm")
    serve:wait()
    serve = HH.serve(dir .. "/p", store, args)
  end
  before_each(function()
    dir = H.tmpdir()
    store = dir .. "/store"
    os.execute("mkdir -p '" .. dir .. "/p'")
    H.write(dir .. "/p/auth.lua", PIPELINES)
    serve = HH.serve(dir .. "/p", store)
  end)
  after_each(function()
    serve:kill("sigterm")
    serve:wait()
  end)

  it("is open with no key; once a key exists it needs one, and roles limit what it may do", function()
    H.task(function()
      assert.are.equal(200, (HH.post(url("/runs/whoami?wait=10s"), "")))
      local admin = key("ops", nil, "admin")
      local reader = key("viewer", nil, "reader")
      local runner = key("bot", nil, "runner")
      local st, _, hd, doc = HH.get(url("/runs"))
      assert.are.equal(401, st)
      assert.are.equal("unauthorized", doc.code)
      assert.truthy(hd["x-request-id"])
      assert.are.equal(401, (HH.get(url("/runs"), as("sk_000000000000_" .. string.rep("0", 64)))))
      assert.are.equal(401, (HH.get(url("/runs"), as(admin:sub(1, -2) .. (admin:sub(-1) == "0" and "1" or "0")))))
      assert.are.equal(200, (HH.get(url("/health"))))
      assert.are.equal(200, (HH.get(url("/ready"))))
      assert.are.equal(401, (HH.get(url("/pipelines"))))
      -- reader: GETs only
      assert.are.equal(200, (HH.get(url("/runs"), as(reader))))
      assert.are.equal(200, (HH.get(url("/runs"), { headers = { Authorization = "Bearer " .. reader } })))
      st, _, _, doc = HH.post(url("/runs/whoami"), "", as(reader))
      assert.are.equal(403, st)
      assert.matches("needs the runner role", doc.error, 1, true)
      assert.are.equal(403, (HH.post(url("/events"), { type = "t", stream = "s" }, as(reader))))
      -- runner: runs and events, not schedules
      assert.are.equal(202, (HH.post(url("/runs/whoami"), "", as(runner))))
      assert.are.equal(201, (HH.post(url("/events"), { type = "t", stream = "s" }, as(runner))))
      st, _, _, doc = HH.post(url("/schedules"), { name = "x", pipeline = "whoami", every = "1h" }, as(runner))
      assert.are.equal(403, st)
      assert.matches("admin", doc.error, 1, true)
      assert.are.equal(201, (HH.post(url("/schedules"), { name = "x", pipeline = "whoami", every = "1h" }, as(admin))))
      -- keys list shows use, never a key or its hash
      local code, out = H.sluice({ "keys", "list", "--json", "--store", store })
      assert.are.equal(0, code)
      local listed = json.decode(out).keys
      assert.are.equal(3, #listed)
      for _, k in ipairs(listed) do
        assert.is_nil(k.hash)
        assert.not_matches(k.id .. "_", out, 1, true)
      end
      H.wait_until(function()
        local _, o = H.sluice({ "keys", "list", "--json", "--store", store })
        for _, k in ipairs(json.decode(o).keys) do
          if k.name == "viewer" then return k.last_used_at ~= nil end
        end
      end, "last use of the key to be recorded", 10000, 50)
      assert.is_false(out:find(reader, 1, true) ~= nil)
      -- revoked: refused at once
      assert.are.equal(0, (H.sluice({ "keys", "revoke", "viewer", "--store", store })))
      assert.are.equal(401, (HH.get(url("/runs"), as(reader))))
    end)
  end)

  it("keeps namespaces apart: runs, events, schedules and pipelines", function()
    H.task(function()
      local acme = key("acme-bot", "acme", "admin")
      local beta = key("beta-bot", "beta", "admin")
      local ops = key("ops", nil, "admin")
      local st, _, _, doc = HH.post(url("/runs/whoami?wait=10s"), "", as(acme))
      assert.are.equal(200, st)
      assert.are.equal("acme", doc.namespace)
      assert.are.equal("acme", doc.result) -- ctx().namespace inside the run
      local id = doc.run_id
      assert.are.equal(200, (HH.get(url("/runs/" .. id), as(acme))))
      assert.are.equal(404, (HH.get(url("/runs/" .. id), as(beta))))
      assert.are.equal(200, (HH.get(url("/runs/" .. id .. "/step?id=ns"), as(acme))))
      assert.are.equal(404, (HH.get(url("/runs/" .. id .. "/step?id=ns"), as(beta))))
      assert.are.equal(404, (HH.post(url("/runs/" .. id .. "/cancel"), "", as(beta))))
      local _, _, _, list = HH.get(url("/runs"), as(beta))
      assert.are.equal(0, #list.runs)
      _, _, _, list = HH.get(url("/runs"), as(acme))
      assert.are.equal(1, #list.runs)
      assert.are.equal(403, (HH.get(url("/runs?namespace=acme"), as(beta))))
      -- events: each namespace its own stream keys
      assert.are.equal(201, (HH.post(url("/events"), { type = "t", stream = "orders:1", data = 1 }, as(acme))))
      assert.are.equal(201, (HH.post(url("/events"), { type = "t", stream = "orders:1", data = 2 }, as(beta))))
      local _, _, _, ev = HH.get(url("/events?stream=orders:*"), as(beta))
      assert.are.equal(1, #ev.events)
      assert.are.same({ "orders:1", 2 }, { ev.events[1].stream, ev.events[1].data })
      _, _, _, ev = HH.get(url("/events?stream=*"), as(ops))
      local streams = {}
      for _, e in ipairs(ev.events) do streams[#streams + 1] = e.stream end
      assert.are.same({ "acme/orders:1", "beta/orders:1" }, streams)
      -- schedules created by one namespace are not another's
      assert.are.equal(201, (HH.post(url("/schedules"), { name = "acme-hourly", pipeline = "whoami", every = "1h" }, as(acme))))
      local _, _, _, sch = HH.get(url("/schedules"), as(beta))
      assert.are.equal(0, #sch.schedules)
      assert.are.equal(404, (HH.request("DELETE", url("/schedules/acme-hourly"), as(beta))))
      -- a pipeline declared for some namespaces only
      assert.are.equal(404, (HH.post(url("/runs/acme-only"), "", as(beta))))
      assert.are.equal(202, (HH.post(url("/runs/acme-only"), "", as(acme))))
      local _, _, _, pl = HH.get(url("/pipelines"), as(beta))
      for _, p in ipairs(pl.pipelines) do assert.are_not.equal("acme-only", p.name) end
    end)
  end)

  it("enforces quotas with 429 and Retry-After, durably across a restart, and suspends", function()
    H.task(function()
      local acme = key("acme-bot", "acme", "runner")
      assert.are.equal(0, (H.sluice({ "namespaces", "set", "acme", "--runs-per-day", "2", "--store", store })))
      assert.are.equal(202, (HH.post(url("/runs/whoami"), "", as(acme))))
      assert.are.equal(202, (HH.post(url("/runs/whoami"), "", as(acme))))
      local st, _, hd, doc = HH.post(url("/runs/whoami"), "", as(acme))
      assert.are.equal(429, st)
      assert.are.equal("daily run limit (2) reached for namespace acme", doc.error)
      local retry = tonumber(hd["retry-after"])
      assert.is_true(retry >= 1 and retry <= 86400)
      restart()
      assert.are.equal(429, (HH.post(url("/runs/whoami"), "", as(acme))))
      local code, out = H.sluice({ "namespaces", "list", "--json", "--store", store })
      assert.are.equal(0, code)
      assert.are.equal(2, json.decode(out).namespaces[1].runs_today)
      -- concurrent runs
      assert.are.equal(0, (H.sluice({ "namespaces", "set", "acme", "--runs-per-day", "0", "--concurrent-runs", "1", "--store", store })))
      assert.are.equal(202, (HH.post(url("/runs/nap"), "", as(acme))))
      st, _, hd, doc = HH.post(url("/runs/nap"), "", as(acme))
      assert.are.equal(429, st)
      assert.matches("concurrent run limit (1)", doc.error, 1, true)
      assert.truthy(hd["retry-after"])
      -- events per second
      assert.are.equal(0, (H.sluice({ "namespaces", "set", "acme", "--events-per-second", "5", "--store", store })))
      local batch = {}
      for i = 1, 5 do batch[i] = { type = "t", stream = "s", data = i } end
      assert.are.equal(201, (HH.post(url("/events"), batch, as(acme))))
      st, _, _, doc = HH.post(url("/events"), batch, as(acme))
      assert.are.equal(429, st)
      assert.matches("event rate limit (5 per second)", doc.error, 1, true)
      -- suspended
      assert.are.equal(0, (H.sluice({ "namespaces", "set", "acme", "--status", "suspended", "--store", store })))
      st, _, _, doc = HH.get(url("/runs"), as(acme))
      assert.are.equal(403, st)
      assert.are.equal("namespace acme is suspended", doc.error)
      assert.are.equal(2, (H.sluice({ "namespaces", "set", "acme", "--status", "gone", "--store", store })))
    end)
  end)

  it("warns at start when it listens on a non-loopback address with no key", function()
    H.task(function()
      restart({ "--listen", "0.0.0.0:0" })
      assert.matches("warning: http on 0.0.0.0:%d+, which is not a loopback address, and no API key exists", serve:log())
      local _ = key("ops", nil, "admin")
      restart({ "--listen", "0.0.0.0:0" })
      assert.not_matches("no API key exists", serve:log(), 1, true)
    end)
  end)
end)
