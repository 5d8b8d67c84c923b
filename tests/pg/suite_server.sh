#!/usr/bin/env bash
# tests/pg/suite_server.sh: the one PostgreSQL 15 of a ctest run of the spec
# suite on the PostgreSQL backend (label pgsuite; the pgsuite_start and
# pgsuite_stop fixtures), through pg_instance.sh. Each spec copies its
# databases from the template made here with `sluice store migrate`
# (tests/helper.lua), which is much faster than migrating each one.
#   suite_server.sh start STATE SLUICE_BIN   start; STATE/url is the server's URL
#   suite_server.sh stop STATE               stop and remove it
# The server lives under /tmp (a Unix socket path must stay short); STATE/dir
# names it. fsync is off: this server never crashes (the specs that crash a
# server start their own, tests/pg), and creating and dropping hundreds of
# databases with fsync on would cost minutes on a small machine.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
cmd=${1:-} state=${2:-}
[ -n "$cmd" ] && [ -n "$state" ] || { echo "usage: $0 start STATE SLUICE_BIN | stop STATE" >&2; exit 2; }
stop() {
  if [ -f "$state/dir" ]; then "$here/pg_instance.sh" stop "$(cat "$state/dir")"; fi
  rm -rf "$state"
}
case "$cmd" in
  start)
    bin=${3:?usage: $0 start STATE SLUICE_BIN}
    stop # a server an interrupted run left behind
    mkdir -p "$state"
    dir=$(mktemp -d /tmp/sluice-pgsuite.XXXXXX)
    echo "$dir" >"$state/dir"
    url=$(SLUICE_PG_FSYNC=off SLUICE_PG_MAX_CONNECTIONS=100 "$here/pg_instance.sh" start "$dir")
    psql=${SLUICE_PG_BIN:-/usr/lib/postgresql/15/bin}/psql
    "$psql" -q -X "$url" -c 'CREATE DATABASE sluice_template'
    "$bin" store migrate --store "${url/\/postgres\?//sluice_template?}"
    echo "$url" >"$state/url"
    ;;
  stop) stop ;;
  *) echo "usage: $0 start STATE SLUICE_BIN | stop STATE" >&2; exit 2 ;;
esac
