-- stdlib_cli_spec.lua: the command-line side of the standard library, as a
-- user runs it: parameters refused with exit 2, `sluice pipelines`,
-- sluice.log lines on stderr and in `sluice status --logs`, `sluice serve
-- --log-format json`, `sluice types DIR`.
local H = require "helper"
local json = require "sluice.json"

local dir = H.tmpdir()
local store = dir .. "/store"

local file = H.write(dir .. "/etl.lua", [[
local log = require "sluice.log"
pipeline("etl", function(input)
  log.info("starting", { limit = input.limit })
  local n = step("extract", function()
    log.info("extracted", { rows = input.limit, source = "a file" })
    return input.limit
  end)
  step("load", function() log.warn("slow load", { ms = 12 }) end)
  return { rows = n, date = input.date }
end, { params = {
  date = { type = "string", default = "{{yesterday}}", description = "the day to load" },
  limit = { type = "integer", default = 100, min = 1 },
  mode = { type = "string", required = true },
} })
pipeline("plain", function() return 1 end)
]])

describe("pipeline parameters on the command line", function()
  it("exit 2 naming the parameter; defaults filled in", function()
    local code, out, err = H.sluice({ "run", file, "--pipeline", "etl", "--store", store, "--input", '{"mode": "full", "limit": 0}' })
    assert.are.equal(2, code)
    assert.are.equal("", out)
    assert.matches("invalid input for pipeline 'etl': parameter 'limit' must be >= 1, got 0", err)
    code, _, err = H.sluice({ "run", file, "--pipeline", "etl", "--store", store })
    assert.are.equal(2, code)
    assert.matches("parameter 'mode' is required %(string%)", err)
    code, out, err = H.sluice({ "run", file, "--pipeline", "etl", "--store", store, "--id", "p1", "--input", '{"mode": "full"}' })
    assert.are.equal(0, code, err)
    local res = json.decode(out)
    assert.are.equal(100, res.rows)
    assert.are.equal(os.date("!%Y-%m-%d", os.time() - 86400), res.date)
  end)

  it("sluice pipelines lists pipelines with their parameters", function()
    local code, out, err = H.sluice({ "pipelines", file })
    assert.are.equal(0, code, err)
    assert.matches("etl%s+.*etl.lua:2%s+date:string={{yesterday}} limit:integer=100%[1%.%.%] mode:string!", out)
    assert.matches("\nplain%s+.*etl.lua:15", out)
    code, out = H.sluice({ "pipelines", file, "--json" })
    assert.are.equal(0, code)
    local doc = json.decode(out)
    assert.are.equal("etl", doc.pipelines[1].name)
    assert.are.same({ name = "date", type = "string", default = "{{yesterday}}", required = false,
      description = "the day to load" }, doc.pipelines[1].params[1])
    assert.are.same({}, doc.pipelines[2].params)
    -- a directory, and a file that does not load
    H.write(dir .. "/broken.lua", "pipeline(")
    code, out, err = H.sluice({ "pipelines", dir })
    assert.are.equal(2, code)
    assert.matches("broken.lua:1:", err)
    assert.matches("etl", out)
  end)
end)

describe("sluice.log on the command line", function()
  it("writes logfmt lines with run, pipeline and step, and status --logs shows the stored ones", function()
    local code, _, err = H.sluice({ "run", file, "--pipeline", "etl", "--store", store, "--id", "l1", "--input", '{"mode": "x", "limit": 7}' })
    assert.are.equal(0, code, err)
    assert.matches("time=%S+Z level=info run=l1 pipeline=etl msg=starting limit=7\n", err)
    assert.matches("level=info run=l1 pipeline=etl step=extract msg=extracted rows=7 source=\"a file\"\n", err)
    local out
    code, out, err = H.sluice({ "status", "l1", "--store", store, "--logs" })
    assert.are.equal(0, code, err)
    assert.matches("logs%s+2\n", out)
    assert.matches("level=info step=extract msg=extracted rows=7 source=\"a file\"\n", out)
    assert.matches("level=warn step=load msg=\"slow load\" ms=12\n", out)
    assert.is_nil(out:find("msg=starting"), "lines between steps are not stored")
    code, out = H.sluice({ "status", "l1", "--store", store, "--logs", "--json" })
    local doc = json.decode(out)
    assert.are.equal(2, #doc.logs)
    assert.are.same({ rows = 7, source = "a file" }, doc.logs[1].fields)
    assert.are.equal("extract", doc.logs[1].step)
  end)

  it("sluice serve --log-format json writes every line as JSON, the host's too", function()
    local sdir = H.tmpdir()
    H.write(sdir .. "/p.lua", [[
local log = require "sluice.log"
pipeline("served", function() step("s", function() log.info("inside", { k = "v" }) end) return 1 end)
]])
    local sstore = sdir .. "/store"
    local s = H.spawn({ "serve", sdir, "--store", sstore, "--log-format", "json" })
    H.wait_until(function() return s.exited or table.concat(s.err):find("armed") end, "serve to start", 20000, 10)
    local code, out, err = H.sluice({ "run", sdir .. "/p.lua", "--store", sstore, "--id", "j1" })
    assert.are.equal(0, code, err)
    assert.are.equal("1\n", out)
    H.wait_until(function() return table.concat(s.err):find("j1 pipeline=served completed") end, "the end line", 10000, 10)
    s:kill("sigterm")
    s:wait()
    local seen = {}
    for line in table.concat(s.err):gmatch("[^\n]+") do
      local ok, o = pcall(json.decode, line)
      assert.is_true(ok, "not a JSON line: " .. line)
      assert.is_string(o.time)
      assert.is_string(o.level)
      seen[#seen + 1] = o
    end
    local inside
    for _, o in ipairs(seen) do if o.msg == "inside" then inside = o end end
    assert.are.same({ run = "j1", pipeline = "served", step = "s", k = "v", msg = "inside", level = "info", time = inside.time }, inside)
    local code2 = H.sluice({ "serve", sdir, "--store", sstore, "--log-format", "xml" })
    assert.are.equal(2, code2)
  end)
end)

describe("sluice types", function()
  it("writes the editor stubs of the pipeline API and the modules", function()
    local tdir = H.tmpdir() .. "/types"
    local code, out, err = H.sluice({ "types", tdir })
    assert.are.equal(0, code, err)
    assert.matches("pipeline.lua", out)
    local stub = H.read(tdir .. "/pipeline.lua")
    assert.matches("^%-%-%-@meta", stub)
    assert.matches("function pipeline%(name, fn, opts%)", stub)
    assert.are.equal(H.read(H.root .. "/types/sluice/fs.lua"), H.read(tdir .. "/sluice/fs.lua"))
    code = H.sluice({ "types" })
    assert.are.equal(2, code)
  end)
end)
