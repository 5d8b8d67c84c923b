#!/bin/bash
# bench/run_all.sh [REPS=3]: every sluice benchmark, the disk's floor, and the DBOS
# peer, in one session, each measurement REPS times behind a quiet gate; then the
# medians (bench/summarize.py). About 12-15 minutes on a quiet 2-core machine.
#
# The sluice binary is built from `git archive HEAD` into bench/out/ (so the
# numbers belong to a commit, not to whatever is half-edited in the working tree),
# unless SLUICE_BIN names one (then the rev is HEAD's, marked +dirty if host/ or
# lua/ differ from it). Stores and side-effect files go to $TMPDIR (default /tmp,
# the same ext4 disk as the repository here).
#
# Env: SKIP_DBOS=1, SKIP_FLOOR=1, QUIET_MAX (s per gate, default 90),
# QUIET_BUDGET (s of waiting in all, default 480), TMPDIR.
# Output: bench/out/session-<stamp>.jsonl (every JSON line of this session),
# bench/out/summary-<stamp>.md (the tables), plus the per-bench *.jsonl files.
set -euo pipefail
BENCH_DIR=$(cd "$(dirname "$0")" && pwd)
REPO=$(cd "$BENCH_DIR/.." && pwd)
REPS=${1:-3}
STAMP=$(date -u +%Y%m%dT%H%M%SZ)
OUT=$BENCH_DIR/out
mkdir -p "$OUT"
export BENCH_SESSION=$STAMP
export SESSION_OUT=$OUT/session-$STAMP.jsonl
export QUIET_WAITED_FILE=$OUT/.quiet-$STAMP
. "$BENCH_DIR/lib.sh"
T_BEGIN=$(date +%s)

# ---- the binary -------------------------------------------------------------
sluice_binary # sets and exports REV, BIN (bench/lib.sh)
STEPS_LUA=$BENCH_DIR/steps.lua

# ---- the machine ------------------------------------------------------------
machine_record

m() { # LABEL CMD... : gate, run, record the noise
  local label=$1; shift
  quiet_gate
  noise_begin
  "$@"
  noise_end "$label"
}

# ---- the floor: fsync and LMDB commits on this disk --------------------------
FLOOR_BIN=$OUT/bin
if [ "${SKIP_FLOOR:-0}" != 1 ]; then
  mkdir -p "$FLOOR_BIN"
  gcc -O2 -Wall -o "$FLOOR_BIN/fsync_lat" "$BENCH_DIR/floor/fsync_lat.c"
  gcc -O2 -Wall -o "$FLOOR_BIN/lmdb_groupcommit" "$BENCH_DIR/floor/lmdb_groupcommit.c" -llmdb -lpthread
fi
kv_json() { # LABEL: "k=v k=v" on stdin -> JSON line
  python3 -c '
import json, sys, os
line = sys.stdin.read().split()
d = {"bench": "floor." + sys.argv[1], "session": os.environ["BENCH_SESSION"], "kind": "floor"}
for i, tok in enumerate(line):
    if "=" in tok:
        k, v = tok.split("=", 1)
        try: v = float(v) if "." in v else int(v)
        except ValueError: pass
        d[k] = v
    elif i == 0: d["mode"] = tok
print(json.dumps(d))' "$1" | tee -a "$SESSION_OUT" "$OUT/floor.jsonl"
}
floor() {
  local d
  d=$(mktemp -d "${TMPDIR:-/tmp}/sluice-floor.XXXXXX")
  "$FLOOR_BIN/fsync_lat" "$d" append 3 1000000 | kv_json fsync
  for keys in append runs; do
    for p in 1 64 1000; do
      [ "$keys" = runs ] && [ "$p" = 1 ] && continue
      rm -rf "$d/gc" && mkdir -p "$d/gc"
      KEYS=$keys timeout 60 "$FLOOR_BIN/lmdb_groupcommit" "$d/gc" "$p" 3 sync 10000 | kv_json "lmdb_gc"
    done
  done
  rm -rf "$d"
}

# ---- sluice -------------------------------------------------------------------
log "session $STAMP, sluice $REV ($BIN), $REPS repetitions"
for rep in $(seq 1 "$REPS"); do
  log "sluice repetition $rep/$REPS"
  [ "${SKIP_FLOOR:-0}" != 1 ] && m "floor#$rep" floor
  m "sluice.seq#$rep" "$BIN" "$STEPS_LUA" seq 10000 --tag "rep$rep"
  # concurrent runs: the issue's loads, and shorter runs (per-run state grows with length)
  m "sluice.conc64#$rep" "$BIN" "$STEPS_LUA" conc 64 256000 --tag "rep$rep"
  m "sluice.conc64#$rep" "$BIN" "$STEPS_LUA" conc 64 64000 --tag "rep$rep"
  m "sluice.conc64#$rep" "$BIN" "$STEPS_LUA" conc 64 6400 --tag "rep$rep"
  m "sluice.conc1000#$rep" "$BIN" "$STEPS_LUA" conc 1000 256000 --tag "rep$rep"
  m "sluice.conc1000#$rep" "$BIN" "$STEPS_LUA" conc 1000 100000 --tag "rep$rep"
  m "sluice.wf32#$rep" "$BIN" "$STEPS_LUA" wf 1000 32 --tag "rep$rep"
  m "sluice.wf64#$rep" "$BIN" "$STEPS_LUA" wf 1000 64 --tag "rep$rep"
  m "sluice.replay#$rep" "$BIN" "$STEPS_LUA" replay 10000 --tag "rep$rep"
  m "sluice.idle#$rep" "$BIN" "$STEPS_LUA" idle 3 --tag "rep$rep"
done
log "sluice recovery x$REPS"
SLUICE_BIN=$BIN "$BENCH_DIR/recovery.sh" "$REPS"

# ---- DBOS ---------------------------------------------------------------------
if [ "${SKIP_DBOS:-0}" != 1 ]; then
  log "DBOS peer x$REPS"
  "$BENCH_DIR/dbos/run.sh" "$REPS"
fi

log "done in $(( $(date +%s) - T_BEGIN )) s; quiet-gate waiting: $(cat "$QUIET_WAITED_FILE") s"
rm -f "$QUIET_WAITED_FILE"
python3 "$BENCH_DIR/summarize.py" "$SESSION_OUT" | tee "$OUT/summary-$STAMP.md"
