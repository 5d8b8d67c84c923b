-- types_spec.lua: the editor stubs in types/ match what the host gives
-- pipelines: every global the engine installs and every public function of
-- each stubbed sluice.* module has a stub, and no stub names something that
-- does not exist. Each stub file also compiles as Lua.
local H = require "helper"
local fs = require "sluice.fs"

local root = H.root .. "/types"

local function stub_functions(text, prefix)
  local names = {}
  for name in text:gmatch("\nfunction " .. prefix .. "([%w_]+)%(") do names[name] = true end
  return names
end

describe("types/", function()
  it("compiles", function()
    for _, f in ipairs(fs.glob(root .. "/**/*.lua")) do
      assert(load(fs.read(f), "@" .. f))
    end
  end)

  it("has a stub for every pipeline global and only for those", function()
    local env = {}
    require("sluice.engine").install(env)
    local text = "\n" .. fs.read(root .. "/pipeline.lua")
    local stubs = stub_functions(text, "")
    if text:find("\nevery = ") then stubs.every = true end
    for name in pairs(env) do assert.is_true(stubs[name] or false, "no stub for the global " .. name) end
    for name in pairs(stubs) do assert.is_not_nil(env[name], "a stub for " .. name .. ", which is not a global") end
  end)

  it("matches the functions of every stubbed module", function()
    local files = fs.glob(root .. "/sluice/*.lua")
    assert.is_true(#files >= 5)
    for _, f in ipairs(files) do
      local mod = f:match("([%w_]+)%.lua$")
      local ok, m = pcall(require, "sluice." .. mod)
      assert.is_true(ok, "no module sluice." .. mod .. " for " .. f)
      local text = "\n" .. fs.read(f)
      assert.matches("^\n%-%-%-@meta sluice%." .. mod .. "\n", text)
      local stubs = stub_functions(text, mod .. "[.:]")
      for name, v in pairs(m) do
        if type(v) == "function" and not name:find("^_") then
          assert.is_true(stubs[name] or false, ("%s: no stub for %s.%s"):format(f, mod, name))
        end
      end
      for name in pairs(stubs) do
        assert.is_not_nil(m[name], ("%s: a stub for %s.%s, which the module does not have"):format(f, mod, name))
      end
    end
  end)
end)
