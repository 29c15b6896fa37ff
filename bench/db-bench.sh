#!/usr/bin/env bash
# db-bench.sh: database instances and their backups, cairn beside the
# peers in the same run (bench/dbbench does the steps):
#
#   pg       full snapshot backup, incremental after pgbench -T 60 (the
#            peer runs the same number of transactions), restore to a
#            running writable server (from the repository; and from the
#            local snapshot), of a pgbench -s 60 database (about 0.9 GiB),
#            beside pgBackRest 2.45 (zst, process-max 2, local repository)
#   tps      pgbench TPS alone and while full snapshot backups run
#   big      restore from the local snapshot at pgbench -s 600
#   mariadb  worst commit latency of an insert loop while a snapshot
#            backup holds BACKUP STAGE BLOCK_COMMIT, beside mariadb-backup's
#            full backup of the same server
#   rpo      archive lag (a probe commit every 200 ms to its WAL durable in
#            the repository) under pgbench -c 2 at full speed and idle, and
#            the archiver's CPU per GiB of WAL, beside pgBackRest's
#            archive-push with archive-async=y
#   rto      recover a running server in place to an instant 10 s before
#            the end of a pgbench run (BENCH_PGBENCH_SECONDS) after its
#            backup, beside pgBackRest's restore --delta --type=time
#   rtonew   restore a new instance at such an instant from the repository
#            alone (the source deleted, with its snapshots), beside
#            pgBackRest's restore --type=time into an empty directory
#            (both rto parts also report pgbench's TPS during each run:
#            cairn streaming WAL and taking restore points, pgBackRest
#            archive-push with archive-async=y)
#
#   bench/db-bench.sh                 # pg, tps and mariadb
#   bench/db-bench.sh pg big          # chosen parts
#
# Environment: BENCH_DIR (default /var/tmp/cairn-db-bench), BENCH_REPS (3),
# BENCH_PGBENCH_SECONDS (60), BENCH_PGBENCH_RATE (the rto parts' pgbench
# -R: 0, full speed; set it below the slower side's rate so that both
# write the same WAL), BENCH_SCALE (60), BENCH_RESTORE_POINT_INTERVAL
# (30s when rto runs, else 0: none), BENCH_SERVE_FLAGS (more flags for
# cairn serve, as --readers 2). Needs root (attach, mount,
# dropping the page cache). Every timed step starts with the page cache
# dropped; a restore counts as done when the server accepts writes.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
DIR=${BENCH_DIR:-/var/tmp/cairn-db-bench}
PARTS=${*:-pg tps mariadb}
PORT=18777

need=()
for p in /usr/lib/postgresql/15/bin/postgres:postgresql-15 /usr/sbin/mariadbd:mariadb-server \
  /usr/bin/mariadb-backup:mariadb-backup /usr/bin/pgbackrest:pgbackrest /usr/bin/nbdfuse:libnbd-bin \
  /usr/bin/fusermount3:fuse3 /usr/sbin/mkfs.ext4:e2fsprogs; do
  [ -e "${p%%:*}" ] || need+=("${p#*:}")
done
if [ ${#need[@]} -gt 0 ]; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi

mkdir -p "$DIR"
cd "$ROOT"
go build -o "$DIR/cairn" ./cmd/cairn
go build -o "$DIR/dbbench" ./bench/dbbench
DATA=$DIR/data
rm -rf "$DATA" "$DIR/peer"; mkdir -p "$DATA" "$DIR/peer"

if curl -s -o /dev/null http://127.0.0.1:$PORT/; then echo "port $PORT is already in use" >&2; exit 1; fi
# Restore points every 30 s when rto runs (its pgbench run after each
# backup is 2 minutes; the service's default is 5 minutes), else none, so
# that their checkpoints do not enter the other parts' figures.
RPI=${BENCH_RESTORE_POINT_INTERVAL:-0}
case " $PARTS " in *" rto "*) RPI=${BENCH_RESTORE_POINT_INTERVAL:-30s} ;; esac
# cairn's servers run with pgBackRest's server's max_wal_size (bench/dbbench
# sets it in the peer's postgresql.conf), so both checkpoint as often.
"$DIR/cairn" serve --data-dir "$DATA" --listen 127.0.0.1:$PORT --log-level info \
  --restore-point-interval "$RPI" --db-setting postgresql:max_wal_size=4GB ${BENCH_SERVE_FLAGS:-} \
  --db-run-dir "$DIR/run" --db-ports 18800-18899 > "$DIR/serve.log" 2>&1 &
PID=$!
for _ in $(seq 600); do curl -sf -o /dev/null http://127.0.0.1:$PORT/healthz && break; sleep 0.1; done
curl -sf -o /dev/null http://127.0.0.1:$PORT/healthz || { cat "$DIR/serve.log"; echo "cairn serve did not start" >&2; exit 1; }
URL=http://127.0.0.1:$PORT/v1.0/admin
TOKEN=$(cat "$DATA/admin-token")
stop() {
  "$DIR/dbbench" -url "$URL" -token "$TOKEN" -data-dir "$DATA" -parts cleanup >/dev/null || true
  kill "$PID" 2>/dev/null && wait "$PID" 2>/dev/null || true
}
trap stop EXIT

echo "machine: $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg); $(pgbackrest version); $(mariadb-backup --version 2>&1 | head -1); cairn restore points every $RPI"
"$DIR/dbbench" -url "$URL" -token "$TOKEN" -data-dir "$DATA" -base "$DIR/peer" -reps "${BENCH_REPS:-3}" \
  -scale "${BENCH_SCALE:-60}" -pgbench-seconds "${BENCH_PGBENCH_SECONDS:-60}" -pgbench-rate "${BENCH_PGBENCH_RATE:-0}" \
  -parts "$(echo $PARTS | tr ' ' ,)" \
  | tee "$DIR/results.txt"

# Where each snapshot backup's time went, from the service's and the
# data plane's logs: trim, quiesce (PostgreSQL's checkpoint), snapshot
# and release; then the store step with the bytes it read.
echo
echo "snapshot backups, step by step:"
grep -h -E 'snapshot backup taken|database snapshot stored' "$DIR/serve.log" "$DATA/data-plane.log" 2>/dev/null \
  | tee -a "$DIR/results.txt" || echo "  (no step lines in the logs)"

# Where each instance restore's time went: the volume written from the
# repository (the service), attach and mount, the data directory
# prepared, the server started (the data plane), all of it (the service).
echo
echo "instance restores, step by step:"
grep -h -E 'instance volume restored|instance provisioned by its host|instance.s (volume attached|data directory prepared|server started)' \
  "$DIR/serve.log" "$DATA/data-plane.log" 2>/dev/null | sort | tee -a "$DIR/results.txt" || echo "  (no step lines in the logs)"
