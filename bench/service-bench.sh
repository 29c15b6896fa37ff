#!/usr/bin/env bash
# service-bench.sh: the block storage service's API and task throughput.
#
# 1. Catalog with 10,000 backups (and 1,000 volumes) of one project: GET
#    of one backup (show), of a page of the backup list (summary, the
#    default 100 per page) and of a detailed page of 20, from hey in a
#    second process over loopback, 16 connections, BENCH_SECONDS each,
#    BENCH_ROUNDS rounds; on SQLite and on PostgreSQL 15.
# 2. Eight backups of different 1 GiB volumes at once against one alone
#    (total throughput ratio), on the default SQLite catalog.
#
#   bench/service-bench.sh             # both parts
#   bench/service-bench.sh api         # part 1 only
#   bench/service-bench.sh concurrent  # part 2 only
#
# Environment: BENCH_DIR (default /var/tmp/cairn-service-bench),
# BENCH_ROUNDS (3), BENCH_SECONDS (10), BENCH_VOLUMES (8).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
DIR=${BENCH_DIR:-/var/tmp/cairn-service-bench}
ROUNDS=${BENCH_ROUNDS:-3}
SECS=${BENCH_SECONDS:-10}
NVOL=${BENCH_VOLUMES:-8}
PARTS=${*:-api concurrent}
export PATH="$PATH:$(go env GOPATH)/bin"

command -v hey >/dev/null || go install github.com/rakyll/hey@v0.1.5
command -v nbdcopy >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq libnbd-bin >/dev/null; }

mkdir -p "$DIR"
cd "$ROOT"
go build -o "$DIR/cairn" ./cmd/cairn
go build -o "$DIR/servicebench" ./bench/servicebench
go build -o "$DIR/mkimage" ./bench/mkimage
CAIRN=$DIR/cairn SB=$DIR/servicebench
PORT=18776
PID=

start() { # start DATA [serve flags...]
  local data=$1; shift
  if curl -s -o /dev/null http://127.0.0.1:$PORT/; then echo "port $PORT is already in use" >&2; exit 1; fi
  "$CAIRN" serve --data-dir "$data" --listen 127.0.0.1:$PORT --log-level warn "$@" > "$DIR/serve.log" 2>&1 &
  PID=$!
  for _ in $(seq 200); do curl -sf -o /dev/null http://127.0.0.1:$PORT/healthz && return 0; sleep 0.05; done
  cat "$DIR/serve.log"; echo "cairn serve did not start" >&2; exit 1
}
stop() { [ -n "$PID" ] && kill "$PID" 2>/dev/null && wait "$PID" 2>/dev/null; PID=; }
trap stop EXIT

median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }

# rps NAME URL TOKEN: requests/s from hey, median of rounds
rps() {
  local name=$1 url=$2 tok=$3 vals=()
  for _ in $(seq "$ROUNDS"); do
    local out
    out=$(hey -z "${SECS}s" -c 16 -H "X-Auth-Token: $tok" "$url")
    if echo "$out" | grep -q "Error distribution"; then echo "$out" | sed -n '/Error distribution/,$p' >&2; exit 1; fi
    echo "$out" | grep -q '\[200\]' || { echo "$out" >&2; exit 1; }
    vals+=("$(echo "$out" | awk '/Requests\/sec/ {print $2}')")
  done
  printf '  %-34s %8.0f req/s   (rounds: %s)\n' "$name" "$(printf '%s\n' "${vals[@]}" | median)" "${vals[*]}"
}

api_part() { # CATALOG-NAME DSN
  local name=$1 dsn=$2 data=$DIR/data-$1
  rm -rf "$data"; mkdir -p "$data"
  read -r tok some vol < <("$SB" seed -catalog "$dsn" -backups 10000)
  start "$data" --catalog "$dsn"
  local u=http://127.0.0.1:$PORT/v3/bench
  echo "$name catalog, 10,000 backups:"
  rps "show backup" "$u/backups/$some" "$tok"
  rps "list backups (100 per page)" "$u/backups" "$tok"
  rps "list backups detail (20 per page)" "$u/backups/detail?limit=20" "$tok"
  rps "show volume" "$u/volumes/$vol" "$tok"
  stop
}

if [[ " $PARTS " == *" api "* ]]; then
  api_part sqlite "$DIR/data-sqlite/catalog.db"
  [ -n "${BENCH_NO_POSTGRES:-}" ] || {
  scripts/postgres.sh start >/dev/null
  . /var/tmp/cairn-postgres/env
  pgbase=${CAIRN_TEST_POSTGRES_URL%/postgres*}
  psql "$CAIRN_TEST_POSTGRES_URL" -qc "DROP DATABASE IF EXISTS cairnbench" -c "CREATE DATABASE cairnbench" >/dev/null
  api_part postgres "$pgbase/cairnbench?sslmode=disable"
  }
fi

if [[ " $PARTS " == *" concurrent "* ]]; then
  data=$DIR/data-concurrent
  rm -rf "$data"; mkdir -p "$data"
  imgs=()
  for i in $(seq "$NVOL"); do
    img=$DIR/image-$i.raw
    [ -f "$img" ] || "$DIR/mkimage" gen -size 1073741824 -seed "$i" -o "$img"
    imgs+=("$img")
  done
  start "$data"
  echo "backups of $NVOL different 1 GiB volumes (mixed content) at once vs one alone, SQLite catalog:"
  "$SB" concurrent -url http://127.0.0.1:$PORT -token "$(cat "$data/admin-token")" -rounds "$ROUNDS" \
    -images "$(IFS=,; echo "${imgs[*]}")" | sed 's/^/  /' | tee "$DIR/concurrent.txt"
  stop
  grep -o 'ratio [0-9.]*' "$DIR/concurrent.txt" | awk '{print $2}' | median | xargs printf '  median ratio %s (target >= 0.80)\n'
  if grep -q "database is locked\|SQLITE_BUSY" "$DIR/serve.log"; then echo "  catalog lock errors in the log!"; else echo "  no catalog lock errors in the log"; fi
fi
