-- repl_eval_spec.lua: REPL evaluation inside the host, on a real store:
-- expressions show their value, incomplete chunks are told apart from wrong
-- ones, globals stay in the session, print() reaches the client, errors
-- carry the user's frames, a runaway chunk is stopped after its time (pcall
-- cannot swallow it, coroutines it made stop too) while the loop keeps
-- serving, waiting does not count against the time, an interrupt stops a
-- chunk that waits, JSON replies; and the pretty printer's limits.
local H = require "helper"
local store = require "sluice._store"
local sched = require "sluice.sched"
local eval = require "sluice.repl_eval"
local pretty = require "sluice.pretty"
local json = require "sluice.json"
local uv = require "luv"

assert(store.open(H.store_target()))

local function ms_since(t0) return (uv.hrtime() - t0) / 1e6 end

-- evaluates code in session s (a fresh offline one by default); returns
-- the reply and what it printed
local function run(code, opts, s)
  opts = opts or {}
  s = s or eval.session({ live = false })
  local printed = {}
  local reply
  H.task(function()
    local me, waiting = coroutine.running(), false
    local ev = eval.start(s, code, {
      timeout_ms = opts.timeout_ms, format = opts.format,
      out = function(t) printed[#printed + 1] = t end,
      on_done = function(r)
        reply = r
        if waiting then sched.wake(me) end
      end,
    })
    if opts.on_start then opts.on_start(ev) end
    if not reply then
      waiting = true
      sched.wait()
    end
  end)
  return reply, table.concat(printed)
end

describe("a REPL evaluation", function()
  it("shows the value of an expression, and runs statements", function()
    assert.are.equal("42", run("6 * 7").text)
    assert.are.equal('1\n"two"\nnil\n{ 3, x = 4 }', run("1, 'two', nil, {3, x = 4}").text)
    assert.are.equal("", run("local x = 1").text)
    assert.are.equal("3", run("local x = 1\nreturn x + 2").text)
  end)

  it("tells an incomplete chunk from a wrong one", function()
    assert.is_true(eval.incomplete("function f(x)"))
    assert.is_true(eval.incomplete("t = {1, 2,"))
    assert.is_true(eval.incomplete("s = [[open"))
    assert.is_true(eval.incomplete("for i = 1, 3 do"))
    assert.is_false(eval.incomplete("return 1 +* 2"))
    assert.is_false(eval.incomplete("x = = 1"))
    assert.is_false(eval.incomplete("function f(x) return x end"))
    local r = run("return 1 +* 2")
    assert.matches("^stdin:1: unexpected symbol near '%*'", r.error)
  end)

  it("keeps globals in its session, apart from _G", function()
    local s = eval.session({ live = false })
    run("counter = 10", nil, s)
    assert.are.equal("11", run("counter = counter + 1; return counter", nil, s).text)
    assert.is_nil(rawget(_G, "counter"))
    assert.are.equal("nil", run("return counter").text) -- another session
  end)

  it("sends what print() writes to its client", function()
    local r, printed = run("for i = 1, 3 do print('line', i) end; return 'end'")
    assert.are.equal('"end"', r.text)
    assert.are.equal("line\t1\nline\t2\nline\t3\n", printed)
  end)

  it("reports an error with the user's frames", function()
    local r = run("local function inner() error('broken') end\ninner()")
    assert.are.equal("stdin:1: broken", r.error)
    assert.matches("stdin:1: in local 'inner'", r.traceback)
    assert.matches("stdin:2: in main chunk", r.traceback)
    assert.is_nil(r.traceback:find("lua/", 1, true), r.traceback)
    local r2 = run("error({ code = 7 })")
    assert.are.equal("(error object) { code = 7 }", r2.error)
  end)

  it("stops Lua that never yields after its time, while the loop keeps serving", function()
    local ticks, t0 = 0, uv.hrtime()
    local t = uv.new_timer()
    -- only the ticks while the chunk runs (its 300 ms less a margin) count
    t:start(10, 10, function() if ms_since(t0) < 280 then ticks = ticks + 1 end end)
    local r = run("while true do end", { timeout_ms = 300 })
    local ms = ms_since(t0)
    t:close()
    assert.are.equal("timeout", r.stopped)
    assert.are.equal("stopped: the evaluation ran Lua for 0.3s without waiting (sluice repl --eval-timeout)", r.error)
    -- libuv's timers count whole milliseconds of a clock read at the loop's
    -- last turn: a 300 ms timer can fire up to 1 ms before 300 ms of hrtime
    assert.is_true(ms >= 298 and ms < 3000, ("stopped after %.1f ms"):format(ms))
    -- preempted: timers ran during the runaway (each turn of the loop runs a
    -- repeating timer at most once; a loaded machine gives the process few
    -- turns, none at all without the preemption)
    assert.is_true(ticks >= 2, ("only %d timer ticks during the runaway"):format(ticks))
  end)

  it("cannot be kept running by pcall, nor by a coroutine it made", function()
    local r = run("while true do pcall(function() while true do end end) end", { timeout_ms = 200 })
    assert.are.equal("timeout", r.stopped)
    local r2 = run("local co = coroutine.wrap(function() while true do end end); co()", { timeout_ms = 200 })
    assert.are.equal("timeout", r2.stopped)
    -- and a stopped session goes on working
    local s = eval.session({ live = false })
    run("x = 1; while true do end", { timeout_ms = 100 }, s)
    assert.are.equal("1", run("return x", nil, s).text)
  end)

  it("does not count waiting against its time", function()
    local t0 = uv.hrtime()
    local r = run("require('sluice.sched').sleep_ms(600); return 'slept'", { timeout_ms = 200 })
    assert.are.equal('"slept"', r.text)
    assert.is_true(ms_since(t0) >= 600)
  end)

  it("is interrupted at once while it waits, and never goes on", function()
    local marker = H.tmpdir() .. "/after"
    local t0 = uv.hrtime()
    local r = run(("require('sluice.sched').sleep_ms(400); io.open(%q, 'w'):close()"):format(marker), {
      on_start = function(ev)
        local t = uv.new_timer()
        t:start(50, 0, function()
          t:close()
          ev:stop("interrupted", "interrupted")
        end)
      end,
    })
    assert.are.equal("interrupted", r.stopped)
    assert.is_true(ms_since(t0) < 400)
    -- its sleep ends later; the code after it never runs
    H.sleep(600)
    assert.is_nil(uv.fs_stat(marker))
  end)

  it("answers the values themselves in JSON mode, or why they cannot be", function()
    local r = run("return 1, { a = 9007199254740993 }", { format = "json" })
    assert.are.equal('[1,{"a":9007199254740993}]', json.encode(r.values))
    local r2 = run("return print", { format = "json" })
    assert.matches("^the value cannot be printed as JSON: .*function", r2.error)
  end)

  it("offers the inspection helpers offline, and says the others need a live host", function()
    local r = run("return #runs{}, schedules(), consumers()")
    assert.are.equal("0\n(none)\n(none)", r.text)
    local r2 = run("trigger('x')")
    assert.matches("^stdin:1: trigger%(%): no live host: sluice repl opened .* read%-only", r2.error)
    local r3 = run("runs{limit = 0}")
    assert.matches("^stdin:1: runs: limit must be a positive integer, got 0", r3.error)
    local r4 = run("runs{state = 'x'}")
    assert.matches("^stdin:1: runs: unknown option 'state' %(known: limit, pipeline, status%)", r4.error)
    local _, printed = run("help()")
    assert.matches("runs{pipeline=, status=, limit=20}%s+runs newest first", printed)
    assert.matches("trigger%(name, input, {wait=false}%).-%(needs a live host%)", printed)
  end)
end)

describe("the pretty printer", function()
  it("shows nested tables to a depth, long ones to a number of entries", function()
    local deep = { a = { b = { c = { d = { e = 1 } } } } }
    assert.are.equal("{ a = { b = { c = { d = {...1 entries} } } } }", pretty.show(deep))
    local long = {}
    for i = 1, 60 do long[i] = i end
    assert.matches("58, 59, 60 }$", pretty.show(long, { items = 100, width = 1000 }))
    assert.matches("49, 50, %.%.%.%(10 more%)", pretty.show(long, { width = 1000 }))
  end)

  it("breaks lines at the width, quotes strings, cuts long ones, shows cycles", function()
    local t = { name = string.rep("n", 40), other = string.rep("o", 40) }
    assert.are.equal('{\n  name = "' .. string.rep("n", 40) .. '",\n  other = "' .. string.rep("o", 40) .. '"\n}',
      pretty.show(t, { width = 60 }))
    assert.are.equal('"a\\nb\\"\\000\\xFF é"', pretty.show("a\nb\"\0\255 é"))
    assert.are.equal('"xxxxx"...(12 bytes)', pretty.show(string.rep("x", 12), { string = 5 }))
    local c = { x = 1 }
    c.me = c
    assert.are.equal("{ me = <cycle>, x = 1 }", pretty.show(c))
    assert.are.equal("null", pretty.show(json.null))
    assert.are.equal("0.1", pretty.show(0.1))
    assert.are.equal("1.0", pretty.show(1.0))
    assert.are.equal("9007199254740993", pretty.show(9007199254740993))
  end)

  it("shows rows as a table of columns", function()
    local rows = pretty.rows({ { id = "a", n = 1, ok = false }, { id = "bb", err = "x\ny" } }, { "id", "n", "ok", "err" })
    assert.are.equal("ID  N  OK     ERR\na   1  false  -\nbb  -  -      x y", pretty.show(rows))
    assert.are.equal(2, #rows)
    assert.are.equal("(none)", pretty.show(pretty.rows({}, { "id" })))
  end)
end)
