-- repl_spec.lua: sluice repl between real processes. A session typed into
-- a pseudo-terminal (tests/pty_session.py) inspects a run, triggers one and
-- reads its result, keeps globals, gathers an unfinished chunk, completes
-- a name with Tab and writes ~/.sluice_history; Ctrl-C stops a runaway
-- evaluation while serve keeps serving; the eval timeout; -e and --json;
-- stdin as a script; the read-only mode without a host; a client of
-- another user refused; pause surviving a restart; a host killed under an
-- idle session.
local H = require "helper"
local json = require "sluice.json"
local uv = require "luv"

local PYTHON = "/usr/bin/python3"

local function err_of(p) return table.concat(p.err) end
local function log_has(p, pattern) return err_of(p):find(pattern) ~= nil end

describe("sluice repl", function()
  local dir, store, home, gate
  before_each(function()
    dir = H.tmpdir()
    store = dir .. "/store"
    home = dir .. "/home"
    gate = dir .. "/gate"
    os.execute(("mkdir -p '%s/p' '%s'"):format(dir, home))
    H.write(dir .. "/p/greet.lua", [[
pipeline("greet", function(input)
  local hello = step("hello", function() return "hello " .. input.name end)
  return step("shout", function() return hello:upper() end)
end)
]])
    H.write(dir .. "/p/gated.lua", ([[
local uv = require "luv"
pipeline("gated", function()
  return step("gate", function()
    local co = coroutine.running()
    local t = uv.new_timer()
    t:start(5, 5, function()
      local g = io.open(%q)
      if g then g:close(); t:close(); coroutine.resume(co) end
    end)
    coroutine.yield()
    return "opened"
  end)
end)
]]):format(gate))
  end)

  local function serve()
    local p = H.spawn({ "serve", dir .. "/p", "--store", store })
    H.wait_until(function() return log_has(p, "schedules armed") end, "serve to start", 15000, 10)
    return p
  end

  local function stop(s)
    s:kill("sigterm")
    assert.are.equal(0, (s:wait()))
  end

  local function repl(args)
    local full = { "repl", "--store", store }
    for _, a in ipairs(args) do full[#full + 1] = a end
    return H.sluice(full)
  end

  -- a first run, through serve when it runs
  local function first_run()
    local code, out, err = H.sluice({ "run", dir .. "/p/greet.lua", "--id", "first", "--input", '{"name":"ada"}',
      "--store", store })
    assert.are.equal(0, code, err)
    assert.are.equal('"HELLO ADA"\n', out)
  end

  -- Starts a terminal session of `sluice repl` driven by steps (see
  -- tests/pty_session.py; `expect` is a Python regular expression). Returns the driver's process and the path of
  -- the transcript of what the REPL wrote.
  local function session(steps, extra)
    local scenario = H.write(dir .. "/scenario.json", json.encode(steps))
    local transcript = dir .. "/transcript"
    H.write(transcript, "")
    local env = { "HOME=" .. home, "TERM=xterm", "PATH=" .. (os.getenv("PATH") or "/usr/bin:/bin") }
    for _, k in ipairs({ "ASAN_OPTIONS", "UBSAN_OPTIONS", "LSAN_OPTIONS" }) do
      if os.getenv(k) then env[#env + 1] = k .. "=" .. os.getenv(k) end
    end
    local args = { H.root .. "/tests/pty_session.py", scenario, transcript, "--", H.bin, "repl", "--store", store }
    for _, a in ipairs(extra or {}) do args[#args + 1] = a end
    return H.spawn(args, { bin = PYTHON, env = env }), transcript
  end

  local function finish(p)
    local code, _, out, err = p:wait(60000)
    assert.are.equal(0, code, err .. out)
  end

  it("through a terminal inspects a run, triggers one and reads its result, and keeps a history", function()
    local s = serve()
    first_run()
    local p = session({
      { expect = "connected to sluice serve \\(pid " .. s.pid .. "\\)" },
      { expect = "sluice> $" },
      { send = "runs{}\r" }, { expect = "first\\s+greet\\s+completed.*sluice> $" },
      { send = "run('first').steps[1].result\r" }, { expect = '"hello ada".*sluice> $' },
      { send = "step('first', 'shout')\r" }, { expect = '"HELLO ADA".*sluice> $' },
      -- a global of the session, set by one line and read by the next
      { send = "r = trigger('greet', {name = 'bob'}, {wait = true})\r" }, { expect = "sluice> $" },
      { send = "r.status, r.result\r" }, { expect = '"completed"\r?\n"HELLO BOB".*sluice> $' },
      -- an unfinished chunk reads more lines
      { send = "function twice(x)\r" }, { expect = ">> $" },
      { send = "  return 2 * x\r" }, { expect = ">> $" },
      { send = "end\r" }, { expect = "sluice> $" },
      -- Tab completes the name
      { send = "twi\t" }, { expect = "ce" },
      { send = "(21)\r" }, { expect = "\n42\r?\n.*sluice> $" },
      { send = "error('bad input')\r" },
      { expect = "error: stdin:1: bad input\r?\nstack traceback:\r?\n\\s+stdin:1: in main chunk.*sluice> $" },
      { send = "\4" }, { exit = 0 },
    })
    finish(p)
    -- the triggered run is in the store
    local _, listing = H.sluice({ "runs", "--json", "--store", store })
    local runs = json.decode(listing).runs
    assert.are.equal(2, #runs)
    local code, out = H.sluice({ "status", runs[1].id, "--json", "--store", store })
    assert.are.equal(0, code)
    assert.are.equal("HELLO BOB", json.decode(out).result)
    -- the history: every chunk, the unfinished one as one entry; owner-only
    local hist = H.read(home .. "/.sluice_history")
    assert.is_not_nil(hist, "no ~/.sluice_history")
    assert.matches("runs{}", hist)
    assert.matches("function\\040twice%(x%)\\012\\040\\040return\\0402\\040%*\\040x\\012end", hist)
    assert.matches("twice%(21%)", hist)
    assert.are.equal(tonumber("600", 8), uv.fs_stat(home .. "/.sluice_history").mode & tonumber("777", 8))
    stop(s)
  end)

  it("Ctrl-C stops a runaway evaluation, not the host, which serves meanwhile", function()
    local s = serve()
    local looping, checked = dir .. "/looping", dir .. "/checked"
    local p, transcript = session({
      { expect = "sluice> $" },
      { send = "x = 'kept'\r" }, { expect = "sluice> $" },
      { send = "while true do end\r" }, { touch = looping },
      { wait_file = checked, timeout = 60 },
      { send = "\3" }, { expect = "interrupted.*sluice> $" },
      { send = "x, 1 + 1\r" }, { expect = '"kept"\r?\n2.*sluice> $' },
      { send = "\4" }, { exit = 0 },
    }, { "--eval-timeout", "1h" })
    H.wait_until(function() return uv.fs_stat(looping) ~= nil end, "the runaway chunk to be sent", 20000)
    -- while it spins inside serve: a run handed over completes, and another
    -- client evaluates
    first_run()
    local code, out, err = repl({ "-e", "return 'another client'" })
    assert.are.equal(0, code, err)
    assert.are.equal('"another client"\n', out)
    assert.is_nil(H.read(transcript):find("interrupted", 1, true))
    H.write(checked, "")
    finish(p)
    -- the eval timeout: stopped with a message, exit 1; serve goes on
    local code2, _, err2 = repl({ "-e", "while true do end", "--eval-timeout", "300ms" })
    assert.are.equal(1, code2)
    assert.matches("stopped: the evaluation ran Lua for 0%.3s without waiting %(sluice repl %-%-eval%-timeout%)", err2)
    local code3, out3 = repl({ "-e", "return #runs{}" })
    assert.are.equal(0, code3)
    assert.are.equal("1\n", out3)
    stop(s)
  end)

  it("-e prints the values (JSON with --json) and exits 0, or 1 with the error; stdin is one chunk", function()
    local s = serve()
    first_run()
    local code, out, err = repl({ "-e", 'return #runs{status="completed"}' })
    assert.are.equal(0, code, err)
    assert.are.equal("1\n", out)
    code, out = repl({ "-e", "return runs{limit = 1}", "--json" })
    assert.are.equal(0, code)
    local list = json.decode(out)
    assert.are.equal("first", list[1].id)
    assert.are.equal("completed", list[1].status)
    code, out = repl({ "-e", "return step('first', 'hello'), 2", "--json" })
    assert.are.equal(0, code)
    assert.are.equal('["hello ada",2]\n', out)
    code, out, err = repl({ "-e", "error('no')" })
    assert.are.equal(1, code)
    assert.are.equal("", out)
    assert.matches("^error: %(command line%):1: no\n", err)
    code, _, err = repl({ "-e", "return 1 +" })
    assert.are.equal(1, code)
    assert.matches("unexpected symbol near <eof>", err)
    code, _, err = repl({ "-e", "return print", "--json" })
    assert.are.equal(1, code)
    assert.matches("the value cannot be printed as JSON", err)
    code, _, err = repl({ "-e", "return step('first', 'nope')" })
    assert.are.equal(1, code)
    assert.matches("step: run first has no step 'nope'; its steps: hello, shout", err)
    code, _, err = repl({ "-e", "os.exit(3)" })
    assert.are.equal(1, code)
    assert.matches("os%.exit would stop the host %(sluice serve, pid " .. s.pid .. "%)", err)
    code, _, err = repl({ "--eval-timeout", "soon", "-e", "1" })
    assert.are.equal(2, code)
    assert.matches("%-%-eval%-timeout", err)
    -- cancel and rerun through the REPL
    code, out, err = repl({ "-e", "return trigger('gated', nil, {id = 'g1'})" })
    assert.are.equal(0, code, err)
    assert.are.equal('"g1"\n', out)
    code, out, err = repl({ "-e", "return cancel('g1').live" })
    assert.are.equal(0, code, err)
    assert.are.equal("true\n", out)
    H.write(gate, "")
    H.wait_until(function()
      local _, o = repl({ "-e", "return run('g1').status" })
      return o == '"cancelled"\n'
    end, "g1 to be cancelled")
    code, out, err = repl({ "-e", "return rerun('first', {from = 'shout', wait = true}).result" })
    assert.are.equal(0, code, err)
    assert.are.equal('"HELLO ADA"\n', out)
    -- reload: a changed file is live at once, through the REPL
    H.write(dir .. "/p/greet.lua", [[
pipeline("greet", function(input)
  return step("hello2", function() return "hi " .. input.name end)
end)
]])
    code, out, err = repl({ "-e", "return reload('greet.lua')[1].file, trigger('greet', {name = 'cy'}, {wait = true}).result" })
    assert.are.equal(0, code, err)
    assert.matches('greet%.lua"\n"hi cy"\n$', out)
    code, _, err = repl({ "-e", "reload('nope.lua')" })
    assert.are.equal(1, code)
    assert.matches("reload: no file nope%.lua in this serve's directory %(its files: .-gated%.lua", err)
    -- a script on stdin: one chunk, its prints and its values
    local script = H.write(dir .. "/script.lua", [[
local n = 0
for _, r in ipairs(runs{}) do n = n + 1 end
print("counted", n)
return n
]])
    local sh = H.spawn({ "-c", ("'%s' repl --store '%s' < '%s'"):format(H.bin, store, script) }, { bin = "/bin/sh" })
    local rc, _, sout, serr = sh:wait()
    assert.are.equal(0, rc, serr)
    assert.are.equal("counted\t4\n4\n", sout)
    stop(s)
  end)

  it("without a live host opens the store read-only and offers the inspection helpers alone", function()
    first_run()
    local code, out, err = repl({ "-e", "return run('first').result" })
    assert.are.equal(0, code, err)
    assert.are.equal('"HELLO ADA"\n', out)
    code, _, err = repl({ "-e", "trigger('greet', {name = 'x'})" })
    assert.are.equal(1, code)
    assert.matches("trigger%(%): no live host: sluice repl opened .- read%-only", err)
    local p = session({
      { expect = "no live host: .*? is open read-only here, with the inspection helpers alone" },
      { expect = "sluice\\(ro\\)> $" },
      { send = "#runs{}\r" }, { expect = "\n1\r?\n.*sluice\\(ro\\)> $" },
      { send = "stats()\r" }, { expect = "no live host.*sluice\\(ro\\)> $" },
      { send = "\4" }, { exit = 0 },
    })
    finish(p)
    -- nothing was written: the store has no writer
    local _, listing = H.sluice({ "runs", "--json", "--store", store })
    assert.are.equal(1, #json.decode(listing).runs)
  end)

  it("is refused by the host's control socket when run as another user", function()
    if uv.getuid() ~= 0 then
      pending("needs root to run a client as another user (setpriv)")
      return
    end
    local s = serve()
    -- even with the files opened up, the host checks the peer's uid
    os.execute(("chmod -R a+rwX '%s'; chmod 666 '%s/control.sock'"):format(dir, store))
    local code, out, err = H.sluice({ "--reuid=65534", "--regid=65534", "--clear-groups",
      H.bin, "repl", "--store", store, "-e", "return 1" }, { bin = "/usr/bin/setpriv" })
    assert.are.equal(1, code, err)
    assert.are.equal("", out)
    assert.matches("this control socket is for uid 0 only; the connection came from uid 65534", err)
    -- its own user is served
    local code2, out2 = repl({ "-e", "return 1" })
    assert.are.equal(0, code2)
    assert.are.equal("1\n", out2)
    stop(s)
  end)

  it("pauses a schedule durably: a restart keeps it paused; resume fires it again", function()
    H.write(dir .. "/p/tick.lua", [[
local t = pipeline("ticker", function() return step("t", function() return 1 end) end)
every(1).seconds(t, nil, { name = "ticker" })
]])
    local function ticks()
      local _, out = H.sluice({ "runs", "--pipeline", "ticker", "--limit", "1000", "--json", "--store", store })
      return #json.decode(out).runs
    end
    local function enabled()
      local _, out = H.sluice({ "schedules", "--json", "--store", store })
      for _, sc in ipairs(json.decode(out).schedules) do
        if sc.name == "ticker" then return sc.enabled end
      end
    end
    local s = serve()
    H.wait_until(function() return ticks() >= 1 end, "the schedule to fire", 15000, 50)
    local code, out, err = repl({ "-e", "return pause('ticker').enabled" })
    assert.are.equal(0, code, err)
    assert.are.equal("false\n", out)
    assert.is_false(enabled())
    code, _, err = repl({ "-e", "pause('nope')" })
    assert.are.equal(1, code)
    assert.matches("pause: no schedule 'nope' %(schedules: ticker%)", err)
    stop(s)
    local before = ticks()
    s = serve()
    assert.is_false(enabled())
    -- three fire times pass while it is paused: none fires
    local t0 = uv.hrtime()
    H.wait_until(function() return uv.hrtime() - t0 > 3.2e9 end, "three fire times", 10000, 100)
    assert.are.equal(before, ticks())
    code, out, err = repl({ "-e", "return resume('ticker').enabled" })
    assert.are.equal(0, code, err)
    assert.are.equal("true\n", out)
    H.wait_until(function() return ticks() > before end, "the resumed schedule to fire", 15000, 50)
    assert.is_true(enabled())
    stop(s)
  end)

  it("says at once that its host went away, and goes on read-only", function()
    local s = serve()
    local killed = dir .. "/killed"
    local p = session({
      { expect = "sluice> $" },
      { touch = dir .. "/ready" },
      { wait_file = killed },
      -- nothing typed: the idle session notices by itself
      { expect = "the connection to sluice serve \\(pid " .. s.pid .. "\\) ended" },
      { expect = "no live host: .*?sluice\\(ro\\)> $" },
      { send = "#runs{}\r" }, { expect = "\n0\r?\n.*sluice\\(ro\\)> $" },
      { send = "\4" }, { exit = 0 },
    })
    H.wait_until(function() return uv.fs_stat(dir .. "/ready") ~= nil end, "the session to start", 20000)
    s:kill("sigkill")
    s:wait()
    H.write(killed, "")
    finish(p)
  end)
end)
