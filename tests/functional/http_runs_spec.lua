-- http_runs_spec.lua: runs over HTTP against a real `sluice serve`:
-- POST /runs/{pipeline} (202, ?wait=, Idempotency-Key, names with "/",
-- 404 and 400), GET /runs/{id} with steps and progress, GET /runs pages
-- by pipeline and status with a cursor, /runs/last, GET /runs/{id}/step?id=
-- (a step's stored value, exact, for run and step ids with "/"), cancel during a sleep
-- (409 after), rerun from a step, and a run accepted just before a SIGKILL
-- that the restart resumes.
local H = require "helper"
local HH = require "http_helper"
local json = require "sluice.json"

local PIPELINES = [[
pipeline("add", function(input)
  local a = step("a", function() return input.x + 1 end)
  return step("b", function() return a * 2 end)
end)
pipeline("gcp/cost/billing", function() return step("s", function() return "billing" end) end)
pipeline("sleepy", function()
  step("before", function() return 1 end)
  sleep("30s")
  return step("after", function() return 2 end)
end)
pipeline("flaky", function()
  local one = step("one", function()
    local f = io.open(%q, "a"); f:write("one\n"); f:close()
    return 1
  end)
  local two = step("two", function()
    if not io.open(%q) then error("the marker is missing") end
    return 2
  end)
  return one + two
end)
pipeline("values", function()
  step("big", function() return 9007199254740993 end)
  step("a/b#1", function() return { deep = { list = { 1, 2.5, { k = "v" } }, yes = true }, s = "caf\u{e9}" } end)
  step("nothing", function() end)
  return 1
end)
pipeline("parent", function() return call("values", nil) end)
pipeline("typed", function(input) return input.n end, { parameters = { n = { type = "integer", required = true } } })
]]

describe("runs over HTTP", function()
  local dir, store, serve, ones, marker
  local function url(p) return serve.url .. p end
  before_each(function()
    dir = H.tmpdir()
    store = dir .. "/store"
    ones, marker = dir .. "/ones", dir .. "/marker"
    os.execute("mkdir -p '" .. dir .. "/p'")
    H.write(dir .. "/p/runs.lua", PIPELINES:format(ones, marker))
    serve = HH.serve(dir .. "/p", store)
  end)
  after_each(function()
    serve:kill("sigterm")
    serve:wait()
  end)

  local function run_status(id)
    local _, _, _, doc = HH.get(url("/runs/" .. id))
    return doc and doc.status
  end

  it("starts a run in the background and shows it with its steps", function()
    H.task(function()
      local st, _, hd, doc = HH.post(url("/runs/add"), { x = 1 })
      assert.are.equal(202, st)
      assert.are.equal("pending", doc.status)
      assert.truthy(hd["x-request-id"])
      local id = doc.run_id
      H.wait_until(function() return run_status(id) == "completed" end, "the run to complete", 15000, 20)
      local _, _, _, r = HH.get(url("/runs/" .. id))
      assert.are.same({ id, "add", "default", 4, { x = 1 }, 1 }, { r.run_id, r.pipeline, r.namespace, r.result, r.input, r.attempt })
      assert.are.same({ kind = "http" }, { kind = r.trigger.kind })
      for _, f in ipairs({ "created_at", "started_at", "finished_at" }) do
        assert.matches("^%d%d%d%d%-%d%d%-%d%dT%d%d:%d%d:%d%d%.%d%d%dZ$", r[f])
      end
      assert.are.equal("number", type(r.duration_ms))
      assert.matches("^%x+$", r.source_hash)
      assert.are.same({ steps_done = 2, steps_seen = 2 }, r.progress)
      assert.are.same({ "a", "b" }, { r.steps[1].id, r.steps[2].id })
      assert.are.same({ "completed", 1, 1 }, { r.steps[1].status, r.steps[1].attempts, r.steps[1].size })
      assert.are.equal(404, (HH.get(url("/runs/no-such-run"))))
    end)
  end)

  it("gives one step's stored value exactly, for run and step ids holding / and #", function()
    H.task(function()
      local st, _, _, doc = HH.post(url("/runs/parent?wait=20s"), "")
      assert.are.equal(200, st)
      assert.are.equal("completed", doc.status)
      local child
      for _, s in ipairs(doc.steps) do
        if s.id:find("^call@") then child = doc.run_id .. "/" .. s.id end
      end
      assert.truthy(child, "the parent's call step")
      assert.are.equal("completed", run_status(child))
      local function step_url(run, sid)
        return url("/runs/" .. run .. "/step?id=" .. sid:gsub("[^%w%-_.~]", function(c) return ("%%%02X"):format(c:byte()) end))
      end
      local body
      st, body, _, doc = HH.get(step_url(child, "big"))
      assert.are.equal(200, st)
      assert.matches('"value":%s*9007199254740993', body)
      assert.are.same({ child, "big", "completed", 1 }, { doc.run_id, doc.step_id, doc.status, doc.attempts })
      assert.are.equal(math.tointeger(9007199254740993), doc.value)
      assert.is_true(doc.size > 0)
      st, _, _, doc = HH.get(step_url(child, "a/b#1"))
      assert.are.equal(200, st)
      assert.are.same({ deep = { list = { 1, 2.5, { k = "v" } }, yes = true }, s = "caf\u{e9}" }, doc.value)
      st, _, _, doc = HH.get(step_url(child, "nothing"))
      assert.are.equal(200, st)
      assert.are.equal(json.null, doc.value)
      st, _, _, doc = HH.get(step_url(child, "nope"))
      assert.are.same({ 404, "step_not_found" }, { st, doc.code })
      st, _, _, doc = HH.get(step_url(child .. "x", "big"))
      assert.are.same({ 404, "run_not_found" }, { st, doc.code })
      st, _, _, doc = HH.get(url("/runs/" .. child .. "/step"))
      assert.are.same({ 400, "id" }, { st, doc.field })
    end)
  end)

  it("waits for the end with ?wait=, takes pipeline names with /, refuses unknown pipelines and bad input", function()
    H.task(function()
      local st, _, _, doc = HH.post(url("/runs/add?wait=20s"), { x = 2 })
      assert.are.equal(200, st)
      assert.are.same({ "completed", 6 }, { doc.status, doc.result })
      st, _, _, doc = HH.post(url("/runs/gcp/cost/billing?wait=20s"), "")
      assert.are.equal(200, st)
      assert.are.same({ "gcp/cost/billing", "billing" }, { doc.pipeline, doc.result })
      -- a wait that ends first: 202 with the run still going
      st, _, _, doc = HH.post(url("/runs/sleepy?wait=100ms"), "")
      assert.are.equal(202, st)
      assert.truthy(doc.status == "running" or doc.status == "sleeping" or doc.status == "pending")
      st, _, _, doc = HH.post(url("/runs/nope"), "")
      assert.are.equal(404, st)
      assert.are.equal("pipeline_not_found", doc.code)
      assert.matches("gcp/cost/billing", doc.error, 1, true)
      st, _, _, doc = HH.post(url("/runs/add"), '{"x": ')
      assert.are.equal(400, st)
      assert.matches("byte 6", doc.error, 1, true)
      st, _, _, doc = HH.post(url("/runs/typed"), "[1]")
      assert.are.equal(400, st)
      assert.matches("must be an object of parameters", doc.error, 1, true)
      st, _, _, doc = HH.post(url("/runs/typed"), { n = "x" })
      assert.are.equal(400, st)
      assert.are.equal("input.n", doc.field)
      st, _, _, doc = HH.post(url("/runs/typed"), {})
      assert.are.equal(400, st)
      assert.are.equal("missing_field", doc.code)
      st, _, _, doc = HH.post(url("/runs/add?wait=soon"), { x = 1 })
      assert.are.equal(400, st)
      assert.are.equal("wait", doc.field)
    end)
  end)

  it("returns the same run for the same Idempotency-Key, 200 instead of a second run", function()
    H.task(function()
      local h = { headers = { ["Idempotency-Key"] = "order-7" } }
      local st, _, _, first = HH.post(url("/runs/add"), { x = 5 }, h)
      assert.are.equal(202, st)
      local st2, _, _, again = HH.post(url("/runs/add"), { x = 5 }, { headers = { ["Idempotency-Key"] = "order-7" } })
      assert.are.equal(200, st2)
      assert.are.equal(first.run_id, again.run_id)
      local _, _, _, other = HH.post(url("/runs/add"), { x = 5 }, { headers = { ["Idempotency-Key"] = "order-8" } })
      assert.are_not.equal(first.run_id, other.run_id)
      -- the key is per pipeline
      local _, _, _, billing = HH.post(url("/runs/gcp/cost/billing"), "", { headers = { ["Idempotency-Key"] = "order-7" } })
      assert.are_not.equal(first.run_id, billing.run_id)
      H.wait_until(function() return run_status(first.run_id) == "completed" end, "the run to complete", 15000, 20)
      local _, _, _, list = HH.get(url("/runs?pipeline=add"))
      assert.are.equal(2, #list.runs)
    end)
  end)

  it("cancels a run during its sleep; cancelling it again is a 409 naming its status", function()
    H.task(function()
      local _, _, _, doc = HH.post(url("/runs/sleepy"), "")
      local id = doc.run_id
      H.wait_until(function() return run_status(id) == "sleeping" end, "the run to sleep", 15000, 20)
      local st, _, _, c = HH.post(url("/runs/" .. id .. "/cancel"), "")
      assert.are.equal(202, st)
      assert.are.same({ run_id = id, status = "cancelling" }, c)
      H.wait_until(function() return run_status(id) == "cancelled" end, "the run to be cancelled", 15000, 20)
      local _, _, _, r = HH.get(url("/runs/" .. id))
      assert.are.equal(2, #r.steps) -- "before" and the sleep: "after" never ran
      st, _, _, c = HH.post(url("/runs/" .. id .. "/cancel"), "")
      assert.are.equal(409, st)
      assert.matches("already cancelled", c.error, 1, true)
      assert.are.equal(404, (HH.post(url("/runs/nope/cancel"), "")))
    end)
  end)

  it("reruns a failed run from a step, reusing the steps before it", function()
    H.task(function()
      local st, _, _, doc = HH.post(url("/runs/flaky?wait=20s"), "")
      assert.are.equal(200, st)
      assert.are.equal("failed", doc.status)
      assert.are.equal("two", doc.error.step)
      assert.matches("the marker is missing", doc.error.message, 1, true)
      local id = doc.run_id
      st, _, _, doc = HH.post(url("/runs/" .. id .. "/rerun"), {})
      assert.are.equal(400, st)
      assert.are.equal("from", doc.field)
      st, _, _, doc = HH.post(url("/runs/" .. id .. "/rerun"), { from = "three" })
      assert.are.equal(400, st)
      assert.matches("no step 'three'", doc.error, 1, true)
      H.write(marker, "")
      st, _, _, doc = HH.post(url("/runs/" .. id .. "/rerun"), { from = "two" })
      assert.are.equal(202, st)
      assert.are.equal(id, doc.rerun_of)
      local new = doc.run_id
      H.wait_until(function() return run_status(new) == "completed" end, "the rerun to complete", 15000, 20)
      local _, _, _, r = HH.get(url("/runs/" .. new))
      assert.are.equal(3, r.result)
      assert.are.equal(1, #H.lines(ones)) -- step "one" did not run again
    end)
  end)

  it("lists runs newest first by pipeline and status, a page at a time, and the last finished run", function()
    H.task(function()
      local ids = {}
      for i = 1, 5 do
        local _, _, _, d = HH.post(url("/runs/add?wait=20s"), { x = i })
        ids[i] = d.run_id
      end
      HH.post(url("/runs/gcp/cost/billing?wait=20s"), "")
      local _, _, _, sleeping = HH.post(url("/runs/sleepy"), "")
      H.wait_until(function() return run_status(sleeping.run_id) == "sleeping" end, "the run to sleep", 15000, 20)
      local st, _, _, page = HH.get(url("/runs?pipeline=add&limit=2"))
      assert.are.equal(200, st)
      assert.are.same({ ids[5], ids[4] }, { page.runs[1].run_id, page.runs[2].run_id })
      local _, _, _, page2 = HH.get(url("/runs?pipeline=add&limit=2&before=" .. page.next))
      assert.are.same({ ids[3], ids[2] }, { page2.runs[1].run_id, page2.runs[2].run_id })
      local _, _, _, page3 = HH.get(url("/runs?pipeline=add&limit=2&before=" .. page2.next))
      assert.are.same({ ids[1] }, { page3.runs[1].run_id })
      assert.are.equal(json.null, page3.next)
      -- by status: the sleeping run moved out of "running" into "sleeping"
      local _, _, _, s = HH.get(url("/runs?status=sleeping"))
      assert.are.equal(1, #s.runs)
      assert.are.equal(sleeping.run_id, s.runs[1].run_id)
      local _, _, _, r = HH.get(url("/runs?status=running"))
      assert.are.equal(0, #r.runs)
      local _, _, _, c = HH.get(url("/runs?status=completed"))
      assert.are.equal(6, #c.runs)
      local _, _, _, both = HH.get(url("/runs?pipeline=add&status=completed&limit=10"))
      assert.are.equal(5, #both.runs)
      local _, _, _, all = HH.get(url("/runs"))
      assert.are.equal(7, #all.runs)
      st, _, _, r = HH.get(url("/runs/last?pipeline=add"))
      assert.are.equal(200, st)
      assert.are.equal(ids[5], r.run_id)
      assert.are.equal(2, #r.steps)
      assert.are.equal(404, (HH.get(url("/runs/last?pipeline=sleepy"))))
      assert.are.equal(400, (HH.get(url("/runs/last"))))
      assert.are.equal(400, (HH.get(url("/runs?status=bogus"))))
      assert.are.equal(400, (HH.get(url("/runs?before=zz"))))
    end)
  end)

  it("resumes a run accepted before a SIGKILL", function()
    H.task(function()
      local _, _, _, doc = HH.post(url("/runs/sleepy"), "")
      local id = doc.run_id
      H.wait_until(function() return run_status(id) == "sleeping" end, "the run to sleep", 15000, 20)
      serve:kill("sigkill")
      serve:wait()
      serve = HH.serve(dir .. "/p", store)
      H.wait_until(function() return serve:log():find("run " .. id .. " pipeline=sleepy started", 1, true) ~= nil end,
        "the run to resume", 15000, 20)
      -- resumed: it replays to its durable sleep and sleeps again
      H.wait_until(function() return run_status(id) == "sleeping" end, "the resumed run to sleep again", 15000, 20)
      assert.are.equal(202, (HH.post(url("/runs/" .. id .. "/cancel"), "")))
      H.wait_until(function() return run_status(id) == "cancelled" end, "the run to be cancelled", 15000, 20)
    end)
  end)
end)
