-- reload_spec.lua: hot reload in `sluice serve` as a user edits files in
-- its directory while it runs: a broken edit keeps the old version serving,
-- a changed schedule takes effect, a removed handler stops receiving, two
-- quick saves reload once, a new file can be run at once, a deleted file's
-- pipelines go, a new subdirectory is watched, SIGHUP reloads everything.
local H = require "helper"
local json = require "sluice.json"
local ids = require "sluice._ids"

local function log_of(p) return H.messages(table.concat(p.err)) end

local function count(text, plain)
  local n, i = 0, 1
  while true do
    local s, e = text:find(plain, i, true)
    if not s then return n end
    n, i = n + 1, e + 1
  end
end

describe("sluice serve reloads", function()
  local dir, pdir, store, serve
  before_each(function()
    dir = H.tmpdir()
    pdir = dir .. "/p"
    store = dir .. "/store"
    os.execute("mkdir -p '" .. pdir .. "'")
  end)
  after_each(function()
    if serve then
      serve:kill("sigterm")
      serve:wait()
      serve = nil
    end
  end)

  -- saves a file as editors do: written aside, renamed into place
  local function save(path, text)
    H.write(path .. ".tmp~", text)
    assert(os.rename(path .. ".tmp~", path))
    return ids.hash(text)
  end

  local function start()
    serve = H.spawn({ "serve", pdir, "--store", store })
    H.wait_until(function() return log_of(serve):find("schedules armed") end, "serve to start", 20000, 10)
  end

  -- waits for a whole line of serve's log matching the Lua pattern (a line
  -- may reach the pipe in pieces)
  local function wait_line(pattern)
    H.wait_until(function()
      for line in log_of(serve):gmatch("([^\n]*)\n") do
        if line:find(pattern) then return true end
      end
    end, "a log line matching " .. pattern, 20000, 10)
  end
  local function q(s) return (s:gsub("%p", "%%%0")) end

  -- `sluice run` of a stub defining `name`: serve runs its own version of it
  local function run(name, input)
    local stub = H.write(dir .. "/stub-" .. name:gsub("[^%w]", "_") .. ".lua",
      ("pipeline(%q, function() end)\n"):format(name))
    return H.sluice({ "run", stub, "--store", store, "--input", json.encode(input == nil and json.null or input) })
  end

  local function runs(pipeline)
    local code, out, err = H.sluice({ "runs", "--json", "--limit", "1000", "--store", store, "--pipeline", pipeline })
    assert.are.equal(0, code, err)
    return json.decode(out).runs
  end

  it("keeps the old version serving when an edit has a syntax error, and logs file:line", function()
    local f = pdir .. "/a.lua"
    local h1 = save(f, 'pipeline("a", function() return "v1" end)\n')
    start()
    local code, out, err = run("a")
    assert.are.equal(0, code, err)
    assert.are.equal('"v1"', out:gsub("\n$", ""))
    save(f, 'pipeline("a", function() return "v2" end)\npipeline("b" function() end)\n')
    wait_line(q("reload " .. f .. " failed (version " .. h1 .. " stays live): " .. f .. ":2: ") .. q("')' expected"))
    code, out, err = run("a")
    assert.are.equal(0, code, err)
    assert.are.equal('"v1"', out:gsub("\n$", ""))
    -- fixed: the new version serves
    local h3 = save(f, 'pipeline("a", function() return "v3" end)\n')
    wait_line(q("reload " .. f .. " " .. h1 .. " -> " .. h3) .. " in [%d.]+ms: pipelines ~a$")
    code, out, err = run("a")
    assert.are.equal(0, code, err)
    assert.are.equal('"v3"', out:gsub("\n$", ""))
  end)

  it("applies a changed schedule without a restart", function()
    local f = pdir .. "/s.lua"
    -- at first it fires once a year
    local h1 = save(f, 'pipeline("tick", function(input) return input end)\n' ..
      'every.cron("0 0 1 1 *")("tick", { v = 1 }, { name = "t" })\n')
    start()
    local h2 = save(f, 'pipeline("tick", function(input) return input end)\n' ..
      'every(1).seconds("tick", { v = 2 }, { name = "t" })\n')
    wait_line(q("reload " .. f .. " " .. h1 .. " -> " .. h2) .. " in [%d.]+ms: schedules ~t$")
    H.wait_until(function()
      for _, r in ipairs(runs("tick")) do
        if r.status == "completed" then return true end
      end
    end, "a fire of the changed schedule", 20000, 50)
    local code, out = H.sluice({ "status", runs("tick")[1].id, "--json", "--store", store })
    assert.are.equal(0, code)
    assert.are.same({ v = 2 }, json.decode(out).input)
    code, out = H.sluice({ "schedules", "--json", "--store", store })
    assert.are.equal(0, code)
    assert.are.equal("every 1s", json.decode(out).schedules[1].spec)
  end)

  it("stops delivering events to a removed handler", function()
    local a, b = pdir .. "/a.lua", pdir .. "/b.lua"
    local h1 = save(a, 'pipeline("keep", function() end)\non("ping", function(data) return data end)\n')
    save(b, 'pipeline("sender", function(input) send("ping", input) end)\n' ..
      'on("ping", function(data) return data end, { name = "witness" })\n')
    start()
    assert.are.equal(0, (run("sender", 1)))
    H.wait_until(function() return #runs("on:ping") == 1 and #runs("witness") == 1 end, "both handlers' runs")
    local h2 = save(a, 'pipeline("keep", function() end)\n')
    wait_line(q("reload " .. a .. " " .. h1 .. " -> " .. h2) .. " in [%d.]+ms: handlers %-on:ping$")
    assert.are.equal(0, (run("sender", 2)))
    -- the witness got the second event: the removed handler would have too
    H.wait_until(function() return #runs("witness") == 2 end, "the witness's second run")
    assert.are.equal(1, #runs("on:ping"))
  end)

  it("reloads once for two quick saves", function()
    local f = pdir .. "/q.lua"
    save(f, 'pipeline("q", function() return 1 end)\n')
    start()
    local t2 = 'pipeline("q", function() return 2 end)\n'
    local t3 = 'pipeline("q", function() return 3 end)\n'
    save(f, t2)
    local h3 = save(f, t3)
    wait_line(q(" -> " .. h3) .. " in [%d.]+ms: pipelines ~q$")
    assert.are.equal(1, count(log_of(serve), "reload " .. f .. " "))
    assert.are.equal(0, count(log_of(serve), ids.hash(t2)))
    local code, out = run("q")
    assert.are.equal(0, code)
    assert.are.equal("3", out:gsub("\n$", ""))
  end)

  it("runs a file added while serve runs at once, and forgets a deleted one", function()
    save(pdir .. "/a.lua", 'pipeline("a", function() return "a" end)\n')
    start()
    local f = pdir .. "/new.lua"
    local h = save(f, 'pipeline("fresh", function(input) return input * 2 end)\n')
    -- no waiting for the watcher: the hand-off loads it if it has not yet
    local code, out, err = H.sluice({ "run", f, "--store", store, "--input", "21", "--id", "fresh-1" })
    assert.are.equal(0, code, err)
    assert.are.equal("42", out:gsub("\n$", ""))
    wait_line(q("reload " .. f .. " new -> " .. h) .. " in [%d.]+ms: pipelines %+fresh$")
    os.remove(f)
    wait_line(q("reload " .. f .. " " .. h .. " -> deleted") .. " in [%d.]+ms: pipelines %-fresh$")
    code, _, err = run("fresh", 1)
    assert.are.equal(2, code)
    assert.matches("not loaded by this serve", err)
    -- its runs' history stays
    code, out = H.sluice({ "status", "fresh-1", "--json", "--store", store })
    assert.are.equal(0, code)
    assert.are.equal("completed", json.decode(out).status)
  end)

  it("watches a new subdirectory", function()
    start()
    os.execute("mkdir '" .. pdir .. "/sub'")
    local f = pdir .. "/sub/deep.lua"
    local h = save(f, 'pipeline("deep", function() return "deep" end)\n')
    wait_line(q("reload " .. f .. " new -> " .. h))
    -- and files saved in it later
    local h2 = save(f, 'pipeline("deep", function() return "deeper" end)\n')
    wait_line(q("reload " .. f .. " " .. h .. " -> " .. h2))
    local code, out = run("deep")
    assert.are.equal(0, code)
    assert.are.equal('"deeper"', out:gsub("\n$", ""))
  end)

  it("refuses a file whose top level calls step(), naming file:line", function()
    local f = pdir .. "/top.lua"
    save(f, 'pipeline("top", function() end)\nstep("x", function() end)\n')
    start()
    wait_line("not loaded: " .. q(f) .. ":2: step.* called while .* loads: top%-level code only defines")
    local code, _, err = run("top")
    assert.are.equal(2, code)
    assert.matches("not loaded by this serve", err)
  end)

  it("reloads every file on SIGHUP, changed or not (top-level code may read other files)", function()
    local names = H.write(dir .. "/names.txt", "one\n")
    save(pdir .. "/gen.lua", ([[
for name in io.lines(%q) do pipeline("gen-" .. name, function() return name end) end
]]):format(names))
    start()
    H.write(names, "one\ntwo\n")
    serve:kill("sighup")
    wait_line("SIGHUP")
    wait_line(": pipelines %+gen%-two$")
    local code, out = run("gen-two")
    assert.are.equal(0, code)
    assert.are.equal('"two"', out:gsub("\n$", ""))
  end)

  it("reloads every file on `sluice reload`, printing a line per file and failing for a broken one", function()
    local a, b = pdir .. "/a.lua", pdir .. "/b.lua"
    local ha = save(a, 'pipeline("a", function() return 1 end)\n')
    save(b, 'pipeline("b", function() return 1 end)\n')
    start()
    local code, out, err = H.sluice({ "reload", "--store", store })
    assert.are.equal(0, code, err)
    assert.matches(q(a .. " " .. ha .. " -> " .. ha) .. " in [%d.]+ms: no definition changed\n", out)
    -- b broken: b keeps its old version, the command says so and exits 1
    H.write(b, 'pipeline("b" function() end)\n')
    code, out, err = H.sluice({ "reload", "--store", store, "--json" })
    assert.are.equal(1, code, err)
    local files = json.decode(out).files
    assert.are.equal(2, #files)
    assert.matches(q(b) .. ":1: ", files[2].error)
    code, out = run("b")
    assert.are.equal(0, code)
    assert.are.equal("1", out:gsub("\n$", ""))
  end)

  it("stops a removed consumer, keeping its checkpoint, and starts an added one", function()
    save(pdir .. "/emitter.lua", 'pipeline("emit1", function(input) emit("e", "c:1", input) end)\n' ..
      'consume("witness", "c:*", function() end)\n')
    start()
    local f = pdir .. "/cons.lua"
    save(f, 'consume("audit", "c:*", function() end)\n')
    wait_line(q(f) .. " new .*: consumers %+audit$")
    assert.are.equal(0, (run("emit1", 1)))
    local function positions()
      local code, out = H.sluice({ "consumers", "--json", "--store", store })
      assert.are.equal(0, code)
      local by = {}
      for _, c in ipairs(json.decode(out).consumers) do by[c.name] = c end
      return by
    end
    H.wait_until(function()
      local p = positions()
      return p.audit and p.audit.lag == 0 and p.audit.after and p.witness and p.witness.lag == 0 and p.witness.after
    end, "both consumers at the first event")
    local at = positions().audit.after
    os.remove(f)
    wait_line(q(f) .. " .* %-> deleted .*: consumers %-audit$")
    assert.are.equal(0, (run("emit1", 2)))
    H.wait_until(function() local w = positions().witness; return w.after ~= at and w.lag == 0 end,
      "the witness past the second event")
    local audit = positions().audit
    assert.are.equal(at, audit.after)
    assert.are.equal(1, audit.lag)
  end)
end)
