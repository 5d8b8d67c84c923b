--- sluice.cli: the commands written in Lua (run, runs, status): argument
--- parsing, store opening, output as a table or as JSON. main() returns the
--- exit code: 0 success, 1 the pipeline failed, 2 bad usage or bad input.
local clock = require "sluice._clock"
local codec = require "sluice._codec"
local ids = require "sluice._ids"
local store = require "sluice._store"
local vm = require "sluice._vm"
local json = require("sluice._codec").edge -- what is printed: JSON at the edge
local engine = require "sluice.engine"
local errors = require "sluice.errors"
local control = require "sluice.control"
local liveness = require "sluice.liveness"

local M = {}

-- Everything a command prints goes through out(): the first failed write
-- (a full disk, a closed pipe) is kept and reported by stdout_ok() at the
-- end, so that `sluice run ... > /dev/full` does not exit 0 with its
-- result lost.
local stdout_err
local function out(...)
  if stdout_err then return false end
  local ok, err = io.stdout:write(...)
  if not ok then stdout_err = err end
  return ok ~= nil
end

-- Flushes stdout; false (and the message on stderr) if anything printed
-- did not reach it.
local function stdout_ok()
  local ok, err = io.stdout:flush()
  if not ok and not stdout_err then stdout_err = err end
  if not stdout_err then return true end
  io.stderr:write("sluice: cannot write the result to stdout: ", tostring(stdout_err), "\n")
  return false
end
local run_or_hand_over -- below: sluice run here, or in the serve that owns the store
local function errf(fmt, ...) io.stderr:write("sluice: ", fmt:format(...), "\n") end

local USAGE = {
  run = [[
usage: sluice run FILE [--pipeline NAME] [--input JSON] [--id RUN_ID] [--store DIR|URL] [--debug]
                 [--step-timeout DURATION]
                 [--env ENV] [--namespace NS]

Runs one pipeline of FILE to completion in the foreground and prints its
result as JSON on stdout. Every step's result is committed to the store
before the step returns, so a run that is killed can be resumed: pass the
same --id and finished steps return their stored result without running.

  --pipeline NAME  the pipeline to run (needed when FILE defines several;
                   on() handlers and consumers do not count: serve runs them)
  --input JSON     the input given to the pipeline function (default: null)
  --id RUN_ID      the run id; of an unfinished run: resume it; of a
                   completed run: print its stored result, run nothing (an
                   existing run keeps its stored input)
  --store DIR|URL  the store (default $SLUICE_STORE, else ./.sluice; DIR's parent
                   must exist): a directory (LMDB) or postgres://USER@HOST:PORT/DB
                   (PostgreSQL, after sluice store migrate)
  --state-dir DIR  with a PostgreSQL store: where this host keeps its writer
                   lock and control socket (default $SLUICE_STATE_DIR, else
                   $XDG_RUNTIME_DIR/sluice/<hash of the URL>, else
                   /tmp/sluice-<uid>/<hash>); every command taking --store takes it
  --debug          keep sluice's own frames in tracebacks (also SLUICE_DEBUG=1)
  --step-timeout DURATION
                   the timeout of steps that set none (default: none; with a
                   serve owning the store, the serve's own --step-timeout)
  --env ENV        {{env}} in templates (default: $SLUICE_ENV, else dev)
  --namespace NS   the run's namespace: {{namespace}} / {{org_slug}} in templates

When a sluice serve owns the store (or is starting), the run is handed to
it over the store's control socket (it must have loaded the pipeline) and
this command waits for the result. If serve stops cleanly meanwhile, the
run goes on here; if it dies, this says so and exits 1 (the run resumes at
the next start). While it runs here, sluice cancel reaches it.

Exit: 0 completed, 1 the pipeline failed, 2 bad usage or bad input.
]],
  runs = [[
usage: sluice runs [--pipeline NAME] [--status S] [--limit N] [--store DIR|URL] [--json]

Lists runs, newest first. Works while another sluice process writes the store.

  --pipeline NAME  only runs of this pipeline
  --status S       only runs in this status: pending, running, sleeping, waiting,
                   completed, failed or cancelled
  --limit N        at most N runs (default 20)
  --json           one JSON document instead of a table

DURATION is the time since the run was created (to its end, or so far);
status RUN_ID also shows its last attempt's.
]],
  serve = [[
usage: sluice serve [DIR] [--store DIR|URL] [--grace DURATION] [--step-timeout DURATION] [--debug] [--listen HOST:PORT]... [--no-http]
                    [--log-format logfmt|json] [--env ENV] [--lease DURATION]

The long-lived host: loads every .lua file under DIR (default pipelines/),
resumes the unfinished runs of the store, fires the schedules defined with
`every`, answers <store>/control.sock (run, cancel, rerun, trigger, reload;
on PostgreSQL in --state-dir, see sluice run --help),
and logs one line per run start and end on stderr. A file under DIR that
changes, appears or goes is reloaded (one log line each; on an error its
old version stays); SIGHUP or `sluice reload` reloads every file. SIGINT or
SIGTERM: no new step starts, running steps get --grace (default 10s) to
finish, then it exits 0; cut-off runs resume at the next start. A sluice
run holding the store is waited for (up to 30s); a second serve on the same
store refuses to start; runs, status and schedules keep working beside it.
--debug keeps sluice's own frames in tracebacks.

--step-timeout DURATION is the timeout of steps that set none (default:
none: such a step may run for ever, and one that never yields blocks the
host). A timeout also stops a step that never yields.

Several hosts (README.md, "Several hosts"): any number of serve processes
with --store postgres://... share its runs. --lease DURATION (default
$SLUICE_LEASE, else 30s): how long a host that stops renewing (killed, cut
off) keeps its runs before the others take them; it renews every third of
it. `sluice hosts` lists them.

HTTP API (README.md, "HTTP API"):
  --listen HOST:PORT   listen there (default 127.0.0.1:8787; port 0 picks a free
                       port, logged at start; repeat for several addresses)
  --no-http            no HTTP API
  --max-body SIZE      largest request body, bytes or with k/m (default 1m): 413 beyond
  --max-connections N  connections served at once (default 1024): 503 beyond
  --http-timeout D     headers must arrive, and a body may stall, at most D (default 10s)
  --idle-timeout D     a keep-alive connection without a request closes after D (default 60s)
  --public-discovery   GET /pipelines without an API key

Log lines:
  --log-format F       logfmt (default) or json: every line, the host's and sluice.log's
  --env ENV            {{env}} in templates (default: $SLUICE_ENV, else dev)
]],
  schedules = [[
usage: sluice schedules [--store DIR|URL] [--json]

Lists the schedules in the store: name, canonical spec (a cron expression or
a fixed interval), time zone, catch-up and overlap policies, next and last
fire, runs started, enabled. --json adds the next 5 fire times of each.
]],
  events = [[
usage: sluice events STREAM [--after ID | --from POS] [--limit N] [--follow] [--store DIR|URL] [--json]

Prints the events of a stream key, or of every key with a prefix (orders:*),
in append order: id, time, type, stream, data. POS is TRIM_HORIZON (the
default), LATEST or an ISO 8601 time. --follow keeps printing new events
(polling the store every 200 ms) until interrupted. A key that holds no
events while keys under it do gets a hint on stderr (no events under key
'orders'; 3 keys match 'orders:*').

--json prints one document {"events": [...], "next": ID} (pass ID as
--after for the page after it); with --follow, one event per line (JSON
Lines) as they arrive.
]],
  consumers = [[
usage: sluice consumers [--store DIR|URL] [--json]

Lists stream consumers: name, stream pattern, checkpoint (the last event
handled) and lag (events after it).
]],
  cancel = [[
usage: sluice cancel RUN_ID [--wait DURATION] [--store DIR|URL]

Cancels a run: it stops at its next step boundary, sleep or wait; finished
steps stay; its status becomes "cancelled"; its child runs are cancelled too.
When another process executes the run (sluice serve, or a sluice run), the
cancel goes to it over the store's control socket; this command then waits
up to --wait (default 10s, 0: not at all) for the run to end and says how
it ended. Exit: 0 cancelled or cancel registered, 1 the run ended otherwise
or its process died first, 2 no such run or it had ended.
]],
  rerun = [[
usage: sluice rerun RUN_ID --from STEP_ID [--id NEW_ID] [--store DIR|URL]

Re-runs a run from a step: a new run of the same pipeline (loaded from the
file recorded in the run) and input that reuses the stored results of every
step that started before STEP_ID and executes the rest. Prints the result
as JSON like `sluice run`. When sluice serve owns the store, serve runs it.
]],
  trigger = [[
usage: sluice trigger SCHEDULE [--input JSON] [--wait] [--store DIR|URL]

Starts a run of a schedule now, in the sluice serve that owns the store
(over its control socket), outside the schedule's overlap policy. The run's
id is <schedule>@manual-<time>; it is printed on stdout. --input replaces
the schedule's input; --wait waits for the run's end and prints its result
as JSON like `sluice run` (exit 1 if it failed).
]],
  reload = [[
usage: sluice reload [--store DIR|URL] [--json]

Makes the sluice serve that owns the store load every pipeline file of its
directory again (as SIGHUP does), changed or not, and prints one line per
file: its old and new source hash and what changed, or why it failed (then
its old version stays live). Exit: 0 every file loaded, 1 some failed,
2 no serve owns the store.
]],
  pipelines = [[
usage: sluice pipelines [FILE|DIR] [--json]

Loads a pipeline file, or every .lua file under DIR (default pipelines/),
and lists the pipelines they define: name, where it is defined, and its
parameters (name:type=default; "!" marks a required one). Nothing runs and
no store is opened. Exit 2 if a file does not load.
]],
  types = [[
usage: sluice types DIR

Writes the LuaCATS stubs of the pipeline API and the sluice.* modules
(the types/ folder of the repository) into DIR, for lua-language-server:
add DIR to "workspace.library" in your .luarc.json.
]],
  status = [[
usage: sluice status RUN_ID [--logs] [--store DIR|URL] [--json]

Shows one run: pipeline, status, times, the source hash of its file, its
error, and each step with its status, attempts, duration and result size.
The duration is the time since the run was created, and how much of it the
last attempt took (a resume, or a retry of a failed run, is a new attempt).
A step that has been running for half a second or more shows as in flight,
with its start time.
--logs adds the lines its steps logged with sluice.log (the last 1,000).
]],
}

-- Parses args against spec {flag = "value"|"bool"}; returns opts, positional
-- or nil, message.
local function parse(args, spec)
  local opts, pos = {}, {}
  local i = 1
  while i <= #args do
    local a = args[i]
    if a == "--help" or a == "-h" then
      opts.help = true
    elseif a:sub(1, 2) == "--" then
      local name, val = a:match("^%-%-([^=]+)=(.*)$")
      name = name or a:sub(3)
      local kind = spec[name]
      if not kind then return nil, ("unknown option --%s"):format(name) end
      if kind == "bool" then
        if val then return nil, ("--%s takes no value"):format(name) end
        opts[name] = true
      else
        if not val then
          i = i + 1
          val = args[i]
          if val == nil then return nil, ("--%s needs a value"):format(name) end
        end
        if kind == "list" then -- repeatable
          opts[name] = opts[name] or {}
          table.insert(opts[name], val)
        else
          opts[name] = val
        end
      end
    else
      pos[#pos + 1] = a
    end
    i = i + 1
  end
  return opts, pos
end

-- The store a command names (--store, $SLUICE_STORE, ./.sluice: a
-- directory, or a postgres:// URL) and the directory of this host's files
-- of it, the writer lock and control socket (sluice.state_dir): store,
-- state dir; or nil and why.
local function store_of(opts)
  local target = opts.store or os.getenv("SLUICE_STORE") or ".sluice"
  local state, why = require("sluice.state_dir").of(target, opts["state-dir"])
  if not state then return nil, why end
  return target, state
end

local store_target, state_dir -- what open_store opened, and its state dir

-- Opens the store a command names. A PostgreSQL store is asked for its
-- schema at once: one not migrated (or newer than this sluice) is refused
-- here, saying what to do, before the command does anything.
local function open_store(opts, readonly)
  local target, state = store_of(opts)
  if not target then
    errf("%s", state)
    return false
  end
  local ok, msg = store.open(target, readonly)
  if ok then
    msg = require("sluice.pg_schema").unusable(store)
    ok = msg == nil
  end
  if not ok then
    errf("%s", msg)
    return false
  end
  store_target, state_dir = target, state
  return true
end

local function usage_error(cmd, msg)
  errf("%s\n", msg)
  io.stderr:write(USAGE[cmd])
  return 2
end

-- The start of every command: parse its options, answer --help. Returns
-- opts, positional, or nil and the exit code to return.
local function begin(cmd, args, spec)
  if spec.store then spec["state-dir"] = "value" end
  local opts, pos = parse(args, spec)
  if not opts then return nil, usage_error(cmd, pos) end
  if opts.help then
    out(USAGE[cmd])
    return nil, 0
  end
  return opts, pos
end

-- The process that writes the store (one at a time: the writer lock), and
-- how to reach it over its control socket. take: take the lock when it is
-- free; serve_only: a holder that is not a serve is refused (it takes no
-- work). Returns "mine", "free" or a control client; or nil after printing
-- why (exit 2).
local function find_writer(take, serve_only)
  if take then
    local ok, why = require("sluice.state_dir").ensure(store_target, state_dir)
    if not ok then
      errf("%s", why)
      return nil
    end
  end
  local w, err, code = control.find_writer(state_dir, {
    take = take and "run" or nil, roles = serve_only and { serve = true } or nil,
    notice = function(msg) errf("%s", msg) end,
  })
  if w then return w end
  if code == "EBUSY" then err = err .. ": one process writes a store at a time; wait for it or pass another --store" end
  errf("%s", err)
  return nil
end

local function finished(r)
  return r and (r.status == "completed" or r.status == "failed" or r.status == "cancelled")
end

-- How long a host may take to answer a request at all (it answers at once
-- unless a step that never yields holds its loop).
local ANSWER_MS = 30000

-- What to say when the host executing run id died (or stopped) before it
-- answered. Returns 1.
local function host_gone(id)
  errf("serve stopped; run %s is unfinished and resumes when a serve or 'sluice run --id %s' picks it up", id, id)
  return 1
end

-- The exit of a request to serve (rerun, trigger) that ended without a run
-- record: serve refused it (its message), or went before it took the
-- request (nothing ran), or went after it started run `id` (host_gone).
local function request_failed(reply, id, code, why, what)
  if reply and not (id and reply.code == "ESTOPPED") then
    errf("%s", reply.message)
    return reply.code == "ESTOPPING" and 1 or 2
  end
  if not id then
    errf("serve %s before it %s; nothing ran", code == "ETIMEDOUT" and "did not answer" or "stopped", what)
    return 1
  end
  if code ~= "EOF" and why then errf("%s", why) end
  return host_gone(id)
end

---------------------------------------------------------------------------

-- Reads run `id` for an inspection or a resume: the record, false if there
-- is none, or nil after naming a record that cannot be read (exit 2).
local function read_run(id)
  local ok, r = pcall(engine.get_run, id)
  if ok then return r or false end
  errf("%s", tostring(r))
  return nil
end

-- `sluice run --id ID`: a run ID that exists keeps its stored input; say so
-- when --input differs from it. false after naming a corrupt record.
local function check_existing(id, input)
  local r = read_run(id)
  if r == nil then return false end
  if not r or input == nil then return true end
  local given, stored = codec.try_encode(input), codec.try_encode(r.input == nil and json.null or r.input)
  if given == stored then return true end
  if r.status == "completed" or r.status == "cancelled" then
    io.stderr:write(("sluice: run %s is %s, with another input than --input, which is ignored%s;" ..
      " run without --id (or with a new one) to use this input\n"):format(id, r.status,
      r.status == "completed" and " (its stored result is printed)" or ""))
  else
    io.stderr:write(("sluice: run %s exists with another input than --input: it resumes with its stored" ..
      " input; --input is ignored\n"):format(id))
  end
  return true
end

-- on() handlers and consumers are pipelines too (their runs are recorded
-- like any other), but events and streams trigger them under serve: a
-- description of each of them among `defined`, by pipeline name.
local function triggers_of(defined)
  local mine, found = {}, {}
  for _, d in ipairs(defined) do mine[d] = true end
  for _, h in ipairs(require("sluice.events").handlers) do
    if mine[h.pipeline] then found[h.pipeline.name] = ("on(%q)"):format(h.pattern) end
  end
  for name, c in pairs(require("sluice.stream").consumers) do
    if mine[c.pipeline] then found[c.pipeline.name] = ("consume(%q)"):format(name) end
  end
  return found
end

-- The pipeline `sluice run FILE [--pipeline NAME]` runs: NAME, or the one
-- pipeline of FILE that is not a trigger. nil after saying why.
local function choose_pipeline(file, defined, name)
  local triggers = triggers_of(defined)
  local runnable, names, trig = {}, {}, {}
  for _, d in ipairs(defined) do
    if triggers[d.name] then
      trig[#trig + 1] = triggers[d.name]
    else
      runnable[#runnable + 1] = d
      names[#names + 1] = d.name
    end
  end
  local p
  if name then
    for _, d in ipairs(defined) do
      if d.name == name then p = d end
    end
    if not p then
      local all = {}
      for i, d in ipairs(defined) do all[i] = d.name end
      errf("pipeline '%s' is not defined in %s; defined: %s", name, file, table.concat(all, ", "))
      return nil
    end
  elseif #runnable == 1 then
    p = runnable[1]
  elseif #runnable == 0 then
    if #trig > 0 then
      errf("%s defines no pipeline to run, only %s, which run under 'sluice serve' (call pipeline(name, fn) for one to run)",
        file, table.concat(trig, ", "))
    else
      errf("%s defines no pipeline (call pipeline(name, fn) in it)", file)
    end
    return nil
  else
    errf("%s defines %d pipelines (%s): choose one with --pipeline NAME", file, #runnable, table.concat(names, ", "))
    return nil
  end
  if #trig > 0 and not triggers[p.name] then
    io.stderr:write(("sluice: %s also defines %s: %s under 'sluice serve', not 'sluice run'\n"):format(
      file, table.concat(trig, ", "), #trig > 1 and "they run" or "it runs"))
  end
  return p
end

function M.run(args)
  local opts, pos = begin("run", args, { pipeline = "value", input = "value", id = "value", store = "value", debug = "bool",
    ["step-timeout"] = "value",
    env = "value", namespace = "value" })
  if not opts then return pos end
  if opts.debug then errors.debug = true end
  local bad = M.step_timeout_option("run", opts)
  if bad then return bad end
  if #pos ~= 1 then return usage_error("run", "run needs exactly one FILE") end
  local file = pos[1]
  if opts.namespace and not opts.namespace:match("^[%w][%w_.-]*$") then
    return usage_error("run", "--namespace must be letters, digits, '_', '.' or '-', got " .. opts.namespace)
  end
  if opts.env then require("luv").os_setenv("SLUICE_ENV", opts.env) end

  local input
  if opts.input then
    local v, derr = codec.try_decode(opts.input)
    if derr then
      -- the one depth limit of values (codec.h), checked here, once
      errf("--input %s: %s", derr:find("nesting deeper", 1, true) and "nests too deeply" or "is not valid JSON", derr)
      return 2
    end
    input = v
  end

  local defined, lerr, kind = engine.load_file(file)
  if not defined then
    if kind == "io" then errf("cannot read %s", lerr)
    else errf("%s", lerr) end
    if kind == "invalid" and lerr:find("no pipeline named", 1, true) then
      errf("(sluice run loads only %s; sluice serve loads every file of its directory)", file)
    end
    return 2
  end
  local p = choose_pipeline(file, defined, opts.pipeline)
  if not p then return 2 end

  if not open_store(opts, false) then return 2 end
  if opts.id and not check_existing(opts.id, opts.input and input) then return 2 end
  local events = require "sluice.events"
  local sent_before = events.sent_count()
  local rec, code = run_or_hand_over(p, input, opts.id or ids.new_id(),
    opts.namespace and { fields = { namespace = opts.namespace } })
  if not rec then return code end
  -- sends of this process (a run handed to serve sends there)
  local sent = events.sent_count() - sent_before
  if sent > 0 then
    io.stderr:write(("sluice: %d event%s sent; their handlers run when 'sluice serve' starts\n"):format(
      sent, sent > 1 and "s" or ""))
  end
  if rec.status == "completed" then
    out(json.encode(rec.result == nil and json.null or rec.result), "\n")
    return 0
  end
  if rec.status == "cancelled" then
    errf("run %s of pipeline '%s' was cancelled", rec.id, rec.pipeline)
    return 1
  end
  local e = rec.error or {}
  io.stderr:write(("sluice: run %s of pipeline '%s' failed%s: %s\n"):format(
    rec.id, rec.pipeline, e.step and (" in step '%s'"):format(e.step) or "",
    errors.describe({ message = e.message or "?", traceback = e.traceback })))
  io.stderr:write(("sluice: fix the cause and resume with: sluice run %s --id %s%s\n"):format(
    file, rec.id, opts.pipeline and (" --pipeline " .. opts.pipeline) or ""))
  return 1
end

-- Executes run id of p here, listening on the control socket meanwhile so
-- that sluice cancel reaches it. Returns the record, or nil and 2.
local function run_here(p, input, id, exec_opts)
  -- a PostgreSQL store may have serve hosts: this process is a host too
  -- while it runs, holding the run's lease (lua/hosts.lua)
  local hosts = require "sluice.hosts"
  local host, herr = hosts.start({
    claim = false, info = { command = "run" }, state = state_dir,
    on_lost = function(msg)
      errf("%s", msg)
      os.exit(3)
    end,
  })
  if herr then
    errf("%s", herr)
    return nil, 2
  end
  local listening, lerr = control.listen(state_dir, { role = "run", run_id = id })
  if not listening then errf("warning: %s: this run cannot be cancelled from another process", lerr) end
  local rec, err = engine.execute(p, input, id, exec_opts)
  if listening then control.close(("sluice run of %s ended"):format(id)) end
  if host then
    local dok, derr = hosts.deregister()
    if not dok then errf("warning: %s", derr) end
  end
  if not rec then
    errf("%s", err)
    return nil, 2
  end
  return rec
end

-- The run executes here when this process can take the writer lock, or in
-- the serve that holds it (or is starting), whose control socket answers
-- with the run's record. A serve that stops cleanly gives the run back
-- (ESTOPPING, ESTOPPED): it goes on here once the lock is free. A serve
-- that dies leaves it unfinished: said, exit 1. Returns the record, or nil
-- and the exit code.
run_or_hand_over = function(p, input, id, exec_opts)
  for _ = 1, 5 do
    local w = find_writer(true, true)
    if not w then return nil, 2 end
    if w == "mine" then return run_here(p, input, id, exec_opts) end
    if exec_opts then
      errf("--namespace: %s is owned by a sluice serve; start the run through it with the namespace's key", store.dir())
      return nil, 2
    end
    local pid = w.holder.pid
    local reply, why, code = w:call({ kind = "run", pipeline = p.name, input = input, id = id }, {
      first_frame_ms = ANSWER_MS,
      on_progress = function()
        errf("%s is served by sluice serve (pid %d): run %s handed to it", store.dir(), pid, id)
      end,
    })
    w:close()
    if reply and reply.ok then return reply.run end
    if code == "ETIMEDOUT" then
      errf("sluice serve (pid %d) did not answer within %ds (a step that never yields holds it?); run %s was not handed over",
        pid, ANSWER_MS // 1000, id)
      return nil, 1
    end
    if not reply then
      -- the connection ended without an answer: serve died
      local r = engine.get_run(id)
      if finished(r) then return r end
      if not r then
        errf("serve stopped before run %s started; nothing of it ran", id)
        return nil, 1
      end
      return nil, host_gone(id)
    end
    if reply.code ~= "ESTOPPING" and reply.code ~= "ESTOPPED" then
      errf("%s", reply.message)
      return nil, 2
    end
    errf("sluice serve (pid %d): %s; run %s goes on here once it has exited", pid, reply.message, id)
  end
  errf("the store changed hands too often; run %s is unfinished: resume it with 'sluice run --id %s'", id, id)
  return nil, 1
end

---------------------------------------------------------------------------
-- inspection

local function table_print(headers, rows)
  local widths = {}
  for i, h in ipairs(headers) do widths[i] = #h end
  for _, r in ipairs(rows) do
    for i = 1, #headers do
      r[i] = tostring(r[i] == nil and "-" or r[i])
      if #r[i] > widths[i] then widths[i] = #r[i] end
    end
  end
  local function line(cells)
    local parts = {}
    for i = 1, #headers do
      parts[i] = i < #headers and cells[i] .. string.rep(" ", widths[i] - #cells[i]) or cells[i]
    end
    out(table.concat(parts, "  "), "\n")
  end
  line(headers)
  for _, r in ipairs(rows) do line(r) end
end

local function ms_text(ms)
  if ms == nil then return "-" end
  if ms < 1 then return ("%.3fms"):format(ms) end
  if ms < 1000 then return ("%.1fms"):format(ms) end
  return ("%.2fs"):format(ms / 1000)
end

local STATUSES = { "pending", "running", "sleeping", "waiting", "completed", "failed", "cancelled" }
local FINISHED = { completed = true, failed = true, cancelled = true }

-- Milliseconds since the epoch of a time the engine wrote (clock.iso).
local function iso_ms(s)
  local t = s and clock.parse_time(s)
  if not t then return nil end
  local frac = s:match("%.(%d+)Z$") or ""
  return t * 1000 + (tonumber((frac .. "000"):sub(1, 3)) or 0)
end

-- A run's two durations, in ms: in all since it was created (up to now
-- for an unfinished run), and its last attempt (a resume or retry is a new
-- attempt; the record keeps the last one's start).
local function run_times(r)
  local done = FINISHED[r.status]
  local end_ms = done and iso_ms(r.finished_at) or clock.now() / 1000
  local total = end_ms and r.created_us and math.max(0, end_ms - r.created_us / 1000)
  local attempt
  if done and r.status ~= "cancelled" and r.duration_ms then
    attempt = r.duration_ms -- measured by the engine, in us
  elseif r.status ~= "pending" then
    local st = iso_ms(r.started_at)
    attempt = st and end_ms and math.max(0, end_ms - st)
  end
  -- finished_at has ms precision, the engine's attempt duration us
  if total and attempt and attempt > total then total = attempt end
  local function us(ms) return ms and math.floor(ms * 1000 + 0.5) / 1000 end
  return us(total), us(attempt)
end

local function run_summary(r)
  local total, attempt = run_times(r)
  return {
    id = r.id, pipeline = r.pipeline, status = r.status, created_at = r.created_at,
    started_at = r.started_at, finished_at = r.finished_at, duration_ms = total,
    attempt_duration_ms = attempt,
    attempt = r.attempt, file = r.file, source_hash = r.source_hash,
    host = r.host, host_alive = (liveness.run_alive(r)), host_id = select(2, liveness.run_alive(r)),
    error = r.error and r.error.message, error_step = r.error and r.error.step,
  }
end

M.run_summary = run_summary

--- A run with its steps as `sluice status --json` shows it (the REPL's
--- run(id) too). steps: engine.get_steps(r.id).
function M.status_doc(r, steps)
  local doc = run_summary(r)
  doc.input, doc.result = r.input, r.result
  doc.error = r.error
  doc.steps = json.array({})
  for i, s in ipairs(steps) do
    doc.steps[i] = {
      id = s.id, status = s.status, attempts = s.attempts, branch = s.branch, position = s.pos,
      started_at = clock.iso(s.started_us), duration_ms = s.duration_us / 1000, size = s.size or 0,
      error = s.error and s.error.message,
    }
  end
  return doc
end

function M.runs(args)
  local opts, pos = begin("runs", args, { pipeline = "value", status = "value", limit = "value", store = "value", json = "bool" })
  if not opts then return pos end
  if #pos > 0 then return usage_error("runs", "runs takes no positional argument: " .. pos[1]) end
  local limit = 20
  if opts.limit then
    limit = math.tointeger(tonumber(opts.limit))
    if not limit or limit < 1 then return usage_error("runs", "--limit must be a positive integer, got " .. opts.limit) end
  end
  if opts.status then
    local known = false
    for _, st in ipairs(STATUSES) do known = known or st == opts.status end
    if not known then
      return usage_error("runs", ("--status %s is not a run status; use one of %s"):format(opts.status, table.concat(STATUSES, ", ")))
    end
  end
  if not open_store(opts, true) then return 2 end
  local list, skipped = engine.list_runs({ pipeline = opts.pipeline, status = opts.status, limit = limit })
  for _, msg in ipairs(skipped) do errf("skipped: %s", msg) end
  liveness.prefetch(list) -- on PostgreSQL: who executes them, one query
  if opts.json then
    local runs = json.array({})
    for i, r in ipairs(list) do runs[i] = run_summary(r) end
    out(json.encode({ runs = runs }), "\n")
    return 0
  end
  local rows = {}
  for i, r in ipairs(list) do
    rows[i] = { r.id, r.pipeline, liveness.status_text(r), r.created_at, ms_text((run_times(r))),
      r.error and r.error.message:gsub("\n.*", "") or "" }
  end
  table_print({ "RUN", "PIPELINE", "STATUS", "CREATED", "DURATION", "ERROR" }, rows)
  return 0
end

-- The lines a run's steps logged (sluice status --logs), in logfmt.
function M.print_logs(run_id)
  local log = require "sluice.log"
  local lines = log.read(run_id)
  out(("\nlogs       %d\n"):format(#lines))
  for _, l in ipairs(lines) do
    l.run = nil
    out(log.render(l, "logfmt"), "\n")
  end
end

function M.status(args)
  local opts, pos = begin("status", args, { store = "value", json = "bool", logs = "bool" })
  if not opts then return pos end
  if #pos ~= 1 then return usage_error("status", "status needs exactly one RUN_ID") end
  if not open_store(opts, true) then return 2 end
  local r = read_run(pos[1])
  if r == nil then return 2 end
  if not r then
    errf("no run %s in %s", pos[1], store.dir())
    return 2
  end
  local steps = engine.get_steps(r.id)
  local now_ms = clock.now() / 1000
  -- a "running" record is a step in flight (engine.lua publishes those that
  -- run 0.5 s or more); in a run that is over, or whose process is gone,
  -- one that was cut off
  local gone = FINISHED[r.status] or liveness.run_alive(r) == false
  for _, st in ipairs(steps) do
    if st.status == "running" then
      if gone then
        st.status = "interrupted" -- runs again when the run resumes
      else
        st.duration_us = math.max(0, now_ms * 1000 - st.started_us)
      end
    end
  end
  if opts.json then
    local doc = M.status_doc(r, steps)
    if opts.logs then doc.logs = require("sluice.log").read(r.id) end
    out(json.encode(doc), "\n")
    return 0
  end
  local total, attempt = run_times(r)
  local so_far = FINISHED[r.status] and "" or " so far"
  out(("run        %s\npipeline   %s\nstatus     %s\nfile       %s (source %s)\ncreated    %s\nstarted    %s\nfinished   %s\nduration   %s%s, %s of it in attempt %s\n")
    :format(r.id, r.pipeline, liveness.status_text(r), r.file or "-", r.source_hash or "-", r.created_at or "-",
      r.started_at or "-", r.finished_at or "-", ms_text(total), so_far, ms_text(attempt), r.attempt or "-"))
  for _, st in ipairs(steps) do
    if st.status == "running" then
      out(("in flight  step '%s' (attempt %d), started %s, running for %s\n"):format(
        st.id, st.attempts, clock.iso(st.started_us), ms_text(st.duration_us / 1000)))
    end
  end
  if r.error then
    out(("error      %s%s\n"):format(r.error.step and ("in step '" .. r.error.step .. "': ") or "",
      errors.describe(r.error)))
  end
  out(("steps      %d\n\n"):format(#steps))
  local rows = {}
  for i, s in ipairs(steps) do
    rows[i] = { s.id, s.status, s.attempts, ms_text(s.duration_us / 1000), s.size or 0,
      s.error and s.error.message:gsub("\n.*", "") or "" }
  end
  if #rows > 0 then table_print({ "STEP", "STATUS", "ATTEMPTS", "DURATION", "SIZE", "ERROR" }, rows) end
  if opts.logs then M.print_logs(r.id) end
  return 0
end

-- --step-timeout D: the engine's timeout of steps that set none. Returns the
-- exit code of a bad value.
function M.step_timeout_option(cmd, opts)
  local d = opts["step-timeout"]
  if not d then return nil end
  local ok, ms = pcall(require("sluice.duration").ms, d, "--step-timeout")
  if not ok then return usage_error(cmd, (tostring(ms):gsub("^[^\n]-:%d+: ", ""))) end
  if ms <= 0 then return usage_error(cmd, "--step-timeout must be more than 0, got " .. d) end
  engine.step_timeout_ms = ms
end

function M.serve(args)
  local spec = { store = "value", grace = "value", debug = "bool", ["step-timeout"] = "value",
    ["log-format"] = "value", env = "value", lease = "value" }
  local api = require "sluice.api"
  for k, v in pairs(api.cli_options) do spec[k] = v end
  local opts, pos = begin("serve", args, spec)
  if not opts then return pos end
  if opts.debug then errors.debug = true end
  local bad = M.step_timeout_option("serve", opts)
  if bad then return bad end
  local http_opts, herr = api.options(opts)
  if not http_opts then return usage_error("serve", herr) end
  if opts.env then require("luv").os_setenv("SLUICE_ENV", opts.env) end
  if opts["log-format"] then
    local ok, e = pcall(require("sluice.log").set_format, opts["log-format"])
    if not ok then return usage_error("serve", "--" .. e) end
  end
  if #pos > 1 then return usage_error("serve", "serve takes at most one DIR") end
  local grace_ms = 10000
  if opts.grace then
    local ok, v = pcall(require("sluice.duration").ms, opts.grace, "--grace")
    if not ok then return usage_error("serve", v) end
    grace_ms = v
  end
  local store_dir, state = store_of(opts)
  if not store_dir then
    errf("%s", state)
    return 2
  end
  local lok, lease_ms = pcall(require("sluice.hosts").lease_ms, opts.lease)
  if not lok then return usage_error("serve", (tostring(lease_ms):gsub("^[^\n]-:%d+: ", ""))) end
  if opts.lease and not require("sluice.pg_schema").is_url(store_dir) then
    return usage_error("serve", "--lease applies to a PostgreSQL store shared by several hosts; "
      .. store_dir .. " is LMDB, which has one host")
  end
  local ok, err = require("sluice.serve").run({
    dir = pos[1] or "pipelines", grace_ms = grace_ms, http = http_opts, store = store_dir, state = state,
    lease_ms = lease_ms,
  })
  if not ok then
    errf("%s", err)
    return 2
  end
  return 0
end

--- The schedules as the store holds them (name, spec, tz, next_at,
--- last_at, runs, enabled, ...), by name.
function M.list_schedules()
  local list, err = require("sluice._store").schedules()
  if not list then error("reading the schedules: " .. err, 0) end
  local every = require "sluice.every"
  for _, rec in ipairs(list) do every.record_defaults(rec) end
  return list
end

function M.schedules(args)
  local opts, pos = begin("schedules", args, { store = "value", json = "bool" })
  if not opts then return pos end
  if #pos > 0 then return usage_error("schedules", "schedules takes no positional argument: " .. pos[1]) end
  if not open_store(opts, true) then return 2 end
  local every = require "sluice.every"
  local list = M.list_schedules()
  if opts.json then
    local now = clock.now() // 1000000
    for _, s in ipairs(list) do
      s.next_fires = json.array(every.next_fires(every.spec_of(s), now, s.tz, 5))
    end
    out(json.encode({ schedules = json.array(list) }), "\n")
    return 0
  end
  local rows = {}
  for i, s in ipairs(list) do
    rows[i] = { s.name, s.spec, s.tz or "UTC", s.catch_up, s.overlap, s.next_at or "-", s.last_at or "-",
      s.runs or 0, s.enabled == false and "no" or "yes" }
  end
  table_print({ "NAME", "SPEC", "TZ", "CATCH_UP", "OVERLAP", "NEXT", "LAST", "RUNS", "ENABLED" }, rows)
  return 0
end

function M.events(args)
  local opts, pos = begin("events", args, { after = "value", from = "value", limit = "value", follow = "bool", store = "value", json = "bool" })
  if not opts then return pos end
  if #pos ~= 1 then return usage_error("events", "events needs exactly one STREAM") end
  local limit = 100
  if opts.limit then
    limit = math.tointeger(tonumber(opts.limit))
    if not limit or limit < 1 then return usage_error("events", "--limit must be a positive integer, got " .. opts.limit) end
  end
  if not open_store(opts, true) then return 2 end
  local stream = require "sluice.stream"
  local ok, evs, info = pcall(stream.read, { stream = pos[1], after = opts.after, from = opts.from, limit = limit })
  if not ok then
    errf("%s", tostring(evs):gsub("^[^:]*:%d+: ", ""))
    return 2
  end
  if info.trimmed then errf("events before the retention horizon were trimmed: the first ones are gone") end
  if info.hint then errf("%s", info.hint) end
  if opts.json and not opts.follow then
    -- one document, the shape of GET /events: pass "next" as --after to go on
    local list = json.array({})
    for i, e in ipairs(evs) do list[i] = e end
    out(json.encode({ events = list, next = info.next or json.null }), "\n")
    return 0
  end
  -- a table, or with --follow --json one event a line (JSON Lines) as they come
  local function show(list)
    for _, e in ipairs(list) do
      if opts.json then
        out(json.encode(e), "\n")
      else
        out(("%s  %s  %-12s %-16s %s\n"):format(e.id, e.ts, e.type, e.stream, json.encode(e.data)))
      end
    end
    -- following: each batch reaches the reader now, and a reader gone ends it
    local ok, err = io.stdout:flush()
    if not ok and not stdout_err then stdout_err = err end
    return not stdout_err
  end
  if not show(evs) or not opts.follow then return 0 end
  -- another process appends; each read transaction sees its commits
  local after = info.next
  while true do
    require("sluice.sched").sleep_ms(200)
    local more, i2 = stream.read({ stream = pos[1], after = after or stream.id_of(0), limit = 1000 })
    if not show(more) then return 0 end -- main reports the failed write (exit 1)
    after = i2.next or after
  end
end

function M.consumers(args)
  local opts, pos = begin("consumers", args, { store = "value", json = "bool" })
  if not opts then return pos end
  if #pos > 0 then return usage_error("consumers", "consumers takes no positional argument") end
  if not open_store(opts, true) then return 2 end
  local list = require("sluice.stream").positions()
  if opts.json then
    out(json.encode({ consumers = json.array(list) }), "\n")
    return 0
  end
  local rows = {}
  for i, c in ipairs(list) do rows[i] = { c.name, c.pattern, c.after or "-", c.lag, c.updated_at or "-" } end
  table_print({ "CONSUMER", "STREAM", "CHECKPOINT", "LAG", "UPDATED" }, rows)
  return 0
end


function M.cancel(args)
  local opts, pos = begin("cancel", args, { store = "value", wait = "value" })
  if not opts then return pos end
  if #pos ~= 1 then return usage_error("cancel", "cancel needs exactly one RUN_ID") end
  local id = pos[1]
  local wait_ms = 10000
  if opts.wait then
    local ok, v = pcall(require("sluice.duration").ms, tonumber(opts.wait) or opts.wait, "--wait")
    if not ok then return usage_error("cancel", v) end
    wait_ms = math.floor(v)
  end
  if not open_store(opts, false) then return 2 end
  local w = find_writer(true, false)
  if not w then return 2 end
  if w == "mine" then
    -- nobody executes it: the store is changed here
    local ok, err = engine.cancel(id)
    if not ok then
      errf("%s", err)
      return 2
    end
    out(("cancelled %s\n"):format(id))
    return 0
  end
  -- the process that writes the store executes it, or may: it cancels
  local who = ("sluice %s (pid %d)"):format(w.holder.role, w.holder.pid)
  local reply, why, code = w:call({ kind = "cancel", id = id }, { timeout_ms = ANSWER_MS })
  if not reply or not reply.ok then
    w:close()
    if reply then
      errf("%s", reply.message)
      return 2
    end
    if code == "ETIMEDOUT" then
      errf("%s did not answer within %ds (a step that never yields holds it?); run %s is not cancelled", who,
        ANSWER_MS // 1000, id)
    else
      errf("%s stopped before it registered the cancel of %s (%s): cancel it again once it resumes", who, id, why)
    end
    return 1
  end
  if reply.status == "cancelled" then
    w:close()
    out(("cancelled %s\n"):format(id))
    return 0
  end
  errf("cancel of %s registered by %s", id, who)
  local done, wcode
  if wait_ms > 0 then
    done, _, wcode = w:call({ kind = "wait", id = id, timeout_ms = wait_ms }, { timeout_ms = wait_ms + 5000 })
  end
  w:close()
  local r = done and done.ok and done.run
  if wait_ms > 0 and not r and wcode ~= "ETIMEDOUT" then
    -- the host went away before the run ended: the store says how far it got
    r = engine.get_run(id)
    if not (r and r.status == "cancelled") then
      errf("%s stopped before run %s ended; it is unfinished, resumes at the next start, and needs cancelling again then",
        who, id)
      return 1
    end
  end
  if not finished(r) then
    out(("cancel requested: %s is still %s%s; it stops at its next step boundary, sleep or wait\n"):format(
      id, r and r.status or reply.status or "running", wait_ms > 0 and (" after %gs"):format(wait_ms / 1000) or ""))
    return 0
  end
  if r.status == "cancelled" then
    out(("cancelled %s\n"):format(id))
    return 0
  end
  errf("run %s %s before it could be cancelled", id, r.status)
  return 1
end

-- Prints a run's outcome like sluice run: the result as JSON, or why not.
-- Returns the exit code.
local function outcome(rec)
  if rec.status == "completed" then
    out(json.encode(rec.result == nil and json.null or rec.result), "\n")
    return 0
  end
  errf("run %s %s: %s", rec.id, rec.status, rec.error and rec.error.message or "?")
  return 1
end

function M.rerun(args)
  local opts, pos = begin("rerun", args, { from = "value", id = "value", store = "value" })
  if not opts then return pos end
  if #pos ~= 1 or not opts.from then return usage_error("rerun", "rerun needs RUN_ID and --from STEP_ID") end
  if not open_store(opts, false) then return 2 end
  local w = find_writer(true, true)
  if not w then return 2 end
  if w ~= "mine" then
    -- serve owns the store: it runs the rerun
    local new_id
    local reply, why, code = w:call({ kind = "rerun", id = pos[1], from = opts.from, new_id = opts.id }, {
      first_frame_ms = ANSWER_MS,
      on_progress = function(pr)
        new_id = pr.id
        errf("rerun of %s from step '%s' is run %s, in sluice serve (pid %d)", pos[1], opts.from, new_id, w.holder.pid)
      end,
    })
    w:close()
    if reply and reply.ok then return outcome(reply.run) end
    return request_failed(reply, new_id, code, why, "started the rerun")
  end
  local orig = engine.get_run(pos[1])
  if not orig then
    errf("no run %s in %s", pos[1], store.dir())
    return 2
  end
  if not orig.file then
    errf("run %s has no recorded file to load its pipeline from", pos[1])
    return 2
  end
  local defined, lerr, kind = engine.load_file(orig.file)
  if not defined then
    errf("%s", kind == "io" and ("cannot read " .. lerr) or lerr)
    return 2
  end
  local p = engine.pipelines[orig.pipeline]
  if not p then
    errf("pipeline '%s' is no longer defined in %s", orig.pipeline, orig.file)
    return 2
  end
  local new_id, err = engine.prepare_rerun(pos[1], opts.from, opts.id)
  if not new_id then
    errf("%s", err)
    return 2
  end
  io.stderr:write(("sluice: rerun of %s from step '%s' is run %s\n"):format(pos[1], opts.from, new_id))
  local rec, code = run_here(p, nil, new_id)
  if not rec then return code end
  return outcome(rec)
end

function M.trigger(args)
  local opts, pos = begin("trigger", args, { input = "value", wait = "bool", store = "value" })
  if not opts then return pos end
  if #pos ~= 1 then return usage_error("trigger", "trigger needs exactly one SCHEDULE") end
  local input
  if opts.input then
    local v, derr = codec.try_decode(opts.input)
    if derr then
      errf("--input is not valid JSON: %s", derr)
      return 2
    end
    input = v
  end
  if not open_store(opts, true) then return 2 end
  local w = find_writer(false, true)
  if not w then return 2 end
  if w == "free" then
    errf("no sluice serve owns %s: schedules run under 'sluice serve' (start it), or run the pipeline with 'sluice run FILE --pipeline NAME'",
      store.dir())
    return 2
  end
  local id
  local reply, why, code = w:call({ kind = "trigger", schedule = pos[1], input = input, input_given = opts.input ~= nil,
    wait = opts.wait or nil }, {
    first_frame_ms = ANSWER_MS,
    on_progress = function(pr)
      id = pr.id
      errf("schedule %s triggered: run %s, in sluice serve (pid %d)", pos[1], id, w.holder.pid)
    end,
  })
  w:close()
  if reply and reply.ok then
    if not opts.wait then
      out(reply.id, "\n")
      return 0
    end
    return outcome(reply.run)
  end
  return request_failed(reply, id, code, why, "took the trigger")
end

function M.reload(args)
  local opts, pos = begin("reload", args, { store = "value", json = "bool" })
  if not opts then return pos end
  if #pos > 0 then return usage_error("reload", "reload takes no positional argument: " .. pos[1]) end
  if not open_store(opts, true) then return 2 end
  local w = find_writer(false, true)
  if not w then return 2 end
  if w == "free" then
    errf("no sluice serve owns %s: nothing to reload (sluice run loads its file each time)", store.dir())
    return 2
  end
  local reply, why = w:call({ kind = "reload" }, { first_frame_ms = ANSWER_MS })
  w:close()
  if not reply then
    errf("serve did not answer the reload: %s", why)
    return 1
  end
  if not reply.ok then
    errf("%s", reply.message)
    return reply.code == "ESTOPPING" and 1 or 2
  end
  if opts.json then
    out(json.encode({ files = reply.files }), "\n")
  end
  local failed = 0
  for _, f in ipairs(reply.files) do
    if f.error then
      failed = failed + 1
      if not opts.json then errf("%s: %s", f.file, f.error) end
    elseif not opts.json then
      out(("%s %s -> %s in %.1fms: %s\n"):format(f.file, f.old_hash or "new", f.new_hash or "deleted", f.ms, f.changes))
    end
  end
  return failed > 0 and 1 or 0
end

-- for the commands kept in files of their own (lua/cli_keys.lua)
M.USAGE, M.begin, M.open_store, M.usage_error, M.table_print = USAGE, begin, open_store, usage_error, table_print
function M.keys(args) return require("sluice.cli_keys").keys(args) end
function M.namespaces(args) return require("sluice.cli_keys").namespaces(args) end
function M.store(args) return require("sluice.cli_store").store(args) end
function M.hosts(args) return require("sluice.cli_hosts").hosts(args) end

USAGE.repl = [[
usage: sluice repl [--store DIR|URL] [-e CHUNK] [--json] [--eval-timeout DURATION]

Evaluates Lua inside the process that owns the store (sluice serve, or a
foreground sluice run), over its control socket: help() lists the helpers
(runs{}, run(id), step(run_id, step_id), events(stream), trigger(name),
cancel(id), pause(schedule), stats(), tail(stream), ...). An expression
prints its value. Without such a process the store is opened read-only and
the inspection helpers alone are offered, evaluated here (said at start).

  -e CHUNK               evaluate CHUNK, print its values, exit (0, or 1 on error)
  --json                 values as JSON (one value, or an array of several)
  --eval-timeout D       stop an evaluation that runs Lua for longer than D
                         without waiting (default 5s); the host keeps serving
  --store DIR|URL        the store (default ./.sluice; sluice run --help says more)

With stdin not a terminal (sluice repl < script.lua) the whole input is one
chunk. Interactively: line editing and history (~/.sluice_history), Tab
completes names, an unfinished chunk reads more lines, Ctrl-C interrupts
the evaluation (not the host), Ctrl-D leaves.
]]

function M.repl(args)
  -- -e is the one short option of sluice: the Lua interpreter's
  for i, a in ipairs(args) do
    if a == "-e" then args[i] = "--eval" end
  end
  local opts, pos = begin("repl", args, { store = "value", eval = "value", json = "bool", ["eval-timeout"] = "value" })
  if not opts then return pos end
  if #pos > 0 then return usage_error("repl", "repl takes no positional argument: " .. pos[1]) end
  local repl_eval = require "sluice.repl_eval"
  local timeout_ms = repl_eval.DEFAULT_TIMEOUT_MS
  if opts["eval-timeout"] then
    local ok, v = pcall(repl_eval.timeout_ms, opts["eval-timeout"])
    if not ok then return usage_error("repl", v) end
    timeout_ms = v
  end
  local store_dir, state = store_of(opts)
  if not store_dir then
    errf("%s", state)
    return 2
  end
  return require("sluice.repl").main({
    store = store_dir, state = state,
    chunk = opts.eval, json = opts.json, timeout_ms = timeout_ms,
  })
end

---------------------------------------------------------------------------
-- pipelines and editor stubs

local function param_text(d)
  local t = d.name .. ":" .. d.type .. (d.required and "!" or "")
  if d.default ~= nil then
    local v = type(d.default) == "string" and d.default or json.encode(d.default)
    t = t .. "=" .. v
  end
  if d.min or d.max then t = t .. ("[%s..%s]"):format(d.min or "", d.max or "") end
  return t
end

function M.pipelines(args)
  local opts, pos = begin("pipelines", args, { json = "bool" })
  if not opts then return pos end
  if #pos > 1 then return usage_error("pipelines", "pipelines takes at most one FILE or DIR") end
  local target = pos[1] or "pipelines"
  local uv = require "luv"
  local st = uv.fs_stat(target)
  if not st then
    errf("cannot read %s: no such file or directory", target)
    return 2
  end
  local files = { target }
  if st.type == "directory" then files = require("sluice.serve").lua_files(target) end
  local code, list = 0, json.array({})
  local params = require "sluice.params"
  -- together, as serve loads them: a schedule may name another file's pipeline
  for _, r in ipairs(require("sluice.registry").load_all(files)) do
    if r.err then
      errf("%s", r.kind == "io" and ("cannot read " .. r.err) or (r.traceback or r.err))
      code = 2
    else
      for _, p in ipairs(r.diff.defined or {}) do
        list[#list + 1] = { name = p.name, file = r.file, site = p.site, params = params.describe(p) }
      end
    end
  end
  if opts.json then
    out(json.encode({ pipelines = list }), "\n")
    return code
  end
  local rows = {}
  for i, p in ipairs(list) do
    local ps = {}
    for j, d in ipairs(p.params) do ps[j] = param_text(d) end
    rows[i] = { p.name, p.site, table.concat(ps, " ") }
  end
  table_print({ "PIPELINE", "DEFINED AT", "PARAMETERS" }, rows)
  return code
end

function M.types(args)
  local opts, pos = begin("types", args, {})
  if not opts then return pos end
  if #pos ~= 1 then return usage_error("types", "types needs exactly one DIR") end
  local fs = require "sluice.fs"
  local files = vm.embedded("types/")
  local names = {}
  for path in pairs(files) do names[#names + 1] = path end
  table.sort(names)
  for _, path in ipairs(names) do
    local dest = pos[1] .. "/" .. path:sub(#"types/" + 1)
    local ok, err = fs.mkdir(fs.dirname(dest))
    if ok then ok, err = fs.write(dest, files[path]) end
    if not ok then
      errf("%s", err)
      return 2
    end
    out(dest, "\n")
  end
  return 0
end

--- Entry point from main.c: main(command, args...) -> exit code.
function M.main(cmd, ...)
  local args = { ... }
  local fn = M[cmd]
  local ok, code = xpcall(fn, function(e)
    return debug.traceback(type(e) == "table" and (e.message or tostring(e)) or tostring(e), 2)
  end, args)
  local written = stdout_ok()
  vm.stop()
  if not ok then
    errf("%s", code)
    return 1
  end
  if not written and code == 0 then return 1 end
  return code
end

return M
