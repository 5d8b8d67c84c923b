-- reporting_spec.lua: what a user reads when something is wrong, from real
-- sluice processes: errors once at the user's file:line with sluice's own
-- frames trimmed (kept under --debug), load errors exit 2, NaN printed as
-- JSON null with a warning, one depth limit for --input, schedules named
-- <pipeline>@<spec> (the README's own example loads), cron next of an
-- impossible expression.
local H = require "helper"
local json = require "sluice.json"

local function count(s, sub)
  local k, from = 0, 1
  while true do
    local i = s:find(sub, from, true)
    if not i then return k end
    k, from = k + 1, i + #sub
  end
end

describe("reporting", function()
  local dir, store
  before_each(function()
    dir = H.tmpdir()
    store = dir .. "/store"
  end)

  it("prints a failed run's error once, at the user's line, without sluice's frames", function()
    local f = H.write(dir .. "/o.lua", [[
pipeline("o", function()
  step("fine", function() return 1 end)
  return step("o", { retries = "three" }, function() return 1 end)
end)]])
    local code, out, err = H.sluice({ "run", f, "--store", store })
    assert.are.equal(1, code)
    assert.are.equal("", out)
    assert.are.equal(1, count(err, "retries must be an integer >= 0, got \"three\""), err)
    assert.matches("o.lua:3: step 'o': retries must be an integer >= 0, got \"three\"", err)
    assert.is_falsy(err:find("lua/[%w_]+%.lua:%d"), err)
    assert.is_falsy(err:find("sched.lua", 1, true), err)
    assert.is_falsy(err:find("[C]", 1, true), err)

    -- a step's own error: once, with the user's frames only
    local g = H.write(dir .. "/g.lua", [[
local function fetch()
  error("the source is down")
end
pipeline("g", function()
  return step("fetch", function() return fetch() end)
end)]])
    code, out, err = H.sluice({ "run", g, "--store", store })
    assert.are.equal(1, code)
    assert.are.equal(1, count(err, "the source is down"), err)
    assert.matches("failed in step 'fetch': step 'fetch' failed: [^\n]*g.lua:2: the source is down", err)
    assert.matches("stack traceback:\n\t[^\n]*g.lua:5: in ", err)
    assert.is_falsy(err:find("lua/[%w_]+%.lua:%d"), err)
    assert.is_falsy(err:find("[C]", 1, true), err)

    -- --debug and SLUICE_DEBUG=1 keep them
    code, _, err = H.sluice({ "run", f, "--store", store, "--debug" })
    assert.are.equal(1, code)
    assert.matches("o.lua:3: step 'o': retries must be", err)
    assert.matches("lua/engine_steps.lua:%d+", err)
    code, _, err = H.sluice({ "run", g, "--store", store }, { env = { "SLUICE_DEBUG=1" } })
    assert.are.equal(1, code)
    assert.matches("lua/engine_steps.lua:%d+", err)
    assert.matches("[C]", err, 1, true)
  end)

  it("exits 2 on a mistake while the file loads, naming its line and the field", function()
    local cases = {
      { "every(0).minutes(p)", "every%(n%): n must be a positive integer, got 0" },
      { 'every.hour(p, nil, { jitter = "-5s" })', 'every "0 %* %* %* %*" jitter: "%-5s" is not a duration %(use' },
      { 'every.cron("* * 31 2 *")(p)', 'every "%* %* 31 2 %*" never fires: no date matches it' },
      { 'pipeline("q", function() end, { timeout = "5 m" })', "pipeline 'q' timeout: \"5 m\" is not a duration" },
      { 'every.hour("missing")', "schedule 'missing@0 %* %* %* %*': no pipeline named 'missing' is defined %(defined: p%)" },
      { "every.hour(p)\nevery.cron('0 * * * *')(p)",
        "schedule 'p@0 %* %* %* %*' is defined twice, at [^\n]*bad.lua:2 and at [^\n]*bad.lua:3" },
    }
    for i, c in ipairs(cases) do
      local f = H.write(dir .. "/bad.lua", 'local p = pipeline("p", function() return 1 end)\n' .. c[1] .. "\n")
      local code, out, err = H.sluice({ "run", f, "--store", store })
      assert.are.equal(2, code, "case " .. i .. ": " .. err)
      assert.are.equal("", out)
      local line = c[1]:find("\n") and 3 or 2
      assert.matches("bad.lua:" .. line .. ": " .. c[2], err, 1, false, "case " .. i)
      assert.is_falsy(err:find("lua/[%w_]+%.lua:%d"), err)
    end
  end)

  it("loads the README's schedule example: two unnamed schedules of one pipeline", function()
    local readme = assert(H.read(H.root .. "/README.md"))
    local example = readme:match("```lua\n(%-%- pipelines/nightly%.lua\n.-)```")
    assert.is_truthy(example, "the example is in README.md")
    local f = H.write(dir .. "/nightly.lua", example)
    local code, out, err = H.sluice({ "run", f, "--pipeline", "etl", "--input", '{"source": "x"}', "--store", store })
    assert.are.equal(0, code, err)
    assert.are.equal('"x"\n', out)
  end)

  it("prints NaN and infinities as JSON null with a warning; the store keeps them", function()
    local f = H.write(dir .. "/nan.lua", [[
pipeline("n", function()
  local v = step("v", function() return { ratio = 0 / 0, top = math.huge, n = 2 } end)
  assert(v.ratio ~= v.ratio and v.top == math.huge, "replayed exactly")
  return v
end)]])
    local code, out, err = H.sluice({ "run", f, "--id", "n1", "--store", store })
    assert.are.equal(0, code, err)
    assert.are.equal('{"n":2,"ratio":null,"top":null}\n', out)
    assert.is_falsy(out:find("\\u0000", 1, true))
    assert.matches("sluice: warning: value.ratio is NaN %(and 1 more%): printed as null", err)
    -- the stored run replays its step's exact value (the assert above runs again)
    code, out = H.sluice({ "run", f, "--id", "n1", "--store", store })
    assert.are.equal(0, code)
    assert.are.equal('{"n":2,"ratio":null,"top":null}\n', out)
    code, out = H.sluice({ "status", "n1", "--json", "--store", store })
    assert.are.equal(0, code)
    assert.are.same({ n = 2, ratio = json.null, top = json.null }, json.decode(out).result)
    -- sluice.json in user code: the same JSON, a warning once per line that encodes
    local g = H.write(dir .. "/enc.lua", [[
local json = require "sluice.json"
pipeline("enc", function()
  local out = {}
  for i = 1, 3 do out[i] = json.encode({ r = 0 / 0 }) end
  return out
end)]])
    code, out, err = H.sluice({ "run", g, "--store", store })
    assert.are.equal(0, code, err)
    assert.are.same({ '{"r":null}', '{"r":null}', '{"r":null}' }, json.decode(out))
    assert.are.equal(1, count(err, "json.encode: value.r is NaN: written as null (JSON has no NaN or Infinity)"), err)
    assert.matches("sluice: warning: [^\n]*enc.lua:4: json.encode", err)
  end)

  it("takes --input nested 1,000 deep and refuses 1,001 at decode, exit 2", function()
    local f = H.write(dir .. "/deep.lua", [[
pipeline("d", function(input) return step("echo", function() return input end) end)]])
    local ok_input = ("["):rep(1000) .. ("]"):rep(1000)
    local code, out, err = H.sluice({ "run", f, "--input", ok_input, "--store", store })
    assert.are.equal(0, code, err)
    assert.are.equal(ok_input .. "\n", out)
    code, out, err = H.sluice({ "run", f, "--input", "[" .. ok_input .. "]", "--store", store })
    assert.are.equal(2, code)
    assert.are.equal("", out)
    assert.matches("^sluice: %-%-input nests too deeply: line 1, column 1001 %(byte 1000%): nesting deeper than 1000\n$", err)
  end)

  it("says so when cron next has nothing to print, exit 1", function()
    local code, out, err = H.sluice({ "cron", "next", "* * 31 2 *" })
    assert.are.equal(1, code)
    assert.are.equal("", out)
    assert.matches('^sluice cron: "%* %* 31 2 %*" never fires after %d%d%d%d%-[^\n]* %(no date before year 10000 matches it%)\n$', err)
    code, out = H.sluice({ "cron", "next", "0 0 29 2 *", "--from", "2026-01-01T00:00:00Z", "-n", "2" })
    assert.are.equal(0, code)
    assert.are.equal("2028-02-29T00:00:00Z\n2032-02-29T00:00:00Z\n", out)
  end)

  it("serve resolves schedules across files and logs, without arming, one whose pipeline is missing", function()
    assert(os.execute("mkdir '" .. dir .. "/p'"))
    H.write(dir .. "/p/a.lua", 'every.hour("later")\n') -- "later" is defined by b.lua, loaded after a.lua
    H.write(dir .. "/p/b.lua", 'pipeline("later", function() return 1 end)\n')
    H.write(dir .. "/p/c.lua", '\nevery.hour("nowhere")\n')
    local p = H.spawn({ "serve", dir .. "/p", "--store", store })
    local function log() return table.concat(p.err) end
    H.wait_until(function() return log():find("schedules armed", 1, true) ~= nil end, "serve to start", 15000, 10)
    p:kill("sigterm")
    assert.are.equal(0, (p:wait()))
    assert.matches("not loaded: [^\n]*c.lua:2: schedule 'nowhere@0 %* %* %* %*': no pipeline named 'nowhere'", log())
    assert.matches("1 schedules armed", log())
    local code, out = H.sluice({ "schedules", "--json", "--store", store })
    assert.are.equal(0, code)
    local list = json.decode(out).schedules
    assert.are.equal(1, #list)
    assert.are.equal("later@0 * * * *", list[1].name)
  end)
end)
