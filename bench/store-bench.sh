#!/usr/bin/env bash
# store-bench.sh: cairn backup and restore against loopback OpenStack Swift
# and S3 (versitygw), compared in the same run with plain parallel uploads
# and downloads of the very objects cairn stored, made with the same client
# libraries (bench/storebench). Also the throughput of plain uploads as the
# number of requests in flight grows, and the requests cairn sends per GiB.
#
#   bench/store-bench.sh              # 4 GiB image, 3 rounds
#   BENCH_SIZE=1073741824 BENCH_ROUNDS=1 bench/store-bench.sh
#   BENCH_COMPRESSION=off bench/store-bench.sh   # repositories without compression
#
# Starts the servers with scripts/swift.sh and scripts/versitygw.sh (root).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
DIR=${BENCH_DIR:-/var/tmp/cairn-store-bench}
SIZE=${BENCH_SIZE:-4294967296}
ROUNDS=${BENCH_ROUNDS:-3}
COMPRESSION=${BENCH_COMPRESSION:-fastest}
[ -x /usr/bin/time ] || { apt-get update -qq && apt-get install -y -qq time >/dev/null; }
mkdir -p "$DIR"
cd "$ROOT"
scripts/swift.sh start >&2
scripts/versitygw.sh start >&2
set -a
. /var/tmp/cairn-swift/env
. /var/tmp/cairn-versitygw/env
set +a
export CAIRN_S3_ENDPOINT=$CAIRN_TEST_S3_ENDPOINT AWS_ACCESS_KEY_ID=$CAIRN_TEST_S3_ACCESS_KEY
export AWS_SECRET_ACCESS_KEY=$CAIRN_TEST_S3_SECRET_KEY AWS_REGION=us-east-1 CAIRN_PASSWORD=bench
go build -o "$DIR/cairn" ./cmd/cairn
go build -o "$DIR/mkimage" ./bench/mkimage
go build -o "$DIR/storebench" ./bench/storebench
CAIRN=$DIR/cairn SB=$DIR/storebench IMG=$DIR/image.raw RES=$DIR/results.txt
: > "$RES"
[ -f "$IMG" ] && [ "$(stat -c %s "$IMG")" = "$SIZE" ] || "$DIR/mkimage" gen -size "$SIZE" -o "$IMG"

drop() { sync; [ -w /proc/sys/vm/drop_caches ] && echo 3 > /proc/sys/vm/drop_caches || true; }
# busy: CPU-seconds the whole machine has spent so far (user, nice,
# system, irq, softirq), from /proc/stat.
busy() { awk -v hz="$(getconf CLK_TCK)" '/^cpu /{printf "%.2f", ($2+$3+$4+$7+$8)/hz}' /proc/stat; }
# timed NAME CMD...: record "NAME seconds", the command's own CPU-seconds
# (NAME_cpu) and the whole machine's (NAME_busy): where the machine is
# saturated, busy is close to 2 x seconds, and busy - cpu is what the
# store's server and the kernel spent.
timed() {
  local name=$1; shift
  drop
  local b0; b0=$(busy)
  /usr/bin/time -f "%e %U %S" -o "$DIR/time.out" "$@" > "$DIR/cmd.out" 2> "$DIR/cmd.err" || { cat "$DIR/cmd.err" >&2; exit 1; }
  local b1; b1=$(busy)
  read -r wall user sys < "$DIR/time.out"
  echo "$name $wall" >> "$RES"
  echo "${name}_cpu $(echo "$user + $sys" | bc)" >> "$RES"
  echo "${name}_busy $(echo "$b1 - $b0" | bc)" >> "$RES"
  printf '  %-26s %7.2f s  (its CPU %5.2f s, machine %5.2f s)\n' "$name" "$wall" "$(echo "$user + $sys" | bc)" "$(echo "$b1 - $b0" | bc)" >&2
}

for round in $(seq "$ROUNDS"); do
  for kind in swift s3; do
    echo "round $round/$ROUNDS: $kind" >&2
    tag=$(date +%s%N | tail -c 9)
    repo="$kind://cairn-bench-$tag"
    plain="$kind://cairn-bench-plain-$tag"
    "$CAIRN" repo init --repo "$repo" --consistency-margin 0s --compression "$COMPRESSION" > /dev/null
    timed "${kind}_backup" "$CAIRN" --json repo backup --repo "$repo" "$IMG"
    python3 - "$DIR/cmd.out" "$kind" >> "$RES" <<'PY'
import json, sys
m = json.load(open(sys.argv[1]))
r = m["requests"]
print(f"{sys.argv[2]}_stored {m['stats']['bytes_stored']}")
print(f"{sys.argv[2]}_new {m['stats']['bytes_new']}")
print(f"{sys.argv[2]}_chunkputs {r['chunk_puts']}")
print(f"{sys.argv[2]}_requests {r['puts'] + r['gets'] + r['stats'] + r['lists'] + r['deletes']}")
PY
    rm -rf "$DIR/chunks"
    "$SB" fetch -store "$repo" -o "$DIR/chunks"
    timed "${kind}_plain_upload" "$SB" upload -store "$plain" -dir "$DIR/chunks" -n 16
    rm -f "$DIR/restore.raw"
    timed "${kind}_restore" "$CAIRN" repo restore --repo "$repo" latest "$DIR/restore.raw"
    if [ "$round" = 1 ]; then cmp "$DIR/restore.raw" "$IMG" || { echo "restore differs" >&2; exit 1; }; fi
    rm -f "$DIR/restore.raw"
    timed "${kind}_plain_download" "$SB" download -store "$repo" -prefix chunks/ -n 16
    rm -rf "$DIR/downloaded"
    timed "${kind}_plain_download_files" "$SB" download -store "$repo" -prefix chunks/ -n 16 -o "$DIR/downloaded"
    rm -rf "$DIR/downloaded"
    if [ "$round" = 1 ]; then
      for n in 1 2 4 8 16 32; do
        "$SB" clean -store "$plain" > /dev/null
        drop
        "$SB" upload -store "$plain" -dir "$DIR/chunks" -n "$n" | awk -v k="$kind" -v n="$n" '{for (i=1;i<=NF;i++) if ($i ~ /^mib_per_s=/) {split($i,a,"="); print k "_inflight_" n " " a[2]}}' >> "$RES"
      done
    fi
    "$SB" clean -store "$repo" > /dev/null
    "$SB" clean -store "$plain" > /dev/null
  done
done
rm -rf "$DIR/chunks"

awk -v size="$SIZE" -v comp="$COMPRESSION" -v ncpu="$(nproc)" '
function median(name,   n, i, j, t, a) {
  n = 0
  for (i = 1; i <= cnt; i++) if (nm[i] == name) a[++n] = val[i]
  if (n == 0) return -1
  for (i = 1; i <= n; i++) for (j = i + 1; j <= n; j++) if (a[j] < a[i]) { t = a[i]; a[i] = a[j]; a[j] = t }
  return (n % 2) ? a[(n + 1) / 2] : (a[n / 2 + 1] + a[n / 2]) / 2
}
{ cnt++; nm[cnt] = $1; val[cnt] = $2 }
END {
  mib = 1048576; gib = 1073741824
  printf "\nmedians (%.1f GiB image, compression %s; stored = what cairn wrote after dedup and compression)\n", size / gib, comp
  for (k = 1; k <= 2; k++) {
    kind = (k == 1) ? "swift" : "s3"
    b = median(kind "_backup"); pu = median(kind "_plain_upload"); r = median(kind "_restore"); pd = median(kind "_plain_download")
    st = median(kind "_stored"); nw = median(kind "_new")
    printf "\n%s\n", (kind == "swift") ? "OpenStack Swift (native API, loopback)" : "S3 (versitygw, loopback)"
    printf "  %-56s %8.2f s  %7.1f MiB/s source, %7.1f MiB/s stored\n", "cairn backup", b, size / b / mib, st / b / mib
    printf "  %-56s %8.2f s  %7.1f MiB/s\n", "plain parallel upload of the same objects (16 in flight)", pu, st / pu / mib
    printf "  %-56s %7.0f%%  (target >= 70%%)\n", "backup, stored bytes per second vs plain upload", 100 * pu / b
    printf "  %-56s %7.0f%%\n", "backup, source bytes per second vs plain upload", 100 * (size / b) / (st / pu)
    printf "  %-56s %8.2f s  %7.1f MiB/s source\n", "cairn restore (writes the image)", r, size / r / mib
    printf "  %-56s %8.2f s  %7.1f MiB/s\n", "plain parallel download of the same objects (discarded)", pd, st / pd / mib
    pf = median(kind "_plain_download_files")
    printf "  %-56s %8.2f s  %7.1f MiB/s\n", "plain parallel download of the same objects into files", pf, st / pf / mib
    printf "  %-56s %7.0f%%  (target >= 70%%)\n", "restore, fetched bytes per second vs plain download", 100 * pd / r
    printf "  %-56s %7.0f%%\n", "restore, fetched bytes per second vs download into files", 100 * pf / r
    printf "  CPU-seconds: the command itself / the whole machine / %d cores x seconds\n", ncpu
    for (q = 1; q <= 5; q++) {
      split("backup plain_upload restore plain_download plain_download_files", ph, " ")
      w = median(kind "_" ph[q])
      printf "    %-22s %6.2f / %6.2f of %6.2f  (%3.0f%% busy)\n", ph[q], median(kind "_" ph[q] "_cpu"), median(kind "_" ph[q] "_busy"), ncpu * w, 100 * median(kind "_" ph[q] "_busy") / (ncpu * w)
    }
    printf "  %-56s %8.1f  (%d chunk PUTs for %.2f GiB new)\n", "chunk PUTs per 4 MiB of new data", median(kind "_chunkputs") / (nw / (4 * mib)), median(kind "_chunkputs"), nw / gib
    printf "  %-56s %8.1f\n", "requests per GiB of new data, all kinds", median(kind "_requests") / (nw / gib)
    printf "  plain upload MiB/s by requests in flight:"
    for (n = 1; n <= 32; n *= 2) printf "  %d: %.0f", n, median(kind "_inflight_" n)
    printf "\n"
  }
}' "$RES"
echo "raw figures: $RES" >&2
