#!/bin/sh
# run.sh: builds a fuzz target with clang's libFuzzer, ASan and UBSan, and
# runs it for N seconds (first argument, default 10). The target is the
# second argument: cron (tests/fuzz/fuzz_cron.c, the default) or http
# (tests/fuzz/fuzz_http.c, the HTTP request parser). Exits non-zero on any
# crash, hang, sanitizer report or failed property. Build output, corpus and
# crash inputs go to $FUZZ_OUT (default build-fuzz/ in the repository, which
# git ignores).
set -eu
secs=${1:-10}
target=${2:-cron}
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
out=${FUZZ_OUT:-$root/build-fuzz}
cc=${CLANG:-clang}

if [ "$target" = http ]; then
  mkdir -p "$out/corpus-http" "$out/crashes-http"
  "$cc" -std=c11 -g -O1 -D_GNU_SOURCE -Wall -Wextra -Werror \
    -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined \
    -I"$root/host" "$here/fuzz_http.c" "$root/host/http_parse.c" "$root/host/sbuf.c" \
    -lhttp_parser -o "$out/fuzz_http"
  # Seeds: a split byte, then a connection's bytes.
  hseed() { printf "$1" > "$out/corpus-http/seed-$2"; }
  hseed '\003GET /runs?limit=5 HTTP/1.1\r\nHost: x\r\nX-API-Key: sk_1\r\n\r\n' 1
  hseed '\007POST /events HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhelloGET / HTTP/1.1\r\n\r\n' 2
  hseed '\011POST /e HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n' 3
  hseed '\001POST /e HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 2\r\nConnection: close\r\n\r\nab' 4
  hseed '\002HEAD / HTTP/1.0\r\nConnection: keep-alive\r\n\r\nGET /x HTTP/1.1\r\nA: b\r\n c\r\n\r\n' 5
  hseed '\005GET / HTTP/1.1\r\nUpgrade: h2c\r\nConnection: Upgrade\r\n\r\nPRI' 6
  cat > "$out/http.dict" <<'DICT'
"GET "
"POST "
"HEAD "
"PUT "
"DELETE "
" HTTP/1.1\x0d\x0a"
" HTTP/1.0\x0d\x0a"
"\x0d\x0a"
"Content-Length: "
"Transfer-Encoding: chunked"
"Connection: close"
"Connection: keep-alive"
"Expect: 100-continue"
"Upgrade: "
"Host: "
": "
"0\x0d\x0a\x0d\x0a"
"%2F"
"?"
"&"
DICT
  exec "$out/fuzz_http" -max_total_time="$secs" -timeout=10 -max_len=8192 \
    -dict="$out/http.dict" -artifact_prefix="$out/crashes-http/" \
    -print_final_stats=1 "$out/corpus-http"
fi

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
