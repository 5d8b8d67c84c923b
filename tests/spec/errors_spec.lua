-- errors_spec.lua: every entry point of the pipeline API reports a user's
-- mistake at the user's line, naming the field, once, whatever the engine
-- does inside (sluice.errors); tracebacks carry the user's frames only.
-- Each case is a one-line function, so its line is where the call is.
local H = require "helper"
local storage = require "sluice._store"
local engine = require "sluice.engine"
local every_mod = require "sluice.every"
local errors = require "sluice.errors"

local store = H.store_target()
assert(storage.open(store))

local n = 0
local function fresh(prefix)
  n = n + 1
  return prefix .. n
end

local function line_of(fn)
  return debug.getinfo(fn, "S").linedefined
end

-- the message of the error fn raises inside a run
local function error_in_run(fn, what)
  local p = engine.pipeline(fresh("errors_spec_run"), function() return fn() end)
  local rec = engine.execute(p, nil)
  assert.are.equal("failed", rec.status, what)
  return rec.error.message, rec
end

local function count(s, sub)
  local k, from = 0, 1
  while true do
    local i = s:find(sub, from, true)
    if not i then return k end
    k, from = k + 1, i + #sub
  end
end

local function assert_names_line(msg, fn, want, what)
  local prefix = ("errors_spec.lua:%d: "):format(line_of(fn))
  assert.is_truthy(msg:find(prefix, 1, true), ("%s: %q does not name %s"):format(what, msg, prefix))
  assert.matches(want, msg, 1, false, what)
  assert.are.equal(1, count(msg, prefix), what .. ": the position is given once: " .. msg)
  assert.is_falsy(msg:find("lua/[%w_]+%.lua:%d"), what .. ": names a file of sluice: " .. msg)
end

local f = function() return 1 end
engine.pipeline("errors_spec_target", f)

describe("errors raised inside a run", function()
  it("name the user's line and the field for every entry point", function()
    local cases = {
      { function() return step("o", { retries = "three" }, f) end, "step 'o': retries must be an integer >= 0, got \"three\"" },
      { function() step("o", { retries = -1 }, f) end, "step 'o': retries must be an integer >= 0, got %-1" },
      { function() return step("t", { timeout = "soon" }, f) end, "step 't' timeout: \"soon\" is not a duration" },
      { function() return step("t", { timeout = "5 m" }, f) end, "step 't' timeout: \"5 m\" is not a duration %(use" },
      { function() return step("b", { backoff = { factor = "x" } }, f) end, "step 'b': backoff.factor must be a number >= 1, got \"x\"" },
      { function() return step("b", { backoff = { initail = "1s" } }, f) end, "step 'b': unknown backoff field 'initail'" },
      { function() return step("b", { backoff = true }, f) end, "step 'b': backoff must be a duration or a table" },
      { function() return step("u", { retry = 1 }, f) end, "step 'u': unknown option 'retry'" },
      { function() return step(string.rep("x", 1000000), f) end, "step: the id is 1000000 bytes long .*ids are at most 255 bytes" },
      { function() return step(42, f) end, "step: the id must be a non%-empty string, got number" },
      { function() return step("nofn", 42) end, "step 'nofn': expected a function, got number" },
      { function() return sleep("99999999999999999999d") end, "sleep: \"99999999999999999999d\" is longer than 100 years" },
      { function() return sleep("5s ") end, "sleep: \"5s \" is not a duration" },
      { function() return sleep(-1) end, "sleep: %-1 is not a duration" },
      { function() return parallel(f, 1) end, "parallel: argument 2 is a number, expected a function" },
      { function() return map("m", { 1 }, f, { concurrency = 0 }) end, "map 'm': concurrency must be a positive integer, got 0" },
      { function() return map("m", { 1 }, f, { timeout = "-5s" }) end, "map 'm' timeout: \"%-5s\" is not a duration" },
      { function() return dag { a = 42 } end, "dag: node 'a' must be a table" },
      { function() return dag { a = { f, retries = 1.5 } } end, "dag: node 'a': retries must be an integer >= 0, got 1.5" },
      { function() return wait_for("x", { timeout = "1 h" }) end, "wait_for timeout: \"1 h\" is not a duration" },
      { function() return wait_for("x", { match = 3 }) end, "wait_for%(\"x\"%): match must be a table of fields or a function" },
      { function() return send("") end, "send: the event name must be a non%-empty string" },
      { function() return send("e", { fn = print }) end, "send \"e\": the event cannot be stored: event.data.fn: cannot store a function" },
      { function() return emit("t", "", {}) end, "emit: the event cannot be stored: .*stream" },
      { function() return emit("t", "k", { print }) end, "emit: the event cannot be stored: .*cannot store a function" },
      { function() return read { stream = "s", limit = 0 } end, "read: limit must be a positive integer" },
      { function() return read { stream = "s", after = "zz" } end, "read: after: \"zz\" is not an event id" },
      { function() return read { stream = "s", limt = 5 } end, "read: unknown option 'limt'" },
      { function() return wait_for("x", { timout = "1h" }) end, "wait_for%(\"x\"%): unknown option 'timout' %(known: match, timeout%)" },
      { function() return call("no_such_pipeline") end, "call: no pipeline named 'no_such_pipeline'" },
      { function() return start(42) end, "start: expected a pipeline or its name" },
      { function() return call("errors_spec_target", nil, 5) end, "call 'errors_spec_target': options must be a table {id=}, got number" },
      { function() return start("errors_spec_target", nil, { idd = "x" }) end, "start 'errors_spec_target': unknown option 'idd' %(known: id%)" },
      { function() return call("errors_spec_target", nil, { id = "" }) end, "call 'errors_spec_target': id: run id \"\" must be 1 to 200 printable characters" },
      { function() return emit_many { 5 } end, "emit_many: the event cannot be stored: event 1: is not a table" },
      { function() return emit_many("x") end, "emit_many: expected a list of {type, stream_key, data}" },
      { function() return cancel(42) end, "cancel: the run id must be a string, got number" },
    }
    for i, c in ipairs(cases) do
      local msg = error_in_run(c[1], "case " .. i)
      assert_names_line(msg, c[1], c[2], "case " .. i)
    end
  end)

  it("keeps the user's line when a tail call would lose it", function()
    local fn = function() return step("tail", { retries = "x" }, f) end
    local p = pipeline(fresh("errors_spec_tail"), fn) -- the pipeline's own function tail-calls step
    local rec = engine.execute(p, nil)
    assert_names_line(rec.error.message, fn, "retries must be an integer", "tail call")
  end)

  it("give a failed step a traceback of the user's frames only", function()
    local msg, rec = error_in_run(function()
      return step("boom", function() error("the source is down") end)
    end)
    assert.matches("step 'boom' failed: .*errors_spec.lua:%d+: the source is down", msg)
    local tb = rec.error.traceback
    assert.matches("^stack traceback:\n", tb)
    assert.matches("errors_spec.lua:%d+: in ", tb)
    assert.is_falsy(tb:find("lua/[%w_]+%.lua:"), tb)
    assert.is_falsy(tb:find("[C]", 1, true), tb)
    -- printed once: the message, then only frames it does not name
    local shown = errors.describe(rec.error)
    assert.are.equal(1, count(shown, "the source is down"), shown)
  end)
end)

describe("errors raised while a file is loaded", function()
  after_each(function() every_mod.reset() end)

  it("name the user's line and the field", function()
    local p = engine.pipelines.errors_spec_target
    local cases = {
      { function() every(0).minutes(p) end, "every%(n%): n must be a positive integer, got 0" },
      { function() every.hour(p, nil, { jitter = "-5s" }) end, "every \"0 %* %* %* %*\" jitter: \"%-5s\" is not a duration" },
      { function() every.hour(p, nil, { catch_up = "some" }) end, "catch_up must be one of all, latest, none, got some" },
      { function() every.cron("* * 31 2 *")(p) end, "every \"%* %* 31 2 %*\" never fires: no date matches it" },
      { function() every.cron("61 * * * *") end, "every.cron%(\"61 %* %* %* %*\"%): minute field: 61 is out of range 0%-59" },
      { function() every.day.at("25:00") end, "at: \"25:00\" is not a time" },
      { function() every.fortnight(p) end, "every.fortnight: unknown schedule" },
      { function() every.hour(p, nil, "daily") end, "every \"0 %* %* %* %*\": options must be a table, got string" },
      { function() every.hour(42) end, "expected a pipeline, a pipeline name or a function to schedule" },
      { function() pipeline("") end, "pipeline: the name must be a non%-empty string" },
      { function() pipeline(fresh("errors_spec_p"), f, { timeout = "x" }) end, "pipeline 'errors_spec_p%d+' timeout: \"x\" is not a duration" },
      { function() pipeline(fresh("errors_spec_p"), f, { concurrency = { limit = 0 } }) end, "concurrency.limit must be a positive integer, got 0" },
      { function() pipeline(fresh("errors_spec_p"), f, { retries = 3 }) end, "unknown option 'retries' %(known: timeout, concurrency, params, description, parameters, namespaces%)" },
      { function() on("", f) end, "on: the event name must be a non%-empty string" },
      { function() on("x", f, { nmae = "y" }) end, "on%(\"x\"%): unknown option 'nmae' %(known: name%)" },
      { function() consume("c", "s", f, { batch = 0 }) end, "consume 'c': batch must be a positive integer" },
      { function() retention("s", { max_age = "5s " }) end, "retention max_age: \"5s \" is not a duration" },
    }
    for i, c in ipairs(cases) do
      local ok, msg = pcall(c[1])
      assert.is_false(ok, "case " .. i)
      assert_names_line(msg, c[1], c[2], "case " .. i)
    end
  end)
end)

describe("engine error tables", function()
  it("keep their code and get the user's line in their message, as string errors do", function()
    local raise = errors.entry(errors.store)
    local call = function() raise("starting run r1", "EIO: disk on fire", "EIO") end
    local ok, err = pcall(call)
    assert.is_false(ok)
    assert.are.equal("table", type(err))
    assert.are.equal("EIO", err.code)
    assert_names_line(err.message, call, "starting run r1: EIO: disk on fire$", "store error")
    assert.are.equal(err.message, tostring(err))
  end)

  it("errors.where gives the same site again without allocating it (a loop defining 100,000 schedules)", function()
    local errors = require "sluice.errors"
    -- a site longer than Lua's interned short strings (40 bytes)
    local chunk = "@/tmp/a-directory-name-long-enough/pipelines/many.lua"
    local fn = assert(load("local where, n = ...\nlocal s\nfor _ = 1, n do s = where() end\nreturn s", chunk))
    assert.are.equal("/tmp/a-directory-name-long-enough/pipelines/many.lua:3", fn(errors.where, 1))
    collectgarbage("collect")
    collectgarbage("stop")
    local before = collectgarbage("count")
    local site = fn(errors.where, 10000)
    local grown = collectgarbage("count") - before
    collectgarbage("restart")
    assert.are.equal("/tmp/a-directory-name-long-enough/pipelines/many.lua:3", site)
    -- a new string each call was ~10,000 x 80 bytes
    assert.is_true(grown < 64, ("10,000 calls allocated %.0f kB"):format(grown))
  end)
end)
