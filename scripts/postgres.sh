#!/usr/bin/env bash
# postgres.sh: a throwaway PostgreSQL 15 cluster on 127.0.0.1 for cairn's
# tests (the catalog's postgres package), from Debian's postgresql-15,
# installed the first time when we are root.
#
#   scripts/postgres.sh start [DIR]   install if needed, initdb, start; idempotent
#   scripts/postgres.sh stop  [DIR]   stop what start started (by the PID in
#                                     postmaster.pid of this cluster, never by name)
#   scripts/postgres.sh env   [DIR]   print the settings to source
#
# DIR defaults to /var/tmp/cairn-postgres; CAIRN_PG_PORT (17432). The
# cluster listens on 127.0.0.1 only, keeps its unix socket in DIR, and
# trusts every local connection: it is for tests only, and it trades
# durability for speed (fsync off).
set -euo pipefail
cmd=${1:-}
DIR=${2:-${CAIRN_POSTGRES_DIR:-/var/tmp/cairn-postgres}}
IP=127.0.0.1
PORT=${CAIRN_PG_PORT:-17432}
BIN=/usr/lib/postgresql/15/bin

say() { echo "[postgres] $*" >&2; }
fail() { say "ERROR: $*"; exit 1; }
# shellcheck source=scripts/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

mkdir -p "$DIR"
DIR=$(cd "$DIR" && pwd -P)
DATA=$DIR/data LOG=$DIR/postgres.log

# as_owner CMD...: run as the cluster's owner: postgres when we are root
# (initdb and postgres refuse to run as root), else ourselves.
as_owner() {
  if [ "$(id -u)" = 0 ]; then
    runuser -u postgres -- "$@"
  else
    "$@"
  fi
}

# pid: the postmaster's PID from this cluster's postmaster.pid, if that
# process is alive and is a postgres serving this data directory.
pid() {
  local p
  p=$(head -1 "$DATA/postmaster.pid" 2>/dev/null) || return 1
  [ -n "$p" ] && [ -r "/proc/$p/cmdline" ] || return 1
  tr '\0' '\n' < "/proc/$p/cmdline" 2>/dev/null | grep -qxF "$DATA" || return 1
  [ "$(sed -n 2p "$DATA/postmaster.pid")" = "$DATA" ] || return 1
  echo "$p"
}

print_env() {
  cat <<ENV
export CAIRN_TEST_POSTGRES_URL='postgres://postgres@$IP:$PORT/postgres?sslmode=disable'
ENV
}

install_packages() {
  [ -x "$BIN/postgres" ] && [ -x "$BIN/initdb" ] && return 0
  apt_install "$DIR/apt.log" postgresql-15
  [ -x "$BIN/postgres" ] || fail "postgresql-15 installed, but $BIN/postgres is missing"
}

init() {
  [ -f "$DATA/PG_VERSION" ] && return 0
  if [ "$(id -u)" = 0 ]; then
    chown postgres: "$DIR"
    runuser -u postgres -- test -w "$DIR" || fail "user postgres cannot write $DIR (is a parent directory closed to it?)"
  fi
  rm -rf "$DATA"
  say "initdb $DATA"
  as_owner "$BIN/initdb" -D "$DATA" -U postgres --auth-host=trust --auth-local=trust \
    --encoding=UTF8 --locale=C > "$DIR/initdb.log" 2>&1 || { tail -20 "$DIR/initdb.log" >&2; fail "initdb failed"; }
}

configure() {
  # Rewritten at each start, so that a changed CAIRN_PG_PORT takes effect.
  cat > "$DIR/cairn.conf" <<CONF
listen_addresses = '$IP'
port = $PORT
unix_socket_directories = '$DIR'
max_connections = 400
shared_buffers = 64MB
fsync = off
synchronous_commit = off
full_page_writes = off
log_min_messages = warning
CONF
  grep -qxF "include '$DIR/cairn.conf'" "$DATA/postgresql.conf" ||
    echo "include '$DIR/cairn.conf'" >> "$DATA/postgresql.conf"
  [ "$(id -u)" = 0 ] && chown postgres: "$DIR/cairn.conf"
  return 0
}

ready() { "$BIN/pg_isready" -q -h "$IP" -p "$PORT" -d postgres -U postgres; }

start() {
  install_packages
  init
  if p=$(pid); then
    say "already running ($p)"
  else
    configure
    [ "$(id -u)" = 0 ] && touch "$LOG" && chown postgres: "$LOG"
    # A postmaster killed with SIGKILL may be a zombie for a moment, which
    # PostgreSQL takes for a live postmaster: wait for it to be reaped.
    local old; old=$(head -1 "$DATA/postmaster.pid" 2>/dev/null || true)
    for _ in $(seq 100); do
      [ -n "$old" ] && [ "$(awk '{print $3}' "/proc/$old/stat" 2>/dev/null)" = Z ] || break
      sleep 0.1
    done
    # pg_ctl starts postgres detached and waits until it accepts
    # connections, or fails if it exits.
    as_owner "$BIN/pg_ctl" -D "$DATA" -l "$LOG" -w -t 60 start > /dev/null || { tail -20 "$LOG" >&2; fail "pg_ctl start failed (log $LOG)"; }
  fi
  for _ in $(seq 150); do
    if ready; then
      print_env > "$DIR/env"
      say "up: $IP:$PORT (settings: $DIR/env)"
      return 0
    fi
    sleep 0.2
  done
  tail -20 "$LOG" >&2
  fail "not answering on $IP:$PORT"
}

stop() {
  local p
  p=$(pid) || { rm -f "$DIR/env"; return 0; }
  # SIGINT: fast shutdown (disconnects clients, then a clean stop).
  kill -INT "$p" 2>/dev/null || true
  for _ in $(seq 100); do [ -d "/proc/$p" ] || break; sleep 0.1; done
  if [ -d "/proc/$p" ]; then
    kill -QUIT "$p" 2>/dev/null || true # immediate shutdown
    sleep 1
  fi
  [ -d "/proc/$p" ] && kill -KILL "$p" 2>/dev/null || true
  say "stopped ($p)"
  rm -f "$DIR/env"
}

case "$cmd" in
  start) start ;;
  stop) stop ;;
  env) print_env ;;
  *) echo "usage: $0 start|stop|env [DIR]" >&2; exit 2 ;;
esac
