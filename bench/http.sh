#!/bin/bash
# bench/http.sh: issue 10's HTTP API benchmark, with its peer in the same run.
# By hand: bench/http.sh [DURATION=10s] [RUNS=1000000]. wrk on 127.0.0.1,
# fsync on (sluice has no other mode), each measurement behind the quiet gate
# of bench/lib.sh:
#   events1     POST /events, one event per request, 64 keep-alive connections
#   events1000  POST /events, arrays of 1,000 events, 8 connections
#   runs        POST /runs/three (3 steps), 64 connections: accepted per second,
#               then completed per second (until every accepted run ended)
#   idle        VmRSS of serve with 1,000 idle keep-alive connections
#   get_run     GET /runs/{id} on a store of RUNS runs (1,000 ids in turn)
#   list        GET /runs?pipeline=p3&limit=50 on that store
#   redis       XADD with 64 clients, appendfsync always (redis-benchmark), the peer
#               of events1; Debian's redis-server on a private port and directory,
#               stopped by its PID
# wrk, redis-server and redis-tools are installed here if missing (bench only).
# Output: bench/out/http-<stamp>.md (a table) and .log (wrk's own output).
set -euo pipefail
BENCH_DIR=$(cd "$(dirname "$0")" && pwd)
REPO=$(cd "$BENCH_DIR/.." && pwd)
. "$BENCH_DIR/lib.sh"
DUR=${1:-10s}
RUNS=${2:-1000000}
SLUICE_BIN=${SLUICE_BIN:-$REPO/build/sluice}
REDIS_PORT=${REDIS_PORT:-16392}
STAMP=$(date -u +%Y%m%dT%H%M%SZ)
OUT=$BENCH_DIR/out
mkdir -p "$OUT"
LOG=$OUT/http-$STAMP.log
MD=$OUT/http-$STAMP.md
H=$BENCH_DIR/http

for p in wrk redis-server redis-benchmark; do
  command -v "$p" >/dev/null || DEBIAN_FRONTEND=noninteractive apt-get install -y -q wrk redis-server redis-tools >/dev/null
done
W=$(mktemp -d /tmp/sluice-bench-http.XXXXXX)
SERVE_PID=
REDIS_PID=
cleanup() {
  [ -n "$SERVE_PID" ] && kill "$SERVE_PID" 2>/dev/null || true
  [ -n "$REDIS_PID" ] && kill "$REDIS_PID" 2>/dev/null || true
  rm -rf "$W"
}
trap cleanup EXIT

start_serve() { # store
  "$SLUICE_BIN" serve "$H/pipelines" --store "$1" --listen 127.0.0.1:0 2>"$W/serve.log" &
  SERVE_PID=$!
  for _ in $(seq 200); do
    PORT=$(grep -o 'listening on http://127.0.0.1:[0-9]*' "$W/serve.log" | head -1 | sed 's/.*://') || true
    [ -n "$PORT" ] && break
    sleep 0.05
  done
  [ -n "$PORT" ] || { cat "$W/serve.log"; exit 1; }
  URL=http://127.0.0.1:$PORT
}
stop_serve() { kill "$SERVE_PID"; wait "$SERVE_PID" || true; SERVE_PID=; }

# wrk's summary -> "req/s p50 p99" (latencies in ms)
wrk_run() { # label, wrk args...
  local label=$1; shift
  quiet_gate
  noise_begin
  wrk --latency "$@" > "$W/wrk.out" 2>&1
  noise_end "$label"
  { echo "== $label: wrk $*"; cat "$W/wrk.out"; } >> "$LOG"
  python3 - "$W/wrk.out" <<'PY'
import re, sys
t = open(sys.argv[1]).read()
def ms(s):
    v, u = re.match(r"([\d.]+)(us|ms|s)", s).groups()
    return float(v) * {"us": 0.001, "ms": 1, "s": 1000}[u]
rps = float(re.search(r"Requests/sec:\s+([\d.]+)", t).group(1))
p50 = ms(re.search(r"^\s+50%\s+(\S+)", t, re.M).group(1))
p99 = ms(re.search(r"^\s+99%\s+(\S+)", t, re.M).group(1))
errs = re.search(r"Non-2xx or 3xx responses: (\d+)", t)
print(f"{rps:.0f} {p50:.2f} {p99:.2f} {errs.group(1) if errs else 0}")
PY
}

metric() { # name with labels -> value
  curl -s "$URL/metrics" | awk -v m="$1" '$1 == m {print $2}'
}

echo "# HTTP API benchmark $STAMP" > "$MD"
{
  echo
  echo "sluice $(git -C "$REPO" rev-parse --short HEAD) ($SLUICE_BIN), wrk $(wrk -v 2>&1 | head -1 | awk '{print $2}'),"
  echo "$(redis-server --version | awk '{print $1, $3}'), duration $DUR per load, $(nproc) CPUs, load $(cut -d' ' -f1-3 /proc/loadavg) at start."
  echo
  echo "| measurement | result | p50 ms | p99 ms | non-2xx |"
  echo "|---|---|---|---|---|"
} >> "$MD"
row() { echo "| $1 | $2 | $3 | $4 | $5 |" >> "$MD"; echo "$1: $2 (p50 $3 ms, p99 $4 ms, non-2xx $5)" >&2; }

# --- idle connections on a fresh serve, then events and runs
start_serve "$W/store"
read -r before with < <(python3 "$H/idle.py" "$PORT" 1000 "$SERVE_PID")
row "RSS of serve with 1,000 idle keep-alive conns (MB)" "$(python3 -c "print(round($with / 1024, 1))") (before them: $(python3 -c "print(round($before / 1024, 1))"))" - - -
read -r rps p50 p99 bad < <(wrk_run events1 -t2 -c64 -d"$DUR" -s "$H/post_event.lua" "$URL")
row "POST /events, 1 event/request, 64 conns (events/s)" "$rps" "$p50" "$p99" "$bad"
read -r rps p50 p99 bad < <(wrk_run events1000 -t2 -c8 -d"$DUR" -s "$H/post_array.lua" "$URL/events")
row "POST /events, arrays of 1,000, 8 conns (events/s)" "$(python3 -c "print(round($rps * 1000))")" "$p50" "$p99" "$bad"
batches=$(metric sluice_writer_batch_size_sum); commits=$(metric sluice_writer_batch_size_count)
echo "writer: $batches batches in $commits commits" >&2

t0=$(now_ns)
read -r rps p50 p99 bad < <(wrk_run runs -t2 -c64 -d"$DUR" -s "$H/post_run.lua" "$URL/runs/three")
accepted=$(python3 -c "import re; print(int(re.search(r'(\d+) requests in', open('$W/wrk.out').read()).group(1)))")
row "POST /runs/three, 64 conns (runs accepted/s)" "$rps" "$p50" "$p99" "$bad"
for _ in $(seq 1200); do
  done_n=$(metric 'sluice_runs_total{pipeline="three",status="completed"}'); done_n=${done_n:-0}
  [ "$done_n" -ge "$accepted" ] && break
  sleep 0.1
done
secs=$(awk -v a="$t0" -v b="$(now_ns)" 'BEGIN{printf "%.2f", (b-a)/1e9}')
row "... runs completed/s (all $accepted ended after ${secs}s)" "$(python3 -c "print(round($done_n / $secs))")" - - -
stop_serve

# --- reads on a store of RUNS runs
t1=$(now_ns)
"$SLUICE_BIN" "$H/populate.lua" "$W/runs" "$RUNS" "$W/ids" 2>>"$LOG"
echo "populated $RUNS runs in $(awk -v a="$t1" -v b="$(now_ns)" 'BEGIN{printf "%.0f", (b-a)/1e9}') s" >&2
start_serve "$W/runs"
read -r rps p50 p99 bad < <(IDS=$W/ids wrk_run get_run -t2 -c64 -d"$DUR" -s "$H/get_run.lua" "$URL")
row "GET /runs/{id}, $RUNS runs, 64 conns (req/s)" "$rps" "$p50" "$p99" "$bad"
read -r rps p50 p99 bad < <(wrk_run list -t2 -c64 -d"$DUR" "$URL/runs?pipeline=p3&limit=50")
row "GET /runs?pipeline=p3&limit=50, $RUNS runs, 64 conns (req/s)" "$rps" "$p50" "$p99" "$bad"
stop_serve

# --- the peer: Redis XADD, appendfsync always, 64 clients
mkdir -p "$W/redis"
redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --dir "$W/redis" --appendonly yes \
  --appendfsync always --save '' --daemonize no >"$W/redis.log" 2>&1 &
REDIS_PID=$!
for _ in $(seq 100); do redis-cli -p "$REDIS_PORT" ping >/dev/null 2>&1 && break; sleep 0.05; done
quiet_gate
noise_begin
redis-benchmark -p "$REDIS_PORT" -c 64 -n 200000 --csv XADD 'ev:__rand_int__' '*' p "$(printf 'x%.0s' $(seq 90))" -r 100 \
  > "$W/redis.out" 2>&1
noise_end redis
{ echo "== redis XADD"; cat "$W/redis.out"; } >> "$LOG"
read -r rps p50 p99 < <(python3 - "$W/redis.out" <<'PY'
import csv, sys
rows = [r for r in csv.reader(open(sys.argv[1])) if r and r[0] != "test"]
r = rows[-1]  # "test","rps","avg_latency_ms","min_latency_ms","p50_latency_ms","p95_latency_ms","p99_latency_ms","max_latency_ms"
print(round(float(r[1])), r[4], r[6])
PY
)
row "Redis XADD, appendfsync always, 64 clients (events/s)" "$rps" "$p50" "$p99" 0
kill "$REDIS_PID"; wait "$REDIS_PID" || true; REDIS_PID=
echo >> "$MD"
echo "wrk output: $(basename "$LOG")" >> "$MD"
cat "$MD"
