-- registry_spec.lua: the registry of definitions inside the host: a file
-- loads into its own environment through stage, validate, swap; a second
-- load replaces its definitions; on any error nothing of the new version is
-- live and the old one stays; top-level code may only define.
local H = require "helper"
local storage = require "sluice._store"
local engine = require "sluice.engine"
local registry = require "sluice.registry"
local every = require "sluice.every"
local events = require "sluice.events"
local stream = require "sluice.stream"

local store = H.store_target()
assert(storage.open(store))
local dir = H.tmpdir()

local function file(name, text) return H.write(dir .. "/" .. name, text) end

-- the names of a diff's kind: {added = {...}, removed = {...}, changed = {...}}
local function names(d, kind)
  local key = kind == "handlers" and function(h) return h.pipeline.name end or function(x) return x.name end
  local out = { added = {}, removed = {}, changed = {} }
  for _, x in ipairs(d[kind].added) do out.added[#out.added + 1] = key(x) end
  for _, x in ipairs(d[kind].removed) do out.removed[#out.removed + 1] = key(x) end
  for _, x in ipairs(d[kind].changed) do out.changed[#out.changed + 1] = key(x.new) end
  for _, l in pairs(out) do table.sort(l) end
  return out
end

describe("the registry", function()
  after_each(function() registry.reset() end)

  it("loads the same file twice and replaces its definitions instead of failing", function()
    local f = file("twice.lua", [[
pipeline("twice", function() return "v1" end)
every(1).hours("twice", nil, { name = "twice-hourly" })
on("twice.*", function() end)
consume("twice-c", "twice:*", function() end)
retention("twice:*", { max_count = 10 })
]])
    local d1 = assert(registry.load(f))
    local p1 = engine.pipelines.twice
    assert.are.equal("v1", p1.fn())
    local d2 = assert(registry.load(f))
    -- same source: the same names, nothing added or removed, new handles
    for _, kind in ipairs(registry.KINDS) do
      assert.are.equal(0, #d2[kind].added + #d2[kind].removed + #d2[kind].changed, kind)
    end
    assert.are_not.equal(p1, engine.pipelines.twice)
    assert.are.equal(d1.new_hash, d2.old_hash)
    assert.are.equal(1, #every.order)
    assert.are.equal(1, #events.handlers)
    assert.are.equal(1, #stream.consumer_order)
    assert.are.equal(1, #stream.retention_rules)

    -- a new version: changed, added, removed, per kind
    file("twice.lua", [[
pipeline("twice", function() return "v2" end)
pipeline("added", function() end)
every(2).hours("twice", nil, { name = "twice-hourly" })
consume("twice-c", "twice:*", function() end)
]])
    local d3 = assert(registry.load(f))
    assert.are.same({ added = { "added" }, removed = {}, changed = { "twice" } }, names(d3, "pipelines"))
    assert.are.same({ added = {}, removed = {}, changed = { "twice-hourly" } }, names(d3, "schedules"))
    assert.are.same({ added = {}, removed = { "on:twice.*" }, changed = {} }, names(d3, "handlers"))
    assert.are.same({ added = {}, removed = {}, changed = {} }, names(d3, "consumers"))
    assert.are.equal(1, #d3.retention.removed)
    assert.are.equal("v2", engine.pipelines.twice.fn())
    assert.are.equal("0 */2 * * *", every.defined["twice-hourly"].spec:canonical())
    assert.are.equal(0, #events.handlers)
    assert.are.equal(0, #stream.retention_rules)
    assert.is_nil(engine.pipelines["on:twice.*"])
    assert.matches("pipelines %+added ~twice; schedules ~twice%-hourly; handlers %-on:twice%.%*; retention %-twice:%*",
      registry.summary(d3))
  end)

  it("keeps the old version live when the new one has a syntax error, naming file:line", function()
    local f = file("syntax.lua", 'pipeline("syn", function() return "old" end)\n')
    assert(registry.load(f))
    file("syntax.lua", 'pipeline("syn", function() return "new" end)\npipeline("syn2" function() end)\n')
    local d, err, kind = registry.load(f)
    assert.is_nil(d)
    assert.are.equal("syntax", kind)
    assert.matches("syntax%.lua:2: ", err)
    assert.are.equal("old", engine.pipelines.syn.fn())
    assert.is_nil(engine.pipelines.syn2)
  end)

  it("keeps the old version live when the new one raises while loading: nothing of it is live", function()
    local f = file("raises.lua", 'pipeline("r1", function() return "old" end)\n')
    assert(registry.load(f))
    file("raises.lua", 'pipeline("r1", function() return "new" end)\npipeline("r2", function() end)\nerror("no")\n')
    local d, err, kind = registry.load(f)
    assert.is_nil(d)
    assert.are.equal("runtime", kind)
    assert.matches("raises%.lua:3: no", err)
    assert.are.equal("old", engine.pipelines.r1.fn())
    assert.is_nil(engine.pipelines.r2)
  end)

  it("refuses a top-level step(), emit(), send() or read() naming file:line", function()
    for i, call in ipairs({
      'step("s", function() end)', 'emit("t", "k", 1)', 'send("ev", 1)', 'read{ stream = "k" }',
      'sleep("1s")', 'parallel(function() end)', 'ctx()', 'cancel("x")', 'call("tl' .. 1 .. '")',
      'map("m", {}, function() end)', 'wait_for("x")',
    }) do
      local f = file("toplevel" .. i .. ".lua", 'pipeline("tl' .. i .. '", function() end)\n' .. call .. '\n')
      local d, err, kind = registry.load(f)
      assert.is_nil(d, call)
      assert.are.equal("runtime", kind, call)
      assert.matches("toplevel" .. i .. "%.lua:2: .* called while .* loads: top%-level code only defines", err)
      assert.is_nil(engine.pipelines["tl" .. i], call)
    end
    -- nothing was emitted or sent
    assert.are.equal(0, stream.last_seq())
    assert.are.equal(0, events.last_seq())
  end)

  it("lets top-level code read files and require modules", function()
    local cfg = file("names.txt", "alpha\nbeta\n")
    local f = file("config.lua", ([[
local json = require "sluice.json"
for name in io.lines(%q) do pipeline("cfg-" .. name, function() return json.encode({ name }) end) end
]]):format(cfg))
    local d = assert(registry.load(f))
    assert.are.equal(2, #d.defined)
    assert.are.equal('["beta"]', engine.pipelines["cfg-beta"].fn())
  end)

  it("gives each file its own globals", function()
    local a = file("ga.lua", 'helper = function() return "a" end\npipeline("ga", function() return helper() end)\n')
    local b = file("gb.lua", 'pipeline("gb", function() return helper and helper() or "none" end)\n')
    assert(registry.load(a))
    assert(registry.load(b))
    assert.are.equal("a", engine.pipelines.ga.fn())
    assert.are.equal("none", engine.pipelines.gb.fn())
    assert.is_nil(rawget(_G, "helper"))
  end)

  it("refuses a pipeline another file defines, naming both places; the old version stays", function()
    local a = file("da.lua", 'pipeline("dup", function() return "a" end)\n')
    local b = file("db.lua", 'pipeline("b-own", function() return "b1" end)\n')
    assert(registry.load(a))
    assert(registry.load(b))
    file("db.lua", 'pipeline("b-own", function() return "b2" end)\npipeline("dup", function() return "b" end)\n')
    local d, err, kind = registry.load(b)
    assert.is_nil(d)
    assert.are.equal("invalid", kind)
    assert.matches("db%.lua:2: pipeline 'dup' is defined twice: at .*db%.lua:2 and at .*da%.lua:1", err)
    assert.are.equal("a", engine.pipelines.dup.fn())
    assert.are.equal("b1", engine.pipelines["b-own"].fn())
    -- once da.lua gives it up, db.lua may take it
    file("da.lua", '-- nothing\n')
    assert(registry.load(a))
    assert(registry.load(b))
    assert.are.equal("b", engine.pipelines.dup.fn())
  end)

  it("refuses a consumer or schedule name another file defines", function()
    assert(registry.load(file("ca.lua", 'consume("same", "x:*", function() end)\n')))
    local _, err = registry.load(file("cb.lua", 'consume("same", "y:*", function() end)\n'))
    assert.matches("cb%.lua:1: consumer 'same' is defined twice", err)
    assert.are.equal("x:*", stream.consumers.same.pattern)
    assert(registry.load(file("sa.lua", 'pipeline("sp", function() end)\nevery.hour("sp", nil, { name = "hourly" })\n')))
    _, err = registry.load(file("sb.lua", 'every.day("sp", nil, { name = "hourly" })\n'))
    assert.matches("sb%.lua:1: schedule 'hourly' is defined twice", err)
    assert.are.equal("0 * * * *", every.defined.hourly.spec:canonical())
  end)

  it("resolves schedules against every file loaded together, and refuses one naming no pipeline", function()
    local s = file("sched.lua", 'every.hour("elsewhere", nil, { name = "e" })\n')
    local p = file("elsewhere.lua", 'pipeline("elsewhere", function() end)\n')
    local res = registry.load_all({ s, p })
    assert.is_table(res[1].diff, res[1].err)
    assert.is_table(res[2].diff, res[2].err)
    assert.are.equal("elsewhere", every.defined.e.pipeline)
    -- the pipeline's file may not drop it while a schedule names it? it may:
    -- the schedule stays, its fires are skipped, and the reload says so
    file("elsewhere.lua", '-- gone\n')
    local d = assert(registry.load(p))
    assert.matches("schedule 'e' .* names pipeline 'elsewhere', which is no longer defined", d.warnings[1])
    -- a new schedule naming nothing is refused
    local _, err, kind = registry.load(file("nothing.lua", 'every.hour("nowhere")\n'))
    assert.are.equal("invalid", kind)
    assert.matches("nothing%.lua:1: schedule 'nowhere.*': no pipeline named 'nowhere' is defined", err)
  end)

  it("keeps the name of an on() handler across reloads", function()
    local a = file("ha.lua", 'on("evt", function() end)\n')
    local b = file("hb.lua", 'on("evt", function() end)\n')
    assert(registry.load_all({ a, b })[2].diff)
    assert.is_table(engine.pipelines["on:evt"])
    assert.is_table(engine.pipelines["on:evt#2"])
    local d = assert(registry.load(a))
    assert.are.same({ added = {}, removed = {}, changed = {} }, names(d, "handlers"))
    d = assert(registry.load(b))
    assert.are.same({ added = {}, removed = {}, changed = {} }, names(d, "handlers"))
    assert.are.equal(2, #events.handlers)
  end)

  it("unloads a file: its definitions go, other files' stay", function()
    local a = file("ua.lua", 'pipeline("ua", function() end)\nevery.hour("ua")\n')
    local b = file("ub.lua", 'pipeline("ub", function() end)\n')
    assert(registry.load(a))
    assert(registry.load(b))
    local d = assert(registry.unload(a))
    assert.are.same({ added = {}, removed = { "ua" }, changed = {} }, names(d, "pipelines"))
    assert.are.equal(1, #d.schedules.removed)
    assert.is_nil(engine.pipelines.ua)
    assert.is_table(engine.pipelines.ub)
    assert.are.equal(0, #every.order)
    assert.is_nil(registry.unload(a))
  end)

  it("runs in flight keep the pipeline function they started with", function()
    local f = file("flight.lua", 'pipeline("flight", function() step("w", function() sleep_ms(50) end) return "v1" end)\n')
    -- a step that waits on the loop while the file is reloaded
    local sched = require "sluice.sched"
    rawset(_G, "sleep_ms", sched.sleep_ms)
    assert(registry.load(f))
    local task = sched.go({}, engine.execute, engine.pipelines.flight, nil, "flight-1")
    file("flight.lua", 'pipeline("flight", function() return "v2" end)\n')
    assert(registry.load(f))
    local ok, rec = task:await()
    assert.is_true(ok)
    assert.are.equal("v1", rec.result)
    assert.are.equal("v2", engine.execute(engine.pipelines.flight, nil, "flight-2").result)
    rawset(_G, "sleep_ms", nil)
  end)
end)
