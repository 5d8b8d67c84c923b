--- sluice.pg_schema: the schema `sluice` of a PostgreSQL store and its
--- versioned migrations (`sluice store migrate`), applied through sluice._pg.
---
--- Each migration is one transaction: an advisory lock (so hosts migrating
--- at once take turns), a guard that the schema is still at the version
--- before it (else another process migrated meanwhile: re-read and go on),
--- its statements, the new version. A schema newer than the last migration
--- here is refused: this binary would misread it.
---
--- The tables mirror the LMDB databases (host/store_lmdb.h), one table per
--- record type, with the indexes of the store's listings as btree indexes.
--- Migration 1 follows store.h's record sections as they are being written
--- (issue 9); until the PostgreSQL backend ships, no database holds it and
--- it may still change in place. Later migrations are appended (2: which
--- schedules were created over the HTTP API, which every host reads each
--- second, and a new run's lease taken in its creating transaction; 3: the
--- hosts that claim runs), never
--- edited once merged: a store may hold them. Record bodies are `json` (kept as sent,
--- byte for byte: the codec's "\u0000" tags are valid JSON that jsonb would
--- refuse); the fields the listings and scans need are columns beside them.
--- Text keys are COLLATE "C": byte order, as LMDB's, and a prefix is a range.
--- Times the engine writes are microseconds since the epoch (bigint, *_us);
--- the times that hosts compare with each other (heartbeats, lease expiry)
--- are the server's timestamptz, so clock skew between hosts cannot make a
--- lease look expired early.
---
--- Event ids, and why a reader never misses one (issue 15): events.seq is
--- allocated from the row counters('events') with
---   UPDATE sluice.counters SET value = value + n WHERE name = 'events' RETURNING value
--- inside the transaction that inserts the events. The row lock it takes is
--- held until that transaction commits or aborts, so a second transaction
--- allocating ids waits for the first: ids become visible in id order, and a
--- reader that saw id X will never later see a lower id commit (an aborted
--- transaction rolls the counter back too, so there are not even gaps). A
--- per-stream-key lock would order each key only, but consumers read
--- patterns across keys `after` one global id, so the lock is global; a
--- safe watermark (read only below the oldest id still in flight) needs to
--- know the ids of uncommitted transactions, which PostgreSQL does not
--- show, and sequence values commit out of order. The price is that the
--- transactions appending events are serialised across hosts; group commit
--- (pg.c) makes that one lock hold per group of batches, taken by the
--- group's first append and released by its commit, so appends belong late
--- in a batch. sends use counters('sends') the same way. counters('events_ts')
--- is the last event time allocated (us): a batch's times start after it,
--- so times never decrease with ids whatever the hosts' clocks say.
local M = {}

--- Is s a PostgreSQL connection URL (the --store values that select this backend)?
function M.is_url(s)
  return type(s) == "string" and (s:find("^postgres://") or s:find("^postgresql://")) ~= nil
end

-- pg_advisory_xact_lock key of migrations: "sluice" in ASCII
local LOCK = 0x736c75696365

M.migrations = {
  -- 1: every record type of the store, the hosts and their leases
  {
    [[CREATE TABLE sluice.meta (
      name text COLLATE "C" PRIMARY KEY,
      value text NOT NULL)]],
    [[CREATE TABLE sluice.counters (
      name text COLLATE "C" PRIMARY KEY,
      value bigint NOT NULL)]],
    [[INSERT INTO sluice.counters (name, value) VALUES ('events', 0), ('events_ts', 0), ('sends', 0)]],

    -- runs and the indexes of the listings (host/store_pg_runs.c): a run is
    -- one row, its listings (newest first: read backwards) are indexes on its
    -- columns, so they move with the row in its own commit
    [[CREATE TABLE sluice.runs (
      id text COLLATE "C" PRIMARY KEY,
      namespace text COLLATE "C" NOT NULL DEFAULT 'default',
      pipeline text COLLATE "C" NOT NULL,
      status text COLLATE "C" NOT NULL,
      active boolean NOT NULL, -- not completed, failed or cancelled: what serve resumes
      created_at_us bigint NOT NULL,
      record json NOT NULL)]],
    [[CREATE INDEX runs_by_time ON sluice.runs (created_at_us, id)]],
    [[CREATE INDEX runs_by_ns ON sluice.runs (namespace, created_at_us, id)]],
    [[CREATE INDEX runs_by_pipeline ON sluice.runs (namespace, pipeline, created_at_us, id)]],
    [[CREATE INDEX runs_by_status ON sluice.runs (namespace, status, created_at_us, id)]],
    [[CREATE INDEX runs_by_pipeline_status ON sluice.runs (namespace, pipeline, status, created_at_us, id)]],
    [[CREATE INDEX runs_active ON sluice.runs (id) WHERE active]],

    -- one row per step (store.h's store_step: the header fields as columns)
    [[CREATE TABLE sluice.steps (
      run_id text COLLATE "C" NOT NULL,
      step_id text COLLATE "C" NOT NULL,
      status smallint NOT NULL, -- 1 completed, 2 failed, 3 running (in flight)
      attempts bigint NOT NULL,
      position bigint NOT NULL, -- in its branch: the replay's order
      branch text COLLATE "C" NOT NULL,
      started_at_us bigint NOT NULL,
      duration_us bigint NOT NULL,
      payload json, -- the result (NULL: the step returned nil), or the error of a failed step
      PRIMARY KEY (run_id, step_id))]],
    [[CREATE TABLE sluice.logs (
      run_id text COLLATE "C" NOT NULL,
      at_us bigint NOT NULL,
      seq bigint NOT NULL, -- orders the lines of one microsecond
      line json NOT NULL,
      PRIMARY KEY (run_id, at_us, seq))]],
    [[CREATE TABLE sluice.idempotency (
      namespace text COLLATE "C" NOT NULL,
      pipeline text COLLATE "C" NOT NULL,
      key text COLLATE "C" NOT NULL,
      run_id text COLLATE "C" NOT NULL,
      created_at timestamptz NOT NULL DEFAULT now(),
      PRIMARY KEY (namespace, pipeline, key))]],

    -- the stream log: global order by seq, each key in order by (stream, seq)
    [[CREATE TABLE sluice.events (
      seq bigint PRIMARY KEY,
      stream text COLLATE "C" NOT NULL,
      type text NOT NULL,
      ts_us bigint NOT NULL,
      data json NOT NULL)]],
    [[CREATE INDEX events_by_stream ON sluice.events (stream, seq)]],
    [[CREATE INDEX events_by_ts ON sluice.events (ts_us, seq)]],
    [[CREATE TABLE sluice.stream_trims (
      stream text COLLATE "C" PRIMARY KEY,
      horizon bigint NOT NULL)]], -- events of stream up to horizon were trimmed
    [[CREATE TABLE sluice.sends (
      seq bigint PRIMARY KEY,
      record json NOT NULL)]], -- {name, data, ts}
    [[CREATE TABLE sluice.cursors (
      name text COLLATE "C" PRIMARY KEY, -- 'dispatch': how far `on` handlers got in sends
      after bigint NOT NULL)]],
    [[CREATE TABLE sluice.consumers (
      name text COLLATE "C" PRIMARY KEY,
      record json NOT NULL)]], -- {name, pattern, after (the checkpoint), ...}

    [[CREATE TABLE sluice.schedules (
      name text COLLATE "C" PRIMARY KEY,
      record json NOT NULL)]], -- {spec, tz, next and last fire, enabled, ...}
    [[CREATE TABLE sluice.api_keys (
      id text COLLATE "C" PRIMARY KEY,
      record json NOT NULL, -- {name, namespace, role, hash, created_at}
      last_used text)]], -- the key's last use (a time text), apart from the record
    [[CREATE TABLE sluice.namespaces (
      name text COLLATE "C" PRIMARY KEY,
      record json NOT NULL)]],
    [[CREATE TABLE sluice.quotas (
      namespace text COLLATE "C" NOT NULL,
      day date NOT NULL, -- UTC
      runs bigint NOT NULL,
      PRIMARY KEY (namespace, day))]],

    -- several hosts, one queue (lua/hosts.lua, host/store_pg_hosts.c): a
    -- host is alive while expires_at is in the future (its heartbeat moves
    -- it: one statement renews all its leases); it owns what its leases
    -- name. A host once expired never renews (the renewal requires
    -- expires_at > now()): its leases are freed by whichever host reaps it,
    -- under a row lock on the host that the dead host's own commits also
    -- take (sluice.fence), so a commit of the dead host is either before
    -- the takeover or refused.
    [[CREATE TABLE sluice.hosts (
      id text COLLATE "C" PRIMARY KEY, -- unique per process start
      name text NOT NULL, -- the machine's host name
      pid integer,
      started_at timestamptz NOT NULL DEFAULT now(),
      heartbeat_at timestamptz NOT NULL DEFAULT now(),
      expires_at timestamptz NOT NULL,
      info json)]], -- {lease_ms, version, dir}
    [[CREATE TABLE sluice.leases (
      kind text COLLATE "C" NOT NULL, -- 'run', 'consumer', 'dispatch', 'schedules'
      name text COLLATE "C" NOT NULL,
      host_id text COLLATE "C" NOT NULL REFERENCES sluice.hosts (id) ON DELETE CASCADE,
      acquired_at timestamptz NOT NULL DEFAULT now(),
      PRIMARY KEY (kind, name))]],
    [[CREATE INDEX leases_by_host ON sluice.leases (host_id, kind)]],
    -- the first statement of every write transaction of a registered host
    -- (pg.h's prelude): refuses the transaction once the host has expired,
    -- and holds a KEY SHARE lock on its row until the commit, which the
    -- reaper's FOR UPDATE waits for (or skips)
    [[CREATE FUNCTION sluice.fence(host text) RETURNS void LANGUAGE plpgsql AS $$
      BEGIN
        PERFORM 1 FROM sluice.hosts WHERE id = host AND expires_at > now() FOR KEY SHARE;
        IF NOT FOUND THEN
          RAISE EXCEPTION 'sluice host % is not registered any more: its lease expired (no heartbeat in time), so other hosts may have taken its work', host
            USING ERRCODE = 'SLU02';
        END IF;
      END $$]],
  },
  -- 2: schedules created over the HTTP API, found without reading every
  -- schedule: the hosts that do not fire schedules store them, and the one
  -- that fires reads them each second (lua/api/schedules.lua). The flag is
  -- computed from the record's text on each put (host/store_pg.c), not with
  -- a JSON operator, which a record holding \u0000 would make fail; it may
  -- flag more (an input holding that text), never less, and readers check
  -- the record's own source.
  {
    [[ALTER TABLE sluice.schedules ADD COLUMN api boolean NOT NULL DEFAULT false]],
    [[UPDATE sluice.schedules SET api = true WHERE strpos(record::text, '"source":"api"') > 0]],
    [[CREATE INDEX schedules_api ON sluice.schedules (name) WHERE api]],
    -- a new run's lease, in the transaction that creates the run (so no
    -- crash leaves a lease without its run, or the run without its
    -- lease): refuses the transaction when another host holds it
    [[CREATE FUNCTION sluice.hold_run(host text, run text) RETURNS void LANGUAGE plpgsql AS $$
      BEGIN
        INSERT INTO sluice.leases (kind, name, host_id) VALUES ('run', run, host) ON CONFLICT DO NOTHING;
        PERFORM 1 FROM sluice.leases WHERE kind = 'run' AND name = run AND host_id = host;
        IF NOT FOUND THEN
          RAISE EXCEPTION 'sluice run % is leased to another host', run USING ERRCODE = 'SLU03';
        END IF;
      END $$]],
  },
  -- 3: which hosts claim runs (a serve; not a foreground sluice run): a
  -- claim pass takes a backlog's runs up to its share among the live
  -- hosts that claim (host/store_pg_hosts.c). And no index on runs.status:
  -- a run's status changes 3-5 times while it is active (created,
  -- sleeping, running, waiting...), and an update that changes an indexed
  -- column rewrites every index of the row, where one that changes none
  -- is a heap-only (HOT) update, no index touched, given room on the page
  -- (fillfactor). Listings by a final status use final_status (NULL while
  -- active: it changes once, with active), those by an active status the
  -- active runs' index (host/store_pg_runs.c).
  {
    [[ALTER TABLE sluice.hosts ADD COLUMN claims boolean NOT NULL DEFAULT true]],
    [[ALTER TABLE sluice.runs ADD COLUMN final_status text COLLATE "C"
      GENERATED ALWAYS AS (CASE WHEN active THEN NULL ELSE status END) STORED]],
    [[DROP INDEX sluice.runs_by_status]],
    [[DROP INDEX sluice.runs_by_pipeline_status]],
    [[CREATE INDEX runs_by_final ON sluice.runs (namespace, final_status, created_at_us, id) WHERE NOT active]],
    [[CREATE INDEX runs_by_pipeline_final ON sluice.runs (namespace, pipeline, final_status, created_at_us, id)
      WHERE NOT active]],
    [[CREATE INDEX runs_active_by_ns ON sluice.runs (namespace, created_at_us, id) WHERE active]],
    [[ALTER TABLE sluice.runs SET (fillfactor = 80)]],
  },
}

M.latest = #M.migrations

local BOOTSTRAP = {
  { "SELECT pg_advisory_xact_lock($1)", LOCK },
  { "CREATE SCHEMA IF NOT EXISTS sluice" },
  { [[CREATE TABLE IF NOT EXISTS sluice.schema_version (
        one boolean PRIMARY KEY DEFAULT true CHECK (one),
        version integer NOT NULL,
        migrated_at timestamptz NOT NULL DEFAULT now())]] },
  { "INSERT INTO sluice.schema_version (version) VALUES (0) ON CONFLICT DO NOTHING" },
  { "SELECT version FROM sluice.schema_version" },
}

local function newer_msg(v)
  return ("the PostgreSQL store's schema is at version %d, newer than this sluice knows (%d): "
    .. "upgrade sluice, or point --store at another database"):format(v, M.latest)
end

--- The schema version of the database behind c (0: no schema yet), or nil, msg.
function M.version(c)
  local exists, msg = c:query("SELECT to_regclass('sluice.schema_version') IS NOT NULL AS e")
  if not exists then return nil, msg end
  if not exists[1].e then return 0 end
  local rows, msg2 = c:query("SELECT version FROM sluice.schema_version")
  if not rows then return nil, msg2 end
  return rows[1] and rows[1].version or 0
end

--- Brings the schema to the latest version. Returns from, to (the versions
--- before and after what this call applied: equal when it applied nothing,
--- e.g. because another process migrated first) or nil, message, code
--- ("ENEWER" for a schema newer than this binary).
function M.migrate(c)
  local ok, res = c:batch(BOOTSTRAP)
  if not ok then return nil, "creating the schema sluice: " .. res end
  local from = res[#BOOTSTRAP][1].version
  local v, applied = from, false
  if v > M.latest then return nil, newer_msg(v), "ENEWER" end
  while v < M.latest do
    local target = v + 1
    local stmts = {
      { "SELECT pg_advisory_xact_lock($1)", LOCK },
      { ([[DO $$ BEGIN
             IF (SELECT version FROM sluice.schema_version) <> %d THEN
               RAISE EXCEPTION 'the schema moved on meanwhile' USING ERRCODE = 'SLU01';
             END IF;
           END $$]]):format(v) },
    }
    for _, sql in ipairs(M.migrations[target]) do stmts[#stmts + 1] = { sql } end
    stmts[#stmts + 1] = { "UPDATE sluice.schema_version SET version = $1, migrated_at = now()", target }
    local done, msg, _, state = c:batch(stmts)
    if done then
      v, applied = target, true
    elseif state == "SLU01" then
      -- another process migrated: go on from where it left the schema
      local now, msg2 = M.version(c)
      if not now then return nil, msg2 end
      if now > M.latest then return nil, newer_msg(now), "ENEWER" end
      v = now
      if not applied then from = now end
    else
      return nil, ("migrating the PostgreSQL store to version %d: %s"):format(target, msg)
    end
  end
  return from, v
end

--- Nil when the store just opened (sluice._store) can be used, else why not:
--- on PostgreSQL one read, which a database without this binary's schema
--- fails saying to run sluice store migrate (or to upgrade sluice), and a
--- server that cannot be reached fails too. Before a command does anything.
function M.unusable(store)
  if not store.remote() then return nil end
  local last, msg = store.sends_last()
  if last ~= nil then return nil end
  return (tostring(msg):gsub("^%u+: ", ""))
end

--- Nil if the schema is the one this binary knows, else why not (a store
--- backend refuses to start on it).
function M.check(c)
  local v, msg = M.version(c)
  if not v then return msg end
  if v > M.latest then return newer_msg(v) end
  if v < M.latest then
    return ("the PostgreSQL store's schema is at version %d, this sluice needs %d: "
      .. "run sluice store migrate --store URL"):format(v, M.latest)
  end
  return nil
end

return M
