-- cli_edges_spec.lua: what a new user trips over at the command line, run
-- as they would run it (real processes, a real store in a temp dir, kill
-- -9): files with on() handlers, a --store with a typo, an unreadable or
-- damaged store, a full stdout, durations across attempts, steps in flight.
local H = require "helper"
local json = require "sluice.json"
local uv = require "luv"

-- A step that holds its run until the file `gate` exists.
local GATE_STEP = [[
local uv = require "luv"
local function gate(path)
  local co = coroutine.running()
  local t = uv.new_timer()
  t:start(5, 5, function()
    if io.open(path) then t:close(); coroutine.resume(co) end
  end)
  coroutine.yield()
end
]]

local function sh_quote(s) return "'" .. s:gsub("'", "'\\''") .. "'" end

describe("sluice run of a file with on() handlers and consumers", function()
  local dir, store
  before_each(function()
    dir = H.tmpdir()
    store = dir .. "/store"
  end)

  it("runs its one pipeline, says the triggers run under serve and that the events wait for it", function()
    local f = H.write(dir .. "/orders.lua", [[
on("order.*", function(data) step("notify", function() return data end) end)
consume("audit", "orders:*", function(events) step("write", function() return #events end) end)
pipeline("checkout", function(input)
  send("order.paid", { order = input.order })
  send("order.shipped", { order = input.order })
  return input.order
end)]])
    local code, out, err = H.sluice({ "run", f, "--input", '{"order": 7}', "--store", store })
    assert.are.equal(0, code, err)
    assert.are.equal("7\n", out)
    assert.matches('also defines on%("order%.%*"%), consume%("audit"%): they run under \'sluice serve\'', err)
    assert.matches("2 events sent; their handlers run when 'sluice serve' starts", err)
    -- a resume sends nothing again, and says nothing about sends
    code, out, err = H.sluice({ "run", f, "--input", '{"order": 8}', "--id", "c1", "--store", store })
    assert.are.equal(0, code, err)
    code, out, err = H.sluice({ "run", f, "--id", "c1", "--store", store })
    assert.are.equal(0, code, err)
    assert.are.equal("8\n", out)
    assert.is_nil(err:find("events sent", 1, true))
  end)

  it("exits 2 when the file has only triggers, and runs one by --pipeline", function()
    local f = H.write(dir .. "/only.lua", [[
on("ping", function(data) return data end)]])
    local code, _, err = H.sluice({ "run", f, "--store", store })
    assert.are.equal(2, code)
    assert.matches('defines no pipeline to run, only on%("ping"%), which run under \'sluice serve\'', err)
    local out
    code, out, err = H.sluice({ "run", f, "--pipeline", "on:ping", "--input", '{"data": 5}', "--store", store })
    assert.are.equal(0, code, err)
    assert.are.equal("5\n", out)
  end)
end)

describe("the store", function()
  H.lmdb_it("the store directory and its files")("is created only where its parent exists", function()
    local dir = H.tmpdir()
    local f = H.write(dir .. "/p.lua", "pipeline('p', function() return 1 end)")
    local code, _, err = H.sluice({ "run", f, "--store", dir .. "/no/such/st" })
    assert.are.equal(2, code)
    assert.matches("cannot create store .*/no/such/st: its parent directory .*/no/such does not exist", err)
    assert.is_nil(uv.fs_stat(dir .. "/no"))
    code = H.sluice({ "run", f, "--store", dir .. "/st" })
    assert.are.equal(0, code)
  end)

  H.lmdb_it("the store directory's permissions")("that cannot be read is reported as a permission problem, not as missing", function()
    local dir = H.tmpdir()
    local store = dir .. "/st"
    local f = H.write(dir .. "/p.lua", "pipeline('p', function() return 1 end)")
    assert.are.equal(0, (H.sluice({ "run", f, "--id", "r1", "--store", store })))
    -- as root permission bits do not apply: ask as nobody, for whom a
    -- 0700 directory of root is closed; as another user, close it to us
    local as_root = uv.getuid() == 0
    local function sluice(args)
      if not as_root then return H.sluice(args) end
      local full = { "--reuid=nobody", "--regid=nogroup", "--clear-groups", H.bin }
      for _, a in ipairs(args) do full[#full + 1] = a end
      return H.sluice(full, { bin = "/usr/bin/setpriv" })
    end
    assert(uv.fs_chmod(dir, tonumber("755", 8)))
    assert(uv.fs_chmod(store, as_root and tonumber("700", 8) or 0))
    for _, args in ipairs({ { "runs", "--store", store }, { "status", "r1", "--store", store },
        { "run", f, "--store", store } }) do
      local code, _, err = sluice(args)
      assert.are.equal(2, code, args[1])
      assert.matches("store .*/st is not accessible %(Permission denied%)", err, args[1])
      assert.is_nil(err:find("no store at", 1, true), args[1])
    end
    assert(uv.fs_chmod(store, tonumber("755", 8)))
  end)

  H.lmdb_it("plants raw LMDB records (sluice._store_raw)")("with a corrupt run record names it, lists the others and refuses to resume it", function()
    local dir = H.tmpdir()
    local store = dir .. "/st"
    local f = H.write(dir .. "/p.lua", "pipeline('p', function(i) return i end)")
    assert.are.equal(0, (H.sluice({ "run", f, "--id", "good", "--input", "1", "--store", store })))
    -- damage one record the way a stray writer would: bytes that are not JSON
    local poke = H.write(dir .. "/poke.lua", [[
local clock = require "sluice._clock"
local storage = require "sluice._store"
local raw = require "sluice._store_raw"
assert(storage.open(arg[1]))
assert(raw.commit({ "runs", "broken", "{\"id\": \"broken\", oops",
  "runs_by_time", string.pack(">I8", clock.now()) .. "broken", "" }))]])
    local code, _, err = H.sluice({ poke, store })
    assert.are.equal(0, code, err)
    local out
    code, out, err = H.sluice({ "runs", "--store", store })
    assert.are.equal(0, code, err)
    assert.matches("good%s+p%s+completed", out)
    assert.matches("skipped: the record of run broken in .*st is corrupt", err)
    code, out = H.sluice({ "runs", "--json", "--store", store })
    assert.are.equal(0, code)
    assert.are.equal(1, #json.decode(out).runs)
    for _, args in ipairs({ { "status", "broken", "--store", store }, { "run", f, "--id", "broken", "--store", store } }) do
      code, out, err = H.sluice(args)
      assert.are.equal(2, code, args[1])
      assert.matches("the record of run broken in .*st is corrupt %(line 1, column %d+", err, args[1])
      assert.is_nil(err:find("traceback", 1, true), args[1])
    end
    code = H.sluice({ "status", "good", "--store", store })
    assert.are.equal(0, code)
  end)
end)

describe("inspection", function()
  local dir, store
  before_each(function()
    dir = H.tmpdir()
    store = dir .. "/store"
  end)

  it("refuses an unknown --status, naming the statuses", function()
    local code, _, err = H.sluice({ "runs", "--status", "bogus", "--store", store })
    assert.are.equal(2, code)
    assert.matches("%-%-status bogus is not a run status; use one of pending, running, sleeping, waiting, completed, failed, cancelled", err)
  end)

  it("says when --id names a run whose input is not --input", function()
    local f = H.write(dir .. "/echo.lua", "pipeline('echo', function(i) return i end)")
    local code, out = H.sluice({ "run", f, "--id", "e1", "--input", '{"n": 1}', "--store", store })
    assert.are.equal(0, code)
    local err
    code, out, err = H.sluice({ "run", f, "--id", "e1", "--input", '{"n": 2}', "--store", store })
    assert.are.equal(0, code)
    assert.are.same({ n = 1 }, json.decode(out))
    assert.matches("run e1 is completed, with another input than %-%-input, which is ignored %(its stored result is printed%)", err)
    -- the same input, in another spelling: nothing to say
    code, out, err = H.sluice({ "run", f, "--id", "e1", "--input", '{ "n" : 1 }', "--store", store })
    assert.are.equal(0, code)
    assert.are.equal("", err)
  end)

  it("shows a run's duration in all and its last attempt's", function()
    local gate = dir .. "/gate"
    local f = H.write(dir .. "/two.lua", ([[
local uv = require "luv"
pipeline("two", function()
  step("slow", function()
    local co = coroutine.running()
    local t = uv.new_timer()
    t:start(1000, 0, function() t:close(); coroutine.resume(co) end)
    coroutine.yield()
  end)
  if not io.open(%q) then error("gate closed") end
  return "done"
end)]]):format(gate))
    local code = H.sluice({ "run", f, "--id", "t1", "--store", store })
    assert.are.equal(1, code)
    H.write(gate, "open")
    code = H.sluice({ "run", f, "--id", "t1", "--store", store })
    assert.are.equal(0, code)
    local out
    code, out = H.sluice({ "status", "t1", "--json", "--store", store })
    local doc = json.decode(out)
    assert.are.equal(2, doc.attempt)
    -- the first attempt slept 1 s; the second replayed that step
    assert.is_true(doc.duration_ms >= 1000, "duration_ms " .. tostring(doc.duration_ms))
    assert.is_true(doc.attempt_duration_ms < 1000, "attempt_duration_ms " .. tostring(doc.attempt_duration_ms))
    code, out = H.sluice({ "status", "t1", "--store", store })
    assert.matches("duration   %d[%d.]*s, [%d.]+m?s of it in attempt 2\n", out)
    code, out = H.sluice({ "runs", "--json", "--store", store })
    assert.are.equal(doc.duration_ms, json.decode(out).runs[1].duration_ms)
  end)

  it("prints events --json as one document, and JSON Lines with --follow", function()
    local f = H.write(dir .. "/emit.lua", [[
pipeline("emit", function()
  emit("created", "orders:1", { n = 1 })
  emit("created", "orders:2", { n = 2 })
end)]])
    assert.are.equal(0, (H.sluice({ "run", f, "--store", store })))
    local code, out = H.sluice({ "events", "orders:*", "--json", "--limit", "1", "--store", store })
    assert.are.equal(0, code)
    local doc = json.decode(out)
    assert.are.equal(1, #doc.events)
    assert.are.equal("orders:1", doc.events[1].stream)
    code, out = H.sluice({ "events", "orders:*", "--json", "--after", doc.next, "--store", store })
    doc = json.decode(out)
    assert.are.equal(1, #doc.events)
    assert.are.equal("orders:2", doc.events[1].stream)
    code, out = H.sluice({ "events", "orders:*", "--json", "--after", doc.next, "--store", store })
    assert.are.same({ events = {}, next = doc.next }, json.decode(out))
    local p = H.spawn({ "events", "orders:*", "--follow", "--json", "--store", store })
    H.wait_until(function() return select(2, table.concat(p.out):gsub("\n", "")) >= 2 end,
      "two events from --follow", 10000, 20)
    p:kill("sigterm")
    local _, _, fout = p:wait()
    local lines = {}
    for l in fout:gmatch("[^\n]+") do lines[#lines + 1] = json.decode(l) end
    assert.are.equal("orders:1", lines[1].stream)
    assert.are.equal("orders:2", lines[2].stream)
  end)

  it("shows the step in flight with its start, across a kill -9 and the resume", function()
    local gate = dir .. "/gate"
    local marks = dir .. "/marks"
    local f = H.write(dir .. "/held.lua", GATE_STEP .. ([[
pipeline("held", function()
  step("first", function() return 1 end)
  step("hold", function()
    local m = io.open(%q, "a"); m:write("hold\n"); m:close()
    gate(%q)
    return "released"
  end)
  return "ok"
end)]]):format(marks, gate))
    local p = H.spawn({ "run", f, "--id", "h1", "--store", store })
    local doc
    H.wait_until(function()
      local code, out = H.sluice({ "status", "h1", "--json", "--store", store })
      doc = code == 0 and json.decode(out) or nil
      return doc and doc.steps[2] and doc.steps[2].status == "running"
    end, "the step in flight to show", 15000, 50)
    local s = doc.steps[2]
    assert.are.equal("hold", s.id)
    assert.are.equal(1, s.attempts)
    assert.matches("^%d%d%d%d%-%d%d%-%d%dT", s.started_at)
    assert.is_true(s.duration_ms >= 500)
    local _, text = H.sluice({ "status", "h1", "--store", store })
    assert.matches("in flight  step 'hold' %(attempt 1%), started " .. s.started_at:gsub("%p", "%%%0"), text)
    p:kill("sigkill")
    p:wait()
    -- the process is gone: the step was cut off, and runs again on resume
    local _, out = H.sluice({ "status", "h1", "--json", "--store", store })
    assert.are.equal("interrupted", json.decode(out).steps[2].status)
    H.write(gate, "open")
    local code, err
    code, out, err = H.sluice({ "run", f, "--id", "h1", "--store", store })
    assert.are.equal(0, code, err)
    assert.are.equal('"ok"\n', out)
    _, out = H.sluice({ "status", "h1", "--json", "--store", store })
    doc = json.decode(out)
    assert.are.equal("completed", doc.steps[2].status)
    assert.are.equal(2, #doc.steps)
    assert.are.equal(2, #H.lines(marks)) -- ran again after the kill: at-least-once
  end)
end)

describe("a full stdout", function()
  it("makes every printing command exit 1, saying the result was not written", function()
    local dir = H.tmpdir()
    local store = dir .. "/st"
    local f = H.write(dir .. "/p.lua", "pipeline('p', function() return { big = string.rep('x', 100000) } end)")
    local errf = dir .. "/err"
    local function to_full(args)
      local cmd = { sh_quote(H.bin) }
      for _, a in ipairs(args) do cmd[#cmd + 1] = sh_quote(a) end
      local _, _, code = os.execute(table.concat(cmd, " ") .. " > /dev/full 2> " .. sh_quote(errf))
      return code, H.read(errf)
    end
    for _, args in ipairs({ { "run", f, "--id", "r1", "--store", store }, { "run", f, "--id", "r1", "--store", store },
        { "runs", "--store", store }, { "status", "r1", "--store", store }, { "runs", "--help" },
        { "cron", "next", "0 0 * * *", "-n", "3" } }) do
      local code, err = to_full(args)
      assert.are.equal(1, code, table.concat(args, " "))
      assert.matches("sluice: cannot write the result to stdout: No space left on device", err)
    end
    -- the run itself completed: the result is in the store
    local code, out = H.sluice({ "run", f, "--id", "r1", "--store", store })
    assert.are.equal(0, code)
    assert.are.equal(100000, #json.decode(out).big)
  end)
end)
