-- every_spec.lua: the schedule DSL maps every form to one canonical,
-- explainable spec (a cron expression or a fixed interval) and computes the
-- right next fire times; bad input is an error naming what is wrong.
local every_mod = require "sluice.every"
local clock = require "sluice._clock"

local function canon(spec) return spec:canonical() end
local function t(iso) return assert(clock.parse_time(iso)) end

describe("every", function()
  after_each(function() every_mod.reset() end)

  it("maps each form to its canonical spec", function()
    local cases = {
      { every.day.at("2am"), "0 2 * * *" },
      { every.day, "0 0 * * *" },
      { every.day.at("2:30pm"), "30 14 * * *" },
      { every.day.at("14:05"), "5 14 * * *" },
      { every.day.at("noon"), "0 12 * * *" },
      { every.day.at("midnight"), "0 0 * * *" },
      { every.day.at("12am"), "0 0 * * *" },
      { every.monday.at("9am"), "0 9 * * 1" },
      { every.Sunday.at("9am"), "0 9 * * 0" },
      { every.FRIDAY.at("6:30"), "30 6 * * 5" },
      { every.weekday.at("9am"), "0 9 * * 1-5" },
      { every.hour, "0 * * * *" },
      { every.minute, "* * * * *" },
      { every(15).minutes, "*/15 * * * *" },
      { every(1).minutes, "* * * * *" },
      { every(7).minutes, "every 7m" },
      { every(30).seconds, "every 30s" },
      { every(2).hours, "0 */2 * * *" },
      { every(5).hours, "every 5h" },
      { every(3).days.at("6:30"), "every 3d at 06:30" },
      { every(1).days.at("6:30"), "30 6 * * *" },
      { every.cron("0 */6 * * *"), "0 */6 * * *" },
      { every.cron("@daily"), "0 0 * * *" },
      { every.cron("0 9 * * MON-FRI"), "0 9 * * 1-5" },
    }
    for i, c in ipairs(cases) do
      assert.are.equal(c[2], canon(c[1]), "case " .. i)
    end
  end)

  it("computes next fires for each kind", function()
    local from = t("2026-01-05T08:59:30Z") -- a Monday
    assert.are.same({ "2026-01-05T09:00:00Z", "2026-01-12T09:00:00Z" },
      every_mod.next_fires(every.monday.at("9am"), from, nil, 2))
    assert.are.same({ "2026-01-05T08:00:00Z" },
      every_mod.next_fires(every.monday.at("9am"), t("2026-01-05T07:00:00Z"), "Europe/Berlin", 1))
    assert.are.same({ "2026-01-05T09:00:00Z", "2026-01-05T09:00:30Z" },
      every_mod.next_fires(every(30).seconds, from, nil, 2))
    assert.are.same({ "2026-01-05T09:07:00Z", "2026-01-05T09:14:00Z" },
      every_mod.next_fires(every(7).minutes, t("2026-01-05T09:00:00Z") + 60 * 6, nil, 2) and
      every_mod.next_fires(every(7).minutes, t("2026-01-05T09:06:00Z"), nil, 2))
    -- every 3 days at 06:30 UTC: days since the epoch divisible by 3
    local fires = every_mod.next_fires(every(3).days.at("6:30"), from, nil, 3)
    for i = 2, 3 do
      assert.are.equal(3 * 86400, t(fires[i]) - t(fires[i - 1]))
    end
    assert.are.equal(0, (t(fires[1]) // 86400) % 3)
  end)

  it("rejects bad specs and options with a clear message", function()
    assert.has_error(function() every.day.at("25:00") end,
      'at: "25:00" is not a time (use "2am", "2:30pm", "14:05", "noon" or "midnight")')
    assert.has_error(function() return every(0).minutes end, "every(n): n must be a positive integer, got 0")
    assert.has_error(function() return every(5).fortnights end,
      "every(5).fortnights: unknown unit (use seconds, minutes, hours or days)")
    assert.has_error(function() every.cron("61 * * * *") end,
      'every.cron("61 * * * *"): minute field: 61 is out of range 0-59')
    local ok, err = pcall(function() every.hour(function() end, nil, { tz = "Mars/Olympus" }) end)
    assert.is_false(ok)
    assert.matches('unknown time zone "Mars/Olympus"', err)
    ok, err = pcall(function() every.hour(function() end, nil, { overlap = "maybe" }) end)
    assert.matches("overlap must be one of allow, queue, skip, got maybe", err)
    ok, err = pcall(function() every.hour(function() end, nil, { retry = 1 }) end)
    assert.matches("unknown option 'retry'", err)
  end)

  it("names a schedule <pipeline>@<canonical spec>, so one pipeline may have several", function()
    local p = pipeline("every_spec_p", function() end)
    local s = every.day.at("2am")(p, { source = "x" })
    assert.are.equal("every_spec_p@0 2 * * *", s.name)
    assert.are.same({ source = "x" }, s.input)
    -- two unnamed schedules of one pipeline, as in the README
    assert.are.equal("every_spec_p@0 * * * *", every.hour(p).name)
    assert.are.equal("every_spec_p@*/15 * * * *", every(15).minutes("every_spec_p").name)
    assert.are.equal("hourly_p", every.hour(p, nil, { name = "hourly_p" }).name)
    -- a function becomes the pipeline "<file stem>@<spec>", which names the schedule too
    local anon = every(30).seconds(function() end)
    assert.are.equal("?@every 30s", anon.name)
    assert.are.equal(anon.name, anon.pipeline)
  end)

  it("gives each schedule of a loop its own name and options over what they share", function()
    local p = pipeline("every_spec_loop", function() end)
    local defs = {}
    for i = 1, 3 do
      defs[i] = every.cron("5 4 * * *")(p, i == 2 and { n = 2 } or nil,
        { name = "loop" .. i, tz = i == 3 and "Europe/Berlin" or nil, overlap = i == 3 and "queue" or nil })
    end
    for i, d in ipairs(defs) do
      assert.are.equal("loop" .. i, d.name)
      assert.are.equal("every_spec_loop", d.pipeline)
      assert.are.equal("5 4 * * *", d.spec:canonical())
      assert.matches("every_spec.lua:%d+$", d.site)
      assert.are.equal(d, every_mod.defined[d.name])
    end
    assert.are.same({ nil, { n = 2 }, nil }, { defs[1].input, defs[2].input, defs[3].input })
    assert.are.same({ "skip", "skip", "queue" }, { defs[1].overlap, defs[2].overlap, defs[3].overlap })
    assert.are.same({ "latest", 0 }, { defs[3].catch_up, defs[3].jitter_ms })
    assert.is_nil(defs[1].tz)
    assert.are.equal("Europe/Berlin", defs[3].tz)
    -- the shared part is one table for the three (a loop of 100,000: one)
    assert.are.equal(getmetatable(defs[1]), getmetatable(defs[2]))
  end)

  it("is an error only for a real clash, naming both definitions", function()
    local p = pipeline("every_spec_clash", function() end)
    local first = debug.getinfo(1, "l").currentline + 1
    every.day.at("2am")(p)
    -- the same pipeline on the same canonical spec, written another way
    local ok, err = pcall(function() every.cron("0 2 * * *")(p) end)
    assert.is_false(ok)
    assert.matches(("^[^\n]*every_spec.lua:%d: schedule 'every_spec_clash@0 2 %%* %%* %%*' is defined twice, " ..
      "at [^\n]*every_spec.lua:%d and at [^\n]*every_spec.lua:%d: pipeline 'every_spec_clash' is scheduled on " ..
      "\"0 2 %%* %%* %%*\" twice"):format(first + 2, first, first + 2), err)
    -- one explicit name twice, even on different pipelines and specs
    every.hour(p, nil, { name = "nightly" })
    ok, err = pcall(function() every.minute("other", nil, { name = "nightly" }) end)
    assert.is_false(ok)
    assert.matches("schedule 'nightly' is defined twice, at .*every_spec.lua:%d+ and at .*every_spec.lua:%d+: " ..
      "schedule names are unique", err)
  end)

  it("refuses a schedule that can never fire", function()
    local p = pipeline("every_spec_never", function() end)
    local line = debug.getinfo(1, "l").currentline + 1
    local ok, err = pcall(function() every.cron("* * 31 2 *")(p) end)
    assert.is_false(ok)
    assert.matches(("every_spec.lua:%d: every \"%%* %%* 31 2 %%*\" never fires: no date matches it"):format(line), err)
    assert.are.equal(0, #every_mod.order)
  end)

  it("finds, once everything is loaded, the schedules of pipelines nobody defines", function()
    -- the registry's validation, when a file is loaded (sluice.registry)
    local dir = require("helper").tmpdir()
    local f = require("helper").write(dir .. "/missing.lua",
      'pipeline("every_spec_defined", function() end)\nevery.hour("every_spec_missing")\nevery.hour("every_spec_defined")\n')
    local defined, err, kind = require("sluice.engine").load_file(f)
    assert.is_nil(defined)
    assert.are.equal("invalid", kind)
    assert.matches("missing.lua:2: schedule 'every_spec_missing@0 %* %* %* %*': no pipeline named " ..
      "'every_spec_missing' is defined %(defined: .*every_spec_defined", err)
    -- nothing of the file is live
    assert.are.same({}, every_mod.order)
    assert.is_nil(require("sluice.engine").pipelines.every_spec_defined)
  end)
end)
