#!/bin/bash
# bench/pg_steps.sh [REPS=3]: sluice on PostgreSQL against DBOS Transact on
# the SAME PostgreSQL 15 instance, and that instance's own commit rate
# (issue 15's benchmark). One session: a private PostgreSQL on
# 127.0.0.1:$PG_BENCH_PORT (default 55434; data and socket in a temp dir;
# default durability: fsync=on, synchronous_commit=on), then per repetition,
# interleaved:
#   pgbench insert   64 clients, one small INSERT (autocommit) per transaction,
#                    PGB_SECS s (default 10), -M prepared: the commit rate
#   pgbench tpcb     the default TPC-B-like script, 64 clients, scale 10
#   sluice inproc    `sluice bench/steps.lua conc R R*K --store postgres://...`:
#                    R runs in one process (no host registration), new binary,
#                    and BASE_BIN too if set (before/after a change; serve x1
#                    and x3 too: new then base, each on a database its own
#                    binary migrated, so a base that knows an older schema runs)
#   sluice serve x1  bench/pg_serve.py: one `sluice serve bench/pg_pipes`,
#                    runs created over HTTP, all starting at one instant
#   dbos             bench/dbos/conc.mjs R K (DBOS 5.3.0, its default pool of 10)
#   sluice serve x3  three hosts on one database, the runs round robin
# (ONLY="pgbench inproc serve1 dbos serve3" selects a subset; PERF_PG=FILE
# records `perf record -g` of the server's processes, new backends too, over
# the session: `perf report -i FILE --no-children`; PG_STATEMENTS=FILE writes
# pg_stat_statements' top 40 of the sluice databases there at the end)
# for each shape R x K in SHAPES (default "64x200,1000x20": the same R and K
# for sluice and DBOS). Every line goes to bench/out/pg-session-STAMP.jsonl
# (and bench/out/{pg_steps,steps,dbos}.jsonl); the tables come from
# `python3 bench/pg_summarize.py bench/out/pg-session-STAMP.jsonl`.
# The binary measured: $SLUICE_BIN, else a build of `git archive HEAD`
# (lib.sh sluice_binary). Each measurement records the others' CPU meanwhile
# (lib.sh noise_*) and the load average; GATE=1 waits for a quiet machine
# first (QUIET_MAX s). Bounded: each command under `timeout`; every process
# started here is stopped by its PID when the script exits, whatever the
# reason. Needs: postgresql-15 (pgbench, psql), node >= 20 (bench/dbos).
set -euo pipefail
BENCH_DIR=$(cd "$(dirname "$0")" && pwd)
REPO=$(cd "$BENCH_DIR/.." && pwd)
. "$BENCH_DIR/lib.sh"
REPS=${1:-3}
PORT=${PG_BENCH_PORT:-55434}
SHAPES=${SHAPES:-64x200,1000x20}
ONLY=${ONLY:-"pgbench inproc serve1 dbos serve3"} # a subset of the measurements
PGB_SECS=${PGB_SECS:-10}
CMD_TIMEOUT=${CMD_TIMEOUT:-600}
PGBIN=/usr/lib/postgresql/15/bin
STAMP=$(date -u +%Y%m%dT%H%M%SZ)
OUT=$BENCH_DIR/out
mkdir -p "$OUT"
export BENCH_OUT=$OUT BENCH_SESSION=pg-$STAMP SESSION_OUT=$OUT/pg-session-$STAMP.jsonl
log() { echo "[$(date -u +%T)] $*" >&2; }
emit() { echo "$1"; echo "$1" >> "$SESSION_OUT"; echo "$1" >> "$OUT/pg_steps.jsonl"; }

sluice_binary # BIN, REV (exported as SLUICE_BIN, SLUICE_GIT_REV)
NEW_BIN=$BIN NEW_REV=$REV
BASE_BIN=${BASE_BIN:-}
BASE_REV=${BASE_REV:-base}

DBOS=0; [[ " $ONLY " == *" dbos "* ]] && DBOS=1 # DBOS and node only when measured
if [ $DBOS = 1 ]; then
  command -v node >/dev/null || { echo "pg_steps.sh: node (>= 20) is needed for DBOS" >&2; exit 2; }
  if [ ! -f "$BENCH_DIR/dbos/node_modules/.package-lock.json" ]; then
    (cd "$BENCH_DIR/dbos" && npm ci --no-audit --no-fund --loglevel=error >&2)
  fi
fi
if ss -ltn 2>/dev/null | awk '{print $4}' | grep -qE "[:.]$PORT\$"; then
  echo "pg_steps.sh: port $PORT is in use; set PG_BENCH_PORT" >&2
  exit 2
fi

# ---- a private PostgreSQL 15 (as bench/dbos/run.sh: TCP on 127.0.0.1 for DBOS) ----
PGROOT=$(mktemp -d "${TMPDIR:-/tmp}/sluice-pgbench.XXXXXX")
chmod 755 "$PGROOT"
export PGDATA_BENCH=$PGROOT/data
PGPID= CHILD= PERFPID=
as_pg() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- bash -c "$1"; else bash -c "$1"; fi; }
cleanup() {
  local rc=$?
  if [ -n "$PERFPID" ] && kill -0 "$PERFPID" 2>/dev/null; then
    kill -INT "$PERFPID" 2>/dev/null || true # perf writes its file on SIGINT
    for _ in $(seq 1 100); do kill -0 "$PERFPID" 2>/dev/null || break; sleep 0.1; done
  fi
  if [ -n "$CHILD" ] && kill -0 "$CHILD" 2>/dev/null; then
    kill -TERM "$CHILD" 2>/dev/null || true
    for _ in $(seq 1 100); do kill -0 "$CHILD" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$CHILD" 2>/dev/null || true
  fi
  if [ -n "$PGPID" ] && kill -0 "$PGPID" 2>/dev/null; then
    kill -INT "$PGPID" 2>/dev/null || true # fast shutdown
    for _ in $(seq 1 300); do kill -0 "$PGPID" 2>/dev/null || break; sleep 0.1; done
    if kill -0 "$PGPID" 2>/dev/null; then kill -QUIT "$PGPID" 2>/dev/null || true; sleep 1; fi
    log "postgres (pid $PGPID) stopped"
  fi
  rm -rf "$PGROOT"
  exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM
# a command in the background, waited for, so the trap can stop it by PID
run() { timeout "$CMD_TIMEOUT" "$@" & CHILD=$!; wait "$CHILD"; local rc=$?; CHILD=; return $rc; }

if [ "$(id -u)" = 0 ]; then chown postgres: "$PGROOT"; fi
as_pg "$PGBIN/initdb -D '$PGDATA_BENCH' -U postgres --auth=trust -E UTF8 --locale=C.UTF-8 >'$PGROOT/initdb.log' 2>&1"
mkdir -p "$PGROOT/sock" && { [ "$(id -u)" != 0 ] || chown postgres: "$PGROOT/sock"; }
cat >> "$PGDATA_BENCH/postgresql.conf" <<EOF
listen_addresses = '127.0.0.1'
port = $PORT
unix_socket_directories = '$PGROOT/sock'
max_connections = 150
track_wal_io_timing = on
EOF
if [ -n "${PG_STATEMENTS:-}" ]; then # per statement time (pg_stat_statements), dumped at the end
  printf '%s\n' "shared_preload_libraries = 'pg_stat_statements'" "pg_stat_statements.track = all" >> "$PGDATA_BENCH/postgresql.conf"
fi
as_pg "$PGBIN/pg_ctl -D '$PGDATA_BENCH' -l '$PGROOT/pg.log' -w -t 60 start >/dev/null"
PGPID=$(head -1 "$PGDATA_BENCH/postmaster.pid")
PSQL=(psql -X -h 127.0.0.1 -p "$PORT" -U postgres -v ON_ERROR_STOP=1 -qAt)
PGVER=$("$PGBIN/postgres" --version)
if [ -n "${PERF_PG:-}" ]; then # a call-graph profile of every PostgreSQL process, into $PERF_PG
  perf record -q -g -F "${PERF_FREQ:-999}" -p "$PGPID" -o "$PERF_PG" >/dev/null 2>&1 &
  PERFPID=$!
fi
SETTINGS=$("${PSQL[@]}" -c 'show fsync' -c 'show synchronous_commit' -c 'show wal_sync_method' -c 'show shared_buffers' | tr '\n' ' ')
log "postgres pid $PGPID on 127.0.0.1:$PORT ($PGVER): fsync, synchronous_commit, wal_sync_method, shared_buffers = $SETTINGS"
emit "{\"kind\":\"session\",\"session\":\"$BENCH_SESSION\",\"at\":\"$(date -u +%FT%TZ)\",\"new_rev\":\"$NEW_REV\",\"base_rev\":\"${BASE_BIN:+$BASE_REV}\",\"postgres\":\"$PGVER\",\"settings\":\"$SETTINGS\",\"shapes\":\"$SHAPES\",\"nproc\":$(nproc),\"loadavg\":\"$(cut -d' ' -f1-3 /proc/loadavg)\"}"

# the disk's flush, as PostgreSQL's WAL does it (8 kB write + fdatasync), once
FSYNC=$(cd "$PGROOT" && "$PGBIN/pg_test_fsync" -s 2 -f "$PGROOT/fsync.test" 2>/dev/null | awk '/^Compare file sync methods using one 8kB write/{f=1} f && $1 == "fdatasync" {print $2, $4; exit}')
emit "{\"bench\":\"pg_test_fsync\",\"session\":\"$BENCH_SESSION\",\"fdatasync_8k_ops_per_s\":${FSYNC% *},\"usecs_per_op\":${FSYNC#* },\"loadavg\":\"$(cut -d' ' -f1-3 /proc/loadavg)\"}"

url() { echo "postgres://postgres@127.0.0.1:$PORT/$1"; }
fresh_db() { # NAME [BIN]: a new database with the sluice schema of BIN (default the new one)
  "${PSQL[@]}" -c "DROP DATABASE IF EXISTS $1" -c "CREATE DATABASE $1"
  "${2:-$NEW_BIN}" store migrate --store "$(url "$1")" >/dev/null
}
measure() { # LABEL CMD...: gate, noise record around it
  local label=$1; shift
  [ "${GATE:-0}" = 1 ] && quiet_gate
  noise_begin
  if declare -F "$1" >/dev/null; then "$@"; else run "$@"; fi
  noise_end "$label"
}
xid() { "${PSQL[@]}" -d pgb -c "SELECT pg_snapshot_xmax(pg_current_snapshot())"; }

# pgbench: its tables once, untimed
"${PSQL[@]}" -c "CREATE DATABASE pgb"
"${PSQL[@]}" -d pgb -c "CREATE TABLE ins (id bigserial PRIMARY KEY, c int NOT NULL, v text NOT NULL, at timestamptz NOT NULL DEFAULT now())"
PGB_SCRIPT=$PGROOT/insert.sql
printf '%s\n' '\set c random(1, 64)' "INSERT INTO ins (c, v) VALUES (:c, 'a small row');" > "$PGB_SCRIPT"
chmod 644 "$PGB_SCRIPT"
if [[ " $ONLY " == *" pgbench "* ]]; then # TPC-B's tables only when pgbench is measured
  run pgbench -h 127.0.0.1 -p "$PORT" -U postgres -i -s 10 -q pgb >/dev/null 2>&1
fi
pgb() { # LABEL ARGS...: one pgbench run, its tps as a JSON line
  local label=$1; shift
  local x0 x1 t0 t1 o
  x0=$(xid); t0=$(now_ns)
  o=$(pgbench -h 127.0.0.1 -p "$PORT" -U postgres -n -M prepared -c 64 -j 2 -T "$PGB_SECS" "$@" pgb 2>&1)
  t1=$(now_ns); x1=$(xid)
  local tps lat
  tps=$(sed -n 's/^tps = \([0-9.]*\) .*/\1/p' <<<"$o")
  lat=$(sed -n 's/^latency average = \([0-9.]*\) ms/\1/p' <<<"$o")
  [ -n "$tps" ] || { echo "$o" >&2; return 1; }
  emit "{\"bench\":\"pgbench\",\"mode\":\"$label\",\"session\":\"$BENCH_SESSION\",\"at\":\"$(date -u +%FT%TZ)\",\"clients\":64,\"secs\":$PGB_SECS,\"tps\":$tps,\"latency_ms\":$lat,\"write_xacts_per_s\":$(awk -v a="$x0" -v b="$x1" -v t="$t0" -v u="$t1" 'BEGIN{printf "%.1f", (b-a)/((u-t)/1e9)}'),\"loadavg\":\"$(cut -d' ' -f1-3 /proc/loadavg)\"}"
}

export DBOS_PG_PORT=$PORT DBOS_LOG_LEVEL=${DBOS_LOG_LEVEL:-warn} NODE_OPTIONS="${NODE_OPTIONS:-} --no-deprecation"
if [ $DBOS = 1 ]; then
  log "DBOS: database and schema on its first launch (untimed)"
  cd "$BENCH_DIR/dbos"; run node steps.mjs 10 0 >/dev/null; cd "$REPO"
fi

IFS=, read -r -a shapes <<<"$SHAPES"
for rep in $(seq 1 "$REPS"); do
  log "repetition $rep of $REPS (load $(cut -d' ' -f1-3 /proc/loadavg))"
  on() { [[ " $ONLY " == *" $1 "* ]]; }
  if on pgbench; then
    measure "pgbench.insert#$rep" pgb insert -f "$PGB_SCRIPT"
    measure "pgbench.tpcb#$rep" pgb tpcb
  fi
  for which in new base; do
    on inproc || continue
    if [ $which = new ]; then b=$NEW_BIN r=$NEW_REV; else b=$BASE_BIN r=$BASE_REV; fi
    [ -n "$b" ] || continue
    fresh_db "sl_${which}_$rep" "$b"
    for s in "${shapes[@]}"; do
      R=${s%x*} K=${s#*x}
      SLUICE_GIT_REV=$r measure "sluice.inproc.$which.$s#$rep" \
        "$b" "$BENCH_DIR/steps.lua" conc "$R" $((R * K)) --store "$(url "sl_${which}_$rep")" --tag "pg:$which"
    done
  done
  # serve x1 (and x3 below) of the new binary, then of BASE_BIN if set
  serve() { # HOSTS
    local which b r sfx
    for which in new base; do
      if [ $which = new ]; then b=$NEW_BIN r=$NEW_REV sfx=; else b=$BASE_BIN r=$BASE_REV sfx=.base; fi
      [ -n "$b" ] || continue
      fresh_db "sl_serve$1${sfx/./_}_$rep" "$b"
      SLUICE_GIT_REV=$r measure "sluice.serve$1$sfx#$rep" python3 "$BENCH_DIR/pg_serve.py" --bin "$b" \
        --url "$(url "sl_serve$1${sfx/./_}_$rep")" --hosts "$1" --shapes "$SHAPES" --label "serve$1$sfx" --pg-pid "$PGPID"
    done
  }
  if on serve1; then serve 1; fi
  for s in "${shapes[@]}"; do
    on dbos || continue
    R=${s%x*} K=${s#*x}
    cd "$BENCH_DIR/dbos" # no subshell: the trap must see CHILD
    measure "dbos.conc.$s#$rep" node conc.mjs "$R" "$K" 1
    cd "$REPO"
  done
  on serve3 || continue
  serve 3
done
if [ -n "${PG_STATEMENTS:-}" ]; then
  for d in $("${PSQL[@]}" -c "SELECT datname FROM pg_database WHERE datname LIKE 'sl_%' ORDER BY 1"); do
    "${PSQL[@]}" -d "$d" -c "CREATE EXTENSION IF NOT EXISTS pg_stat_statements" >/dev/null
  done
  "${PSQL[@]}" -d "$d" -F $'\t' -c "SELECT d.datname, s.calls, round(s.total_exec_time::numeric, 1) AS ms, round((1000 * s.total_exec_time / s.calls)::numeric, 1) AS us_per_call, s.rows, s.plans, left(regexp_replace(s.query, '\s+', ' ', 'g'), 160) FROM pg_stat_statements s JOIN pg_database d ON d.oid = s.dbid WHERE d.datname LIKE 'sl_%' ORDER BY s.total_exec_time DESC LIMIT 40" > "$PG_STATEMENTS"
  log "statements: $PG_STATEMENTS"
fi
log "done: python3 bench/pg_summarize.py $SESSION_OUT"
