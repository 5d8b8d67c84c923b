-- log_spec.lua: sluice.log inside the host: the formats, and the lines
-- logged inside steps stored with the run in the step's own commit (no
-- extra commit), failed attempts included, bounded per run.
local H = require "helper"
local store = require "sluice._store"
local json = require "sluice.json"
local engine = require "sluice.engine"
local log = require "sluice.log"

assert(store.open(H.store_target()))
log.set_level("warn") -- keep the spec's output short; stored lines obey the level too

describe("sluice.log", function()
  it("renders logfmt with quoting and JSON objects", function()
    local rec = { time = "2026-01-01T00:00:00.000Z", level = "info", run = "r 1", pipeline = "p", step = "load",
      msg = 'loaded "x"', fields = { rows = 12, ok = true, name = "a=b", list = { 1, 2 }, time = "mine" } }
    assert.are.equal('time=2026-01-01T00:00:00.000Z level=info run="r 1" pipeline=p step=load msg="loaded \\"x\\"" ' ..
      'list=[1,2] name="a=b" ok=true rows=12 _time=mine', log.render(rec, "logfmt"))
    local o = json.decode(log.render(rec, "json"))
    assert.are.same({ time = rec.time, level = "info", run = "r 1", pipeline = "p", step = "load", msg = 'loaded "x"',
      rows = 12, ok = true, name = "a=b", list = { 1, 2 }, _time = "mine" }, o)
    assert.are.equal('time=t level=warn msg="a\\nb" f=""', log.render({ time = "t", level = "warn", msg = "a\nb", fields = { f = "" } }, "logfmt"))
  end)

  it("refuses unknown formats, levels and fields that are not a table", function()
    assert.has_error(function() log.set_format("xml") end, "log format must be logfmt or json, got xml")
    assert.has_error(function() log.set_level("loud") end)
    assert.has_error(function() log.warn("x", "y") end, "log.warn: fields must be a table, got string")
  end)

  it("stores the lines of steps with the run, in the step's commit", function()
    local function body(with_logs)
      return function()
        if with_logs then log.warn("between steps: not stored") end
        for i = 1, 3 do
          step("s" .. i, function()
            if with_logs then
              log.warn("loaded", { rows = i, fn = print })
              log.error("second line")
              log.info("below the level: dropped")
            end
            return i
          end)
        end
      end
    end
    local quiet, loud = pipeline("quiet", body(false)), pipeline("loud", body(true))
    local b0 = store.stats().batches
    assert.are.equal("completed", engine.execute(quiet, nil, "quiet-1").status)
    local b1 = store.stats().batches
    assert.are.equal("completed", engine.execute(loud, nil, "loud-1").status)
    local b2 = store.stats().batches
    assert.are.equal(b1 - b0, b2 - b1, "logging adds no commit")
    local lines = log.read("loud-1")
    assert.are.equal(6, #lines)
    assert.are.equal("loaded", lines[1].msg)
    assert.are.equal("warn", lines[1].level)
    assert.are.equal("s1", lines[1].step)
    assert.are.equal(1, lines[1].attempt)
    assert.are.equal(1, lines[1].fields.rows)
    assert.matches("^function", lines[1].fields.fn) -- what the store cannot hold becomes text
    assert.are.equal("second line", lines[2].msg)
    assert.are.equal("s3", lines[6].step)
    assert.matches("^%d%d%d%d%-%d%d%-%d%dT", lines[1].time)
    assert.are.equal(0, #log.read("quiet-1"))
  end)

  it("keeps the lines of failed attempts and of a step that failed", function()
    local p = pipeline("flaky-log", function()
      step("f", { retries = 1, backoff = "1ms" }, function()
        log.warn("attempt", { n = ctx().attempt })
        if ctx().attempt == 1 then error("first fails") end
      end)
      step("g", function() log.error("g is broken"); error("broken") end)
    end)
    local r = engine.execute(p, nil, "flaky-1")
    assert.are.equal("failed", r.status)
    local lines = log.read("flaky-1")
    assert.are.equal(3, #lines)
    assert.are.same({ 1, 2 }, { lines[1].attempt, lines[2].attempt })
    assert.are.equal("g is broken", lines[3].msg)
  end)

  it("keeps the last lines of a run past the bound", function()
    local saved = log.MAX_PER_RUN
    log.MAX_PER_RUN = 50
    local p = pipeline("chatty", function()
      for s = 1, 4 do
        step("s" .. s, function()
          for i = 1, 20 do log.warn("line", { s = s, i = i }) end
        end)
      end
    end)
    engine.execute(p, nil, "chatty-1")
    local lines = log.read("chatty-1")
    assert.are.equal(50, #lines)
    assert.are.same({ s = 2, i = 11 }, lines[1].fields)
    assert.are.same({ s = 4, i = 20 }, lines[50].fields)
    -- a resume of the same run goes on from the stored lines
    local p2 = pipeline("chatty2", function()
      step("x", function() for i = 1, 30 do log.warn("more", { i = i }) end end)
    end)
    engine.execute(p2, nil, "chatty-2")
    assert.are.equal(30, #log.read("chatty-2"))
    log.MAX_PER_RUN = saved
  end)
end)
