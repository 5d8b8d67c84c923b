-- params_spec.lua: declared pipeline parameters: checked and defaulted
-- (templates rendered for the run) before the run exists; a wrong input
-- is refused naming the parameter and no run is stored.
local H = require "helper"
local store = require "sluice._store"
local engine = require "sluice.engine"

assert(store.open(H.store_target()))

local billing = pipeline("billing", function(input) return input end, { params = {
  date = { type = "string", default = "{{yesterday}}" },
  limit = { type = "integer", default = 100, min = 1, max = 1000 },
  target = { type = "object", default = { dataset = "billing_{{env}}", run = "{{run_id}}" } },
  mode = { type = "string", enum = { "full", "delta" }, default = "full" },
  account = { type = "string", required = true },
  ratio = { type = "number" },
  tags = { type = "array" },
  dry = { type = "boolean", default = false },
} })

local function yesterday()
  local t = os.time() - 86400
  return os.date("!%Y-%m-%d", t)
end

describe("pipeline params", function()
  it("defaults missing parameters, rendering templates for the run", function()
    local r = engine.execute(billing, { account = "acme" }, "b1")
    assert.are.equal("completed", r.status)
    assert.are.same({ account = "acme", date = yesterday(), limit = 100, mode = "full", dry = false,
      target = { dataset = "billing_dev", run = "b1" } }, r.result)
    -- the stored input is the completed one
    assert.are.same(r.result, engine.get_run("b1").input)
  end)

  it("keeps given values and turns integral floats into integers", function()
    local r = engine.execute(billing, { account = "a", date = "2026-01-02", limit = 5.0, ratio = 1, tags = { "x" },
      mode = "delta" }, "b2")
    assert.are.equal("completed", r.status)
    assert.are.equal("integer", math.type(r.result.limit))
    assert.are.equal("2026-01-02", r.result.date)
    assert.are.same({ "x" }, r.result.tags)
  end)

  it("refuses a wrong input naming the parameter, and stores no run", function()
    local cases = {
      { {}, "parameter 'account' is required %(string%)" },
      { { account = "a", limit = "x" }, "parameter 'limit' must be an integer, got string \"x\"" },
      { { account = "a", limit = 1.5 }, "parameter 'limit' must be an integer, got float 1.5" },
      { { account = "a", limit = 0 }, "parameter 'limit' must be >= 1, got 0" },
      { { account = "a", limit = 5000 }, "parameter 'limit' must be <= 1000, got 5000" },
      { { account = "a", mode = "half" }, "parameter 'mode' must be one of \"full\", \"delta\", got \"half\"" },
      { { account = "a", tags = { k = 1 } }, "parameter 'tags' must be an array, got object" },
      { { account = "a", target = { 1 } }, "parameter 'target' must be an object, got array" },
      { { account = "a", dry = "yes" }, "parameter 'dry' must be a boolean" },
      { { account = "a", limt = 3 }, "unknown parameter 'limt' %(parameters: account, date, dry, limit, mode, ratio, tags, target%)" },
      { "text", "the input must be an object of parameters" },
    }
    for i, c in ipairs(cases) do
      local id = "bad" .. i
      local r, err, kind = engine.execute(billing, c[1], id)
      assert.is_nil(r)
      assert.are.equal("usage", kind)
      assert.matches("^invalid input for pipeline 'billing': " .. c[2], err)
      assert.is_nil(engine.get_run(id))
    end
  end)

  it("names an unknown variable of a templated default with its path", function()
    local p = pipeline("tpl-default", function(i) return i end, { params = {
      target = { type = "object", default = { dataset = "{{billing_dataset}}" } } } })
    local r, err = engine.execute(p, nil, "t1")
    assert.is_nil(r)
    assert.are.equal("invalid input for pipeline 'tpl-default': target.dataset: unknown variable {{billing_dataset}}", err)
  end)

  it("applies to child runs started with call", function()
    local child = pipeline("child-p", function(i) return i.n * 2 end, { params = { n = { type = "integer", default = 21 } } })
    local parent = pipeline("parent-p", function(i)
      if i == "bad" then return call(child, { n = "x" }) end
      return call(child, {})
    end)
    assert.are.equal(42, engine.execute(parent, nil, "pc1").result)
    local r = engine.execute(parent, "bad", "pc2")
    assert.are.equal("failed", r.status)
    assert.matches("call 'child%-p': invalid input for pipeline 'child%-p': parameter 'n' must be an integer", r.error.message)
  end)

  it("checks the declaration where the pipeline is defined", function()
    local cases = {
      { { x = { type = "int" } }, "parameter 'x': type must be one of string, integer, number, boolean, array, object, any; got \"int\"" },
      { { x = { type = "string", dflt = 1 } }, "parameter 'x': unknown field 'dflt'" },
      { { x = { type = "integer", default = "ten" } }, "parameter 'x': the default must be an integer, got string \"ten\"" },
      { { x = { type = "string", required = true, default = "a" } }, "parameter 'x': a required parameter has no default" },
      { { x = "string" }, "parameter 'x': expected a table" },
      { { x = { type = "string", enum = {} } }, "parameter 'x': enum must be a non%-empty list" },
    }
    for i, c in ipairs(cases) do
      local ok, err = pcall(function() pipeline("decl" .. i, function() end, { params = c[1] }) end)
      assert.is_false(ok)
      assert.matches("params_spec.lua:%d+: pipeline 'decl" .. i .. "': " .. c[2], err)
    end
  end)

  it("takes the HTTP API's spelling, parameters with type names, as the same declaration", function()
    local typed = pipeline("typed-p", function(input) return input.n end, { parameters = { n = "integer", s = { type = "string" } } })
    local r = engine.execute(typed, { n = 3 }, "t1")
    assert.are.equal("completed", r.status)
    assert.are.equal(3, r.result)
    local none, err, kind = engine.execute(typed, { n = "x" }, "t2")
    assert.is_nil(none)
    assert.are.equal("usage", kind)
    assert.matches("parameter 'n' must be an integer", err)
    local ok
    ok, err = pcall(function() pipeline("both-p", function() end, { params = {}, parameters = {} }) end)
    assert.is_false(ok)
    assert.matches("params_spec.lua:%d+: pipeline 'both%-p': params and parameters are one option", err)
  end)
end)
