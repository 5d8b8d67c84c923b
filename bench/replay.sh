#!/bin/bash
# bench/replay.sh [REPS=3]: issue 14's replay goal in one session: the replay of a run's
# 10,000 stored steps (bench/replay.lua) beside a bare LMDB cursor scan of the same records
# in the same store (bench/floor/lmdb_scan.c: the limit), each repetition behind the quiet
# gate of bench/lib.sh (which records the noise when the machine is not quiet).
#
#   fixture  RUNS runs of N completed steps each ({i = i, ok = true}), the run records
#            left failed as after a crash: written once, copied fresh for each measurement
#   sluice   every binary of SLUICE_BINS in turn (A/B interleaved within a repetition):
#            engine.execute resumes each run; the replay (loading the stored steps and the
#            pipeline's body) per step, wall and process CPU, and the whole execute
#            (which adds the run's start and finish commits, two fsyncs)
#   floor    lmdb_scan over the same RUNS key ranges of the same copy, right after
#
# Env: N (10000), RUNS (5), SLUICE_BINS="label=/path/to/sluice ..." (default: the build of
# git HEAD as bench/run_all.sh does, or $SLUICE_BIN), QUIET_MAX, QUIET_BUDGET, TMPDIR.
# Output: bench/out/replay-session-<stamp>.jsonl, and a summary on stdout.
set -euo pipefail
BENCH_DIR=$(cd "$(dirname "$0")" && pwd)
REPO=$(cd "$BENCH_DIR/.." && pwd)
REPS=${1:-3}
N=${N:-10000}
RUNS=${RUNS:-5}
. "$BENCH_DIR/lib.sh"
bench_session replay # STAMP, OUT, SESSION_OUT, ... and log() (bench/lib.sh)

if [ -z "${SLUICE_BINS:-}" ]; then
  sluice_binary # sets REV, BIN (bench/lib.sh)
  SLUICE_BINS="$REV=$BIN"
fi
gcc -O2 -Wall -o "$OUT/bin/lmdb_scan" "$BENCH_DIR/floor/lmdb_scan.c" -llmdb

WORK=$(mktemp -d "${TMPDIR:-/tmp}/sluice-replay.XXXXXX")
cleanup() { rm -rf "$WORK"; rm -f "$QUIET_WAITED_FILE"; }
trap cleanup EXIT
trap 'exit 130' INT TERM

first_bin=${SLUICE_BINS%% *}; first_bin=${first_bin#*=}
mkdir -p "$WORK/fixture"
"$first_bin" "$BENCH_DIR/replay.lua" fill "$WORK/fixture" "$N" "$RUNS"
echo "{\"kind\":\"machine\",\"session\":\"$BENCH_SESSION\",\"loadavg\":\"$(cut -d' ' -f1-3 /proc/loadavg)\",\"nproc\":$(nproc),\"bins\":\"$SLUICE_BINS\",\"steps\":$N,\"runs\":$RUNS}" \
  | tee -a "$SESSION_OUT"

floor() { # DIR LABEL
  "$OUT/bin/lmdb_scan" "$1" replay- "$RUNS" 5 | python3 -c '
import json, sys, os
d = {"bench": "floor.lmdb_scan", "session": os.environ["BENCH_SESSION"], "after": sys.argv[1]}
for tok in sys.stdin.read().split()[1:]:
    k, v = tok.split("=", 1)
    d[k] = float(v) if "." in v else int(v)
print(json.dumps(d))' "$2" | tee -a "$SESSION_OUT"
}

for rep in $(seq 1 "$REPS"); do
  for pair in $SLUICE_BINS; do
    label=${pair%%=*}; bin=${pair#*=}
    quiet_gate
    noise_begin
    rm -rf "$WORK/s" && cp -r "$WORK/fixture" "$WORK/s"
    "$bin" "$BENCH_DIR/replay.lua" replay "$WORK/s" "$N" "$RUNS" --tag "$label#$rep" | tee -a "$SESSION_OUT" | grep summary
    floor "$WORK/s" "$label#$rep"
    noise_end "replay.$label#$rep"
  done
done

python3 - "$SESSION_OUT" <<'PY'
import json, sys, statistics as st
rows = [json.loads(l) for l in open(sys.argv[1]) if l.startswith("{")]
by = {}
for r in rows:
    if r.get("bench") == "sluice.replay.summary":
        by.setdefault(r["tag"].split("#")[0], []).append(r)
floor = [r for r in rows if r.get("bench") == "floor.lmdb_scan"]
fl = st.median(r["median_ns_per_record"] for r in floor) / 1000 if floor else None
print("replay of %s stored steps, median over repetitions of the per-run medians:" % rows[0].get("steps"))
for label, v in by.items():
    med = st.median(r["median_us_per_step"] for r in v)
    cpu = st.median(r["median_cpu_us_per_step"] for r in v)
    ex = st.median(r["median_execute_us_per_step"] for r in v)
    print("  %-24s replay %.3f us/step (cpu %.3f), execute %.3f us/step%s" % (
        label, med, cpu, ex, "" if fl is None else ", %.1fx the floor" % (med / fl)))
if fl is not None:
    print("  floor (lmdb_scan)        %.3f us/record" % fl)
PY
