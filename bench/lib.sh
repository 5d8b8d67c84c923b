# bench/lib.sh: sourced by the bench scripts.
#  quiet_gate         wait (at most QUIET_MAX s, default 90) until CPU busy < QUIET_BUSY %
#                     (default 10) over 3 s and no task is blocked on I/O; prints the
#                     state it ended in. Other engineers share these 2 cores; a run that
#                     starts on a busy machine measures them, not us.
#                     QUIET_BUDGET (s, default 480) caps the total waiting of one session
#                     (counted in $QUIET_WAITED_FILE when run_all.sh sets it):
#                     past it the gate only samples once and goes on (the noise is recorded).
#  noise_begin/noise_end LABEL
#                     CPU seconds used meanwhile by processes outside our Unix session
#                     (others_cpu.py), appended as a JSON line {"kind":"noise",...} to $SESSION_OUT
#  now_ns             monotonic-ish wall clock in ns (date +%s%N)
#  bench_session NAME sets and exports the session's names: STAMP, OUT (bench/out, with
#                     bin/), BENCH_SESSION=NAME-STAMP, SESSION_OUT=OUT/NAME-session-STAMP.jsonl,
#                     QUIET_WAITED_FILE; and defines log()
#  machine_record [KEY=CMD ...]
#                     one JSON line {"kind":"machine",...} (this machine, $REV and $BIN), plus
#                     KEY: CMD's output for each pair, on stdout and appended to $SESSION_OUT
BENCH_DIR=${BENCH_DIR:-$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)}
QUIET_MAX=${QUIET_MAX:-90}
QUIET_BUSY=${QUIET_BUSY:-10}
QUIET_BUDGET=${QUIET_BUDGET:-480}
QUIET_WAITED_FILE=${QUIET_WAITED_FILE:-} # run_all.sh sets it: the session's total waiting
MYSID=$(awk '{print $6}' /proc/$$/stat)
now_ns() { date +%s%N; }

bench_session() {
  STAMP=$(date -u +%Y%m%dT%H%M%SZ)
  OUT=$BENCH_DIR/out
  mkdir -p "$OUT/bin"
  export BENCH_SESSION=$1-$STAMP SESSION_OUT=$OUT/$1-session-$STAMP.jsonl
  export QUIET_WAITED_FILE=$OUT/.quiet-$1-$STAMP
}
log() { echo "== $(date -u +%T) $*" >&2; }

machine_record() {
  python3 - "${REV:-}" "${BIN:-}" "$@" <<'PY' | tee -a "$SESSION_OUT"
import json, os, subprocess, sys, datetime
sh = lambda c: subprocess.run(c, shell=True, capture_output=True, text=True).stdout.strip()
rec = {
    "kind": "machine", "session": os.environ["BENCH_SESSION"],
    "at": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
    "rev": sys.argv[1], "bin": sys.argv[2], "nproc": sh("nproc"), "kernel": sh("uname -r"),
    "cpu": sh("lscpu | sed -n 's/^Model name: *//p'"), "hypervisor": sh("lscpu | sed -n 's/^Hypervisor vendor: *//p'"),
    "mem": sh("free -h | awk '/^Mem/{print $2}'"),
    "disk": sh("df -T \"${TMPDIR:-/tmp}\" | awk 'NR==2{print $1\" \"$2}'") + " write_cache=" + sh("cat /sys/block/vda/queue/write_cache 2>/dev/null"),
    "tmpdir": os.environ.get("TMPDIR", "/tmp"), "loadavg": sh("cut -d' ' -f1-3 /proc/loadavg"),
}
for pair in sys.argv[3:]:
    key, cmd = pair.split("=", 1)
    rec[key] = sh(cmd)
print(json.dumps(rec))
PY
}

_cpu_sample() { awk '/^cpu /{print $2+$3+$4+$6+$7+$8, $5}' /proc/stat; }
quiet_gate() {
  local start b1 i1 b2 i2 busy blocked waited max
  start=$(date +%s)
  waited=0
  [ -n "$QUIET_WAITED_FILE" ] && waited=$(cat "$QUIET_WAITED_FILE" 2>/dev/null || echo 0)
  max=$QUIET_MAX
  [ "$waited" -ge "$QUIET_BUDGET" ] && max=0
  while :; do
    read -r b1 i1 < <(_cpu_sample); sleep 3
    read -r b2 i2 < <(_cpu_sample)
    busy=$(( (b2-b1)*100 / ((b2-b1)+(i2-i1)+1) ))
    blocked=$(awk '/procs_blocked/{print $2}' /proc/stat)
    if [ "$busy" -lt "$QUIET_BUSY" ] && [ "$blocked" -eq 0 ]; then
      GATE_STATE="quiet busy=${busy}%"
      break
    fi
    if [ $(( $(date +%s) - start )) -ge "$max" ]; then
      GATE_STATE="NOT-QUIET busy=${busy}% blocked=$blocked after $(( $(date +%s) - start ))s"
      break
    fi
  done
  [ -n "$QUIET_WAITED_FILE" ] && echo $(( waited + $(date +%s) - start )) > "$QUIET_WAITED_FILE"
  echo "  gate: $GATE_STATE load=$(cut -d' ' -f1-3 /proc/loadavg)" >&2
}

noise_begin() { _NOISE_SNAP=$(mktemp); python3 "$BENCH_DIR/others_cpu.py" snap "$_NOISE_SNAP"; _NOISE_T0=$(now_ns); }
noise_end() {
  local label=$1 line secs others top
  line=$(python3 "$BENCH_DIR/others_cpu.py" diff "$_NOISE_SNAP" "$MYSID")
  rm -f "$_NOISE_SNAP"
  secs=$(awk -v a="$_NOISE_T0" -v b="$(now_ns)" 'BEGIN{printf "%.2f", (b-a)/1e9}')
  others=${line#others_cpu_s=}; others=${others%% *}
  top=${line##*others_top=}
  local j="{\"kind\":\"noise\",\"label\":\"$label\",\"at\":\"$(date -u +%FT%TZ)\",\"secs\":$secs,\"others_cpu_s\":$others,\"others_top\":\"$top\",\"gate\":\"${GATE_STATE:-none}\",\"session\":\"${BENCH_SESSION:-}\"}"
  echo "$j" >&2
  [ -n "${SESSION_OUT:-}" ] && echo "$j" >> "$SESSION_OUT"
  return 0
}

# The binary measured, as REV (git short rev, +dirty, +lua:DIR) and BIN,
# exported as SLUICE_GIT_REV and SLUICE_BIN: $SLUICE_BIN if set, else a
# build of `git archive HEAD` in $OUT/build-REV (so uncommitted changes are
# never measured by accident). Needs REPO, OUT and log().
sluice_binary() {
  REV=$(git -C "$REPO" rev-parse --short HEAD)
  if [ -n "${SLUICE_BIN:-}" ]; then
    BIN=$SLUICE_BIN
    [ -n "$(git -C "$REPO" status --porcelain --untracked-files=no -- host lua CMakeLists.txt)" ] && REV=$REV+dirty
  else
    SRC=$OUT/src-$REV
    if [ ! -x "$OUT/build-$REV/sluice" ]; then
      log "building sluice $REV from git HEAD into $OUT/build-$REV"
      rm -rf "$SRC" && mkdir -p "$SRC"
      git -C "$REPO" archive HEAD | tar -x -C "$SRC"
      cmake -S "$SRC" -B "$OUT/build-$REV" -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
      cmake --build "$OUT/build-$REV" -j2 --target sluice >/dev/null
    fi
    BIN=$OUT/build-$REV/sluice
  fi
  # engine Lua loaded from a directory, not the embedded copy
  if [ -n "${SLUICE_LUA_ROOT:-}" ]; then REV="$REV+lua:$SLUICE_LUA_ROOT"; fi
  export SLUICE_GIT_REV=$REV SLUICE_BIN=$BIN
}
