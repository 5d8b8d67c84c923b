#!/bin/bash
# bench/stream_redis.sh [REPS=3]: issue 4's stream benchmark, in one session: the
# closed-loop LMDB floor, sluice's in-process emit/emit_many/read (bench/stream.lua)
# and Redis Streams XADD/XRANGE (Debian's redis-server, started here on 127.0.0.1 on a
# private port and directory, stopped by its PID), each measurement REPS times behind
# the quiet gate of bench/lib.sh. Same payload (100 bytes) and 100 stream keys.
#
#   sluice   emit from 1, 64, 1,000 tasks each awaiting its own ack; emit_many of
#            1,000 from 1 task and from 5 tasks (5,000 events in flight, like Redis's
#            50 clients x pipeline 100); read of 1M events into Lua tables (wildcard
#            k:* and each key k:0..k:99 in turn), paging with `after`, limit 1,000.
#            One durability tier: fsync before ack (there is no other).
#   Redis    for each of appendfsync always / everysec / persistence off, a fresh
#            server, then `redis-benchmark XADD ev:__rand_int__ * p <100 B> -r 100`
#            with (clients, pipeline) = (1,1) (64,1) (1000,1) (1,1000) (50,100);
#            then 1M entries in one key read back with XRANGE COUNT 1000
#            (bench/redis/redis_read.c, one request at a time).
#   floor    bench/floor/lmdb_groupcommit.c (KEYS=append), 1, 64, 1,000 writers, 3 s.
#
# The sluice binary is built from `git archive HEAD` into bench/out/build-REV as
# bench/run_all.sh does, unless SLUICE_BIN names one.
# Env: REDIS_PORT (default 16391), QUIET_MAX, QUIET_BUDGET, TMPDIR, SKIP_REDIS=1,
# SKIP_SLUICE=1, SKIP_FLOOR=1, SKIP_XRANGE=1, TIERS="always everysec off" (none: no XADD),
# SLUICE_SHAPES="emit1 emit64 emit1000 many1 many5 read",
# REDIS_SHAPES="1x1 64x1 1000x1 1x1000 50x100" (clients x pipeline).
# Output: bench/out/stream-session-<stamp>.jsonl (every JSON line of the session;
# sluice lines also go to bench/out/stream.jsonl), then the tables
# (bench/stream_summarize.py) into bench/out/stream-summary-<stamp>.md.
set -euo pipefail
BENCH_DIR=$(cd "$(dirname "$0")" && pwd)
REPO=$(cd "$BENCH_DIR/.." && pwd)
REPS=${1:-3}
. "$BENCH_DIR/lib.sh"
bench_session stream # STAMP, OUT, SESSION_OUT, ... and log() (bench/lib.sh)
PORT=${REDIS_PORT:-16391}
T_BEGIN=$(date +%s)
ulimit -n 65536 2>/dev/null || ulimit -n 4096 2>/dev/null || true

# ---- the binary (as bench/run_all.sh) -------------------------------------------
sluice_binary # sets and exports REV, BIN (bench/lib.sh)

# ---- tools ------------------------------------------------------------------------
for t in redis-server redis-benchmark redis-cli; do
  command -v $t >/dev/null || { echo "missing $t: apt-get install -y redis-server redis-tools libhiredis-dev" >&2; exit 2; }
done
gcc -O2 -Wall -o "$OUT/bin/lmdb_groupcommit" "$BENCH_DIR/floor/lmdb_groupcommit.c" -llmdb -lpthread
gcc -O2 -Wall -o "$OUT/bin/redis_read" "$BENCH_DIR/redis/redis_read.c" -lhiredis

# ---- the machine ------------------------------------------------------------------
machine_record redis="redis-server --version"

m() { # LABEL CMD... : gate, run, record the noise
  local label=$1; shift
  quiet_gate
  noise_begin
  "$@"
  noise_end "$label"
}
jl() { tee -a "$SESSION_OUT"; } # a JSON line into the session file

# ---- Redis --------------------------------------------------------------------------
RDIR=$(mktemp -d "${TMPDIR:-/tmp}/sluice-redis.XXXXXX")
SRV_PID=""
stop_redis() {
  if [ -n "$SRV_PID" ]; then
    kill "$SRV_PID" 2>/dev/null || true
    wait "$SRV_PID" 2>/dev/null || true
  fi
  SRV_PID=""
}
cleanup() { stop_redis; rm -rf "$RDIR"; rm -f "$QUIET_WAITED_FILE"; }
trap cleanup EXIT
trap 'exit 130' INT TERM
start_redis() { # always|everysec|off
  local p=$1
  rm -rf "$RDIR/$p"; mkdir -p "$RDIR/$p"
  local aof=(--appendonly no)
  [ "$p" != off ] && aof=(--appendonly yes --appendfsync "$p")
  redis-server --bind 127.0.0.1 --port "$PORT" --protected-mode yes --dir "$RDIR/$p" --save "" \
    "${aof[@]}" --maxclients 4000 --daemonize no --logfile "$RDIR/redis-$p.log" &
  SRV_PID=$!
  for _ in $(seq 1 50); do
    redis-cli -h 127.0.0.1 -p "$PORT" ping >/dev/null 2>&1 && return 0
    sleep 0.1
  done
  echo "redis-server did not start (port $PORT)" >&2
  exit 1
}
PAYLOAD=$(printf 'x%.0s' $(seq 1 100))
xadd() { # PERSIST CLIENTS PIPELINE N
  local csv
  csv=$(timeout 120 redis-benchmark -h 127.0.0.1 -p "$PORT" -c "$2" -P "$3" -n "$4" -r 100 --csv \
        XADD 'ev:__rand_int__' '*' p "$PAYLOAD" 2>/dev/null | tail -1)
  python3 -c '
import csv, json, sys, os
row = next(csv.reader([sys.argv[5]]))
p, c, P, n = sys.argv[1:5]
print(json.dumps({"bench": "redis.xadd", "session": os.environ["BENCH_SESSION"], "persist": p,
  "clients": int(c), "pipeline": int(P), "requests": int(n), "keys": 100, "payload_B": 100,
  "rps": float(row[1]), "avg_ms": float(row[2]), "p50_ms": float(row[4]), "p99_ms": float(row[6])}))' \
    "$1" "$2" "$3" "$4" "$csv" | jl
}
redis_bench() { # PERSIST
  local p=$1 shape c P n
  for shape in ${REDIS_SHAPES:-1x1 64x1 1000x1 1x1000 50x100}; do
    c=${shape%x*}; P=${shape#*x}
    case "$p/$c/$P" in
      always/1/1) n=20000 ;;
      */1/1)      n=150000 ;;
      always/*/1) n=300000 ;;
      */*/1)      n=600000 ;;
      *)          n=3000000 ;;
    esac
    start_redis "$p"
    m "redis.$p.c$c.P$P#$rep" xadd "$p" "$c" "$P" "$n"
    stop_redis
  done
}
redis_read_bench() {
  start_redis off
  redis-benchmark -h 127.0.0.1 -p "$PORT" -c 50 -P 100 -n 1000000 -q XADD ev '*' p "$PAYLOAD" >/dev/null 2>&1
  local xlen
  xlen=$(redis-cli -h 127.0.0.1 -p "$PORT" xlen ev)
  rr() {
    timeout 120 "$OUT/bin/redis_read" "$PORT" ev xrange 1000 1000000 60 | python3 -c '
import json, sys, os
d = {"bench": "redis.xrange", "session": os.environ["BENCH_SESSION"], "xlen": int(sys.argv[1])}
for tok in sys.stdin.read().split()[1:]:
    k, v = tok.split("=", 1)
    try: v = float(v) if "." in v else int(v)
    except ValueError: pass
    d[k] = v
print(json.dumps(d))' "$xlen" | jl
  }
  m "redis.xrange#$rep" rr
  stop_redis
}

# ---- the floor -------------------------------------------------------------------
floor() {
  local d p
  d=$(mktemp -d "${TMPDIR:-/tmp}/sluice-floor.XXXXXX")
  for p in 1 64 1000; do
    rm -rf "$d/gc" && mkdir -p "$d/gc"
    KEYS=append timeout 60 "$OUT/bin/lmdb_groupcommit" "$d/gc" "$p" 3 sync 10000 | python3 -c '
import json, sys, os
d = {"bench": "floor.lmdb_gc", "session": os.environ["BENCH_SESSION"], "kind": "floor"}
for tok in sys.stdin.read().split()[1:]:
    k, v = tok.split("=", 1)
    try: v = float(v) if "." in v else int(v)
    except ValueError: pass
    d[k] = v
print(json.dumps(d))' | jl
  done
  rm -rf "$d"
}

# ---- the session ----------------------------------------------------------------
S="$BENCH_DIR/stream.lua"
log "stream session $STAMP, sluice $REV ($BIN), redis on 127.0.0.1:$PORT, $REPS repetitions"
for rep in $(seq 1 "$REPS"); do
  log "repetition $rep/$REPS"
  [ "${SKIP_FLOOR:-0}" != 1 ] && m "floor#$rep" floor
  if [ "${SKIP_SLUICE:-0}" != 1 ]; then
    for shape in ${SLUICE_SHAPES:-emit1 emit64 emit1000 many1 many5 read}; do
      case $shape in
        emit1)    m "sluice.emit1#$rep" "$BIN" "$S" emit 1 20000 5 --tag "rep$rep" ;;
        emit64)   m "sluice.emit64#$rep" "$BIN" "$S" emit 64 400000 6 --tag "rep$rep" ;;
        emit1000) m "sluice.emit1000#$rep" "$BIN" "$S" emit 1000 800000 6 --tag "rep$rep" ;;
        many1)    m "sluice.many1000#$rep" "$BIN" "$S" many 1000 4000000 1 6 --tag "rep$rep" ;;
        many5)    m "sluice.many1000x5#$rep" "$BIN" "$S" many 1000 4000000 5 6 --tag "rep$rep" ;;
        read)     m "sluice.read#$rep" "$BIN" "$S" read 1000000 1000 --tag "rep$rep" ;;
      esac
    done
  fi
  if [ "${SKIP_REDIS:-0}" != 1 ]; then
    for tier in ${TIERS:-always everysec off}; do [ "$tier" != none ] && redis_bench "$tier"; done
    [ "${SKIP_XRANGE:-0}" != 1 ] && redis_read_bench
  fi
done
log "done in $(( $(date +%s) - T_BEGIN )) s; quiet-gate waiting: $(cat "$QUIET_WAITED_FILE") s"
python3 "$BENCH_DIR/stream_summarize.py" "$SESSION_OUT" | tee "$OUT/stream-summary-$STAMP.md"
