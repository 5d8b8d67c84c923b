-- script_spec.lua: `sluice FILE.lua ARGS` behaves like the lua executable
-- (arg, exit status, errors with a traceback) and errors in luv callbacks
-- are reported without ending the process.
local H = require "helper"

describe("sluice FILE.lua", function()
  local dir
  before_each(function() dir = H.tmpdir() end)

  it("passes arg and varargs and exits with os.exit's status", function()
    local f = H.write(dir .. "/args.lua", [[
local a, b = ...
io.write(arg[0]:match("[^/]+$"), " ", arg[1], " ", arg[2], " ", a, " ", b, " ", #arg, "\n")
os.exit(3)]])
    local code, out = H.sluice({ f, "x", "y" })
    assert.are.equal(3, code)
    assert.are.equal("args.lua x y x y 2\n", out)
  end)

  it("exits 1 with the message and a traceback on an error", function()
    local f = H.write(dir .. "/boom.lua", "local function inner() error('boom') end\ninner()\n")
    local code, out, err = H.sluice({ f })
    assert.are.equal(1, code)
    assert.are.equal("", out)
    assert.matches("boom.lua:1: boom", err)
    assert.matches("stack traceback", err)
  end)

  it("exits 2 with file:line on a syntax error", function()
    local f = H.write(dir .. "/syntax.lua", "local x = = 1\n")
    local code, _, err = H.sluice({ f })
    assert.are.equal(2, code)
    assert.matches("syntax.lua:1:", err)
  end)

  it("reports errors raised in luv callbacks, even error(nil) and error({}), and goes on", function()
    local f = H.write(dir .. "/cb.lua", [[
local uv = require "luv"
local function later(ms, fn) local t = uv.new_timer(); t:start(ms, 0, function() t:close(); fn() end) end
later(1, function() error("callback failed") end)
later(2, function() error(nil) end)
later(3, function() error({}) end)
later(10, function() print("still alive") end)]])
    local code, out, err = H.sluice({ f })
    assert.are.equal(0, code)
    assert.are.equal("still alive\n", out)
    assert.matches("cb.lua:3: callback failed", err)
    assert.matches("error object is a nil value", err)
    assert.matches("error object is a table value", err)
  end)

  it("lets top-level code wait on the loop and refuses uv.run", function()
    local f = H.write(dir .. "/wait.lua", [[
local uv = require "luv"
local co = coroutine.running()
local t = uv.new_timer()
t:start(20, 0, function() t:close(); coroutine.resume(co, "woken") end)
print(coroutine.yield())
print(pcall(uv.run))]])
    local code, out = H.sluice({ f })
    assert.are.equal(0, code)
    assert.matches("^woken\nfalse\t.*the sluice host runs the loop", out)
  end)
end)
