-- http_schedules_spec.lua: schedules over HTTP against a real `sluice
-- serve`: the list with both kinds and sources, enabling and disabling a
-- code schedule (persisted across a restart; its spec is the file's: 409),
-- schedules created over the API that fire, survive a restart, change and
-- go away, bad cron expressions named by field and position, and a manual
-- trigger.
local H = require "helper"
local HH = require "http_helper"
local json = require "sluice.json"

describe("schedules over HTTP", function()
  local dir, store, serve
  local function url(p) return serve.url .. p end
  local function restart()
    serve:kill("sigterm")
    serve:wait()
    serve = HH.serve(dir .. "/p", store)
  end
  before_each(function()
    dir = H.tmpdir()
    store = dir .. "/store"
    os.execute("mkdir -p '" .. dir .. "/p'")
    H.write(dir .. "/p/s.lua", [[
local etl = pipeline("etl", function(input) return step("x", function() return input or "none" end) end)
every.day.at("2am")(etl, { source = "s3" }, { name = "etl" })
every(7).minutes(etl, nil, { name = "etl-7m" })
]])
    serve = HH.serve(dir .. "/p", store)
  end)
  after_each(function()
    serve:kill("sigterm")
    serve:wait()
  end)

  local function schedules()
    local st, _, _, doc = HH.get(url("/schedules"))
    assert.are.equal(200, st)
    local by = {}
    for _, s in ipairs(doc.schedules) do by[s.name] = s end
    return by
  end

  local function runs_of(name)
    local _, _, _, doc = HH.get(url("/runs?pipeline=etl&limit=1000"))
    local out = {}
    for _, r in ipairs(doc.runs) do
      if r.run_id:find(name .. "@", 1, true) == 1 then out[#out + 1] = r end
    end
    return out
  end

  it("lists code schedules and enables or disables them durably; their spec is the file's", function()
    H.task(function()
      local s = schedules()
      assert.are.same({ "etl", "0 2 * * *", "cron", "code", true, "UTC" },
        { s.etl.pipeline, s.etl.canonical, s.etl.kind, s.etl.source, s.etl.enabled, s.etl.tz })
      assert.matches("^%d%d%d%d%-%d%d%-%d%dT02:00:00Z$", s.etl.next_run_at)
      -- the next 5 fires, the first being next_run_at, a day apart
      assert.are.equal(5, #s.etl.next_fires)
      assert.are.equal(s.etl.next_run_at, s.etl.next_fires[1])
      for _, t in ipairs(s.etl.next_fires) do assert.matches("T02:00:00Z$", t) end
      assert.are_not.equal(s.etl.next_fires[1], s.etl.next_fires[2])
      assert.are.same({ "interval", 420000, "every 7m" }, { s["etl-7m"].kind, s["etl-7m"].interval_ms, s["etl-7m"].canonical })
      local st, _, _, doc = HH.request("PUT", url("/schedules/etl"), { body = '{"enabled": false}' })
      assert.are.equal(200, st)
      assert.is_false(doc.enabled)
      assert.are.same({}, doc.next_fires) -- a disabled schedule fires never
      st, _, _, doc = HH.request("PUT", url("/schedules/etl"), { body = '{"cron": "* * * * *"}' })
      assert.are.equal(409, st)
      assert.matches("edit the file", doc.error, 1, true)
      st, _, _, doc = HH.request("PUT", url("/schedules/etl"), { body = '{"enabled": "no"}' })
      assert.are.equal(400, st)
      assert.are.equal("enabled", doc.field)
      assert.are.equal(404, (HH.request("PUT", url("/schedules/nope"), { body = '{"enabled": true}' })))
      assert.are.equal(409, (HH.request("DELETE", url("/schedules/etl"))))
      restart()
      assert.is_false(schedules().etl.enabled)
      HH.request("PUT", url("/schedules/etl"), { body = '{"enabled": true}' })
      restart()
      assert.is_true(schedules().etl.enabled)
    end)
  end)

  it("creates schedules held in the store that fire, survive a restart, change and go away", function()
    H.task(function()
      local st, _, _, doc = HH.post(url("/schedules"), { name = "tick", pipeline = "etl", every = "1s", input = { n = 1 } })
      assert.are.equal(201, st)
      assert.are.same({ "api", "interval", 1000, "default" }, { doc.source, doc.kind, doc.interval_ms, doc.namespace })
      assert.are.equal(409, (HH.post(url("/schedules"), { name = "tick", pipeline = "etl", every = "1s" })))
      H.wait_until(function() return #runs_of("tick") >= 1 end, "a fire of tick", 15000, 50)
      local r = runs_of("tick")[1]
      assert.are.same({ n = 1 }, r.input)
      assert.are.same({ kind = "schedule", by = "tick" }, r.trigger)
      restart()
      local s = schedules().tick
      assert.are.same({ "api", "every 1s", { n = 1 } }, { s.source, s.canonical, s.input })
      local before = #runs_of("tick")
      H.wait_until(function() return #runs_of("tick") > before end, "a fire after the restart", 15000, 50)
      -- a bad expression is named by field and position
      st, _, _, doc = HH.request("PUT", url("/schedules/tick"), { body = '{"cron": "0 25 * * *"}' })
      assert.are.equal(400, st)
      assert.are.same({ "cron", 2, 2 }, { doc.field, doc.position, doc.offset })
      assert.matches("hour field", doc.error, 1, true)
      st, _, _, doc = HH.request("PUT", url("/schedules/tick"), { body = '{"cron": "0 3 * * *", "tz": "Europe/Berlin"}' })
      assert.are.equal(200, st)
      assert.are.same({ "cron", "0 3 * * *", "Europe/Berlin" }, { doc.kind, doc.canonical, doc.tz })
      st = HH.request("DELETE", url("/schedules/tick"))
      assert.are.equal(200, st)
      assert.is_nil(schedules().tick)
      restart()
      assert.is_nil(schedules().tick)
    end)
  end)

  it("refuses bad schedules with a 400 naming the field", function()
    H.task(function()
      local cases = {
        { { pipeline = "etl", every = "1s" }, "name" },
        { { name = "x", pipeline = "nope", every = "1s" }, "pipeline" },
        { { name = "x", pipeline = "etl" }, "cron" },
        { { name = "x", pipeline = "etl", cron = "*/x * * * *" }, "cron" },
        { { name = "x", pipeline = "etl", every = "soon" }, "every" },
        { { name = "x", pipeline = "etl", every = "1s", tz = "Mars/Base" }, "tz" },
      }
      for _, c in ipairs(cases) do
        local st, _, _, doc = HH.post(url("/schedules"), c[1])
        assert.are.equal(400, st, json.encode(c[1]))
        assert.are.equal(c[2], doc.field, json.encode(c[1]))
      end
      assert.are.equal(400, (HH.post(url("/schedules"), "[1]")))
    end)
  end)

  it("triggers a run now", function()
    H.task(function()
      local st, _, _, doc = HH.post(url("/schedules/etl/trigger"), "")
      assert.are.equal(202, st)
      assert.matches("^etl@manual%-%d%d%d%d%-%d%d%-%d%dT[%d:.]+Z$", doc.run_id)
      local id = doc.run_id
      H.wait_until(function()
        local _, _, _, r = HH.get(url("/runs/" .. id))
        return r and r.status == "completed"
      end, "the triggered run", 15000, 20)
      local _, _, _, r = HH.get(url("/runs/" .. id))
      assert.are.same({ source = "s3" }, r.result)
      assert.are.equal(404, (HH.post(url("/schedules/nope/trigger"), "")))
    end)
  end)
end)
