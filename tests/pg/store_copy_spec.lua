-- store_copy_spec.lua: `sluice store copy` between LMDB and a real
-- PostgreSQL 15. A store made by real sluice processes (runs with steps and
-- logs, a failed run, events in several streams, a stream trimmed by
-- retention, sends dispatched to `on` handlers, a consumer's checkpoint, a
-- schedule, API keys and their use, a namespace with its quota counter, an
-- idempotency key) copied LMDB -> PostgreSQL -> LMDB equals the original
-- record by record, in every database of the store, also in small pages
-- and batches; `store check` passes on the PostgreSQL copy and names what
-- was damaged there; a destination that is not empty, and a source in use
-- (a serve's writer lock, a live host on PostgreSQL), are refused before
-- anything is written; a copy that fails half-way says so, exit 1.
local H = require "helper"
local HH = require "http_helper"
local P = require "pg_helper"
local json = require "sluice.json"
local pg = require "sluice._pg"

local APP = [[
local log = require "sluice.log"
local etl = pipeline("etl", function(input)
  local a = step("fetch", function()
    log.info("fetching", { k = input.k })
    return { n = input.k, big = 1 << 60, f = 0.1, nul = "a\0b", list = { 1, 2, 3 } }
  end)
  step("save", function() return a.n + 1 end)
  emit("created", "orders:" .. input.k, { total = 99 })
  emit("tick", "trim:1", { k = input.k })
  send("ping", { k = input.k })
  return a
end, { namespaces = { "default", "acme" } })
pipeline("bad", function() step("boom", function() error("kaputt") end) end)
on("ping", function(data) step("pong", function() return data.k end) end)
consume("audit", "orders:*", function(events) step("write", function() return #events end) end, { batch = 10 })
retention("trim:*", { max_count = 1 })
every.day.at("2am", { catch_up = "none" })(etl, { k = 0 })
]]

local DBS = { "meta", "runs", "runs_by_time", "steps", "schedules", "events", "stream_index",
  "consumers", "sends", "active_runs", "runs_by_ns", "runs_by_pipeline", "runs_by_status",
  "api_keys", "namespaces", "quotas", "idempotency", "logs" }

-- every entry of every database of the LMDB store dir: {db = {key = value}}
local function dump(dir)
  local f = H.write(H.tmpdir() .. "/dump.lua", [[
local storage = require "sluice._store"
local raw = require "sluice._store_raw"
local json = require "sluice.json"
assert(storage.open(arg[1], true))
local out = {}
for db in arg[2]:gmatch("[^,]+") do
  local ks, vs = assert(raw.scan(db, ""))
  local t = {}
  for i = 1, #ks do t[#t + 1] = { ks[i], vs[i] } end
  out[db] = t
end
local hex = {}
for db, t in pairs(out) do
  hex[db] = {}
  for i, kv in ipairs(t) do
    hex[db][i] = (kv[1]:gsub(".", function(c) return ("%02x"):format(c:byte()) end)) .. "=" ..
      (kv[2]:gsub(".", function(c) return ("%02x"):format(c:byte()) end))
  end
end
io.write(json.encode(hex))
]])
  local code, out, err = H.sluice({ f, dir, table.concat(DBS, ",") })
  assert.are.equal(0, code, err)
  return json.decode(out)
end

local function unhex(s) return (s:gsub("%x%x", function(h) return string.char(tonumber(h, 16)) end)) end

-- asserts that two dumps hold the same entries, naming the first difference
local function assert_same_store(a, b, what)
  for _, db in ipairs(DBS) do
    local x, y = a[db] or {}, b[db] or {}
    for i = 1, math.max(#x, #y) do
      if x[i] ~= y[i] then
        local function show(e) return e and ("%q"):format(unhex(e:match("^(%x*)=")) .. " = " .. unhex(e:match("=(%x*)$"))) or "nothing" end
        error(("%s: database %s differs at entry %d: %s in the original, %s in the copy"):format(
          what, db, i, show(x[i]), show(y[i])), 2)
      end
    end
  end
end

local function key(store, name, ns, role)
  local code, out, err = H.sluice({ "keys", "add", name, "--namespace", ns, "--role", role, "--store", store })
  assert.are.equal(0, code, err)
  return out:match("([^\n]+)\n$")
end

local function runs(store)
  local code, out, err = H.sluice({ "runs", "--json", "--limit", "1000", "--store", store })
  assert.are.equal(0, code, err)
  return json.decode(out).runs
end

-- the counts of the copy's summary: {label = {source, copied, destination}}
local function summary(out)
  local t = {}
  for line in out:gmatch("[^\n]+") do
    local label, a, b, c = line:match("^(%a[%a ]-)%s+(%d+)%s+(%d+)%s+(%d+)")
    if label then t[label] = { tonumber(a), tonumber(b), tonumber(c) } end
  end
  return t
end

local function copy(from, to, extra)
  local args = { "store", "copy", "--from", from, "--to", to }
  for _, a in ipairs(extra or {}) do args[#args + 1] = a end
  return H.sluice(args, { timeout = 120000 })
end

describe("sluice store copy", function()
  local inst, dir, store
  setup(function()
    inst = P.start()
    -- the original: made by sluice run, keys, namespaces and a serve
    dir = H.tmpdir()
    store = dir .. "/st"
    os.execute("mkdir -p '" .. dir .. "/p'")
    local app = H.write(dir .. "/p/app.lua", APP)
    for k = 1, 3 do
      local code, _, err = H.sluice({ "run", app, "--pipeline", "etl", "--id", "good" .. k, "--input",
        ('{"k": %d}'):format(k), "--store", store })
      assert.are.equal(0, code, err)
    end
    assert.are.equal(1, (H.sluice({ "run", app, "--pipeline", "bad", "--id", "bad1", "--store", store })))
    key(store, "admin", "default", "admin")
    local acme = key(store, "acme-bot", "acme", "runner")
    assert.are.equal(0, (H.sluice({ "namespaces", "set", "acme", "--runs-per-day", "100", "--store", store })))
    local serve = HH.serve(dir .. "/p", store)
    H.task(function()
      local st, body = HH.post(serve.url .. "/runs/etl?wait=30s", { k = 4 },
        { headers = { ["X-API-Key"] = acme, ["Idempotency-Key"] = "order-4" } })
      assert.are.equal(200, st, body)
    end)
    -- 4 sends dispatched to their handler, the consumer past every order,
    -- trim:1 trimmed to its newest event, every run ended
    H.wait_until(function()
      local pongs, open = 0, 0
      for _, r in ipairs(runs(store)) do
        if r.pipeline:find("ping", 1, true) or r.pipeline:find("on:", 1, true) then pongs = pongs + 1 end
        if r.status ~= "completed" and r.status ~= "failed" then open = open + 1 end
      end
      local code, out = H.sluice({ "consumers", "--json", "--store", store })
      local c = code == 0 and json.decode(out).consumers[1]
      local _, ev = H.sluice({ "events", "trim:1", "--json", "--store", store })
      local trimmed = #json.decode(ev).events == 1
      return pongs == 4 and open == 0 and c and c.after == "0000000000000007" and trimmed
    end, function() return "serve to dispatch, consume and trim: " .. serve:log() end, 60000, 100)
    serve:kill("sigterm")
    assert.are.equal(0, (serve:wait()))
  end)
  teardown(function()
    if inst then inst:stop() end
  end)

  it("copies LMDB -> PostgreSQL -> LMDB, record by record", function()
    local url = inst:database("copy1")
    local code, out, err = copy(store, url)
    assert.are.equal(0, code, err .. out)
    assert.matches("schema sluice of .* migrated from version 0 to " .. require("sluice.pg_schema").latest, err)
    assert.matches("every count in the destination equals the source's", out)
    local counts = summary(out)
    -- every kind of record was there to copy
    for _, label in ipairs({ "runs", "steps", "run log lines", "idempotency keys", "events", "trim marks",
      "sends", "consumers", "schedules", "API keys", "API key uses", "namespaces", "quota counters" }) do
      local c = counts[label]
      assert.is_truthy(c, label .. " in the summary:\n" .. out)
      assert.is_true(c[1] > 0, label .. " in the original:\n" .. out)
      assert.are.same({ c[1], c[1], c[1] }, c, label)
    end
    -- positions: the events' (trim:1's newest at 8), the sends' and the dispatch cursor (4)
    local positions = {}
    for line in out:gmatch("[^\n]+") do
      local label, s, d = line:match("^(%a[%a ]-)%s+(%d+)%s+(%d+)$")
      if label then positions[label] = { tonumber(s), tonumber(d) } end
    end
    assert.are.same({ 8, 8 }, positions["event positions"])
    assert.are.same({ 4, 4 }, positions["send positions"])
    assert.are.same({ 4, 4 }, positions["dispatch cursor"])

    code, out, err = H.sluice({ "store", "check", "--store", url })
    assert.are.equal(0, code, out .. err)
    assert.matches("no problems", out)

    local back = H.tmpdir() .. "/back"
    code, out, err = copy(url, back)
    assert.are.equal(0, code, err .. out)
    assert.matches("every count in the destination equals the source's", out)
    assert_same_store(dump(store), dump(back), "LMDB -> PostgreSQL -> LMDB")
    code, out, err = H.sluice({ "store", "check", "--store", back })
    assert.are.equal(0, code, out .. err)
  end)

  it("copies the same in pages of 2 and commits of 3 writes", function()
    local url = inst:database("copy2")
    local code, out, err = copy(store, url, { "--page", "2", "--batch", "3" })
    assert.are.equal(0, code, err .. out)
    local back = H.tmpdir() .. "/back"
    code, out, err = copy(url, back, { "--page", "3", "--batch", "2" })
    assert.are.equal(0, code, err .. out)
    assert_same_store(dump(store), dump(back), "in small pages")
  end)

  it("refuses a destination that is not empty, writing nothing", function()
    local url = inst:database("copy3")
    assert.are.equal(0, (copy(store, url)))
    local c = assert(pg.connect(url))
    local before = assert(c:query("SELECT count(*) AS n FROM sluice.events"))[1].n
    local code, _, err = copy(store, url)
    assert.are.equal(2, code)
    assert.matches("the destination .* is not empty %(%d+ runs, %d+ steps, ", err)
    assert.are.equal(before, assert(c:query("SELECT count(*) AS n FROM sluice.events"))[1].n)
    c:close()
    local back = H.tmpdir() .. "/back"
    assert.are.equal(0, (copy(url, back)))
    code, _, err = copy(url, back)
    assert.are.equal(2, code)
    assert.matches("the destination .*back is not empty", err)
    -- a source database without the schema: nothing to copy from, and said so
    local bare = inst:database("bare")
    code, _, err = copy(bare, H.tmpdir() .. "/none")
    assert.are.equal(2, code)
    assert.matches("has no schema sluice .*run sluice store migrate", err)
  end)

  it("refuses a source in use: an LMDB store a serve holds, a PostgreSQL store with a live host", function()
    local copied = H.tmpdir() .. "/st"
    assert.are.equal(0, (copy(store, copied)))
    local serve = H.spawn({ "serve", dir .. "/p", "--store", copied, "--no-http" })
    H.wait_until(function() return table.concat(serve.err):find("schedules armed", 1, true) ~= nil end,
      "serve to start", 20000, 20)
    local code, _, err = copy(copied, H.tmpdir() .. "/x")
    assert.are.equal(2, code)
    assert.matches("the source .* is in use by sluice serve %(pid " .. serve.pid .. "%)", err)
    serve:kill("sigterm")
    serve:wait()

    local url = inst:database("copy4")
    assert.are.equal(0, (copy(store, url)))
    local c = assert(pg.connect(url))
    assert(c:exec("INSERT INTO sluice.hosts (id, name, pid, expires_at) VALUES ('h1', 'box-1', 4242, now() + interval '1 minute')"))
    code, _, err = copy(url, H.tmpdir() .. "/y")
    assert.are.equal(2, code)
    assert.matches("the source .* is in use by 1 live sluice serve host: box%-1 %(pid 4242%)", err)
    -- a host whose heartbeat expired is not alive
    assert(c:exec("UPDATE sluice.hosts SET expires_at = now() - interval '1 second'"))
    c:close()
    assert.are.equal(0, (copy(url, H.tmpdir() .. "/z")))
  end)

  it("says when it failed half-way, exit 1, and what the destination holds", function()
    -- a schedule whose name PostgreSQL cannot hold (a NUL byte: LMDB can)
    local copied = H.tmpdir() .. "/st"
    assert.are.equal(0, (copy(store, copied)))
    local f = H.write(H.tmpdir() .. "/poke.lua", [[
local storage = require "sluice._store"
local raw = require "sluice._store_raw"
assert(storage.open(arg[1]))
assert(raw.commit({ "schedules", "bad\0name", "{}" }))]])
    assert.are.equal(0, (H.sluice({ f, copied })))
    -- one write per commit: what comes before the schedules is committed
    local code, out, err = copy(copied, inst:database("copy5"), { "--batch", "1" })
    assert.are.equal(1, code, out)
    assert.matches("copying schedules 'bad\\0name': the destination refuses it", err)
    assert.matches("the destination holds part of the source now: empty it before copying again", err)
  end)

  it("check names a run whose columns disagree with its record, and rows of runs that do not exist", function()
    local url = inst:database("copy6")
    assert.are.equal(0, (copy(store, url)))
    local c = assert(pg.connect(url))
    assert(c:exec("UPDATE sluice.runs SET status = 'running', active = true WHERE id = 'bad1'"))
    assert(c:exec("INSERT INTO sluice.logs (run_id, at_us, seq, line) VALUES ('gone', 1, 0, '{}')"))
    assert(c:exec("UPDATE sluice.counters SET value = 1 WHERE name = 'sends'"))
    c:close()
    local code, out = H.sluice({ "store", "check", "--store", url })
    assert.are.equal(1, code, out)
    assert.matches("run bad1: its columns, which its listings index, disagree with its record: "
      .. "status running %(the record says failed%), active true %(the record's status is failed%)", out)
    assert.matches("logs of run gone: the run has no record", out)
    assert.matches("sends: a send is at position 4, past the last send position %(1%)", out)
    assert.matches("dispatch cursor: it is at 4, past the last send position %(1%)", out)
    assert.matches("4 problems\n$", out)
  end)
end)
