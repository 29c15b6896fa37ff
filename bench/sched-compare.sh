#!/usr/bin/env bash
# sched-compare.sh: the scheduler's lag with 10,000 policies due at the
# same second, two revisions side by side.
#
#   bench/sched-compare.sh OLD_REV NEW_REV [RUNS]
#
# Builds bench/schedbench at each revision (in temporary worktrees), then
# runs one all-at-once round of each, alternating, RUNS times (default 3),
# dropping the page cache before each run (as root). Each run prints its
# round: the lag of the slots' records, and (from 80a5497 on) of their
# backups' queuing. Quote the medians of the max lags.
#
# Environment: BENCH_DIR (default /var/tmp/cairn-sched-bench),
# BENCH_POLICIES (10000), BENCH_POSTGRES: a PostgreSQL server's URL
# (postgres://USER@HOST:PORT/DB?sslmode=disable) to run on a PostgreSQL
# catalog instead of SQLite: each run gets a new database,
# cairn_schedbench, made and dropped with psql; BENCH_ZONE: every
# policy's time zone (default UTC; both revisions' schedbench must have
# -zone).
set -euo pipefail
[ $# -ge 2 ] || { echo "usage: $0 OLD_REV NEW_REV [RUNS]" >&2; exit 2; }
ROOT=$(cd "$(dirname "$0")/.." && pwd)
DIR=${BENCH_DIR:-/var/tmp/cairn-sched-bench}
N=${BENCH_POLICIES:-10000}
RUNS=${3:-3}
mkdir -p "$DIR"
for rev in "$1" "$2"; do
  wt=$(mktemp -d "$DIR/wt.XXXXXX")
  git -C "$ROOT" worktree add -q --detach "$wt" "$rev"
  (cd "$wt" && go build -o "$DIR/schedbench-$rev" ./bench/schedbench)
  git -C "$ROOT" worktree remove --force "$wt"
done
for i in $(seq 1 "$RUNS"); do
  for rev in "$1" "$2"; do
    sync
    if [ -w /proc/sys/vm/drop_caches ]; then echo 3 > /proc/sys/vm/drop_caches; fi
    echo "== $rev, run $i, load $(cut -d' ' -f1 /proc/loadavg)"
    catalog="$DIR/catalog.db"
    rm -f "$DIR/catalog.db"*
    if [ -n "${BENCH_POSTGRES:-}" ]; then
      psql "$BENCH_POSTGRES" -qc 'DROP DATABASE IF EXISTS cairn_schedbench' -c 'CREATE DATABASE cairn_schedbench'
      catalog=$(echo "$BENCH_POSTGRES" | sed -E 's#^(postgres(ql)?://[^/]*)/[^?]*#\1/cairn_schedbench#')
    fi
    "$DIR/schedbench-$rev" -catalog "$catalog" -policies "$N" -rounds 1 ${BENCH_ZONE:+-zone "$BENCH_ZONE"} | tail -n +2
  done
done
rm -f "$DIR/catalog.db"*
if [ -n "${BENCH_POSTGRES:-}" ]; then psql "$BENCH_POSTGRES" -qc 'DROP DATABASE IF EXISTS cairn_schedbench'; fi
