#!/usr/bin/env bash
# tests/pg/pg_instance.sh: a throwaway PostgreSQL 15 for the test suite, in
# its own directory, reachable only on a Unix socket in that directory (no
# TCP port to collide with another suite or a system server).
#   pg_instance.sh start DIR    initdb DIR/data (if new) and start; prints the URL
#   pg_instance.sh restart DIR  pg_ctl restart -m immediate (a crash: no checkpoint)
#   pg_instance.sh pause DIR    stop (fast), keeping DIR: start brings it back
#   pg_instance.sh stop DIR     stop (fast) and remove DIR
#   pg_instance.sh url DIR      the connection URL of DIR's server
# initdb refuses to run as root: as root, the server runs as the `postgres`
# user (Debian's postgresql-15 creates it) or $SLUICE_PG_USER, and DIR is
# handed to that user. Authentication is trust, for the socket only.
set -euo pipefail
cmd=${1:-} dir=${2:-}
[ -n "$cmd" ] && [ -n "$dir" ] || { echo "usage: $0 start|restart|pause|stop|url DIR" >&2; exit 2; }
bin=${SLUICE_PG_BIN:-/usr/lib/postgresql/15/bin}
[ -x "$bin/initdb" ] || { echo "$0: no $bin/initdb: apt-get install postgresql-15 (scripts/packages.txt)" >&2; exit 3; }
# the port only names the socket file DIR/.s.PGSQL.PORT (no TCP); a random
# one per directory keeps the SysV shared memory keys of servers started at
# once (ctest -j) apart, which PostgreSQL derives from it
if [ -f "$dir/port" ]; then port=$(cat "$dir/port"); else port=$((20000 + RANDOM % 40000)); fi
as=()
if [ "$(id -u)" -eq 0 ]; then
  user=${SLUICE_PG_USER:-postgres}
  id "$user" >/dev/null 2>&1 || { echo "$0: no user $user to run PostgreSQL as (initdb refuses root)" >&2; exit 3; }
  as=(runuser -u "$user" --)
fi
url() { echo "postgresql:///postgres?host=$dir&port=$port&user=postgres"; }
ctl() { "${as[@]}" "$bin/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 60 "$@"; }
case "$cmd" in
  start)
    mkdir -p "$dir"
    echo "$port" >"$dir/port"
    [ ${#as[@]} -eq 0 ] || chown "$user" "$dir"
    chmod 700 "$dir"
    if [ ! -f "$dir/data/PG_VERSION" ]; then
      "${as[@]}" "$bin/initdb" -D "$dir/data" -U postgres -A trust --no-sync -E UTF8 \
        --locale=C >"$dir/initdb.log" 2>&1 || { cat "$dir/initdb.log" >&2; exit 1; }
    fi
    # small: several suites may run at once on a small machine
    ctl -o "-k $dir -c listen_addresses= -p $port -c shared_buffers=16MB -c max_connections=${SLUICE_PG_MAX_CONNECTIONS:-40} -c fsync=${SLUICE_PG_FSYNC:-on}" \
      start >/dev/null || { tail -20 "$dir/server.log" >&2; exit 1; }
    url
    ;;
  restart)
    ctl -m immediate restart >/dev/null || { tail -20 "$dir/server.log" >&2; exit 1; }
    ;;
  pause)
    ctl -m fast stop >/dev/null || { tail -20 "$dir/server.log" >&2; exit 1; }
    ;;
  stop)
    if [ -f "$dir/data/postmaster.pid" ]; then ctl -m fast stop >/dev/null || true; fi
    rm -rf "$dir"
    ;;
  url) url ;;
  *) echo "usage: $0 start|restart|pause|stop|url DIR" >&2; exit 2 ;;
esac
