#!/usr/bin/env bash
# sched-bench.sh: the backup policies' scheduler with 10,000 policies.
#
# 10,000 policies on "* * * * *" (every minute), each backing up a volume
# of its own, spread over 100 projects, on the default SQLite catalog:
#
# 1. all due at the same second: at each of BENCH_ROUNDS minute
#    boundaries the due slots fire (FireDue, what the scheduler's loop
#    calls when it wakes), and each slot's lag is its fired_at minus its
#    slot time (when it was recorded), with its backup's created_at
#    minus its slot time (when the backup was queued, after every due
#    slot was recorded);
# 2. with a jitter of 59 s (each policy's slot delayed by its own share
#    of it): the scheduler's own loop (Service.RunScheduler) runs for
#    BENCH_ROUNDS minutes, and each slot's lag is its fired_at minus its
#    fire time (slot plus jitter).
#
# Every firing queues a real backup row and task in the catalog (the
# tasks do not run: a stand-in marks them done, as the workers would).
# The target: every slot fires within 1 s of its time. No peer is run:
# none of the tools we measure against publishes or exposes a figure
# for its scheduler's lateness.
#
#   bench/sched-bench.sh            # both
#   bench/sched-bench.sh once       # 1 only
#   bench/sched-bench.sh jitter     # 2 only
#
# Environment: BENCH_DIR (default /var/tmp/cairn-sched-bench),
# BENCH_POLICIES (10000), BENCH_ROUNDS (3).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
DIR=${BENCH_DIR:-/var/tmp/cairn-sched-bench}
N=${BENCH_POLICIES:-10000}
ROUNDS=${BENCH_ROUNDS:-3}
PARTS=${*:-once jitter}

mkdir -p "$DIR"
cd "$ROOT"
go build -o "$DIR/schedbench" ./bench/schedbench
for part in $PARTS; do
  rm -f "$DIR/catalog.db"*
  case $part in
    once)   "$DIR/schedbench" -catalog "$DIR/catalog.db" -policies "$N" -rounds "$ROUNDS" ;;
    jitter) "$DIR/schedbench" -catalog "$DIR/catalog.db" -policies "$N" -rounds "$ROUNDS" -jitter 59s ;;
    *) echo "unknown part $part (once, jitter)" >&2; exit 2 ;;
  esac
done
rm -f "$DIR/catalog.db"*
