#!/bin/bash
# bench/stdlib.sh [REPS=3]: issue 11's benchmarks of the C-backed stdlib modules, in one
# session, each measurement REPS times behind the quiet gate of bench/lib.sh, sluice and
# its peer alternating within a repetition.
#
#   http    10,000 GETs of a small JSON document (bench/stdlib/doc.json, 338 bytes) from a
#           local nginx-light (Debian) with keep-alive on 127.0.0.1, at 100 concurrent
#           tasks: sluice.http (bench/stdlib/http.lua) against node's built-in fetch
#           (bench/stdlib/http.mjs), requests/s and latency percentiles. nginx runs with one
#           worker (the machine has 2 cores: one for the server, one for the client).
#   csv     a generated 200 MB CSV (bench/stdlib/csv_gen.py: 8 fields, 2 quoted, one with
#           doubled quotes), in the page cache: csv.rows (arrays, and records with
#           header = true) against Python's csv.reader and csv.DictReader; records/s, MB/s,
#           RSS while streaming; and host/csv.c alone (bench/stdlib/csv_floor.c, no Lua).
#   sqlite  insert_many of 1,000,000 records (5 columns) into a fresh file, one transaction,
#           default durability; against the sqlite3 shell's `.import --csv` of the same rows
#           into the same schema; and sluice's whole load from that CSV (csv.rows + insert_many).
#
# Env: SKIP_HTTP=1 SKIP_CSV=1 SKIP_SQLITE=1, HTTP_N (10000), HTTP_C (100), CSV_MB (200),
# SQLITE_N (1000000), QUIET_MAX, QUIET_BUDGET, TMPDIR, SLUICE_BIN (else built from
# `git archive HEAD` as bench/run_all.sh). nginx is stopped by its PID at exit.
# Output: bench/out/stdlib-session-<stamp>.jsonl and the tables on stdout.
set -euo pipefail
BENCH_DIR=$(cd "$(dirname "$0")" && pwd)
REPO=$(cd "$BENCH_DIR/.." && pwd)
REPS=${1:-3}
. "$BENCH_DIR/lib.sh"
bench_session stdlib # STAMP, OUT, SESSION_OUT, ... and log() (bench/lib.sh)
HTTP_N=${HTTP_N:-10000} HTTP_C=${HTTP_C:-100} CSV_MB=${CSV_MB:-200} SQLITE_N=${SQLITE_N:-1000000}
S=$BENCH_DIR/stdlib
T_BEGIN=$(date +%s)

sluice_binary # sets and exports REV, BIN (bench/lib.sh)

machine_record node="node --version" python="python3 --version" nginx="nginx -v 2>&1" sqlite3="sqlite3 --version | cut -d' ' -f1" curl="curl-config --version"

m() { # LABEL CMD... : gate, run (its JSON lines go to the session), record the noise
  local label=$1; shift
  quiet_gate
  noise_begin
  "$@" | tee -a "$SESSION_OUT"
  noise_end "$label"
}

WORK=$(mktemp -d "${TMPDIR:-/tmp}/sluice-stdlib.XXXXXX")
NGINX_PID=
cleanup() {
  if [ -n "$NGINX_PID" ]; then kill "$NGINX_PID" 2>/dev/null || true; wait "$NGINX_PID" 2>/dev/null || true; fi
  rm -rf "$WORK"; rm -f "$QUIET_WAITED_FILE"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# ---- http ---------------------------------------------------------------------------
if [ "${SKIP_HTTP:-0}" != 1 ]; then
  PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
  mkdir -p "$WORK/nginx/www" "$WORK/nginx/tmp"
  cp "$S/doc.json" "$WORK/nginx/www/doc.json"
  cat > "$WORK/nginx/nginx.conf" <<CONF
daemon off;
master_process off;
worker_processes 1;
user root;
error_log $WORK/nginx/error.log warn;
pid $WORK/nginx/nginx.pid;
events { worker_connections 4096; }
http {
  access_log off;
  client_body_temp_path $WORK/nginx/tmp;
  keepalive_timeout 120s;
  keepalive_requests 1000000;
  types { application/json json; }
  server {
    listen 127.0.0.1:$PORT backlog=4096;
    root $WORK/nginx/www;
  }
}
CONF
  nginx -c "$WORK/nginx/nginx.conf" -p "$WORK/nginx" &
  NGINX_PID=$!
  URL=http://127.0.0.1:$PORT/doc.json
  for _ in $(seq 1 100); do curl -sf "$URL" >/dev/null 2>&1 && break; sleep 0.1; done
  curl -sf "$URL" >/dev/null || { echo "nginx did not come up" >&2; cat "$WORK/nginx/error.log" >&2; exit 1; }
  log "http: $HTTP_N GETs of $URL at $HTTP_C concurrent, x$REPS"
  for rep in $(seq 1 "$REPS"); do
    m "http.sluice#$rep" "$BIN" "$S/http.lua" "$URL" "$HTTP_N" "$HTTP_C"
    m "http.node#$rep" node "$S/http.mjs" "$URL" "$HTTP_N" "$HTTP_C"
  done
  kill "$NGINX_PID"; wait "$NGINX_PID" 2>/dev/null || true; NGINX_PID=
fi

# ---- csv ----------------------------------------------------------------------------
if [ "${SKIP_CSV:-0}" != 1 ]; then
  log "csv: generating $CSV_MB MB"
  python3 "$S/csv_gen.py" "$WORK/data.csv" "$CSV_MB"
  cat "$WORK/data.csv" > /dev/null # into the page cache
  mkdir -p "$OUT/bin"
  gcc -O2 -Wall -I"${SRC:-$REPO}/host" "${SRC:-$REPO}/host/csv.c" "${SRC:-$REPO}/host/sbuf.c" "$S/csv_floor.c" -o "$OUT/bin/csv_floor"
  for rep in $(seq 1 "$REPS"); do
    m "csv.floor#$rep" "$OUT/bin/csv_floor" "$WORK/data.csv"
    for mode in arrays records; do
      m "csv.sluice.$mode#$rep" "$BIN" "$S/csv.lua" "$WORK/data.csv" "$mode"
      m "csv.python.$mode#$rep" python3 "$S/csv_python.py" "$WORK/data.csv" "$mode"
    done
  done
  rm -f "$WORK/data.csv"
fi

# ---- sqlite -------------------------------------------------------------------------
if [ "${SKIP_SQLITE:-0}" != 1 ]; then
  log "sqlite: $SQLITE_N rows"
  python3 - "$WORK/rows.csv" "$SQLITE_N" <<'PY'
import sys
with open(sys.argv[1], "w") as f:
    for i in range(1, int(sys.argv[2]) + 1):
        f.write('%d,name %d,user%d@example.com,%r,2026-12-01T00:00:00Z\n' % (i, i, i, i * 0.25))
PY
  SCHEMA="CREATE TABLE t (id INTEGER PRIMARY KEY, name TEXT, email TEXT, score REAL, created TEXT)"
  shell_import() {
    rm -f "$WORK/shell.db"
    sqlite3 "$WORK/shell.db" "$SCHEMA"
    local t0 t1
    t0=$(now_ns)
    sqlite3 "$WORK/shell.db" ".import --csv $WORK/rows.csv t"
    t1=$(now_ns)
    local n
    n=$(sqlite3 "$WORK/shell.db" "SELECT count(*) FROM t")
    python3 -c 'import json,sys; n,t=int(sys.argv[1]),int(sys.argv[2])/1e9; print(json.dumps({"bench":"sqlite","impl":"sqlite3-shell","what":".import --csv","rows":n,"wall_s":round(t,3),"rows_per_s":round(n/t)}))' "$n" $((t1 - t0))
    rm -f "$WORK/shell.db"
  }
  for rep in $(seq 1 "$REPS"); do
    m "sqlite.sluice#$rep" "$BIN" "$S/sqlite.lua" "$WORK/sluice.db" "$SQLITE_N" "$WORK/rows.csv"
    m "sqlite.shell#$rep" shell_import
  done
  rm -f "$WORK/sluice.db" "$WORK/rows.csv"
fi

log "done in $(( $(date +%s) - T_BEGIN )) s; quiet-gate waiting: $(cat "$QUIET_WAITED_FILE" 2>/dev/null || echo 0) s"

# ---- the tables: medians (min-max) per measurement ------------------------------------
python3 - "$SESSION_OUT" <<'PY'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.startswith("{")]
def cell(vals, fmt="{:,.0f}"):
    if not vals: return "-"
    med = statistics.median(vals)
    if len(vals) == 1: return fmt.format(med)
    return f"{fmt.format(med)} ({fmt.format(min(vals))}–{fmt.format(max(vals))})"
def group(bench, key):
    g = {}
    for r in rows:
        if r.get("bench") == bench: g.setdefault(key(r), []).append(r)
    return g
noise = [r for r in rows if r.get("kind") == "noise"]
print(f"noise: max others_cpu_s {max([r['others_cpu_s'] for r in noise] or [0])}, gates: "
      + ", ".join(sorted({r['gate'].split()[0] for r in noise})))
for (impl,), rs in group("http", lambda r: (r["impl"],)).items():
    f = lambda k: [r[k] for r in rs]
    print(f"| http | {impl} | req/s {cell(f('rps'))} | p50 {cell(f('p50_ms'), '{:.2f}')} ms | p99 {cell(f('p99_ms'), '{:.2f}')} ms | CPU {cell(f('cpu_s'), '{:.2f}')} s | HWM {cell([x/1024 for x in f('hwm_kb')], '{:.0f}')} MB |")
for (impl, mode), rs in group("csv", lambda r: (r["impl"], r["mode"])).items():
    f = lambda k: [r[k] for r in rs if k in r]
    print(f"| csv | {impl} {mode} | {cell(f('records_per_s'))} records/s | {cell(f('mb_per_s'), '{:.1f}')} MB/s | RSS peak {cell([x/1024 for x in f('rss_peak_kb')], '{:.1f}')} MB | HWM {cell([x/1024 for x in f('hwm_kb')], '{:.1f}')} MB |")
for (impl, what), rs in group("sqlite", lambda r: (r["impl"], r["what"])).items():
    f = lambda k: [r[k] for r in rs]
    print(f"| sqlite | {impl} {what} | {cell(f('rows_per_s'))} rows/s | {cell(f('wall_s'), '{:.2f}')} s |")
PY
