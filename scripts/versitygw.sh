#!/usr/bin/env bash
# versitygw.sh: an S3 server (versitygw, posix backend) on 127.0.0.1 for
# cairn's tests and benchmarks. versitygw is built with `go install` the
# first time.
#
#   scripts/versitygw.sh start [DIR]   install if needed, start; idempotent
#   scripts/versitygw.sh stop  [DIR]   stop what start started (by PID)
#   scripts/versitygw.sh env   [DIR]   print the settings to source
#
# DIR defaults to /var/tmp/cairn-versitygw; CAIRN_S3_PORT (17070).
set -euo pipefail
cmd=${1:-}
DIR=${2:-${CAIRN_VERSITYGW_DIR:-/var/tmp/cairn-versitygw}}
VERSION=v1.8.0
IP=127.0.0.1
PORT=${CAIRN_S3_PORT:-17070}
ACCESS=cairntest SECRET=cairntestsecret

say() { echo "[versitygw] $*" >&2; }
fail() { say "ERROR: $*"; exit 1; }
# shellcheck source=scripts/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

mkdir -p "$DIR"
DIR=$(cd "$DIR" && pwd -P)
BIN=$DIR/bin/versitygw PIDF=$DIR/versitygw.pid

ours() { started_with "${1:-}" "CAIRN_VERSITYGW_DIR=$DIR"; }

print_env() {
  cat <<ENV
export CAIRN_TEST_S3_ENDPOINT=http://$IP:$PORT
export CAIRN_TEST_S3_ACCESS_KEY=$ACCESS
export CAIRN_TEST_S3_SECRET_KEY=$SECRET
ENV
}

start() {
  if [ ! -x "$BIN" ] || [ "$(cat "$DIR/bin/version" 2>/dev/null)" != "$VERSION" ]; then
    say "building versitygw $VERSION"
    GOBIN=$DIR/bin go install "github.com/versity/versitygw/cmd/versitygw@$VERSION" || fail "go install failed"
    echo "$VERSION" > "$DIR/bin/version"
  fi
  if [ -f "$PIDF" ] && ours "$(cat "$PIDF")"; then
    say "already running ($(cat "$PIDF"))"
  else
    mkdir -p "$DIR/data"
    CAIRN_VERSITYGW_DIR=$DIR nohup "$BIN" --access "$ACCESS" --secret "$SECRET" --port "$IP:$PORT" \
      posix "$DIR/data" >> "$DIR/versitygw.log" 2>&1 < /dev/null &
    echo $! > "$PIDF"
  fi
  for _ in $(seq 100); do
    if curl -s -m 1 -o /dev/null "http://$IP:$PORT/"; then
      print_env > "$DIR/env"
      say "up: http://$IP:$PORT (settings: $DIR/env)"
      return 0
    fi
    ours "$(cat "$PIDF")" || { tail -20 "$DIR/versitygw.log" >&2; fail "versitygw exited"; }
    sleep 0.1
  done
  fail "not answering on $IP:$PORT"
}

stop() {
  [ -f "$PIDF" ] || return 0
  local pid; pid=$(cat "$PIDF")
  if ours "$pid"; then
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 50); do ours "$pid" || break; sleep 0.1; done
    ours "$pid" && kill -KILL "$pid" 2>/dev/null || true
    say "stopped ($pid)"
  fi
  rm -f "$PIDF"
  # No settings file without a server: test.sh reads one as "already up".
  rm -f "$DIR/env"
}

case "$cmd" in
  start) start ;;
  stop) stop ;;
  env) print_env ;;
  *) echo "usage: $0 start|stop|env [DIR]" >&2; exit 2 ;;
esac
