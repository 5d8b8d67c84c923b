--- sluice.stream: the durable, partitioned event stream (Kafka/Kinesis
--- semantics on one machine): emit appends to one log, read returns events
--- by position, consume hands batches to a function inside runs and moves a
--- checkpoint after each batch (at-least-once).
---
--- An event is {id, type, stream, ts, data}. Ids are 16 hex digits of the
--- log position, so they sort in append order as strings. The store keeps
--- the log and an index per stream key (sluice._store: read_events,
--- append_events). On LMDB one process writes a store at a time (sluice
--- serve and sluice run take the store's lock), so the next position is kept
--- in memory. On PostgreSQL several hosts append: the commit allocates the
--- positions (and keeps times from decreasing) and returns the first, so an
--- id is known once its event is committed; nothing here counts.
local clock = require "sluice._clock"
local json = require "sluice._codec" -- store records: exact
local store = require "sluice._store"
local engine = require "sluice.engine"
local sched = require "sluice.sched"
local registry = require "sluice.registry"

local M = {}

local next_seq, last_ts -- loaded from the store on first use

local id_of = store.event_id
local function seq_of(id, what)
  local seq = store.event_seq(id)
  if not seq then error(("%s: %q is not an event id (16 hex digits)"):format(what, tostring(id)), 3) end
  return seq
end
M.id_of, M.seq_of = id_of, seq_of

-- v, or a raise naming `what` when a store read failed (never "no rows")
local function must(what, v, msg, code)
  if v == nil and msg ~= nil then require("sluice.errors").store(what, msg, code) end
  return v
end

local function load_seq()
  if next_seq then return end
  -- positions trimmed stay taken: ids are never reused
  local last, ts, code = store.events_last()
  must("the stream", last, ts, code)
  next_seq, last_ts = last + 1, ts
end

--- The position of the last event appended (0 if none).
function M.last_seq()
  if store.remote() then return (must("the stream", store.events_last())) end
  load_seq()
  return next_seq - 1
end

local function check_name(what, v, field)
  if type(v) ~= "string" or v == "" or v:find("\0", 1, true) then
    error(("%s: %s must be a non-empty string without NUL bytes, got %s"):format(what, field, type(v) == "string" and ("%q"):format(v) or type(v)), 4)
  end
end

-- Reserves n log positions and time stamps (monotonic, so reads from a
-- time are exact): first seq, first ts in us.
local function reserve(n)
  load_seq()
  local first = next_seq
  next_seq = first + n
  local ts = clock.now()
  if ts <= last_ts then ts = last_ts + 1 end
  last_ts = ts + n - 1
  return first, ts
end

local listeners = {} -- functions called after each durable append

local function appended()
  for _, f in ipairs(listeners) do f() end
end

--- Calls f() after every durable append of this process, for good.
function M.on_append(f) listeners[#listeners + 1] = f end

-- Adds the events at positions first.. to batch b. A bad type, key or
-- value raises, naming the event.
local function append(b, list, first, ts, what)
  local ok, err = pcall(b.append_events, b, list, first, ts)
  if not ok then
    local msg = what == "emit" and tostring(err):gsub("^event 1: ", "") or tostring(err)
    error(("%s: the event cannot be stored: %s"):format(what, msg), 0)
  end
end

local function ids_from(first, n)
  local ids = {}
  for i = 1, n do ids[i] = id_of(first + i - 1) end
  return ids
end

-- Commits the events; inside a run as a memoized internal step whose record
-- commits with them, so replay does not emit again. Returns their ids.
-- On PostgreSQL: the events and, inside a run, the record of the step
-- that gets their ids in the same commit; and the ids from the first position.
local function remote_emit(list, what)
  local n, ts = #list, clock.now()
  return false, function(b, run_id, step_id)
    append(b, list, 0, ts, what)
    if run_id then b:step_positions(run_id, step_id, "events") end
  end, function(first) return ids_from(first, n) end
end

local function emit_list(list, what)
  local n = #list
  local ids
  if sched.context() and sched.context().run then
    ids = engine.memo("emit", function()
      if store.remote() then return remote_emit(list, what) end
      local first, ts = reserve(n)
      return ids_from(first, n), function(b) append(b, list, first, ts, what) end
    end, 3)
  else
    registry.forbid_at_load(what, 3)
    local b = store.batch()
    local first, ts, committed
    if store.remote() then
      local add
      _, add, committed = remote_emit(list, what)
      add(b)
    else
      first, ts = reserve(n)
      append(b, list, first, ts, what)
    end
    local ok, res = b:commit() -- on PostgreSQL: true, the first position
    if not ok then error(("%s: %s"):format(what, res), 3) end
    ids = committed and committed(res) or ids_from(first, n)
  end
  appended()
  return ids
end

--- emit(type, stream_key, data) -> id, once the event is durable.
function M.emit(type_, key, data)
  return emit_list({ { type_, key, data } }, "emit")[1]
end

--- emit_many{ {type, stream_key, data}, ... } -> ids, in one commit.
function M.emit_many(list)
  if type(list) ~= "table" then error("emit_many: expected a list of {type, stream_key, data}", 2) end
  if #list == 0 then return json.array({}) end
  return emit_list(list, "emit_many")
end

local function pattern_of(p)
  if type(p) ~= "string" or p == "" then error("read: stream must be a name or a prefix ending in *", 3) end
  if p:sub(-1) == "*" then return nil, p:sub(1, -2) end
  return p
end

-- the seq after which reading starts for a `from` position
local function start_after(from, what)
  if from == nil or from == "TRIM_HORIZON" then return 0 end
  if from == "LATEST" then return M.last_seq() end
  local t, err = clock.parse_time(from)
  if not t then
    error(("%s: from must be \"TRIM_HORIZON\", \"LATEST\" or an ISO 8601 time: %s"):format(what, err), 3)
  end
  -- binary search for the first event with ts >= t (ts grows with seq);
  -- parse_time keeps whole seconds, the fraction is added here
  local frac = from:match("^[^.]*T[%d:]+%.(%d+)") or ""
  local want_us = t * 1000000 + math.tointeger(tonumber((frac .. "000000"):sub(1, 6)))
  return must(what, store.events_after_time(want_us))
end

-- Whether retention removed events of this stream (or of a key under this
-- prefix) after position `after`: a read from there has lost events.
local function trimmed_after(exact, prefix, after)
  return must("read", store.events_trimmed({ stream = exact, prefix = not exact and prefix or nil, after = after }))
end

-- For a read of key `key` that found nothing: when the key has no events
-- (after > 0: some may lie before the read's start) but keys that start
-- with it do (orders:1 for orders), a hint naming the wildcard. Bounded:
-- at most HINT_KEYS index seeks, each skipping one key's events.
local HINT_KEYS = 10
local function keys(prefix, limit)
  return must("read: the stream index", store.stream_keys({ prefix = prefix, limit = limit }))
end
local function key_hint(key)
  local first = keys(key, 2)
  -- the key itself has events (before the read's start): no hint
  if first[1] == key then return nil end
  first = first[1]
  if not first then return nil end
  local sep = first:sub(#key + 1, #key + 1)
  local prefix = key .. (sep:find("^%p$") and sep or "")
  local n = #keys(prefix, HINT_KEYS)
  local count = n >= HINT_KEYS and n .. " or more keys match" or n == 1 and "1 key matches" or n .. " keys match"
  return ("no events under key '%s'; %s '%s*'"):format(key, count, prefix)
end

--- read{stream=, after=id | from=pos, limit=n} -> events, info. info is
--- {trimmed = true} when the read started before the retention horizon
--- (events were lost to retention), {next = id} to continue from, and
--- {hint = "no events under key 'orders'; 3 keys match 'orders:*'"} when
--- a key read nothing but keys that start with it hold events (`quiet`,
--- for the consumer loop and lag counts: no hint, no probe).
function M.read(opts, quiet)
  registry.forbid_at_load("read", 2)
  if type(opts) ~= "table" then error("read: expected a table {stream=, after= | from=, limit=}", 2) end
  for k in pairs(opts) do
    if k ~= "stream" and k ~= "after" and k ~= "from" and k ~= "limit" then
      error(("read: unknown option '%s' (known: stream, after, from, limit)"):format(tostring(k)), 2)
    end
  end
  local exact, prefix = pattern_of(opts.stream)
  local limit = opts.limit or 1000
  if math.type(limit) ~= "integer" or limit < 1 then error("read: limit must be a positive integer", 2) end
  if opts.after ~= nil and opts.from ~= nil then error("read: give after or from, not both", 2) end
  local after = opts.after ~= nil and seq_of(opts.after, "read: after") or start_after(opts.from, "read")
  local info = {}
  if trimmed_after(exact, prefix, after) then info.trimmed = true end
  local out, nxt, code = store.read_events({ stream = exact, prefix = not exact and prefix or nil, after = after, limit = limit })
  must("read", out, nxt, code)
  if exact and not out[1] and not quiet then info.hint = key_hint(exact) end
  info.next = nxt
  return out, info
end

---------------------------------------------------------------------------
-- consumers

-- the live consumers, by name and in definition order (sluice.registry)
M.consumers, M.consumer_order = registry.live.consumers, registry.live.consumer_order

--- consume(name, pattern, fn, {batch = 500, from = "TRIM_HORIZON" | "LATEST"}):
--- each batch of events is given to fn(events) inside a run of pipeline
--- "consume:<name>"; the checkpoint moves past the batch only after fn
--- returns. Consumers are independent; `sluice serve` runs them.
function M.consume(name, pattern, fn, opts)
  check_name("consume", name, "name")
  pattern_of(pattern)
  if type(fn) ~= "function" then error(("consume '%s': expected a function"):format(name), 2) end
  opts = opts or {}
  for k in pairs(opts) do
    if k ~= "batch" and k ~= "from" then
      error(("consume '%s': unknown option '%s' (known: batch, from)"):format(name, tostring(k)), 2)
    end
  end
  local batch = opts.batch or 500
  if math.type(batch) ~= "integer" or batch < 1 then
    error(("consume '%s': batch must be a positive integer"):format(name), 2)
  end
  if opts.from ~= nil and opts.from ~= "TRIM_HORIZON" and opts.from ~= "LATEST" then
    error(("consume '%s': from must be \"TRIM_HORIZON\" or \"LATEST\""):format(name), 2)
  end
  local set = registry.target()
  local site = require("sluice.errors").where() or "?"
  local prev = set.consumers[name]
  if prev then error(("consume '%s' is defined twice: at %s and at %s"):format(name, prev.site, site), 2) end
  local p = engine.pipeline("consume:" .. name, function(input)
    return fn(input.events)
  end)
  p.derived = "consumer"
  local c = { name = name, pattern = pattern, pipeline = p, batch = batch, from = opts.from or "TRIM_HORIZON",
    fn = fn, site = site }
  set.consumers[name] = c
  set.consumer_order[#set.consumer_order + 1] = name
  return c
end

-- The last event id of the batch a consumer run holds. A run's input is
-- fixed when the run is created; after a crash a read from the same first
-- id may return more events, but the run resumes with its stored batch, so
-- the checkpoint moves to the end of that batch and never further.
local function batch_last(rec)
  local evs = type(rec.input) == "table" and rec.input.events
  local last = type(evs) == "table" and evs[#evs]
  if type(last) == "table" and type(last.id) == "string" then return last.id end
  return nil, ("run %s holds no batch of events in its input"):format(tostring(rec.id))
end

-- The consumer's state with the checkpoint at `after`.
local function checkpoint(state, after)
  return { name = state.name, pattern = state.pattern, gen = state.gen, after = after, updated_at = clock.iso(clock.now()) }
end

-- Commits the consumer's state alone.
local function put_state(c, state, what)
  local b = store.batch()
  b:put_consumer(c.name, state)
  local ok, err = b:commit()
  if not ok then error(("consumer %s: %s%s"):format(c.name, what, tostring(err)), 0) end
end

--- Runs one consumer until stop() is called: read a batch after the
--- checkpoint, run it, move the checkpoint, wait for more. `log` reports.
--- The batch's run is consume:<name>@<first id>; its completion and the
--- checkpoint commit together. A completed run found for the next batch
--- (one that completed in a run resumed elsewhere, or in a store written
--- before that was so) only moves the checkpoint to its stored end.
--- A consumer whose pattern changed starts over, with a generation in its
--- run ids (consume:<name>#2@<first id>): a run of the old pattern that
--- began at the same event is not a batch of the new one.
function M.run_consumer(c, log)
  local me = coroutine.running()
  local waiting = false
  local function wake()
    if waiting then
      waiting = false
      sched.wake(me)
    end
  end
  c.stopped = false
  c.stop = function() c.stopped = true; wake() end -- from here on, even while the state is stored
  -- several hosts: one of them runs the consumer's batches at a time
  local leases = engine.leases
  if leases and not leases.hold("consumer", c.name, function() return c.stopped end) then return end
  local state = must("consumer " .. c.name, store.consumer(c.name))
  if not state or state.pattern ~= c.pattern then
    state = { name = c.name, pattern = c.pattern, after = c.from == "LATEST" and id_of(M.last_seq()) or nil,
      gen = state and (state.gen or 1) + 1 or nil }
    put_state(c, state, "")
  end
  listeners[#listeners + 1] = wake
  local failures = 0
  while not c.stopped do
    local events = M.read({ stream = c.pattern, after = state.after, limit = c.batch }, true)
    if #events == 0 then
      waiting = true
      M.idle(wake)
    else
      local first = events[1].id
      local moved -- the new state, when the checkpoint committed with the run
      local run_id = ("consume:%s%s@%s"):format(c.name, state.gen and "#" .. state.gen or "", first)
      -- the live version of its pipeline: a reload that kept the consumer
      -- as it was may have changed the code its function calls
      local rec = engine.execute(engine.pipelines[c.pipeline.name] or c.pipeline, { events = events }, run_id, {
        finish = function(r, b)
          local last = batch_last(r)
          if not last then return end -- raised below, once the run is released
          moved = checkpoint(state, last)
          b:put_consumer(c.name, moved)
        end,
      })
      if rec and rec.status == "completed" then
        failures = 0
        if moved then
          state = moved
        else
          local last, why = batch_last(rec)
          if not last then error(("consumer %s: %s"):format(c.name, why), 0) end
          local s = checkpoint(state, last)
          put_state(c, s, "checkpoint: ")
          state = s
        end
      else
        -- the same batch again after a backoff: the run resumes, its
        -- finished steps are not repeated
        failures = failures + 1
        local delay = math.min(60000, 500 * 2 ^ (failures - 1))
        log("consumer %s: batch %s..%s failed (%s); retrying in %.1fs", c.name, first,
          rec and batch_last(rec) or events[#events].id,
          rec and rec.error and rec.error.message:gsub("\n.*", "") or "?", delay / 1000)
        sched.sleep_ms(delay)
      end
    end
  end
  for i, f in ipairs(listeners) do
    if f == wake then table.remove(listeners, i) break end
  end
  if leases then leases.release("consumer", c.name) end
end

--- How often a loop with nothing to do looks again on PostgreSQL, where
--- other processes' appends wake nobody here (ms).
M.poll_ms = 1000

--- Waits for wake() (the task's own, which ends the wait once); on
--- PostgreSQL it is called after M.poll_ms at the latest.
function M.idle(wake)
  local t
  if store.remote() then
    t = require("luv").new_timer()
    t:start(M.poll_ms, 0, wake)
  end
  sched.wait()
  if t then t:close() end
end

-- consumers running in this process (sluice serve): name -> {c=, after = {fn}}
local running = {}

--- Starts the loop of consumer c in a task; `log` reports. A loop of the
--- same name still running is stopped first (its batch in flight finishes
--- and moves the checkpoint) and c starts once it has exited.
function M.start_consumer(c, log)
  local prev = running[c.name]
  if prev then
    M.stop_consumer(c.name)
    prev.after = { function() M.start_consumer(c, log) end }
    return
  end
  local r = { c = c, after = {} }
  running[c.name] = r
  sched.spawn({}, function()
    local delay = 500
    while not r.stopped do -- (stopped before its task began: nothing to do)
      local ok, e = xpcall(M.run_consumer, sched.traceback, c, log)
      if ok or r.stopped then return end
      -- the store lost a read or a commit (PostgreSQL's connection): the
      -- loop starts again from its stored checkpoint
      if not (type(e) == "table" and e.store and engine.store_lost(e.code)) then error(e, 0) end
      local why = tostring(e.message):gsub("\n.*", "")
      log("consumer %s: %s; starting again in %.1fs", c.name, why, delay / 1000)
      sched.sleep_ms(delay)
      delay = math.min(delay * 2, 10000)
    end
  end, function(ok, e)
    running[c.name] = nil
    if not ok then
      log("consumer %s stopped: %s", c.name, require("sluice.errors").describe(e))
      if engine.leases then engine.leases.release("consumer", c.name) end -- another host may do better
    end
    for _, f in ipairs(r.after) do f() end
  end)
end

--- Stops the loop of consumer `name` after its batch in flight; its
--- checkpoint stays in the store.
function M.stop_consumer(name)
  local r = running[name]
  if r then
    r.after, r.stopped = {}, true
    if r.c.stop then r.c.stop() end
  end
end

--- Stops every consumer loop of this process.
function M.stop_consumers()
  for name in pairs(running) do M.stop_consumer(name) end
end

--- Follows the registry: a consumer added starts, a removed one stops, a
--- changed one restarts (after its batch in flight).
function M.follow_registry(log)
  return registry.subscribe(function(d)
    for _, c in ipairs(d.consumers.removed) do M.stop_consumer(c.name) end
    for _, pair in ipairs(d.consumers.changed) do M.start_consumer(pair.new, log) end
    for _, c in ipairs(d.consumers.added) do M.start_consumer(c, log) end
  end)
end

---------------------------------------------------------------------------
-- retention

M.retention_rules = registry.live.retention -- live, in definition order (sluice.registry)

--- retention(pattern, {max_age = duration, max_count = n}): events of the
--- stream keys matching pattern older than max_age, or beyond the newest
--- max_count of each key, are removed by `sluice serve` (in small
--- transactions; emitters never wait for it). A read starting before what
--- was removed says so (info.trimmed).
function M.retention(pattern, opts)
  local exact, prefix = pattern_of(pattern)
  if type(opts) ~= "table" then error("retention: expected {max_age = duration, max_count = n}", 2) end
  for k in pairs(opts) do
    if k ~= "max_age" and k ~= "max_count" then
      error(("retention(%q): unknown option '%s' (known: max_age, max_count)"):format(pattern, tostring(k)), 2)
    end
  end
  local rule = { pattern = pattern, exact = exact, prefix = prefix }
  if opts.max_age ~= nil then rule.max_age_ms = require("sluice.duration").ms(opts.max_age, "retention max_age") end
  if opts.max_count ~= nil then
    if math.type(opts.max_count) ~= "integer" or opts.max_count < 0 then
      error(("retention(%q): max_count must be an integer >= 0"):format(pattern), 2)
    end
    rule.max_count = opts.max_count
  end
  local set = registry.target()
  set.retention[#set.retention + 1] = rule
  return rule
end

local function rule_matches(rule, stream)
  if rule.exact then return stream == rule.exact end
  return stream:sub(1, #rule.prefix) == rule.prefix
end

-- Removes what q selects (sluice._store's trim_events), one small commit at
-- a time so that emitters never wait long for the writer; returns the
-- number of events removed.
local function trim(q)
  local removed = 0
  repeat
    local b = store.batch()
    local n, last, more = b:trim_events(q)
    must("retention", n, last, more)
    if n > 0 then
      local ok, err = b:commit()
      if not ok then error("retention: " .. tostring(err), 0) end
      removed = removed + n
    end
    q.after = last
  until not more
  return removed
end

--- One retention pass over every rule; returns the number of events removed.
function M.trim_once()
  local removed = 0
  local now = clock.now()
  for _, rule in ipairs(M.retention_rules) do
    local stream, prefix = rule.exact, not rule.exact and rule.prefix or nil
    if rule.max_age_ms then
      -- the log is in time order: from the oldest event to the cutoff
      removed = removed + trim({ stream = stream, prefix = prefix, before_us = now - math.floor(rule.max_age_ms * 1000),
        limit = 1000 })
    end
    if rule.max_count then
      -- each stream key keeps its newest max_count events
      local list = rule.exact and { rule.exact } or nil
      local after
      while true do
        list = list or must("retention", store.stream_keys({ prefix = rule.prefix, after = after, limit = 100 }))
        for _, key in ipairs(list) do
          removed = removed + trim({ stream = key, keep = rule.max_count, limit = 1000 })
        end
        if rule.exact or #list < 100 then break end
        after, list = list[#list], nil
      end
    end
  end
  return removed
end

--- Consumer positions and lag: {name, pattern, after, lag}.
function M.positions()
  local out = {}
  for i, s in ipairs(must("consumers", store.consumers())) do
    local n = 0
    local after = s.after
    repeat
      local events, info = M.read({ stream = s.pattern, after = after or id_of(0), limit = 10000 }, true)
      n = n + #events
      after = info.next
    until #events < 10000
    s.lag = n
    out[i] = s
  end
  return out
end

return M
