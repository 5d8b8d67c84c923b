--- sluice.events: durable fire-and-forget events. send(name, data) commits
--- an event; every on(name, fn) handler whose pattern matches gets its own
--- run, with id "<handler>@<event id>", so redelivery after a crash never
--- runs a handler twice for one event. wait_for(name, {match, timeout})
--- suspends a run durably until a matching event is sent.
---
--- Sends are a log of {name, data, ts} by position (sluice._store: put_send,
--- sends). `sluice serve` dispatches it from a stored cursor: the handlers'
--- runs are created as pending in the same commit that moves the cursor, so
--- a crash between the two is impossible.
local clock = require "sluice._clock"
local store = require "sluice._store"
local engine = require "sluice.engine"
local sched = require "sluice.sched"
local duration = require "sluice.duration"
local registry = require "sluice.registry"

local M = {}

local next_seq
local id_of = store.event_id

-- v, or a raise naming `what` when a store read failed (never "no rows")
local function must(what, v, msg, code)
  if v == nil and msg ~= nil then require("sluice.errors").store(what, msg, code) end
  return v
end

local function load_seq()
  if next_seq then return end
  next_seq = must("send", store.sends_last()) + 1
end

--- The sequence of the last event sent (0 if none). On PostgreSQL, where
--- the commit allocates positions (other hosts send too), a read.
function M.last_seq()
  if store.remote() then return (must("send", store.sends_last())) end
  load_seq()
  return next_seq - 1
end

local sent_here = 0 -- sends committed by this process (replays not counted)

--- How many events this process has sent.
function M.sent_count() return sent_here end

local function matches(pattern, name)
  if pattern:sub(-1) == "*" then return name:sub(1, #pattern - 1) == pattern:sub(1, -2) end
  return pattern == name
end

local sent_listeners = {} -- f(seq, event) after each durable send

--- send(name, data) -> event id, once durable. Inside a run it is memoized
--- like a step: replay does not send again.
function M.send(name, data)
  if type(name) ~= "string" or name == "" then error("send: the event name must be a non-empty string", 2) end
  -- the send's record {seq=}, what adds it to a batch b (inside a run, the
  -- step run_id/step_id records it) and, on PostgreSQL, what makes the
  -- record of the position the commit allocated; an unstorable value
  -- raises before a position is taken
  local ev = { name = name, data = data, ts = clock.iso(clock.now()) }
  local function produce()
    local remote = store.remote()
    if not remote then load_seq() end
    local seq = remote and 0 or next_seq
    local check = store.batch()
    local ok, err = pcall(check.put_send, check, seq, ev)
    if not ok then error(("send %q: the event cannot be stored: %s"):format(name, err), 4) end
    if remote then
      return { seq = 0 }, function(b, run_id, step_id)
        b:put_send(0, ev)
        if run_id then b:step_positions(run_id, step_id, "send") end
      end, function(_, first_send) return { seq = first_send } end
    end
    next_seq = seq + 1
    return { seq = seq }, function(b) b:put_send(seq, ev) end
  end
  local sent
  if sched.context() and sched.context().run then
    local replayed
    sent, replayed = engine.memo("send", produce, 2)
    if replayed then return id_of(sent.seq) end
  else
    registry.forbid_at_load("send", 2)
    local add, committed
    sent, add, committed = produce()
    local b = store.batch()
    add(b)
    local ok, msg, first_send = b:commit()
    if not ok then error(("send %q: %s"):format(name, msg), 2) end
    if committed then sent = committed(msg, first_send) end
  end
  sent_here = sent_here + 1
  for _, f in ipairs(sent_listeners) do f(sent.seq, ev) end
  return id_of(sent.seq)
end

---------------------------------------------------------------------------
-- handlers

M.handlers = registry.live.handlers -- live, in definition order (sluice.registry)

--- on(pattern, fn [, {name=}]): each event whose name matches (a trailing *
--- matches a prefix) becomes a run of fn(data, event).
function M.on(pattern, fn, opts)
  if type(pattern) ~= "string" or pattern == "" then error("on: the event name must be a non-empty string", 2) end
  if type(fn) ~= "function" then error(("on(%q): expected a function, got %s"):format(pattern, type(fn)), 2) end
  if opts ~= nil and type(opts) ~= "table" then
    error(("on(%q): options must be a table, got %s"):format(pattern, type(opts)), 2)
  end
  opts = opts or {}
  for k in pairs(opts) do
    if k ~= "name" then error(("on(%q): unknown option '%s' (known: name)"):format(pattern, tostring(k)), 2) end
  end
  if opts.name ~= nil and (type(opts.name) ~= "string" or opts.name == "") then
    error(("on(%q): name must be a non-empty string, got %s"):format(pattern, type(opts.name)), 2)
  end
  local name = opts.name or ("on:" .. pattern)
  local n = 1
  while registry.pipeline_taken(name) do
    n = n + 1
    name = ("%s#%d"):format(opts.name or ("on:" .. pattern), n)
  end
  local p = engine.pipeline(name, function(input) return fn(input.data, input) end)
  p.derived = "handler" -- its site is the user's line already (errors.where)
  local set = registry.target()
  set.handlers[#set.handlers + 1] = { pattern = pattern, pipeline = p, fn = fn }
  return p
end

-- Run records (pending) for the handlers of one event, into the batch b;
-- nil and why if a run cannot be read.
local function delivery_ops(ev, b, ids)
  local now = clock.now()
  for _, h in ipairs(M.handlers) do
    if matches(h.pattern, ev.name) then
      local id = h.pipeline.name .. "@" .. ev.id
      local existing, err = store.get_run(id)
      if err then return nil, ("reading run %s: %s"):format(id, err) end
      if not existing then
        local rec = {
          id = id, pipeline = h.pipeline.name, status = "pending", attempt = 0,
          input = { id = ev.id, name = ev.name, data = ev.data, ts = ev.ts },
          created_at = clock.iso(now), created_us = now, trigger = "event",
        }
        b:put_run(rec, { new = true })
        ids[#ids + 1] = { id = id, pipeline = h.pipeline }
      end
    end
  end
  return true
end

--- Dispatches every event sent after the stored cursor: creates the
--- handlers' runs and calls launch(pipeline, run_id) for each. Runs until
--- stop(); wakes on each send of this process.
function M.run_dispatcher(launch, log)
  local me = coroutine.running()
  local waiting = false
  local d = { stopped = false }
  sent_listeners[#sent_listeners + 1] = function()
    if waiting then
      waiting = false
      sched.wake(me)
    end
  end
  function d.stop()
    d.stopped = true
    if waiting then
      waiting = false
      sched.wake(me)
    end
  end
  M.dispatcher = d
  local cursor, failures = nil, 0
  -- a store that cannot be read is reported and retried with a backoff:
  -- never taken for "nothing sent", which would wait forever
  local function failed(what, err)
    failures = failures + 1
    local delay = math.min(10000, 1000 * 2 ^ (failures - 1))
    log("dispatching events: %s: %s; retrying in %.0fs", what, tostring(err), delay / 1000)
    sched.sleep_ms(delay)
  end
  local function next_sends()
    if not cursor then
      local c, err = store.dispatch_cursor()
      if not c then return nil, "reading the cursor", err end
      cursor = c
    end
    local sends, err = store.sends({ after = cursor, limit = 256 })
    if not sends then return nil, "reading the sends", err end
    return sends
  end
  while not d.stopped do
    local sends, what, err = next_sends()
    if not sends then
      failed(what, err)
    elseif #sends == 0 then
      failures = 0
      waiting = true
      require("sluice.stream").idle(function()
        if waiting then
          waiting = false
          sched.wake(me)
        end
      end)
    else
      local b, ids = store.batch(), {}
      local last, derr = cursor, nil
      for _, ev in ipairs(sends) do
        local ok, err = delivery_ops(ev, b, ids)
        if not ok then derr = err break end
        last = ev.seq
      end
      local ok, cerr
      if not derr then
        b:set_dispatch_cursor(last)
        ok, cerr = b:commit()
      end
      if derr then
        failed("delivering an event", derr)
      elseif not ok then
        failed("storing the runs", cerr)
      else
        failures, cursor = 0, last
        for _, r in ipairs(ids) do launch(r.pipeline, r.id) end
      end
    end
  end
end

---------------------------------------------------------------------------
-- wait_for

local waiters = {} -- list of {name=, match=, wake=}

sent_listeners[#sent_listeners + 1] = function(seq, ev)
  for i = #waiters, 1, -1 do
    local w = waiters[i]
    if w.test(seq, ev) then table.remove(waiters, i) end
  end
end

--- A timer that reads the sends after position `after` every stream.poll_ms
--- and gives each to test(seq, send) until one is taken (true); close it.
function M.poll_sends(after, test)
  local t, busy = require("luv").new_timer(), false
  local ms = require("sluice.stream").poll_ms
  t:start(ms, ms, function()
    if busy then return end
    busy = true
    sched.spawn({}, function()
      -- a read that failed is tried again at the next tick (the dispatcher
      -- reports a store that keeps failing)
      local sends = store.sends({ after = after, limit = 1024 }) or {}
      for _, ev in ipairs(sends) do
        after = ev.seq
        if test(ev.seq, ev) then break end
      end
    end, function(ok, e)
      busy = false
      if not ok then io.stderr:write("sluice: wait_for: ", require("sluice.errors").describe(e), "\n") end
    end)
  end)
  return t
end

local function match_fn(name, match)
  if match == nil then return function() return true end end
  if type(match) == "function" then return match end
  if type(match) == "table" then
    return function(data)
      if type(data) ~= "table" then return false end
      for k, v in pairs(match) do
        if data[k] ~= v then return false end
      end
      return true
    end
  end
  error(("wait_for(%q): match must be a table of fields or a function"):format(name), 3)
end

--- wait_for(name, {match = table | function, timeout = duration}) -> data,
--- event | nil, "timeout". Resumes with the first matching event sent after
--- the wait began (events sent while the process was down included).
function M.wait_for(name, opts)
  if type(name) ~= "string" or name == "" then error("wait_for: the event name must be a non-empty string", 2) end
  if opts ~= nil and type(opts) ~= "table" then
    error(("wait_for(%q): options must be a table, got %s"):format(name, type(opts)), 2)
  end
  opts = opts or {}
  for k in pairs(opts) do
    if k ~= "match" and k ~= "timeout" then
      error(("wait_for(%q): unknown option '%s' (known: match, timeout)"):format(name, tostring(k)), 2)
    end
  end
  local test = match_fn(name, opts.match)
  local timeout_ms = opts.timeout ~= nil and duration.ms(opts.timeout, "wait_for timeout") or nil
  local w = engine.memo("wait", function()
    return { since = M.last_seq(), deadline_us = timeout_ms and clock.now() + math.floor(timeout_ms * 1000) or nil }
  end, 2)
  local result = engine.memo("wait_result", function()
    -- events already sent since the wait began (a restart, a burst)
    local after = w.since
    while true do
      local sends = must("wait_for", store.sends({ after = after, limit = 1024 }))
      if #sends == 0 then break end
      for _, ev in ipairs(sends) do
        after = ev.seq
        if matches(name, ev.name) and test(ev.data) then
          return { event = { id = ev.id, name = ev.name, data = ev.data, ts = ev.ts } }
        end
      end
    end
    local run = engine.current_branch("wait_for").run
    local got
    local entry, poll
    local left_ms = w.deadline_us and math.max(0, (w.deadline_us - clock.now()) / 1000) or nil
    engine.set_status(run, "waiting")
    local interrupted = engine.interruptible_wait(run, left_ms, function(finish)
      entry = {
        test = function(seq, ev)
          if got or seq <= w.since or not matches(name, ev.name) or not test(ev.data) then return false end
          got = { event = { id = id_of(seq), name = ev.name, data = ev.data, ts = ev.ts } }
          finish()
          return true
        end,
      }
      waiters[#waiters + 1] = entry
      -- on PostgreSQL another process's send wakes nobody here, nor does one
      -- of this process committed while the reads and the status write
      -- above waited: the sends after the scan are read every poll_ms
      if store.remote() then poll = M.poll_sends(after, entry.test) end
    end)
    if poll then poll:close() end
    for i, x in ipairs(waiters) do
      if x == entry then table.remove(waiters, i) break end
    end
    if interrupted then
      -- cancelled or timed out as a run: the wait records nothing
      error(engine.stop_error(run.stop.reason, run.stop.message), 0)
    end
    got = got or { timeout = true }
    engine.set_status(run, "running")
    return got
  end, 2)
  if result.timeout then return nil, "timeout" end
  return result.event.data, result.event
end

return M
