#!/bin/bash
# bench/recovery.sh [RUNS=3]: restart-to-completion of a killed 10,000-step run.
#
# Per run: `sluice run bench/recovery_pipeline.lua --id ID` (10,000 steps, each
# appends an 8-byte record to a side-effect file) is SIGKILLed by its PID once
# the file holds KILL_AT (5,000) records; the committed steps are counted with
# `sluice status ID --json`; after 0.5 s the same command is spawned again and
# timed from spawn to exit ("restart to completion": process start, engine load,
# replay of the stored steps, execution of the rest, final commit, exit).
# Verified from the side-effect file: every step ran, no step committed before
# the kill ran again, at most one step (the one in flight) ran twice.
#
# Env: SLUICE_BIN (default build/sluice), N (10000), KILL_AT (N/2), GATE=0 to
# skip the quiet gate, SESSION_OUT (a file that also gets every JSON line),
# BENCH_SESSION (a tag put in every line), TMPDIR.
# Prints one JSON line per run and a summary line with the medians; appends
# them to bench/out/recovery.jsonl.
set -euo pipefail
BENCH_DIR=$(cd "$(dirname "$0")" && pwd)
REPO=$(cd "$BENCH_DIR/.." && pwd)
. "$BENCH_DIR/lib.sh"
RUNS=${1:-3}
N=${N:-10000}
KILL_AT=${KILL_AT:-$((N / 2))}
BIN=${SLUICE_BIN:-$REPO/build/sluice}
OUTDIR=${BENCH_OUT:-$BENCH_DIR/out}
mkdir -p "$OUTDIR"
REV=${SLUICE_GIT_REV:-$(git -C "$REPO" rev-parse --short HEAD)$( [ -n "$(git -C "$REPO" status --porcelain --untracked-files=no -- host lua CMakeLists.txt)" ] && echo +dirty)}
[ -x "$BIN" ] || { echo "recovery.sh: no sluice binary at $BIN (build it, or set SLUICE_BIN)" >&2; exit 2; }

WORK=$(mktemp -d "${TMPDIR:-/tmp}/sluice-recovery.XXXXXX")
CHILD=
cleanup() {
  if [ -n "$CHILD" ] && kill -0 "$CHILD" 2>/dev/null; then kill -9 "$CHILD" 2>/dev/null || true; fi
  rm -rf "$WORK"
}
trap cleanup EXIT

emit() {
  echo "$1"
  echo "$1" >> "$OUTDIR/recovery.jsonl"
  [ -n "${SESSION_OUT:-}" ] && echo "$1" >> "$SESSION_OUT"
  return 0
}

results=()
for r in $(seq 1 "$RUNS"); do
  [ "${GATE:-1}" = 1 ] && quiet_gate
  store="$WORK/store$r"
  side="$WORK/side$r"
  id="recovery-$r-$$"
  : > "$side"
  input="{\"n\":$N,\"side\":\"$side\"}"
  noise_begin

  # phase 1: start, kill -9 at KILL_AT records
  t_start=$(now_ns)
  "$BIN" run "$BENCH_DIR/recovery_pipeline.lua" --store "$store" --id "$id" --input "$input" \
    > "$WORK/out1" 2> "$WORK/err1" &
  CHILD=$!
  want=$((KILL_AT * 8))
  deadline=$(( $(date +%s) + 120 ))
  while :; do
    size=$(stat -c %s "$side")
    [ "$size" -ge "$want" ] && break
    if ! kill -0 "$CHILD" 2>/dev/null; then echo "recovery.sh: the run exited before the kill point:" >&2; cat "$WORK/err1" >&2; exit 1; fi
    [ "$(date +%s)" -ge "$deadline" ] && { echo "recovery.sh: no progress to $KILL_AT steps in 120 s" >&2; exit 1; }
    sleep 0.001
  done
  kill -9 "$CHILD"
  t_kill=$(now_ns)
  { wait "$CHILD"; } 2>/dev/null || true
  CHILD=
  executed_before=$(( $(stat -c %s "$side") / 8 ))
  checkpointed=$("$BIN" status "$id" --store "$store" --json |
    python3 -c 'import json,sys; d=json.load(sys.stdin); print(sum(1 for s in d["steps"] if s["status"]=="completed"))')
  status_after_kill=$("$BIN" status "$id" --store "$store" --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["status"])')
  sleep 0.5

  # phase 2: restart, timed from spawn to exit
  t0=$(now_ns)
  set +e
  "$BIN" run "$BENCH_DIR/recovery_pipeline.lua" --store "$store" --id "$id" --input "$input" \
    > "$WORK/out2" 2> "$WORK/err2"
  rc=$?
  set -e
  t1=$(now_ns)
  noise_end "sluice.recovery#$r"
  restart_ms=$(awk -v a="$t0" -v b="$t1" 'BEGIN{printf "%.1f", (b-a)/1e6}')
  kill_after_ms=$(awk -v a="$t_start" -v b="$t_kill" 'BEGIN{printf "%.1f", (b-a)/1e6}')

  line=$(python3 - "$side" "$N" "$executed_before" "$checkpointed" "$WORK/out2" "$WORK/err2" <<PY
import json, sys, collections
side, n, before, cp, out2, err2 = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), sys.argv[5], sys.argv[6]
recs = [int(x) for x in open(side).read().split()]
after = recs[before:]
cnt = collections.Counter(recs)
dups = sorted(i for i, c in cnt.items() if c > 1)
missing = n - len(cnt)
# steps run sequentially: steps 1..cp were committed before the kill
reexec_committed = sum(1 for i in after if i <= cp)
try:
    result = json.loads(open(out2).read() or "null")
except ValueError:
    result = None
ok = ($rc == 0 and missing == 0 and reexec_committed == 0 and len(dups) <= 1
      and result == {"done": n, "last": n})
print(json.dumps({
    "bench": "sluice.recovery", "mode": "recovery", "run": $r, "at": "$(date -u +%FT%TZ)", "rev": "$REV",
    "session": "${BENCH_SESSION:-}", "durability": "fsync (default)", "steps": n,
    "kill_at": $KILL_AT, "killed_after_ms": $kill_after_ms, "executed_before_kill": before,
    "checkpointed_before_kill": cp, "status_after_kill": "$status_after_kill",
    "executed_after_restart": len(after), "expected_after_restart": n - cp,
    "reexecuted_committed_steps": reexec_committed, "duplicates": dups, "missing": missing,
    "exit_code": $rc, "result": result, "restart_to_completion_ms": $restart_ms, "verified": ok,
}, sort_keys=True))
if not ok:
    sys.stderr.write("recovery.sh: VERIFICATION FAILED; stderr of the restart:\n" + open(err2).read())
PY
)
  emit "$line"
  results+=("$restart_ms")
done

med=$(printf '%s\n' "${results[@]}" | sort -n | awk '{a[NR]=$1} END{ if (NR%2) print a[(NR+1)/2]; else printf "%.1f", (a[NR/2]+a[NR/2+1])/2 }')
emit "{\"bench\":\"sluice.recovery\",\"kind\":\"summary\",\"at\":\"$(date -u +%FT%TZ)\",\"rev\":\"$REV\",\"session\":\"${BENCH_SESSION:-}\",\"runs\":$RUNS,\"steps\":$N,\"median_restart_to_completion_ms\":$med,\"all_ms\":[$(IFS=,; echo "${results[*]}")]}"
