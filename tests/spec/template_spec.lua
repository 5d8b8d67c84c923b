-- template_spec.lua: sluice.template: built-in variables from the run's
-- creation time (a resume renders what the first attempt rendered), time
-- zones, caller variables, recursion through tables, errors naming the
-- variable and where it was found.
local H = require "helper"
local clock = require "sluice._clock"
local store = require "sluice._store"
local json = require "sluice.json"
local engine = require "sluice.engine"
local template = require "sluice.template"

assert(store.open(H.store_target()))

-- 2026-03-01T01:30:00Z: the day before is in February, New York is still on the 28th
local T = 1772328600 * 1000000

describe("sluice.template", function()
  it("renders the dates of a given time, in UTC or a time zone", function()
    local run = { created_us = T, id = "r1", pipeline = "p" }
    assert.are.equal("2026-03-01 2026-02-28 2026-03-02 2026 03 01 01",
      template.render("{{date}} {{yesterday}} {{tomorrow}} {{year}} {{month}} {{day}} {{hour}}", nil, { run = run }))
    assert.are.equal("2026-02-28 2026-02-27 20", template.render("{{date}} {{ yesterday }} {{hour}}", nil,
      { run = run, tz = "America/New_York" }))
    assert.are.equal("r1/p", template.render("{{run_id}}/{{pipeline}}", nil, { run = run }))
    local ok, err = pcall(template.render, "{{date}}", nil, { tz = "Mars/Olympus" })
    assert.is_false(ok)
    assert.matches("Mars/Olympus", err)
  end)

  it("takes caller variables first, with dotted names, through nested tables", function()
    local v = template.render({
      target = { dataset = "{{org}}_{{env}}", tables = { "{{src.bucket}}/a", "b" } },
      n = 3, keep = true,
    }, { org = "acme", src = { bucket = "s3://x" }, date = "override" })
    assert.are.same({ target = { dataset = "acme_dev", tables = { "s3://x/a", "b" } }, n = 3, keep = true }, v)
    assert.are.equal("override 7", template.render("{{date}} {{n}}", { date = "override", n = 7 }))
  end)

  it("keeps a table's array marking", function()
    local v = template.render({ list = json.array({}) })
    assert.are.equal('{"list":[]}', json.encode(v))
  end)

  it("names an unknown variable and its path", function()
    local ok, err = pcall(template.render, { target = { dataset = "{{billing_dataset}}" } }, {})
    assert.is_false(ok)
    assert.are.equal("target.dataset: unknown variable {{billing_dataset}}", err)
    ok, err = pcall(template.render, { list = { "ok", "{{nope}}" } })
    assert.are.equal("list[2]: unknown variable {{nope}}", err)
    ok, err = pcall(template.render, "a {{x}}", nil, { path = "query" })
    assert.are.equal("query: unknown variable {{x}}", err)
    ok, err = pcall(template.render, "{{t}}", { t = {} })
    assert.matches("{{t}} is a table", err)
  end)

  it("refuses {{namespace}} and {{run_id}} outside a run", function()
    local ok, err = pcall(template.render, "{{org_slug}}", nil, { run = { created_us = T } })
    assert.is_false(ok)
    assert.matches("variable not set {{org_slug}}: it is set inside a run", err)
    -- a run without a namespace is in the default one, as ctx().namespace says
    assert.are.equal("default", template.render("{{org_slug}}", nil, { run = { created_us = T, id = "r" } }))
    assert.are.equal("acme", template.render("{{namespace}}", nil, { run = { created_us = T, namespace = "acme" } }))
    local p = pipeline("ns-ctx", function()
      return { ctx().namespace, template.render("{{org_slug}}/{{namespace}}") }
    end)
    assert.are.same({ "acme", "acme/acme" }, engine.execute(p, nil, "ns-1", { fields = { namespace = "acme" } }).result)
    ok, err = pcall(template.render, "{{run_id}}")
    assert.matches("variable not set {{run_id}}: it is set inside a run", err)
  end)

  it("reads env from SLUICE_ENV, default dev", function()
    local uv = require "luv"
    assert.are.equal("dev", template.render("{{env}}"))
    uv.os_setenv("SLUICE_ENV", "prod")
    assert.are.equal("prod", template.render("{{env}}"))
    uv.os_unsetenv("SLUICE_ENV")
  end)

  it("inside a run uses the run's creation time, also when it resumes later", function()
    local fail = true
    local p = pipeline("tpl", function()
      local first = step("render", function() return template.render("{{date}} {{run_id}} {{pipeline}}") end)
      -- between steps: re-executed by the resume, renders the same
      local again = template.render("{{yesterday}}")
      step("maybe fail", function() if fail then error("later") end end)
      return { first = first, again = again }
    end)
    -- a run created on 2026-03-01 that failed: resuming it today renders its day
    local rec = { id = "old", pipeline = "tpl", created_us = T, created_at = clock.iso(T), attempt = 1,
      status = "failed" }
    assert(require("sluice._store").batch():put_run(rec, { new = true }):commit())
    local r = engine.execute(p, nil, "old")
    assert.are.equal("failed", r.status)
    fail = false
    r = engine.execute(p, nil, "old")
    assert.are.equal("completed", r.status)
    assert.are.same({ first = "2026-03-01 old tpl", again = "2026-02-28" }, r.result)
  end)
end)
