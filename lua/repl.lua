--- sluice.repl: the client side of `sluice repl`. Finds the process that
--- holds the store's writer lock (sluice serve, or a foreground sluice run)
--- and evaluates chunks inside it over its control socket (`eval`
--- requests: sluice.repl_eval there); with none, opens the store read-only
--- and evaluates here, offering the inspection helpers alone, and says so.
---
--- Three ways in: -e CHUNK (one chunk, its values printed, exit 0 or 1),
--- stdin that is not a terminal (the whole of it as one chunk), and the
--- interactive loop: libedit line editing (sluice.edit) with history in
--- ~/.sluice_history and Tab completion of names, lines gathered while the
--- chunk is incomplete, Ctrl-C clearing the line at the prompt and
--- interrupting an evaluation (a cancel request; a second Ctrl-C drops the
--- connection), Ctrl-D leaving. The loop never blocks: stdin is polled, so
--- a host that goes away is noticed at once.
local store = require "sluice._store"
local codec = require "sluice._codec"
local control = require "sluice.control"
local sched = require "sluice.sched"
local eval = require "sluice.repl_eval"
local uv = require "luv"

local M = {}

-- How long a host may take to answer an evaluation at all (it answers at
-- once unless a step that never yields holds its loop).
local ANSWER_MS = 30000

local function errf(fmt, ...) io.stderr:write("sluice: ", fmt:format(...), "\n") end

local function out(...)
  io.stdout:write(...)
  io.stdout:flush()
end

---------------------------------------------------------------------------
-- the two targets of evaluation: a live host, or this process (offline)

local state_dir -- the store's writer lock and control socket (sluice.state_dir)

-- Connects to the writer of store dir (a directory or a URL). Returns a
-- target {live=, client=, holder=, session=, note=}, or nil and why not (exit 2).
local function connect(dir, quiet)
  local w, err, code = control.find_writer(state_dir, {
    wait_ms = 5000,
    notice = not quiet and function(msg) errf("%s", msg) end or nil,
  })
  if w and w ~= "free" then return { live = true, client = w, holder = w.holder } end
  if not w and code ~= "ETIMEDOUT" then return nil, err end
  local ok, msg = store.open(dir, true)
  if ok then msg = require("sluice.pg_schema").unusable(store) end
  if not ok or msg then return nil, msg end
  return { live = false, session = eval.session({ live = false }),
    note = not w and ("%s; inspecting the store read-only instead"):format(err) or nil }
end

local function banner(t, dir)
  dir = require("sluice.state_dir").public_url(dir)
  if t.live then
    return ("sluice repl: connected to sluice %s (pid %d) on %s; code runs inside it.\n"
      .. "help() lists the helpers; Ctrl-C interrupts, Ctrl-D leaves.\n"):format(t.holder.role, t.holder.pid, dir)
  end
  return ("%ssluice repl: no live host: %s is open read-only here, with the inspection helpers alone\n"
    .. "(runs, run, step, events, consumers, schedules, tail). help() lists them; Ctrl-D leaves.\n")
    :format(t.note and ("sluice: " .. t.note .. "\n") or "", dir)
end

-- Evaluates code on target t. on_out(text): what it prints. Returns the
-- reply (see repl_eval.start), or nil and why when the connection ended.
-- While it runs, M.interrupt() stops it.
local function evaluate(t, code, chunkname, opts, on_out)
  local o = { chunkname = chunkname, timeout_ms = opts.timeout_ms, format = opts.json and "json" or "text",
    width = opts.width }
  if not t.live then
    local me, reply, waiting = coroutine.running(), nil, false
    local ev
    o.out = on_out
    o.on_done = function(r)
      reply = r
      if waiting then
        waiting = false
        sched.wake(me)
      end
    end
    ev = eval.start(t.session, code, o)
    M.interrupt = function() ev:stop("interrupted", "interrupted") end
    if not reply then
      waiting = true
      sched.wait()
    end
    M.interrupt = nil
    return reply
  end
  local req = { kind = "eval", code = code, chunkname = o.chunkname, timeout_ms = o.timeout_ms,
    format = o.format, width = o.width }
  local cl = t.client
  local asked = false
  M.interrupt = function()
    if not asked and req.tag then
      -- the cancel goes beside the evaluation on the same connection; its
      -- answer (another tag) is not waited for
      asked = true
      cl.conn:write(codec.encode({ kind = "eval", cancel = req.tag, tag = "cancel" }))
    else
      out("\n(no answer to the interrupt: closing the connection)\n")
      cl:close()
    end
  end
  local reply, why, code = cl:call(req, {
    first_frame_ms = ANSWER_MS,
    on_progress = function(p) if p.out then on_out(p.out) end end,
  })
  M.interrupt = nil
  if not reply then return nil, why, code end
  if not reply.ok then return { error = reply.message } end
  return reply
end

-- Prints a reply: values on stdout, an error on stderr. Returns whether it
-- succeeded.
local function show(reply, opts)
  if reply.error then
    local msg = reply.error
    if reply.traceback and not reply.stopped then msg = msg .. "\n" .. reply.traceback end
    io.stderr:write(reply.stopped and "" or "error: ", msg, "\n")
    io.stderr:flush()
    return false
  end
  if opts.json then
    local vals = reply.values or {}
    local edge = codec.edge
    if #vals == 1 then
      out(edge.encode(vals[1]), "\n")
    elseif #vals > 1 then
      out(edge.encode(vals), "\n")
    end
    return true
  end
  if reply.text and reply.text ~= "" then out(reply.text, "\n") end
  return true
end

local function lost_text(t, why, code)
  local who = ("sluice %s (pid %d)"):format(t.holder.role, t.holder.pid)
  if code == "ETIMEDOUT" then
    return ("%s did not answer within %ds (a step that never yields holds its loop?); the connection is dropped")
      :format(who, ANSWER_MS // 1000)
  end
  if code == "EPIPE" then return ("the connection to %s was closed; its session is gone"):format(who) end
  return ("the connection to %s ended (%s): it stopped or was killed"):format(who, tostring(why))
end

---------------------------------------------------------------------------
-- one chunk: -e, or stdin that is not a terminal

local function once(t, code, chunkname, opts)
  local reply, why, ecode = evaluate(t, code, chunkname, opts, out)
  if not reply then
    errf("%s", lost_text(t, why, ecode))
    return 1
  end
  return show(reply, opts) and 0 or 1
end

---------------------------------------------------------------------------
-- the interactive loop

local function history_path()
  local home = os.getenv("HOME")
  return home and home ~= "" and home .. "/.sluice_history" or nil
end

-- the words Tab completes, from the session's side
local function refresh_words(edit, t)
  if t.live then
    local reply = t.client:call({ kind = "eval", names = true }, { timeout_ms = 2000 })
    if reply and reply.ok and reply.names then edit.set_words(reply.names) end
  else
    edit.set_words(t.session:names())
  end
end

local function interactive(t, dir, opts)
  local edit = require "sluice._edit"
  local hist = history_path()
  if hist then
    local ok, err = edit.read_history(hist)
    if not ok then errf("%s (history starts empty)", err) end
  end
  out(banner(t, dir))
  refresh_words(edit, t)

  local me = coroutine.running()
  local reading = false   -- waiting for a line
  local poll = uv.new_poll(0)
  local function deliver(...)
    if reading then
      reading = false
      poll:stop()
      sched.wake(me, ...)
    end
  end
  local sigint = uv.new_signal()
  sigint:start("sigint", function()
    if reading then
      edit.stop()
      out("\n")
      deliver("interrupt")
    elseif M.interrupt then
      out("\n")
      M.interrupt()
    end
  end)
  local sigwinch = uv.new_signal()
  sigwinch:start("sigwinch", function() edit.resize() end)

  -- a line, "eof", "interrupt", or "lost" when the host's connection
  -- ended meanwhile (noticed at once, not at the next evaluation)
  local function read_line(prompt)
    edit.start(prompt)
    reading = true
    poll:start("r", function()
      local state, line = edit.feed()
      if state ~= "more" then deliver(state, line) end
    end)
    while true do
      local cl = t.live and t.client
      if cl then cl.waiter = me end
      local state, line = sched.wait()
      if cl and cl.waiter == me then cl.waiter = nil end
      if state then return state, line end
      if cl and cl.ended then
        reading = false
        poll:stop()
        edit.stop()
        out("\n")
        return "lost", cl.ended[1], cl.ended[2]
      end
    end
  end

  -- after the connection ended: a new host, or this process read-only
  local function reconnect(why, ecode)
    errf("%s", lost_text(t, why, ecode))
    t.client:close()
    local t2, err = connect(dir, true)
    if not t2 then
      errf("%s", err)
      return false
    end
    t = t2
    out(t.live and ("sluice repl: reconnected to sluice %s (pid %d): a new session (globals set before are gone)\n")
      :format(t.holder.role, t.holder.pid) or banner(t, dir))
    refresh_words(edit, t)
    return true
  end

  local code = 0
  local lines = {}
  local last -- the chunk last added to the history
  while true do
    local prompt = #lines > 0 and ">> " or (t.live and "sluice> " or "sluice(ro)> ")
    local state, line, ecode = read_line(prompt)
    if state == "eof" then
      out("\n")
      break
    elseif state == "lost" then
      lines = {}
      if not reconnect(line, ecode) then
        code = 1
        break
      end
    elseif state == "interrupt" then
      lines = {}
    elseif #lines == 0 and line:match("^%s*$") then
      -- an empty line: nothing to do
    else
      lines[#lines + 1] = line
      local chunk = table.concat(lines, "\n")
      if not eval.incomplete(chunk) then
        lines = {}
        if chunk ~= last then edit.add_history(chunk) end
        last = chunk
        if hist then
          local ok, err = edit.write_history(hist)
          if not ok then
            errf("%s (history is not kept)", err)
            hist = nil
          end
        end
        opts.width = edit.columns() or 100
        local reply, why, ecode2 = evaluate(t, chunk, "=stdin", opts, out)
        if reply then
          show(reply, opts)
          refresh_words(edit, t)
        elseif not reconnect(why, ecode2) then
          code = 1
          break
        end
      end
    end
  end
  edit.stop()
  poll:close()
  sigint:close()
  sigwinch:close()
  if t.live then t.client:close() end
  return code
end

---------------------------------------------------------------------------

--- Runs sluice repl. opts: {store = dir or URL, state = its state dir,
--- chunk = -e text, json = bool, timeout_ms = of an evaluation}. Returns
--- the exit code.
function M.main(opts)
  local dir = opts.store
  state_dir = opts.state or dir
  if not require("sluice.pg_schema").is_url(dir) and not uv.fs_stat(dir) then
    -- what opening it says (no store there)
    local _, msg = store.open(dir, true)
    errf("%s", msg or ("no store at " .. dir))
    return 2
  end
  -- a live host evaluates everything: this process opens the store only
  -- when there is none
  local t, err = connect(dir, opts.chunk ~= nil)
  if not t then
    errf("%s", err)
    return 2
  end
  local code
  if opts.chunk then
    code = once(t, opts.chunk, "=(command line)", opts)
  elseif not require("sluice._edit").isatty(0) then
    code = once(t, io.stdin:read("a"), "=stdin", opts)
  else
    code = interactive(t, dir, opts)
  end
  if t.live and t.client then t.client:close() end
  return code
end

return M
