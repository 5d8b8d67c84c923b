--- sluice.hosts: several `sluice serve` processes sharing one PostgreSQL
--- store and one queue of runs (issue 15). Absent on an LMDB store: one
--- host per store there (its lock file), nothing to share.
---
--- A host registers itself (sluice.hosts: an id per process start, the
--- machine's name, the pid) and renews its registration every third of the
--- lease duration (--lease, $SLUICE_LEASE, default 30s); it owns what its
--- leases name, for as long as it renews in time. The expiry is the
--- server's clock (host/store_pg_hosts.c). A host executes a run only while
--- it holds the run's lease: it takes it before the run starts (a run it
--- creates, one resumed, one another host gave up), or claims runs that
--- nobody holds in its claim pass (each poll tick: FOR UPDATE SKIP LOCKED,
--- so two hosts never claim one), and gives it up when the run ends. A host
--- that dies (SIGKILL, a lost machine) stops renewing; once its lease
--- expired, the next claim pass of any host frees its leases and the runs
--- are claimed and resumed elsewhere, replaying their stored steps. A host
--- that finds its own registration expired (it could not renew for a whole
--- lease: PostgreSQL out of reach, the process stalled) stops at once: its
--- work may be elsewhere now, and every write it would still make is
--- refused by the fence (each of its write transactions checks that it is
--- alive, holding a lock that the takeover waits for).
---
--- A run another host cancelled (it wrote the record: the store keeps the
--- cancel whatever this host writes meanwhile) is stopped here at the next
--- poll tick: each tick also asks which runs this host holds are cancelled.
---
--- The singletons have a lease each, held for as long as the host lives:
--- 'dispatch' (one host dispatches sends to `on` handlers: one cursor over
--- one log, moved in the commit that creates the handlers' runs, so a
--- single dispatcher is both simplest and exact), 'schedules' (one host
--- fires every schedule: a fire, the record that moves the schedule past
--- it and the overlap policy's view of the runs in flight stay on one
--- host) and 'consumer' per consumer name (its batches, one at a time).
--- The others wait, retrying each poll tick, and take over when the holder
--- goes.
local ids = require "sluice._ids"
local store = require "sluice._store"
local H = require "sluice._hosts"
local engine = require "sluice.engine"
local errors = require "sluice.errors"
local sched = require "sluice.sched"
local uv = require "luv"

local M = {}

M.DEFAULT_LEASE_MS = 30000
M.CLAIM_MAX = 64 -- runs claimed in one pass at most

--- The lease duration in ms: the --lease value, else $SLUICE_LEASE, else
--- 30s. Raises with a message naming where a bad value came from.
function M.lease_ms(option)
  local v, what = option, "--lease"
  if v == nil then v, what = os.getenv("SLUICE_LEASE"), "SLUICE_LEASE" end
  if v == nil or v == "" then return M.DEFAULT_LEASE_MS end
  local ms = require("sluice.duration").ms(v, what)
  if ms < 1000 then error(("%s: a lease must last at least 1s, got %s"):format(what, v), 0) end
  return math.floor(ms)
end

local S -- this host while registered: {id=, lease_ms=, poll_ms=, log=, ...}
local held = {} -- run id -> true: leases this host holds on runs
M.active = false -- registered (a PostgreSQL store, between start and deregister)
M.id, M.lease = nil, nil -- this host's id and lease duration (ms) once registered
M.poll_ms = nil -- how often it looks at the store for others' work (ms), once registered

-- Sleeps ms (not durable); stop() cuts it short.
local function nap(ms)
  local me = coroutine.running()
  local t = uv.new_timer()
  S.naps[me] = t
  t:start(math.max(1, math.floor(ms)), 0, function()
    t:close()
    S.naps[me] = nil
    sched.wake(me)
  end)
  sched.wait()
end

-- A host that stopped (or expired) never takes anything again: its
-- waiters stay suspended until the process exits.
local function parked()
  if S.stopped then sched.wait() end
end

local FINAL = engine.FINAL

local function flush_releases()
  if S.flushing or #S.release_q == 0 then return end
  S.flushing = true
  sched.spawn({}, function()
    while #S.release_q > 0 and not S.gone do
      local names = S.release_q
      S.release_q = {}
      -- a lease left on a finished run is harmless (claims take active
      -- runs only) and goes with this host's row at exit
      local ok, err = H.release(S.id, "run", names)
      if not ok then S.log("releasing the leases of %d ended run(s): %s", #names, err) end
    end
  end, function(ok, e)
    S.flushing = false
    if not ok then S.log("releasing run leases: %s", errors.describe(e)) end
  end)
end

--- Waits until this host holds lease (kind, name); true once it does,
--- false when the host stops or stopped() says so first. Says once in the
--- log which host has it meanwhile.
function M.hold(kind, name, stopped)
  local said
  while not S.stopped and not (stopped and stopped()) do
    local holder, err, code = H.take(S.id, kind, name)
    if holder == S.id then
      if said then S.log("%s %s: taken over (host %s had it)", kind, name, said) end
      return true
    end
    if holder and holder ~= said then
      S.log("%s %s: host %s has it; this host takes over if that one stops", kind, name, holder)
      said = holder
    elseif not holder and code ~= "EIO" then
      errors.store(("%s %s: taking its lease"):format(kind, name), err, code)
    end
    nap(S.poll_ms)
  end
  return false
end

--- Gives up lease (kind, name) (a consumer removed by a reload).
function M.release(kind, name)
  if not S or S.gone then return end
  local ok, err = H.release(S.id, kind, { name })
  if not ok then S.log("%s %s: releasing its lease: %s", kind, name, err) end
end

-- engine.leases.take: the run's lease, before it executes here. Returns
-- true when it had to wait (another host held it: the run may have moved
-- on meanwhile).
local function take_run(id)
  if held[id] then return false end
  local waited = false
  while true do
    parked()
    local holder, err, code = H.take(S.id, "run", id)
    if holder == S.id then
      held[id] = true
      return waited
    end
    -- another host holds it (it runs there: wait for its end or its
    -- death); a connection lost is retried; anything else is the run's error
    if not holder and code ~= "EIO" then errors.store("run " .. id .. ": taking its lease", err, code) end
    waited = true
    nap(S.poll_ms)
  end
end

-- engine.leases.hold_new: the lease of run id, about to be created, in
-- the batch b that creates it: one transaction, so no crash leaves a lease
-- without its run or the run without its lease. Another host holding it
-- fails the commit (as a commit lost: the engine executes the run again,
-- then waiting for that host through take_run).
local function hold_new(id, b)
  held[id] = true
  H.hold_run(b, S.id, id)
end

-- engine.leases.forget: the batch of hold_new did not commit
local function forget(id) held[id] = nil end

-- gives the lease of run id back (one statement for those queued)
local function give_back(id)
  held[id] = nil
  S.release_q[#S.release_q + 1] = id
  flush_releases()
end

-- engine.leases.ended: a run that executed here ended (rec: its record,
-- nil when it did not reach an end: cut off, or its store failed).
local function run_ended(id, rec)
  if held[id] and rec and FINAL[rec.status] then give_back(id) end
end

local function pipeline_names()
  local names = {}
  for name in pairs(engine.pipelines) do names[#names + 1] = name end
  table.sort(names)
  return names
end

-- One claim pass: frees the leases of dead hosts, claims runs nobody
-- holds and launches them. After a claim whose outcome is unknown (the
-- connection went), the runs leased here are read back, so none stays
-- leased without executing.
--
-- A pass takes this host's share of a backlog (runs created without a
-- host, a dead host's runs): what the live hosts that claim hold plus the
-- backlog, over their number, less what this host holds
-- (store_pg_hosts.c), so the backlog spreads over the hosts rather than
-- going to the first that polls. At least S.floor runs: 1, so a backlog
-- drains; doubled (up to CLAIM_MAX) each pass once the backlog the passes
-- leave has been untouched by the others for a whole lease: a host that
-- stalled that long is no longer counted, so the others do not serve the
-- backlog's pipeline, and this host takes it at the old pace.
local function claim_pass()
  local res, err, code = H.claim(S.id, pipeline_names(), M.CLAIM_MAX, S.floor)
  if not res then
    if code == "EIO" then S.resync = true end
    if not S.said_claim then S.log("claiming runs: %s; trying again each %dms", err, S.poll_ms) end
    S.said_claim = true
    return
  end
  S.said_claim = false
  local runs = res.runs
  if S.left > 0 and res.free >= S.left then -- nobody took from what the last pass left
    S.untouched = S.untouched or uv.now()
    if uv.now() - S.untouched >= S.lease_ms then S.floor = math.min(S.floor * 2, M.CLAIM_MAX) end
  else
    S.untouched, S.floor = nil, 1
  end
  S.left = res.free - #runs
  if S.resync then
    local mine = H.runs(S.id)
    if mine then
      S.resync = false
      for _, r in ipairs(mine) do
        if not engine.active[r.id] then runs[#runs + 1] = r end
      end
    end
  end
  for _, r in ipairs(runs) do
    -- the claim brings the whole record (store_pg_hosts.c: no JSON operator
    -- on it in SQL); the launch needs its schedule only
    r.schedule = type(r.record) == "table" and r.record.schedule or nil
    r.record = nil
    held[r.id] = true
    if engine.pipelines[r.pipeline] then
      S.launch(r)
    else -- removed by a reload since the claim read the names: back to the queue
      give_back(r.id)
    end
  end
  return #runs
end

-- The runs this host holds that another host cancelled (it wrote their
-- records, which keep the cancel whatever this host writes meanwhile:
-- host/store_pg_runs.c): stopped here, as a cancel on this host would.
local function cancel_pass()
  if next(held) == nil then return end
  local list = H.cancelled(S.id)
  if not list then return end -- the next tick asks again
  for _, id in ipairs(list) do
    local a = engine.active[id]
    if a and a.run.cancelling then -- engine.cancel stops it once the cancel is stored
    elseif a then
      -- as engine.cancel, without storing the cancel again; its end gives the lease back
      engine.stop_run(a.run, "cancelled", "cancelled")
    else
      give_back(id)
    end
  end
end

-- Until when (uv.hrtime, ns) this host's lease surely holds: a lease of
-- lease_ms from before the last renewal that succeeded was sent (the
-- server's expiry is later still). Only durations on this machine's
-- monotonic clock: no clocks compared across machines. A clock that goes
-- slower than the server's by more than the margin a renewal leaves (a
-- third of the lease, as they are sent) would still be wrong.
local function renewed_at(sent_ns) S.valid_until = sent_ns + S.lease_ms * 1000000 end

-- engine.leases.lapsed: whether this host may have lost its lease (it did
-- not renew in time: the process stalled, PostgreSQL out of reach); then it
-- starts no step until the heartbeat settles it. A host that wakes from a
-- stall past its lease learns of it here before any round trip could tell
-- it: the step it would start next may have completed on the host that
-- took the run over.
local function lapsed() return uv.hrtime() >= S.valid_until end

local function heartbeat()
  local every = math.max(100, S.lease_ms // 3)
  local trouble -- since when renewing fails (loop ms), nil while it works
  while not S.stopped do
    nap(every)
    if S.stopped then break end
    local sent = uv.hrtime()
    local alive, err = H.renew(S.id, S.lease_ms)
    if alive then
      renewed_at(sent)
      if trouble then S.log("lease renewed again after %.1fs without", (uv.now() - trouble) / 1000) end
      trouble = nil
    elseif alive == false then
      M.stop()
      S.gone = true
      S.on_lost(("this host's registration %s expired: no heartbeat reached PostgreSQL within its "
        .. "lease (%.1fs); other hosts may run its work now, so it stops"):format(S.id, S.lease_ms / 1000))
      return
    else
      if not trouble then
        trouble = uv.now()
        S.log("renewing this host's lease: %s; retrying every %.1fs (lease %.1fs)", err, every / 1000,
          S.lease_ms / 1000)
      end
    end
  end
end

local function work(claim)
  while not S.stopped do
    local ok, e = true, nil
    if claim then ok, e = pcall(claim_pass) end
    if not ok then S.log("claiming runs: %s", errors.describe(e)) end
    ok, e = pcall(cancel_pass)
    if not ok then S.log("stopping runs cancelled elsewhere: %s", errors.describe(e)) end
    nap(S.poll_ms)
  end
end

-- The host id the state dir remembers (false: none), after making it
-- remember id; or nil and why not.
local function previous_host(state, id)
  local path = state .. "/host"
  local f = io.open(path)
  local prev = f and f:read("l")
  if f then f:close() end
  local tmp = path .. ".tmp"
  local w, err = io.open(tmp, "w")
  local ok = w and w:write(id, "\n")
  ok = ok and w:close()
  if ok then ok, err = os.rename(tmp, path) end
  if not ok then return nil, ("remembering this host in %s: %s"):format(path, tostring(err)) end
  return prev ~= nil and prev ~= "" and prev ~= id and prev
end

--- Registers this process as a host of the PostgreSQL store open (does
--- nothing and returns nil on LMDB) and starts its heartbeat and claim
--- passes. opts: {lease_ms=, poll_ms= (default: a second, or less for a
--- short lease), log = printf-style, launch = function({id=, pipeline=,
--- schedule=}) for each run claimed, claim = false for a host that only
--- executes the runs it is given (sluice run), on_lost = function(message)
--- when the registration expired, info = a table stored with the host,
--- state = the state dir whose writer lock the caller holds}. Returns the
--- host id, or nil and why not.
---
--- The state dir remembers the host that last used it: holding its lock,
--- this process knows that host is gone (killed, or exited), so it ends
--- that host's lease at once instead of letting its runs wait for the
--- expiry: a serve restarted on the same machine resumes its runs as soon
--- as on LMDB.
function M.start(opts)
  if not store.remote() then return nil end
  local lease_ms = opts.lease_ms or M.lease_ms()
  local hostname = uv.os_gethostname() or "?"
  local pid = math.tointeger(uv.os_getpid())
  local id = ("%s:%d:%s"):format(hostname, pid, ids.new_id():sub(-6):lower())
  local info = { lease_ms = lease_ms }
  for k, v in pairs(opts.info or {}) do info[k] = v end
  local prev, perr = false, nil
  if opts.state then
    prev, perr = previous_host(opts.state, id)
    if prev == nil then return nil, perr end
  end
  local sent = uv.hrtime()
  local ok, err = H.register({ id = id, name = hostname, pid = pid, lease_ms = lease_ms, info = info,
    claims = opts.claim ~= false })
  if not ok then return nil, ("registering this host in %s: %s"):format(store.dir(), err) end
  H.fence(id)
  if prev then
    ok, err = H.expire(prev)
    if not ok then return nil, ("ending the lease of host %s (this state dir's last): %s"):format(prev, err) end
  end
  S = {
    id = id, lease_ms = lease_ms, poll_ms = opts.poll_ms or math.min(1000, lease_ms // 3),
    log = opts.log or function() end, launch = opts.launch or function() end,
    on_lost = opts.on_lost or function(msg) error(msg, 0) end,
    naps = {}, release_q = {}, floor = 1, left = 0,
  }
  renewed_at(sent)
  M.id, M.active, M.lease, M.poll_ms = id, true, lease_ms, S.poll_ms
  engine.leases = { take = take_run, ended = run_ended, hold = M.hold, release = M.release, hold_new = hold_new,
    forget = forget, lapsed = lapsed }
  local function report(what)
    return function(ok2, e) if not ok2 then S.log("%s stopped: %s", what, errors.describe(e)) end end
  end
  sched.spawn({}, heartbeat, report("the heartbeat"))
  sched.spawn({}, work, report("the claim passes"), opts.claim ~= false)
  return id
end

--- Stops the heartbeat, the claim passes and every wait for a lease (the
--- host is shutting down); the registration stays until deregister().
function M.stop()
  if not S or S.stopped then return end
  S.stopped = true
  for co, t in pairs(S.naps) do
    if not t:is_closing() then t:close() end
    S.naps[co] = nil
    sched.wake(co)
  end
end

--- Deletes this host's registration and with it its leases: other hosts
--- claim its unfinished runs at their next pass. The last thing a host
--- does: its writes are refused from here on.
function M.deregister()
  if not S or S.gone then return true end
  M.stop()
  S.gone = true
  engine.leases = nil
  M.active = false
  local ok, err = H.deregister(S.id)
  if not ok then return nil, ("deregistering host %s: %s"):format(S.id, err) end
  return true
end

return M
