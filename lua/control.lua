--- sluice.control: the store's control socket (DESIGN §7). The process that
--- holds a store's writer lock (sluice serve, or a foreground sluice run or
--- rerun) listens on <store>/control.sock, mode 0600; other sluice processes
--- send it requests there (sluice run's hand-off, cancel, rerun, trigger,
--- and later the REPL and sluice reload).
---
--- Protocol: frames of a 4-byte big-endian length and a JSON document of the
--- store's codec (sluice.codec, exact: integers stay integers, byte strings
--- and NaN survive; values nest as deep as in the store). A request is {kind = "...", tag = any, ...fields}. The host
--- answers it with zero or more progress frames {tag=, progress = {...}}
--- and one final frame, {tag=, ok = true, ...fields} or {tag=, ok = false,
--- code = "E...", message = "..."}. A connection carries any number of
--- requests; replies carry their request's tag. A connection that closes
--- before a request's final frame means the host died: a client never
--- waits for it. A host that stops cleanly answers what is pending with
--- ESTOPPED first; one that is stopping refuses new work with ESTOPPING.
---
--- A request kind is one entry of M.handlers: handler(req, ctx) returns the
--- final reply's fields (or nil) or raises M.fail(code, message);
--- ctx.progress(fields) sends a progress frame; ctx.conn is the state of
--- the request's connection (c.closed once the client went; the REPL keeps
--- a session per connection); ctx.host is what the
--- listening process offers: {role = "serve"|"run", run_id=, dir=, stopping=,
--- execute = fn(p, input, id, opts) -> record | nil, err (waits for the end),
--- start = fn(p, input, id, opts) (does not), pipeline = fn(name) -> handle
--- (loading a file that appeared a moment ago), reload = fn() -> results
--- (sluice.reload.all)}, the last five for serve.
local clock = require "sluice._clock"
local lock = require "sluice._lock"
local store = require "sluice._store"
local codec = require "sluice._codec"
local sched = require "sluice.sched"
local sock = require "sluice._control"
local uv = require "luv"

local M = {}

local PID = math.tointeger(uv.os_getpid())

--- Raises a protocol failure: the request's final frame is {ok = false,
--- code = code, message = message}.
function M.fail(code, message)
  error({ control_code = code, message = message }, 0)
end
local fail = M.fail

---------------------------------------------------------------------------
-- the listening side

local server      -- the listening handle, while listening
local offer       -- ctx.host of every request
local since       -- when listening started
local conns = {}  -- connection handle -> {conn=, pending = {[entry] = true}, closed=}

local function send(c, t)
  if c.closed then return end
  local ok, body = pcall(codec.encode, t)
  if not ok then
    body = codec.encode({ tag = t.tag, ok = false, code = "EINTERNAL",
      message = "the reply cannot be encoded: " .. tostring(body) })
  end
  c.conn:write(body)
end

local function kinds()
  return table.concat(require("sluice.sorted_keys")(M.handlers), ", ")
end

local function serve_request(c, req)
  local entry = { tag = req.tag }
  c.pending[entry] = true
  local handler = M.handlers[req.kind]
  local reply
  if not handler then
    reply = { ok = false, code = "EUNKNOWN",
      message = ("unknown request kind '%s' (known: %s)"):format(req.kind, kinds()) }
  else
    local ctx = {
      host = offer,
      conn = c,
      progress = function(fields)
        if c.pending[entry] then send(c, { tag = req.tag, progress = fields }) end
      end,
    }
    local ok, res = xpcall(handler, sched.traceback, req, ctx)
    if ok then
      reply = type(res) == "table" and res or {}
      reply.ok = true
    elseif type(res) == "table" and res.control_code then
      reply = { ok = false, code = res.control_code, message = res.message }
    else
      local msg = type(res) == "table" and (res.message or tostring(res)) or tostring(res)
      io.stderr:write(("sluice: control request '%s' failed: %s\n"):format(req.kind,
        type(res) == "table" and res.traceback or msg))
      reply = { ok = false, code = "EINTERNAL", message = msg }
    end
  end
  -- answered ESTOPPED meanwhile, or its connection is gone
  if not c.pending[entry] then return end
  c.pending[entry] = nil
  reply.tag = req.tag
  send(c, reply)
end

local function on_conn(conn)
  local c = { conn = conn, pending = {} }
  conns[conn] = c
  conn:read_start(function(frame)
    if not frame then
      -- the client went away: its pending requests finish unanswered
      c.closed = true
      conns[conn] = nil
      return
    end
    local ok, req = pcall(codec.decode, frame)
    if not ok or type(req) ~= "table" or type(req.kind) ~= "string" then
      send(c, { tag = ok and type(req) == "table" and req.tag or nil, ok = false, code = "EBADREQ",
        message = "a request is a JSON object with a string field 'kind'" })
      return
    end
    sched.spawn({}, serve_request, function(ok, err)
      if not ok then io.stderr:write("sluice: control request: ", tostring(err.traceback or err.message), "\n") end
    end, c, req)
  end)
end

--- Listens on <dir>/control.sock (replacing a stale socket). The caller
--- holds the store's writer lock. h is ctx.host of every request.
---@return boolean|nil ok, string? err, string? code
function M.listen(dir, h)
  if server then return nil, "EEXIST: this process listens on its control socket already", "EEXIST" end
  local s, err, code = sock.listen(dir, on_conn)
  if not s then return nil, err, code end
  server, offer, since = s, h, clock.iso(clock.now())
  return true
end

--- The host stops taking work: run, rerun and trigger are refused with
--- ESTOPPING and `reason`; cancel, wait and status still work.
function M.stop_taking_work(reason)
  if offer then offer.stopping = reason end
end

--- Stops listening (from a task): requests woken by what just ended reply
--- first, every other pending request is answered ESTOPPED with `reason`,
--- the connections close once their replies are out (at most 2 s), and the
--- socket file goes.
function M.close(reason)
  if not server then return end
  sched.sleep_ms(0)
  local s = server
  server = nil
  s:close()
  local me, left, waiting, done = coroutine.running(), 0, false, false
  local function settle()
    if done then return end
    done = true
    if waiting then sched.wake(me) end
  end
  for conn, c in pairs(conns) do
    for entry in pairs(c.pending) do
      send(c, { tag = entry.tag, ok = false, code = "ESTOPPED", message = reason })
    end
    c.pending = {}
    c.closed = true
    if conn:close(function()
      left = left - 1
      if left == 0 then settle() end
    end) then
      left = left + 1
    end
  end
  conns = {}
  offer = nil
  if left > 0 and not done then
    local t = uv.new_timer()
    t:start(2000, 0, settle)
    waiting = true
    sched.wait()
    t:close()
  end
end

---------------------------------------------------------------------------
-- the connecting side

local Client = {}
Client.__index = Client

--- Connects to <dir>/control.sock. Returns a client, or nil, message, code
--- (ENOENT: no socket; ECONNREFUSED: its process is gone; EAGAIN: busy).
function M.connect(dir)
  local conn, err, code = sock.connect(dir)
  if not conn then return nil, err, code end
  local cl = setmetatable({ conn = conn, frames = {}, head = 1, tail = 0, tag = 0 }, Client)
  conn:read_start(function(frame, msg, ecode)
    if frame then
      local ok, v = pcall(codec.decode, frame)
      cl.tail = cl.tail + 1
      cl.frames[cl.tail] = ok and type(v) == "table" and v
        or { ok = false, code = "EBADREPLY", message = "the host sent a frame that is not a JSON object: " .. tostring(v) }
    else
      cl.ended = { msg, ecode }
    end
    cl:wake()
  end)
  return cl
end

function Client:wake()
  local w = self.waiter
  if w then
    self.waiter = nil
    sched.wake(w)
  end
end

-- the next frame; or nil, message, code at the end of the stream, when
-- closed, or after deadline (uv.hrtime() nanoseconds)
function Client:next_frame(deadline)
  while true do
    if self.head <= self.tail then
      local f = self.frames[self.head]
      self.frames[self.head] = nil
      self.head = self.head + 1
      return f
    end
    if self.ended then return nil, self.ended[1], self.ended[2] end
    if self.closed then return nil, "EPIPE: the connection is closed", "EPIPE" end
    local timer
    if deadline then
      local ms = (deadline - uv.hrtime()) / 1e6
      if ms <= 0 then return nil, "ETIMEDOUT: no answer in time", "ETIMEDOUT" end
      timer = uv.new_timer()
      timer:start(math.ceil(ms), 0, function() self:wake() end)
    end
    self.waiter = coroutine.running()
    sched.wait()
    if timer then timer:close() end
  end
end

--- Sends req and waits (from a task) for its final frame, which it returns
--- (check .ok); progress frames go to opts.on_progress(progress). Returns
--- nil, message, code when the connection ends first (EOF: the host died),
--- after opts.timeout_ms, or when no frame at all came within
--- opts.first_frame_ms (ETIMEDOUT: a host that takes the request answers
--- at once, with progress if the rest takes long).
function Client:call(req, opts)
  opts = opts or {}
  self.tag = self.tag + 1
  local tag = self.tag
  req.tag = tag
  local eok, body = pcall(codec.encode, req)
  if not eok then return nil, tostring(body), "EINVAL" end
  local ok, werr, wcode = self.conn:write(body)
  if not ok then return nil, werr, wcode end
  local now = uv.hrtime()
  local deadline = opts.timeout_ms and now + math.floor(opts.timeout_ms * 1e6)
  local first = opts.first_frame_ms and now + math.floor(opts.first_frame_ms * 1e6)
  while true do
    local until_ = first and (deadline and math.min(first, deadline) or first) or deadline
    local f, msg, code = self:next_frame(until_)
    if not f then return nil, msg, code end
    first = nil
    if f.tag == tag then
      if f.progress == nil then return f end
      if opts.on_progress then opts.on_progress(f.progress) end
    elseif f.tag == nil and f.ok == false then
      return f -- the host refused the connection (another user's socket)
    end
  end
end

function Client:close()
  if self.closed then return end
  self.closed = true
  self.conn:close()
  self:wake()
end

--- Finds the process that writes the store at dir and connects to it.
--- opts.take: a role ("run") to take the writer lock with when it is free.
--- opts.roles: the holder roles to connect to ({serve = true}); another is
--- an EBUSY failure. A holder that does not listen yet (a serve loading its
--- files) or any more (one exiting) is retried for opts.wait_ms (30 s);
--- opts.notice(message) is told when that takes over a second.
--- Returns "mine" (the lock is taken), "free" (no writer; opts.take unset),
--- or a client with .holder = {role=, pid=}; or nil, message, code.
function M.find_writer(dir, opts)
  opts = opts or {}
  local lock_path = dir .. "/writer.lock"
  local wait_ms = opts.wait_ms or 30000
  local t0 = uv.hrtime()
  local noticed = false
  while true do
    local role, pid, msg
    if opts.take then
      local ok, code
      ok, msg, code, role, pid = lock.take(lock_path, opts.take)
      if ok then return "mine" end
      if code ~= "EBUSY" then return nil, msg, code end
    else
      role, pid, msg = lock.holder(lock_path)
      -- no directory (a PostgreSQL store's state dir nobody made yet): no holder
      if role == nil and msg == "ENOENT" and not uv.fs_stat(dir) then return "free" end
      if role == nil then return nil, pid, msg end
      if not role then return "free" end
      msg = ("EBUSY: %s is held by another sluice process (sluice %s, pid %d)"):format(lock_path, role, pid)
    end
    if opts.roles and not opts.roles[role] then return nil, msg, "EBUSY" end
    local cl, err, code = M.connect(dir)
    if cl then
      cl.holder = { role = role, pid = pid }
      return cl
    end
    if code ~= "ENOENT" and code ~= "ECONNREFUSED" and code ~= "EAGAIN" then return nil, err, code end
    local waited = (uv.hrtime() - t0) / 1e6
    if waited > wait_ms then
      return nil, ("sluice %s (pid %d) holds %s but did not answer on %s/control.sock within %ds")
        :format(role, pid, lock_path, dir, wait_ms // 1000), "ETIMEDOUT"
    end
    if waited > 1000 and not noticed and opts.notice then
      noticed = true
      opts.notice(("waiting up to %ds for sluice %s (pid %d) to listen on %s/control.sock")
        :format(wait_ms // 1000, role, pid, dir))
    end
    sched.sleep_ms(20)
  end
end

---------------------------------------------------------------------------
-- request kinds

local H = {}
M.handlers = H

local function need(req, field, kind)
  if type(req[field]) ~= kind then
    fail("EBADREQ", ("request '%s': field '%s' must be a %s"):format(req.kind, field, kind))
  end
  return req[field]
end

-- the serve offering this request's work, or a failure saying why not
local function serve_of(ctx, what)
  local h = ctx.host
  if h.role ~= "serve" then
    fail("EROLE", ("the store is held by sluice %s (pid %d%s), which takes no %s requests: wait for it to finish, or use another --store")
      :format(h.role, PID, h.run_id and (", run " .. h.run_id) or "", what))
  end
  if h.stopping then fail("ESTOPPING", h.stopping) end
  return h
end

local function engine() return require "sluice.engine" end

-- The record of run id once host.execute returned rec, err: a run that
-- failed to start is err; one joined in flight may hand back no record
-- (its execution raised), then the store has the last word.
local function ended(id, rec, err)
  if rec then return rec end
  if err then fail("EINVAL", err) end
  rec = engine().get_run(id)
  if not rec then fail("EINTERNAL", ("run %s ended without a record (see the host's log)"):format(id)) end
  return rec
end

--- status (ping): who listens and what it executes.
function H.status(_, ctx)
  local ids = {}
  for id in pairs(engine().active) do ids[#ids + 1] = id end
  table.sort(ids)
  return { pid = PID, role = ctx.host.role, store = store.dir(), dir = ctx.host.dir,
    run_id = ctx.host.run_id, since = since, stopping = ctx.host.stopping, runs = codec.array(ids) }
end
H.ping = H.status

--- run {pipeline, id, input}: executes (or resumes, or joins) the run and
--- answers with its final record; progress {id, pid} once it is taken.
function H.run(req, ctx)
  local h = serve_of(ctx, "run")
  local name, id = need(req, "pipeline", "string"), need(req, "id", "string")
  local p = h.pipeline(name)
  if not p then
    fail("ENOTFOUND", ("pipeline '%s' is not loaded by this serve (it serves %s): put its file there (serve loads it), or stop serve and run it here")
      :format(name, tostring(h.dir)))
  end
  ctx.progress({ id = id, pid = PID })
  return { run = ended(id, h.execute(p, req.input, id)) }
end

--- rerun {id, from, new_id?}: a new run reusing the steps before `from`
--- (engine.prepare_rerun); progress {id = new id}; answers its record.
function H.rerun(req, ctx)
  local h = serve_of(ctx, "rerun")
  local id, from = need(req, "id", "string"), need(req, "from", "string")
  local e = engine()
  local orig = e.get_run(id)
  if not orig then fail("ENOTFOUND", ("no run %s in %s"):format(id, store.dir())) end
  local p = h.pipeline(orig.pipeline)
  if not p then
    fail("ENOTFOUND", ("pipeline '%s' of run %s is not loaded by this serve (it serves %s)")
      :format(orig.pipeline, id, tostring(h.dir)))
  end
  local new_id, err = e.prepare_rerun(id, from, req.new_id)
  if not new_id then fail("EINVAL", err) end
  ctx.progress({ id = new_id, pid = PID })
  return { run = ended(new_id, h.execute(p, nil, new_id)) }
end

--- trigger {schedule, input?, input_given?, wait?}: starts a run of the
--- schedule now, id "<schedule>@manual-<time>" (outside its overlap policy);
--- progress {id}; answers {id} at once, or {id, run} at its end with wait.
function H.trigger(req, ctx)
  local h = serve_of(ctx, "trigger")
  local name = need(req, "schedule", "string")
  local every = require "sluice.every"
  local s = every.defined[name]
  if not s then
    fail("ENOTFOUND", ("no schedule '%s' in this serve (it serves %s); its schedules: %s")
      :format(name, tostring(h.dir), #every.order > 0 and table.concat(every.order, ", ") or "none"))
  end
  local e = engine()
  local p = e.pipelines[s.pipeline]
  if not p then fail("ENOTFOUND", ("schedule '%s': pipeline '%s' is not defined"):format(name, s.pipeline)) end
  local base = s.name .. "@manual-" .. clock.iso(clock.now())
  local id, n = base, 1
  while e.active[id] or e.get_run(id) do
    n = n + 1
    id = base .. "-" .. n
  end
  local input = s.input
  if req.input_given then input = req.input end
  local opts = { fields = { schedule = s.name, trigger = "manual" } }
  ctx.progress({ id = id, pid = PID })
  if not req.wait then
    h.start(p, input, id, opts)
    return { id = id }
  end
  return { id = id, run = ended(id, h.execute(p, input, id, opts)) }
end

--- reload {}: loads every pipeline file of the serve's directory again
--- (stage, validate, swap each; a file that fails keeps its old version);
--- answers {files = [{file, old_hash, new_hash, ms, changes} | {file, error}]}.
function H.reload(_, ctx)
  local h = serve_of(ctx, "reload")
  local files, err = h.reload()
  if not files then fail("EIO", err) end
  return { files = codec.array(files) }
end

--- cancel {id}: registers the cancel (engine.cancel) and answers at once
--- with {live = the run executes here, status = its stored status}; a run
--- executing here stops at its next step boundary, sleep or wait.
function H.cancel(req)
  local id = need(req, "id", "string")
  local e = engine()
  local a = e.active[id]
  -- as it was: with several hosts the cancel is stored first, and the run
  -- may have ended (cancelled) by the time that returns; the answer is
  -- "registered" on either backend
  local was = a and a.run.record.status
  local ok, why = e.cancel(id)
  if not ok then fail(e.get_run(id) and "EINVAL" or "ENOTFOUND", why) end
  -- executing here: the answer goes now, from its record in memory (a read
  -- of a PostgreSQL store waits, and the run's end would close the socket first)
  if a then return { live = true, status = was } end
  local r = e.get_run(id)
  return { live = e.active[id] ~= nil, status = r and r.status }
end

--- wait {id, timeout_ms?}: answers {run = its record, live=} when the run
--- executing here ends, or with timed_out = true after timeout_ms; at once
--- for a run that does not execute here.
function H.wait(req)
  local id = need(req, "id", "string")
  local e = engine()
  local a = e.active[id]
  if not a then
    local r = e.get_run(id)
    if not r then fail("ENOTFOUND", ("no run %s in %s"):format(id, store.dir())) end
    return { run = r, live = false }
  end
  local me, settled, timer = coroutine.running(), false, nil
  local function settle(rec, timed_out)
    if settled then return end
    settled = true
    if timer then timer:close() end
    sched.wake(me, rec, timed_out)
  end
  a.waiters[#a.waiters + 1] = function(rec) settle(rec, false) end
  if math.type(req.timeout_ms) == "integer" then
    timer = uv.new_timer()
    timer:start(math.max(0, req.timeout_ms), 0, function() settle(nil, true) end)
  end
  local rec, timed_out = sched.wait()
  return { run = rec or e.get_run(id), live = e.active[id] ~= nil, timed_out = timed_out or nil }
end

--- eval {code, ...}: a REPL evaluation in this host (sluice.repl_eval:
--- the session of this connection, print() as progress {out}, a count
--- hook bounding it); {cancel = tag} interrupts one; {names = true}.
function H.eval(req, ctx)
  return require("sluice.repl_eval").handle(req, ctx)
end

return M
