#!/bin/bash
# bench/read.sh [REPS=3]: issue 14's read goal in one session: `read` of 1M events into Lua
# (bench/stream.lua read: the wildcard k:* over the log, then each key k:0..k:99 through its
# index, pages of 1,000) against Redis XRANGE COUNT 1000 over one key of 1M entries
# (bench/redis/redis_read.c, hiredis), and the floor of building the same Lua tables with
# nothing else (bench/floor/lua_events.c), each repetition behind the quiet gate of
# bench/lib.sh (the noise is recorded when the machine is not quiet).
#
# The store is filled once (1M events: type "ev", 100 keys round robin, 100-byte data) and
# Redis once (persistence off, started here on 127.0.0.1, stopped by its PID); within a
# repetition the binaries of SLUICE_BINS alternate with Redis and the floor.
#
# Env: SLUICE_BINS="label=/path/to/sluice ..." (default: the build of git HEAD as
# bench/run_all.sh does, or $SLUICE_BIN), REDIS_PORT (16392), QUIET_MAX, QUIET_BUDGET, TMPDIR.
# Output: bench/out/read-session-<stamp>.jsonl, and a summary on stdout.
set -euo pipefail
BENCH_DIR=$(cd "$(dirname "$0")" && pwd)
REPO=$(cd "$BENCH_DIR/.." && pwd)
REPS=${1:-3}
. "$BENCH_DIR/lib.sh"
bench_session read # STAMP, OUT, SESSION_OUT, ... and log() (bench/lib.sh)
PORT=${REDIS_PORT:-16392}

for t in redis-server redis-benchmark redis-cli; do
  command -v $t >/dev/null || { echo "missing $t: apt-get install -y redis-server redis-tools libhiredis-dev" >&2; exit 2; }
done
if [ -z "${SLUICE_BINS:-}" ]; then
  sluice_binary # sets REV, BIN (bench/lib.sh)
  SLUICE_BINS="$REV=$BIN"
fi
gcc -O2 -Wall -o "$OUT/bin/redis_read" "$BENCH_DIR/redis/redis_read.c" -lhiredis
gcc -O2 -Wall $(pkg-config --cflags lua5.4) -o "$OUT/bin/lua_events" "$BENCH_DIR/floor/lua_events.c" \
  $(pkg-config --libs lua5.4)

WORK=$(mktemp -d "${TMPDIR:-/tmp}/sluice-read.XXXXXX")
SRV_PID=""
cleanup() {
  if [ -n "$SRV_PID" ]; then kill "$SRV_PID" 2>/dev/null || true; wait "$SRV_PID" 2>/dev/null || true; fi
  rm -rf "$WORK"; rm -f "$QUIET_WAITED_FILE"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

echo "{\"kind\":\"machine\",\"session\":\"$BENCH_SESSION\",\"loadavg\":\"$(cut -d' ' -f1-3 /proc/loadavg)\",\"nproc\":$(nproc),\"bins\":\"$SLUICE_BINS\",\"redis\":\"$(redis-server --version | cut -d' ' -f3)\"}" \
  | tee -a "$SESSION_OUT"

# ---- the store and Redis, filled once ---------------------------------------------
first_bin=${SLUICE_BINS%% *}; first_bin=${first_bin#*=}
mkdir -p "$WORK/store" "$WORK/redis"
log "filling the store (1M events)"
SESSION_OUT= "$first_bin" "$BENCH_DIR/stream.lua" read 1000000 1000 --store "$WORK/store" --out "$WORK" >/dev/null
redis-server --bind 127.0.0.1 --port "$PORT" --protected-mode yes --dir "$WORK/redis" --save "" \
  --appendonly no --daemonize no --logfile "$WORK/redis.log" &
SRV_PID=$!
for _ in $(seq 1 50); do redis-cli -h 127.0.0.1 -p "$PORT" ping >/dev/null 2>&1 && break; sleep 0.1; done
PAYLOAD=$(printf 'x%.0s' $(seq 1 100))
log "filling Redis (1M entries)"
redis-benchmark -h 127.0.0.1 -p "$PORT" -c 50 -P 100 -n 1000000 -q XADD ev '*' p "$PAYLOAD" >/dev/null 2>&1
XLEN=$(redis-cli -h 127.0.0.1 -p "$PORT" xlen ev)

kv_json() { # BENCH_NAME LABEL: the key=value tokens of a line on stdin (after the first) as JSON
  python3 -c '
import json, sys, os
d = {"bench": sys.argv[1], "session": os.environ["BENCH_SESSION"], "tag": sys.argv[2]}
for tok in sys.stdin.read().split()[1:]:
    k, v = tok.split("=", 1)
    try: v = float(v) if "." in v else int(v)
    except ValueError: pass
    d[k] = v
print(json.dumps(d))' "$1" "$2"
}

for rep in $(seq 1 "$REPS"); do
  for pair in $SLUICE_BINS; do
    label=${pair%%=*}; bin=${pair#*=}
    quiet_gate; noise_begin
    # (stream.lua appends its line to $SESSION_OUT itself)
    "$bin" "$BENCH_DIR/stream.lua" read 1000000 1000 --store "$WORK/store" --tag "$label#$rep" --out "$WORK"
    noise_end "read.$label#$rep"
  done
  quiet_gate; noise_begin
  timeout 120 "$OUT/bin/redis_read" "$PORT" ev xrange 1000 1000000 60 | kv_json redis.xrange "xlen=$XLEN#$rep" \
    | tee -a "$SESSION_OUT"
  "$OUT/bin/lua_events" 1000000 1000 | kv_json floor.lua_events "#$rep" | tee -a "$SESSION_OUT"
  noise_end "redis+floor#$rep"
done

python3 - "$SESSION_OUT" <<'PY'
import json, sys, statistics as st
rows = [json.loads(l) for l in open(sys.argv[1]) if l.startswith("{")]
med = lambda xs: st.median(xs) if xs else float("nan")
redis = med([r["entries_per_s"] for r in rows if r.get("bench") == "redis.xrange"])
floor = med([r["events_per_s"] for r in rows if r.get("bench") == "floor.lua_events"])
print("read of 1M events into Lua, events/s (median of repetitions; wall, the machine as it was):")
print("  Redis XRANGE COUNT 1000 (hiredis): %.0f    Lua tables alone (floor): %.0f = %.2fx Redis" % (redis, floor, floor / redis))
by = {}
for r in rows:
    if r.get("bench") == "sluice.stream" and r.get("mode") == "read":
        by.setdefault(r["tag"].split("#")[0], []).append(r)
for label, v in by.items():
    w = med([r["wildcard"]["events_per_s"] for r in v]); k = med([r["per_key"]["events_per_s"] for r in v])
    wc = med([r["wildcard"]["loop_cpu_ms"] for r in v]); kc = med([r["per_key"]["loop_cpu_ms"] for r in v])
    print("  %-20s wildcard %.0f (%.2fx Redis, loop CPU %d ms)   key by key %.0f (%.2fx Redis, loop CPU %d ms)" % (
        label, w, w / redis, wc, k, k / redis, kc))
PY
