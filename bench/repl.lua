-- bench/repl.lua: the REPL and the control socket's hand-off, measured as a
-- client of a running sluice serve (bench/repl.sh starts it).
--
--   sluice bench/repl.lua fill STORE N
--       writes N completed runs of pipeline "bench" into STORE (the records
--       and their index entries the engine writes, 10,000 runs a commit):
--       the history a long-lived host accumulates
--   sluice bench/repl.lua roundtrip STORE REPS
--       REPL round trips over the control socket: eval of `runs{limit=10}`
--       (pretty-printed in the host, as the interactive REPL asks), the same
--       with format json, eval of `1 + 1`, and a `status` request (the
--       socket alone); REPS each after 20 warm-up ones
--   sluice bench/repl.lua handoff STORE REPS
--       `sluice run`'s hand-off: a `run` request of pipeline "noop" (no
--       steps: the run's start and end records, fsync'ed commits); the
--       hand-off is the time until serve has taken the run (the progress
--       frame it sends before executing it), the total the time until its
--       final record is back
-- Each prints one JSON line of latency summaries (bench/lib.lua).
local here = arg[0]:match("^(.*)/[^/]*$") or "."
local L = dofile(here .. "/lib.lua")
local clock = require "sluice._clock"
local raw = require "sluice._store_raw"
local storage = require "sluice._store"
local json = require "sluice.json"
local control = require "sluice.control"
local uv = require "luv"

local mode, store, n = arg[1], arg[2], tonumber(arg[3] or "")
if not (mode and store and n) then
  io.stderr:write("usage: sluice bench/repl.lua fill|roundtrip|handoff STORE N\n")
  os.exit(2)
end

local function ms_since(t0) return (uv.hrtime() - t0) / 1e6 end

if mode == "fill" then
  assert(storage.open(store))
  local t0 = uv.hrtime()
  local base = clock.now() - n * 1000
  local BATCH = 10000
  for first = 1, n, BATCH do
    local ops = {}
    for i = first, math.min(n, first + BATCH - 1) do
      local us = base + i * 1000
      local id = ("bench-%07d"):format(i)
      local at = clock.iso(us)
      local rec = { id = id, pipeline = "bench", status = i % 100 == 0 and "failed" or "completed", attempt = 1,
        input = { i = i }, result = { ok = true, i = i }, created_at = at, created_us = us, started_at = at,
        finished_at = at, duration_ms = 1.0, file = "bench.lua", source_hash = "0000000000000000" }
      if rec.status == "failed" then rec.result, rec.error = nil, { message = "bench failure " .. i } end
      ops[#ops + 1], ops[#ops + 2], ops[#ops + 3] = "runs", id, json.encode(rec)
      ops[#ops + 1], ops[#ops + 2], ops[#ops + 3] = "runs_by_time", string.pack(">I8", us) .. id, ""
    end
    assert(raw.commit(ops))
  end
  print(json.encode({ kind = "fill", runs = n, seconds = L.r3(ms_since(t0) / 1000) }))
  storage.close()
  return
end

local cl = assert(control.connect(store))
local function call(req)
  local reply, err = cl:call(req, { timeout_ms = 60000 })
  assert(reply, err)
  assert(reply.ok, reply.message)
  return reply
end

local function measure(label, reps, req, check)
  for _ = 1, 20 do call(req) end
  local ms = {}
  for i = 1, reps do
    local t0 = uv.hrtime()
    local reply = call(req)
    ms[i] = ms_since(t0)
    if check then check(reply) end
  end
  local s = L.latency(ms)
  s.label = label
  return s
end

local out = { kind = mode, store = store }
if mode == "roundtrip" then
  local text = measure("eval runs{limit=10} (text)", n, { kind = "eval", code = "runs{limit=10}", width = 120 },
    function(r) assert(r.text and select(2, r.text:gsub("\n", "")) == 10, r.error or r.text) end)
  local js = measure("eval runs{limit=10} (json)", n, { kind = "eval", code = "runs{limit=10}", format = "json" },
    function(r) assert(r.values and #r.values[1] == 10, r.error) end)
  local one = measure("eval 1 + 1", n, { kind = "eval", code = "1 + 1" }, function(r) assert(r.text == "2") end)
  local ping = measure("status request", n, { kind = "status" })
  out.results = { text, js, one, ping }
elseif mode == "handoff" then
  local taken, total = {}, {}
  for i = 1, n + 20 do
    local t0, t_taken = uv.hrtime(), nil
    local r = assert(cl:call({ kind = "run", pipeline = "noop", id = ("handoff-%d-%d"):format(uv.os_getpid(), i) }, {
      timeout_ms = 60000,
      on_progress = function() t_taken = t_taken or ms_since(t0) end,
    }))
    local ms = ms_since(t0)
    assert(r.ok and r.run.status == "completed", r.message)
    if i > 20 then
      taken[#taken + 1] = t_taken
      total[#total + 1] = ms
    end
  end
  local a, b = L.latency(taken), L.latency(total)
  a.label = "hand-off: request sent -> serve took the run (its progress frame back)"
  b.label = "run request -> final record back (the run's own fsync'ed commits included)"
  out.results = { a, b }
else
  error("unknown mode " .. mode)
end
cl:close()
print(json.encode(out))
