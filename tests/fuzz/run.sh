#!/bin/sh
# run.sh: builds the cron fuzz target (tests/fuzz/fuzz_cron.c) with clang's
# libFuzzer, ASan and UBSan, and runs it for N seconds (first argument,
# default 10). Exits non-zero on any crash, hang, sanitizer report or failed
# property. Build output, corpus and crash inputs go to $FUZZ_OUT (default
# build-fuzz/ in the repository, which git ignores).
set -eu
secs=${1:-10}
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
out=${FUZZ_OUT:-$root/build-fuzz}
cc=${CLANG:-clang}
mkdir -p "$out/corpus-cron" "$out/crashes-cron"

"$cc" -std=c11 -g -O1 -D_GNU_SOURCE -Wall -Wextra -Werror \
  -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined \
  -I"$root/host" "$here/fuzz_cron.c" "$root/host/cron.c" -lpthread \
  -o "$out/fuzz_cron"

# Seeds: 8 bytes of instant, 1 byte of zone, the expression.
seed() { printf "$1" > "$out/corpus-cron/seed-$2"; }
seed '\000\000\000\000\150\000\000\000\002*/15 9-17 * jan-mar mon-fri' 1
seed '\000\000\000\000\200\000\000\000\0030 0 13 * 5' 2
seed '\000\000\000\001\000\000\000\000\0040 0 29 2 */7' 3
seed '\000\000\000\000\000\000\000\000\000@daily' 4
seed '\000\000\000\000\001\000\000\000\00530 2 * * 0,7' 5
seed '\000\000\000\000\002\000\000\000\0060 0 31 2 *' 6
seed '\000\000\000\000\003\000\000\000\0012026-01-05T09:00:00.5+02:00' 7
seed '\377\377\377\377\377\377\377\377\200*/7,1-5/2 */5 1,15,31 */3 fri-sat,7' 8

cat > "$out/cron.dict" <<'DICT'
"*"
"*/"
"-"
","
"/"
" "
"@yearly"
"@annually"
"@monthly"
"@weekly"
"@daily"
"@midnight"
"@hourly"
"@reboot"
"jan"
"feb"
"dec"
"sun"
"mon"
"fri"
"sat"
"saturday"
"59"
"23"
"31"
"12"
"7"
"T"
"Z"
"+02:00"
"2026-"
DICT

"$out/fuzz_cron" -max_total_time="$secs" -timeout=10 -max_len=512 \
  -dict="$out/cron.dict" -artifact_prefix="$out/crashes-cron/" \
  -print_final_stats=1 "$out/corpus-cron"
