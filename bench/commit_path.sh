#!/bin/bash
# bench/commit_path.sh [REPS=2]: issue 14's commit-path A/B in one session: two
# sluice binaries (BASE_BIN, NEW_BIN) interleaved, each `bench/stream.lua emit 1|64|1000`
# and `bench/steps.lua conc 64 256000`; then Redis 7 `appendfsync always` (bench/
# stream_redis.sh's XADD shapes, a fresh server each) and the LMDB closed-loop floor
# (bench/floor/lmdb_groupcommit.c, KEYS=runs, 64 writers, 3 s), every repetition.
# A B Redis floor, REPS times; on a loaded machine only ratios inside the session count.
#
# Needs Redis (bench only, so not in scripts/packages.txt, which is what CI installs):
#   apt-get install -y redis-server redis-tools libhiredis-dev
# Env: BASE_BIN, NEW_BIN (sluice binaries, required), QUIET_MAX (s per gate, default 5
# here), TMPDIR. Output: bench/out/commit-session-<stamp>.jsonl (every JSON line, sluice
# lines tagged base-repN / new-repN) and the Redis session's own file beside it.
set -euo pipefail
BENCH_DIR=$(cd "$(dirname "$0")" && pwd)
REPS=${1:-2}
export QUIET_MAX=${QUIET_MAX:-5}
. "$BENCH_DIR/lib.sh"
bench_session commit # STAMP, OUT, SESSION_OUT, ... and log() (bench/lib.sh)
: "${BASE_BIN:?BASE_BIN: the sluice binary before}" "${NEW_BIN:?NEW_BIN: the sluice binary after}"
gcc -O2 -Wall -o "$OUT/bin/lmdb_groupcommit" "$BENCH_DIR/floor/lmdb_groupcommit.c" -llmdb -lpthread
trap 'rm -f "$QUIET_WAITED_FILE"' EXIT

# sectors written by the disks (every process: /sys/block/*/stat field 7, not
# loop or zram devices),
# beside each measurement, as the counters of one process over-count
disk_sectors() {
  local s=0 f
  for f in /sys/block/*/stat; do
    case $f in */loop*|*/zram*|*/ram*) continue ;; esac
    s=$((s + $(awk '{print $7}' "$f")))
  done
  echo $s
}
run() { # NAME BIN ARGS...: one measurement, its JSON line into the session
  local name=$1; shift
  quiet_gate
  local d0 d1
  d0=$(disk_sectors)
  "$@" --out "$OUT/commit-$STAMP" | tail -1 | tee -a "$SESSION_OUT" | cut -c1-160
  d1=$(disk_sectors)
  echo "{\"bench\": \"disk\", \"session\": \"$BENCH_SESSION\", \"name\": \"$name\", \"sectors_written\": $((d1 - d0))}" >> "$SESSION_OUT"
  echo "   ($name)" >&2
}
floor() {
  local d
  d=$(mktemp -d "${TMPDIR:-/tmp}/sluice-floor.XXXXXX")
  KEYS=runs timeout 60 "$OUT/bin/lmdb_groupcommit" "$d" 64 3 sync 10000 | python3 -c '
import json, sys, os
d = {"bench": "floor.lmdb_gc", "session": os.environ["BENCH_SESSION"], "keys": "runs"}
for tok in sys.stdin.read().split()[1:]:
    k, v = tok.split("=", 1)
    try: v = float(v) if "." in v else int(v)
    except ValueError: pass
    d[k] = v
print(json.dumps(d))' | tee -a "$SESSION_OUT"
  rm -rf "$d"
}

log "commit-path session $STAMP: base $BASE_BIN, new $NEW_BIN, $REPS repetitions"
for rep in $(seq 1 "$REPS"); do
  for side in base new; do
    bin=$BASE_BIN
    [ $side = new ] && bin=$NEW_BIN
    tag=$side-rep$rep
    run "$tag emit1" "$bin" "$BENCH_DIR/stream.lua" emit 1 20000 5 --tag "$tag"
    run "$tag emit64" "$bin" "$BENCH_DIR/stream.lua" emit 64 400000 6 --tag "$tag"
    run "$tag emit1000" "$bin" "$BENCH_DIR/stream.lua" emit 1000 800000 6 --tag "$tag"
    run "$tag conc64" "$bin" "$BENCH_DIR/steps.lua" conc 64 256000 --tag "$tag"
  done
  log "redis appendfsync always, repetition $rep"
  SLUICE_BIN=$NEW_BIN SKIP_SLUICE=1 SKIP_FLOOR=1 SKIP_XRANGE=1 TIERS=always \
    REDIS_SHAPES="1x1 64x1 1000x1" \
    QUIET_MAX=5 "$BENCH_DIR/stream_redis.sh" 1 2>&1 | grep -v '^ *gate' | tail -3 >&2
  ls -t "$OUT"/stream-session-*.jsonl | head -1 | xargs grep -h '"redis.xadd"' | tee -a "$SESSION_OUT" | cut -c1-160
  log "floor, repetition $rep"
  floor
done
log "done: $SESSION_OUT"
