#!/usr/bin/env bash
# bench/repl.sh [RUNS=1000000] [REPS=200]: the REPL round trip of
# runs{limit=10} on a store of RUNS runs, and sluice run's hand-off latency
# through the control socket (bench/repl.lua), against a sluice serve
# started here; plus whole commands timed from outside (process start
# included): sluice repl -e, sluice runs --limit 10 (this build, and
# $OLD_BIN when given: a build before runs were listed in pages), and
# sluice run handed to serve. Results in bench/RESULTS.md ("REPL and
# hand-off"). Stops the serve it started, by PID.
set -euo pipefail
BENCH_DIR=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$BENCH_DIR/.." && pwd)
. "$BENCH_DIR/lib.sh"
BIN=${SLUICE_BIN:-$ROOT/build/sluice}
RUNS=${1:-1000000}
REPS=${2:-200}
WORK=$(mktemp -d /tmp/sluice-bench-repl.XXXXXX)
STORE=$WORK/store
SERVE_PID=
cleanup() {
  if [ -n "$SERVE_PID" ]; then kill -TERM "$SERVE_PID" 2>/dev/null || true; wait "$SERVE_PID" 2>/dev/null || true; fi
  rm -rf "$WORK"
}
trap cleanup EXIT

mkdir -p "$WORK/p"
cat > "$WORK/p/noop.lua" <<'EOF'
pipeline("noop", function() return true end)
EOF

echo "== fill: $RUNS runs"
"$BIN" "$BENCH_DIR/repl.lua" fill "$STORE" "$RUNS"
du -sh "$STORE"

"$BIN" serve "$WORK/p" --store "$STORE" 2> "$WORK/serve.log" &
SERVE_PID=$!
for _ in $(seq 1 300); do grep -q "schedules armed" "$WORK/serve.log" && break; sleep 0.1; done
grep -q "schedules armed" "$WORK/serve.log" || { cat "$WORK/serve.log"; exit 1; }

quiet_gate
echo "gate: $GATE_STATE"
echo "== round trips over the control socket ($REPS each)"
"$BIN" "$BENCH_DIR/repl.lua" roundtrip "$STORE" "$REPS"
echo "== hand-off ($REPS run requests)"
"$BIN" "$BENCH_DIR/repl.lua" handoff "$STORE" "$REPS"

# whole commands, process start included: median of 21 wall times in ms
wall() {
  local times=() t0 t1
  for _ in $(seq 1 21); do
    t0=$(now_ns)
    "$@" > /dev/null 2>&1
    t1=$(now_ns)
    times+=($(( (t1 - t0) / 1000 )))
  done
  printf '%s\n' "${times[@]}" | sort -n | awk '{a[NR]=$1} END {printf "median %.2f ms  min %.2f ms  max %.2f ms\n", a[11]/1000, a[1]/1000, a[NR]/1000}'
}
echo "== whole commands (21 each)"
echo -n "sluice repl -e 'return #runs{limit=10}':      "; wall "$BIN" repl --store "$STORE" -e 'return #runs{limit=10}'
echo -n "sluice run noop.lua (handed to serve):       "; wall "$BIN" run "$WORK/p/noop.lua" --store "$STORE"
echo -n "sluice runs --limit 10:                      "; wall "$BIN" runs --limit 10 --store "$STORE"
if [ -n "${OLD_BIN:-}" ]; then
  echo -n "sluice runs --limit 10 (OLD_BIN):            "; wall "$OLD_BIN" runs --limit 10 --store "$STORE"
fi
