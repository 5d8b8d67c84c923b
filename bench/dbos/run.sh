#!/bin/bash
# bench/dbos/run.sh [REPS=3]: the DBOS Transact peer, same session as the sluice numbers.
#
# Installs what it needs (apt postgresql-15 if missing, `npm ci` of the pinned
# @dbos-inc/dbos-sdk 5.3.0), starts a private PostgreSQL 15 cluster on
# 127.0.0.1:$DBOS_PG_PORT (default 55432; data and socket in a temp dir; default
# durability: fsync=on, synchronous_commit=on), runs each workload REPS times
# (a quiet gate before each, GATE=0 to skip), prints one JSON line per
# measurement (also appended to bench/out/dbos.jsonl), and stops PostgreSQL by
# its postmaster PID when it exits, whatever the reason (trap).
#
# Workloads (one warm-up inside each invocation, then one measured run):
#   steps.mjs 1000          one workflow of 1,000 trivial steps: per-step latency, steps/s
#   workflows.mjs 1000 C    1,000 workflows of 3 steps at concurrency C = 32, 64
#   conc.mjs R K            R workflows of K steps all at once (R = 64, 1000)
#   recovery.mjs 10000      10,000-step workflow killed at 5,000, restart -> completion
#   memory.mjs 12           RSS of the idle DBOS process and of the Postgres cluster
# ONLY="steps workflows conc recovery memory" selects a subset.
# Bounded: every node invocation runs under `timeout` (NODE_TIMEOUT s, default 600).
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
BENCH_DIR=$(cd "$HERE/.." && pwd)
. "$BENCH_DIR/lib.sh"
REPS=${1:-3}
PORT=${DBOS_PG_PORT:-55432}
ONLY=${ONLY:-"steps workflows conc recovery memory"}
NODE_TIMEOUT=${NODE_TIMEOUT:-600}
PGBIN=/usr/lib/postgresql/15/bin
export BENCH_OUT=${BENCH_OUT:-$BENCH_DIR/out}
mkdir -p "$BENCH_OUT"
cd "$HERE"

# ---- install -------------------------------------------------------------
if [ ! -x "$PGBIN/postgres" ]; then
  echo "installing postgresql (apt)" >&2
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null
fi
command -v node >/dev/null || { echo "run.sh: node (>= 20) is needed: apt-get install nodejs npm" >&2; exit 2; }
if [ ! -f node_modules/.package-lock.json ] || ! cmp -s <(sed -n '/"node_modules\/@dbos-inc\/dbos-sdk"/,/}/p' package-lock.json) \
     <(sed -n '/"node_modules\/@dbos-inc\/dbos-sdk"/,/}/p' node_modules/.package-lock.json); then
  echo "npm ci (@dbos-inc/dbos-sdk 5.3.0)" >&2
  npm ci --no-audit --no-fund --loglevel=error >&2
fi

# ---- a private PostgreSQL cluster -----------------------------------------
if ss -ltn 2>/dev/null | awk '{print $4}' | grep -qE "[:.]$PORT\$"; then
  echo "run.sh: port $PORT is in use; set DBOS_PG_PORT" >&2
  exit 2
fi
PGROOT=$(mktemp -d "${TMPDIR:-/tmp}/sluice-bench-pg.XXXXXX")
chmod 755 "$PGROOT"
export PGDATA_BENCH=$PGROOT/data
PGPID=
as_pg() { if [ "$(id -u)" = 0 ]; then su postgres -s /bin/bash -c "$1"; else bash -c "$1"; fi; }
stop_pg() {
  local rc=$?
  if [ -n "$PGPID" ] && kill -0 "$PGPID" 2>/dev/null; then
    kill -INT "$PGPID" 2>/dev/null || true # fast shutdown
    for _ in $(seq 1 300); do kill -0 "$PGPID" 2>/dev/null || break; sleep 0.1; done
    if kill -0 "$PGPID" 2>/dev/null; then kill -QUIT "$PGPID" 2>/dev/null || true; sleep 1; fi
    echo "postgres (pid $PGPID) stopped" >&2
  fi
  rm -rf "$PGROOT"
  exit $rc
}
trap stop_pg EXIT
trap 'exit 130' INT TERM
if [ "$(id -u)" = 0 ]; then chown postgres: "$PGROOT"; fi
as_pg "$PGBIN/initdb -D '$PGDATA_BENCH' -U postgres --auth=trust -E UTF8 --locale=C.UTF-8 >'$PGROOT/initdb.log' 2>&1"
mkdir -p "$PGROOT/sock" && { [ "$(id -u)" != 0 ] || chown postgres: "$PGROOT/sock"; }
cat >> "$PGDATA_BENCH/postgresql.conf" <<EOF
listen_addresses = '127.0.0.1'
port = $PORT
unix_socket_directories = '$PGROOT/sock'
max_connections = 100
EOF
as_pg "$PGBIN/pg_ctl -D '$PGDATA_BENCH' -l '$PGROOT/pg.log' -w -t 60 start >/dev/null"
PGPID=$(head -1 "$PGDATA_BENCH/postmaster.pid")
PGVER=$("$PGBIN/postgres" --version)
echo "postgres pid $PGPID on 127.0.0.1:$PORT ($PGVER), data $PGDATA_BENCH;" \
  "$(psql -h 127.0.0.1 -p "$PORT" -U postgres -Atc 'show fsync' -c 'show synchronous_commit' -c 'show wal_sync_method' | tr '\n' ' ')" >&2
export DBOS_PG_PORT=$PORT DBOS_LOG_LEVEL=${DBOS_LOG_LEVEL:-warn} NODE_OPTIONS="${NODE_OPTIONS:-} --no-deprecation"

run_node() { # LABEL SCRIPT ARGS...
  local label=$1; shift
  [ "${GATE:-1}" = 1 ] && quiet_gate
  noise_begin
  timeout "$NODE_TIMEOUT" node "$@"
  noise_end "$label"
}

# DBOS creates its database and schema on the first launch: do it untimed
timeout 120 node steps.mjs 10 0 >/dev/null

for rep in $(seq 1 "$REPS"); do
  for w in $ONLY; do
    case $w in
      steps) run_node "dbos.seq#$rep" steps.mjs 1000 1 ;;
      workflows)
        run_node "dbos.wf32#$rep" workflows.mjs 1000 32 1
        run_node "dbos.wf64#$rep" workflows.mjs 1000 64 1 ;;
      conc)
        run_node "dbos.conc64#$rep" conc.mjs 64 50 1
        run_node "dbos.conc1000#$rep" conc.mjs 1000 5 1 ;;
      recovery) run_node "dbos.recovery#$rep" recovery.mjs 10000 1 0.5 ;;
      memory) if [ "$rep" = 1 ]; then run_node "dbos.memory" memory.mjs 12; fi ;;
    esac
  done
done
