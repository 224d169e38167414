#!/usr/bin/env bash
# A throwaway PostgreSQL cluster for tests and benchmarks: initdb in a directory of its own,
# one loopback port, a trusted superuser `eshost` and a database `eshost`, fsync and
# synchronous_commit on (the defaults, stated so nobody benchmarks a non-durable server).
#
#   scripts/postgres.sh start   [DIR]   start (or find running) the cluster in DIR; prints its URL
#   scripts/postgres.sh url     [DIR]   print the URL of the running cluster in DIR
#   scripts/postgres.sh restart [DIR]   crash it (immediate shutdown) and start it again, same port
#   scripts/postgres.sh stop    [DIR]   stop it and delete DIR
#
# DIR defaults to $ESHOST_PG_DIR, else a directory under /tmp named after this checkout.
# Installs Debian's `postgresql` package when no server binaries are found. initdb and
# postgres refuse to run as root, so as root they run as the `postgres` user on a directory
# it owns.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
command="${1:-}"
default_dir="/tmp/eshost-pg-$(id -u)-$(printf '%s' "$root" | cksum | cut -d' ' -f1)"
dir="${2:-${ESHOST_PG_DIR:-$default_dir}}"

die() {
  echo "postgres.sh: $*" >&2
  exit 1
}

find_bindir() {
  local candidate
  for candidate in /usr/lib/postgresql/*/bin; do
    if [[ -x "$candidate/initdb" && -x "$candidate/pg_ctl" ]]; then
      echo "$candidate"
    fi
  done | sort -V | tail -n 1
}

bindir="$(find_bindir)"
if [[ -z "$bindir" && "$command" != stop ]]; then
  if [[ "$(id -u)" != 0 ]]; then
    die "no PostgreSQL server binaries under /usr/lib/postgresql; install Debian's postgresql package"
  fi
  echo "postgres.sh: installing Debian's postgresql package" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y -q postgresql >&2 || { apt-get update -q >&2 && apt-get install -y -q postgresql >&2; }
  bindir="$(find_bindir)"
  [[ -n "$bindir" ]] || die "installed postgresql but found no initdb under /usr/lib/postgresql"
fi

# Run a server binary as the owner of the cluster (root may not).
as_owner() {
  if [[ "$(id -u)" == 0 ]]; then
    runuser -u postgres -- "$@"
  else
    "$@"
  fi
}

running() {
  [[ -f "$dir/data/postmaster.pid" ]] && as_owner "$bindir/pg_ctl" -D "$dir/data" status >/dev/null 2>&1
}

port_free() {
  ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

start_server() {
  local port="$1"
  as_owner "$bindir/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 60 \
    -o "-p $port -c listen_addresses=127.0.0.1 -k $dir/socket" start >/dev/null
}

start() {
  if running && [[ -f "$dir/url" ]]; then
    cat "$dir/url"
    return
  fi
  if [[ ! -f "$dir/data/PG_VERSION" ]]; then
    rm -rf "$dir"
    mkdir -p "$dir/socket"
    if [[ "$(id -u)" == 0 ]]; then
      chown -R postgres: "$dir"
    fi
    as_owner "$bindir/initdb" -D "$dir/data" -U eshost --auth=trust -E UTF8 --locale=C \
      >"$dir/initdb.log" 2>&1 || die "initdb failed; see $dir/initdb.log"
    cat >>"$dir/data/postgresql.conf" <<'EOF'
# eshost test cluster
fsync = on
synchronous_commit = on
max_connections = 300
shared_buffers = 256MB
log_min_messages = warning
EOF
  fi
  local port attempt
  for attempt in 1 2 3 4 5 6 7 8; do
    port=$((20000 + (RANDOM * 32768 + RANDOM) % 40000))
    port_free "$port" || continue
    if start_server "$port"; then
      break
    fi
    port=""
  done
  [[ -n "${port:-}" ]] || die "could not start PostgreSQL on a free port; see $dir/server.log"
  echo "$port" >"$dir/port"
  if ! "$bindir/psql" -h 127.0.0.1 -p "$port" -U eshost -d postgres -tAq \
    -c "SELECT 1 FROM pg_database WHERE datname = 'eshost'" | grep -q 1; then
    "$bindir/psql" -h 127.0.0.1 -p "$port" -U eshost -d postgres -q -c "CREATE DATABASE eshost" >/dev/null
  fi
  echo "postgres://eshost@127.0.0.1:$port/eshost" | tee "$dir/url"
}

case "$command" in
  start)
    start
    ;;
  url)
    running && [[ -f "$dir/url" ]] || die "no cluster running in $dir (run: scripts/postgres.sh start)"
    cat "$dir/url"
    ;;
  restart)
    running || die "no cluster running in $dir"
    as_owner "$bindir/pg_ctl" -D "$dir/data" -m immediate -w stop >/dev/null
    start_server "$(cat "$dir/port")" || die "could not restart PostgreSQL; see $dir/server.log"
    ;;
  stop)
    if [[ -n "$bindir" ]] && running; then
      as_owner "$bindir/pg_ctl" -D "$dir/data" -m fast -w stop >/dev/null
    fi
    rm -rf "$dir"
    ;;
  *)
    die "usage: scripts/postgres.sh start|url|restart|stop [DIR]"
    ;;
esac
