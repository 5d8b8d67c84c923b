#!/bin/bash
# bench/reload.sh [REPS=3] [N=200]: hot reload latency (bench/reload.lua) in
# each mode, REPS times behind the quiet gate, with the CPU others used
# meanwhile; one JSON line per measurement in bench/out/reload-<stamp>.jsonl.
set -euo pipefail
BENCH_DIR=$(cd "$(dirname "$0")" && pwd)
REPO=$(cd "$BENCH_DIR/.." && pwd)
REPS=${1:-3}
N=${2:-200}
OUT=$BENCH_DIR/out
mkdir -p "$OUT"
STAMP=$(date -u +%Y%m%dT%H%M%SZ)
export SESSION_OUT=$OUT/reload-$STAMP.jsonl BENCH_SESSION=$STAMP
. "$BENCH_DIR/lib.sh"
sluice_binary
for rep in $(seq 1 "$REPS"); do
  for shape in "inproc 1" "log 1" "serve 1" "inproc 100" "log 100"; do
    set -- $shape
    quiet_gate
    noise_begin
    "$BIN" "$BENCH_DIR/reload.lua" "$1" "$N" "$2" | tee -a "$SESSION_OUT"
    noise_end "reload $1 k=$2 rep $rep"
  done
done
log "results in $SESSION_OUT"
