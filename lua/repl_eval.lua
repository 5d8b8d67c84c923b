--- sluice.repl_eval: the evaluation of REPL chunks, independent of where
--- they come from (STYLE 12). The host's control socket hands its `eval`
--- requests to M.handle; sluice repl without a live host evaluates here
--- itself, in an offline session, with the same M.start.
---
--- A chunk is compiled as `return <chunk>` first (an expression shows its
--- value), else as a statement; a syntax error ending in <eof> means the
--- chunk is incomplete (M.incomplete: the client keeps reading lines). It
--- runs in its own task (sluice.sched) in the session's environment: its
--- globals are the session's, over the helpers (sluice.repl_helpers) and
--- _G, so it may call functions that wait (trigger{wait=true}, http.get)
--- while runs go on. print() inside it goes to the client. A guard
--- (sluice.guard, the count hook) bounds it: Lua that runs for longer
--- than timeout_ms without waiting is stopped with a message, as is one
--- interrupted (Ctrl-C: a cancel request, or its client going away); the
--- guard also preempts it every few milliseconds so the host keeps serving.
--- A stopped evaluation never runs user code again (frozen by the guard);
--- its reply goes at once.
--- Depends on: sluice.sched (on_wait of a task's context), sluice.guard,
--- sluice.pretty, sluice.repl_helpers, luv.
local sched = require "sluice.sched"
local guard = require "sluice._guard"
local pretty = require "sluice.pretty"
local codec = require "sluice._codec"
local duration = require "sluice.duration"
local uv = require "luv"

local M = {}

M.DEFAULT_TIMEOUT_MS = 5000

--- Compiles code for env: fn, or nil, message, incomplete (the error is
--- at the end of the chunk: more lines may complete it).
function M.compile(code, chunkname, env)
  local fn = load("return " .. code, chunkname, "t", env)
  if fn then return fn end
  local f2, err = load(code, chunkname, "t", env)
  if f2 then return f2 end
  return nil, err, err:sub(-5) == "<eof>"
end

--- Whether code is an unfinished chunk (a `function` without its `end`,
--- an open string or table, ...).
function M.incomplete(code)
  local _, _, inc = M.compile(code, "=stdin")
  return inc == true
end

---------------------------------------------------------------------------
-- sessions

local Session = {}
Session.__index = Session

--- A session: the globals of one REPL client. opts.live: a host (ctx.host
--- of the control socket: serve or a foreground run) is there and the
--- helpers that change things work; else only the inspection helpers do.
function M.session(opts)
  local s = setmetatable({ live = opts.live, host = opts.host, evals = {} }, Session)
  local helpers = require("sluice.repl_helpers").new(s)
  s.helpers = helpers
  local vars = {}
  s.env = setmetatable(vars, {
    __index = function(_, k)
      local h = helpers[k]
      if h ~= nil then return h end
      return _G[k]
    end,
  })
  if opts.live then
    -- the REPL is a guest of the host: leaving is the client's, not the host's
    local pid = math.tointeger(uv.os_getpid())
    vars.os = setmetatable({
      exit = function()
        error(("os.exit would stop the host (sluice %s, pid %d); leave the REPL with Ctrl-D, stop the host with SIGTERM")
          :format(opts.host and opts.host.role or "?", pid), 2)
      end,
    }, { __index = os })
  end
  vars.print = function(...)
    local n = select("#", ...)
    local parts = {}
    for i = 1, n do parts[i] = tostring((select(i, ...))) end
    s:write(table.concat(parts, "\t") .. "\n")
  end
  return s
end

-- the evaluation that output of the running code belongs to: the task's,
-- else (a coroutine the code made) the session's latest
function Session:current()
  local ctx = sched.context()
  local ev = ctx and ctx.eval
  if ev and ev.session == self then return ev end
  return self.latest
end

--- Output of the running evaluation (print, the helpers' listings).
function Session:write(text)
  local ev = self:current()
  if ev and not ev.done then ev.out(text) end
end

--- Whether the running evaluation was stopped (a helper that loops, like
--- tail, ends then).
function Session:stopped()
  local ev = self:current()
  return ev == nil or ev.stopped ~= nil
end

--- The names Tab completes: globals of the session, helpers, _G, and the
--- fields of the tables among them.
function Session:names()
  local set = {}
  local function add_table(prefix, t)
    local n = 0
    for k, v in pairs(t) do
      if type(k) == "string" and k:match("^[%a_][%w_]*$") then
        set[prefix .. k] = true
        if prefix == "" and type(v) == "table" and v ~= _G then
          for k2 in pairs(v) do
            if type(k2) == "string" and k2:match("^[%a_][%w_]*$") then set[k .. "." .. k2] = true end
            n = n + 1
            if n > 2000 then break end
          end
        end
      end
    end
  end
  add_table("", _G)
  add_table("", self.helpers)
  add_table("", self.env)
  return codec.array(require("sluice.sorted_keys")(set))
end

---------------------------------------------------------------------------
-- evaluations

local Eval = {}
Eval.__index = Eval

local function finish(ev, reply)
  if ev.done then return end
  ev.done = true
  if not ev.timer:is_closing() then ev.timer:close() end
  if not ev.guard:killed() then ev.guard:release() end
  if ev.session.latest == ev then ev.session.latest = nil end
  ev.on_done(reply)
end

--- Stops the evaluation (Ctrl-C, its client gone, its time up): its user
--- code never runs again, and its reply {error = message, stopped = why}
--- goes now. A second stop does nothing.
function Eval:stop(why, message)
  if self.done then return end
  self.stopped = why
  self.guard:kill(message)
  finish(self, { error = message, stopped = why })
end

local function shown(ms)
  return ms % 1000 == 0 and ("%ds"):format(ms // 1000) or ("%gs"):format(ms / 1000)
end

-- the reply of an evaluation that returned the values in t (table.pack)
local function values_reply(t, o)
  if o.format == "json" then
    local vals = codec.array({})
    for i = 1, t.n do vals[i] = t[i] == nil and codec.null or t[i] end
    local ok, err = pcall(codec.encode, vals)
    if not ok then
      return { error = "the value cannot be printed as JSON: " .. tostring(err):gsub("^[^:]*:%d+: ", "") }
    end
    return { values = vals }
  end
  return { text = pretty.values(t, { width = o.width }) }
end

--- Starts evaluating code in session s. opts: chunkname ("=stdin"),
--- timeout_ms (of running without waiting), format ("text": the values
--- pretty-printed; "json": the values themselves), width (of the client's
--- terminal), out(text) (what it prints), on_done(reply). reply is {text =
--- values shown} | {values = array} | {error = message, traceback =,
--- stopped = "timeout" | "interrupted"}. Returns the evaluation
--- (ev:stop(why, message)).
function M.start(s, code, opts)
  local timeout_ms = opts.timeout_ms or M.DEFAULT_TIMEOUT_MS
  local ev = setmetatable({ session = s, out = opts.out, on_done = opts.on_done, done = false }, Eval)
  local fn, err = M.compile(code, opts.chunkname or "=stdin", s.env)
  local why = ("stopped: the evaluation ran Lua for %s without waiting (sluice repl --eval-timeout)")
    :format(shown(timeout_ms))
  ev.timer = uv.new_timer()
  -- The guard's own deadline stops a coroutine the chunk made and resumes
  -- (the loop cannot run then); the timer, which runs while the guard
  -- preempts the chunk, sends the reply.
  ev.guard = guard.new(timeout_ms, why)
  if not fn then
    finish(ev, { error = err })
    return ev
  end
  s.latest = ev
  local function arm()
    if ev.done then return end
    ev.guard:rearm(timeout_ms)
    uv.update_time()
    ev.timer:start(timeout_ms, 0, function() ev:stop("timeout", why) end)
  end
  -- The time counts running, not waiting: it pauses in sched.wait. (Once
  -- the chunk's own coroutines joined its guard, the guard's deadline
  -- cannot move: such a chunk is bounded from its start, waits included.)
  local ctx = {
    eval = ev,
    on_wait = function(waiting)
      if ev.done then return end
      if waiting then
        ev.timer:stop()
        ev.guard:rearm(nil)
      else
        arm()
      end
    end,
  }
  sched.spawn(ctx, function()
    ev.guard:attach(coroutine.running())
    arm()
    -- called from C, the chunk shows as "in main chunk" in tracebacks
    local r = table.pack(xpcall(fn, sched.traceback))
    if not r[1] then error(r[2], 0) end
    return table.pack(table.unpack(r, 2, r.n))
  end, function(ok, res)
    if ev.done then return end
    if ok then return finish(ev, values_reply(res, opts)) end
    local msg = type(res) == "table" and res.message
    if msg == nil and type(res) == "table" then
      -- an error table of the user's: shown without the traceback it got
      local copy = {}
      for k, v in pairs(res) do if k ~= "traceback" then copy[k] = v end end
      msg = "(error object) " .. pretty.show(copy)
    elseif msg == nil then
      msg = tostring(res)
    end
    finish(ev, { error = tostring(msg), traceback = type(res) == "table" and res.traceback or nil })
  end)
  return ev
end

---------------------------------------------------------------------------
-- the host's side: the `eval` request kind of the control socket

local sessions = setmetatable({}, { __mode = "k" }) -- connection -> session

local FLUSH_BYTES = 16 * 1024

-- what an evaluation prints, as progress frames: small writes are
-- gathered until the loop turns (or 16 KB), so a print loop does not make
-- a frame per line
local function output(progress)
  local buf, size, timer = {}, 0, nil
  local function flush()
    if size == 0 then return end
    local text = table.concat(buf)
    buf, size = {}, 0
    progress({ out = text })
  end
  local function write(text)
    buf[#buf + 1] = text
    size = size + #text
    if size >= FLUSH_BYTES then return flush() end
    if not timer then
      timer = uv.new_timer()
    end
    if not timer:is_active() then timer:start(0, 0, flush) end
  end
  local function close()
    flush()
    if timer then timer:close() end
  end
  return write, close
end

--- eval {code, chunkname?, timeout_ms?, format?, width?}: evaluates code in
--- the connection's session; progress {out = text} carries what it prints;
--- answers M.start's reply. eval {cancel = tag}: stops the evaluation of
--- request `tag` on this connection ({cancelled = found}). eval {names =
--- true}: {names = what Tab completes}.
function M.handle(req, ctx)
  local fail = require("sluice.control").fail
  local s = sessions[ctx.conn]
  if not s then
    s = M.session({ live = true, host = ctx.host })
    sessions[ctx.conn] = s
  end
  if req.names then return { names = s:names() } end
  if req.cancel ~= nil then
    local ev = s.evals[req.cancel]
    if ev then ev:stop("interrupted", "interrupted") end
    return { cancelled = ev ~= nil }
  end
  if type(req.code) ~= "string" then fail("EBADREQ", "request 'eval': field 'code' must be a string") end
  local timeout_ms = req.timeout_ms
  if timeout_ms ~= nil and (math.type(timeout_ms) ~= "integer" or timeout_ms < 1) then
    fail("EBADREQ", "request 'eval': timeout_ms must be a positive integer")
  end
  ctx.progress({ started = true })
  local write, close = output(ctx.progress)
  local me, reply, waiting = coroutine.running(), nil, false
  local ev = M.start(s, req.code, {
    chunkname = type(req.chunkname) == "string" and req.chunkname or nil,
    timeout_ms = timeout_ms, format = req.format, width = math.type(req.width) == "integer" and req.width or nil,
    out = write,
    on_done = function(r)
      reply = r
      if waiting then
        waiting = false
        sched.wake(me)
      end
    end,
  })
  if not reply then
    s.evals[req.tag] = ev
    -- a client that went away interrupts its evaluation
    local watch = uv.new_timer()
    watch:start(200, 200, function()
      if ctx.conn.closed then ev:stop("interrupted", "the client went away") end
    end)
    waiting = true
    sched.wait()
    watch:close()
    s.evals[req.tag] = nil
  end
  close()
  return reply
end

--- Parses --eval-timeout: milliseconds, or raises naming the option.
function M.timeout_ms(text)
  local ms = duration.ms(tonumber(text) or text, "--eval-timeout")
  if ms < 1 then error("--eval-timeout must be at least 1ms", 0) end
  return math.floor(ms)
end

return M
