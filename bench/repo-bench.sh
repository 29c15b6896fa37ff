#!/usr/bin/env bash
# repo-bench.sh: cairn against restic on the same image, on the same disk,
# with default settings for both, in one run. Prints the medians of every
# figure and the ratios the repository issue sets as targets.
#
#   bench/repo-bench.sh                     # 4 GiB image, 3 rounds, chain of 50
#   BENCH_SIZE=1073741824 BENCH_ROUNDS=5 bench/repo-bench.sh
#
# Environment: BENCH_DIR (work directory, default /var/tmp/cairn-bench; needs
# about 6x the image size), BENCH_SIZE (bytes, multiple of 16 MiB),
# BENCH_ROUNDS, BENCH_CHAIN (length of the incremental chain, 0 to skip).
# As root it drops the page cache before every timed command.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
DIR=${BENCH_DIR:-/var/tmp/cairn-bench}
SIZE=${BENCH_SIZE:-4294967296}
ROUNDS=${BENCH_ROUNDS:-3}
CHAIN=${BENCH_CHAIN:-50}

need=()
command -v restic >/dev/null || need+=(restic)
[ -x /usr/bin/time ] || need+=(time)
if [ ${#need[@]} -gt 0 ]; then
  echo "installing ${need[*]}" >&2
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi

mkdir -p "$DIR"
cd "$ROOT"
go build -o "$DIR/cairn" ./cmd/cairn
go build -o "$DIR/mkimage" ./bench/mkimage
CAIRN=$DIR/cairn MK=$DIR/mkimage IMG=$DIR/image.raw RES=$DIR/results.txt
export CAIRN_PASSWORD=bench RESTIC_PASSWORD=bench
: > "$RES"

drop() {
  sync
  if [ -w /proc/sys/vm/drop_caches ]; then echo 3 > /proc/sys/vm/drop_caches; fi
}

# timed NAME CMD...: run CMD after dropping caches, record "NAME seconds maxrss_kib".
timed() {
  local name=$1; shift
  drop
  if ! /usr/bin/time -f "%e %M" -o "$DIR/time.out" "$@" > "$DIR/cmd.log" 2>&1; then
    cat "$DIR/cmd.log" >&2; echo "FAILED: $*" >&2; exit 1
  fi
  read -r wall rss < "$DIR/time.out"
  echo "$name $wall $rss" >> "$RES"
  printf '  %-22s %7.2f s  %6d MiB\n' "$name" "$wall" $((rss / 1024)) >&2
}

repo_size() { du -sb "$1" | cut -f1; }

for round in $(seq "$ROUNDS"); do
  echo "round $round/$ROUNDS" >&2
  rm -rf "$DIR"/repo-* "$DIR"/restore*
  "$MK" gen -size "$SIZE" -o "$IMG"
  "$CAIRN" repo init --repo "$DIR/repo-a" >/dev/null                 # incremental with the hint
  "$CAIRN" repo init --repo "$DIR/repo-b" >/dev/null                 # incremental without it
  "$CAIRN" repo init --repo "$DIR/repo-c" --compression default >/dev/null  # restic's level, for size
  restic init -q -r "$DIR/repo-restic"
  # Alternate who goes first, so drift in the machine's speed spreads evenly.
  if [ $((round % 2)) = 1 ]; then
    timed cairn_full "$CAIRN" repo backup --repo "$DIR/repo-a" "$IMG"
    timed restic_full restic -q -r "$DIR/repo-restic" backup "$IMG"
  else
    timed restic_full restic -q -r "$DIR/repo-restic" backup "$IMG"
    timed cairn_full "$CAIRN" repo backup --repo "$DIR/repo-a" "$IMG"
  fi
  timed cairn_full "$CAIRN" repo backup --repo "$DIR/repo-b" "$IMG"
  timed cairn_full_level3 "$CAIRN" repo backup --repo "$DIR/repo-c" "$IMG"

  "$MK" modify -seed "$round" -percent 1 -extent 1048576 -extents "$DIR/changed.txt" "$IMG"
  timed cairn_inc_hint "$CAIRN" repo backup --repo "$DIR/repo-a" --changed-extents "$DIR/changed.txt" "$IMG"
  timed cairn_inc_nohint "$CAIRN" repo backup --repo "$DIR/repo-b" "$IMG"
  timed restic_inc restic -q -r "$DIR/repo-restic" backup "$IMG"
  "$CAIRN" repo backup --repo "$DIR/repo-c" --changed-extents "$DIR/changed.txt" "$IMG" >/dev/null
  echo "size_cairn_level3 $(repo_size "$DIR/repo-c") 0" >> "$RES"
  echo "size_restic $(repo_size "$DIR/repo-restic") 0" >> "$RES"
  echo "size_cairn_default $(repo_size "$DIR/repo-a") 0" >> "$RES"

  timed cairn_restore "$CAIRN" repo restore --repo "$DIR/repo-a" latest "$DIR/restore.raw"
  cmp "$DIR/restore.raw" "$IMG" || { echo "cairn restore differs" >&2; exit 1; }
  rm -f "$DIR/restore.raw"
  timed restic_restore restic -q -r "$DIR/repo-restic" restore latest --target "$DIR/restore-restic"
  cmp "$DIR/restore-restic$IMG" "$IMG" || { echo "restic restore differs" >&2; exit 1; }
  rm -rf "$DIR/restore-restic"
done

if [ "$CHAIN" -gt 0 ]; then
  echo "chain of $CHAIN incremental backups" >&2
  rm -rf "$DIR"/repo-* "$DIR"/restore*
  "$MK" gen -size "$SIZE" -o "$IMG"
  "$CAIRN" repo init --repo "$DIR/repo-chain" >/dev/null
  "$CAIRN" repo backup --repo "$DIR/repo-chain" --tag n=0 "$IMG" >/dev/null
  first=$("$CAIRN" --json repo ls --repo "$DIR/repo-chain" | grep -m1 '"id"' | cut -d'"' -f4)
  for i in $(seq "$CHAIN"); do
    "$MK" modify -seed $((1000 + i)) -percent 1 -extent 1048576 -extents "$DIR/changed.txt" "$IMG"
    "$CAIRN" repo backup --repo "$DIR/repo-chain" --tag n="$i" --changed-extents "$DIR/changed.txt" "$IMG" >/dev/null
  done
  # After 50 rounds of 1% random overwrites the image has fewer zeros and
  # less compressible text than at the start, so the first backup is not a
  # fair yardstick for the last: a fresh full backup of the final image is.
  "$CAIRN" repo init --repo "$DIR/repo-ref" >/dev/null
  "$CAIRN" repo backup --repo "$DIR/repo-ref" "$IMG" >/dev/null
  for _ in 1 2 3; do
    timed chain_first "$CAIRN" repo restore --repo "$DIR/repo-chain" "$first" "$DIR/restore.raw"
    rm -f "$DIR/restore.raw"
    timed chain_last "$CAIRN" repo restore --repo "$DIR/repo-chain" latest "$DIR/restore.raw"
    cmp "$DIR/restore.raw" "$IMG" || { echo "chain restore differs" >&2; exit 1; }
    rm -f "$DIR/restore.raw"
    timed chain_ref "$CAIRN" repo restore --repo "$DIR/repo-ref" latest "$DIR/restore.raw"
    rm -f "$DIR/restore.raw"
  done
fi
rm -rf "$DIR"/repo-* "$DIR"/restore* "$IMG"

# Summary: medians over the rounds.
awk -v size="$SIZE" '
function median(name,   n, i, j, t, a) {
  n = 0
  for (i = 1; i <= cnt; i++) if (nm[i] == name) a[++n] = val[i]
  if (n == 0) return -1
  for (i = 1; i <= n; i++) for (j = i + 1; j <= n; j++) if (a[j] < a[i]) { t = a[i]; a[i] = a[j]; a[j] = t }
  return (n % 2) ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2
}
function maxrss(name,   i, m) { m = 0; for (i = 1; i <= cnt; i++) if (nm[i] == name && rss[i] > m) m = rss[i]; return m / 1024 }
{ cnt++; nm[cnt] = $1; val[cnt] = $2; rss[cnt] = $3 }
END {
  gib = size / 1073741824
  cf = median("cairn_full"); rf = median("restic_full")
  ch = median("cairn_inc_hint"); cn = median("cairn_inc_nohint"); ri = median("restic_inc")
  cr = median("cairn_restore"); rr = median("restic_restore")
  printf "\nmedians over the rounds (%.1f GiB image, seconds; throughput = image size / time)\n", gib
  printf "%-44s %9s %9s %9s   %s\n", "figure", "cairn", "restic", "result", "target"
  printf "%-44s %9.2f %9.2f %8.2fx   >= 3x restic throughput\n", "full backup", cf, rf, rf / cf
  printf "%-44s %9.2f %9s %8.1f%%   <= 10%% of cairn full\n", "incremental, 1% changed, --changed-extents", ch, "-", 100 * ch / cf
  printf "%-44s %9.2f %9.2f %8.2fx   <= 0.5x restic time\n", "incremental, 1% changed, no hint", cn, ri, cn / ri
  printf "%-44s %9.2f %9.2f %8.2fx   >= 2x restic throughput\n", "restore of the full image", cr, rr, rr / cr
  printf "%-44s %9.0f %9.0f %9s   <= 256 MiB\n", "peak RSS, backup (MiB)", maxrss("cairn_full"), maxrss("restic_full"), ""
  printf "%-44s %9.0f %9.0f %9s   <= 256 MiB\n", "peak RSS, restore (MiB)", maxrss("cairn_restore"), maxrss("restic_restore"), ""
  sc = median("size_cairn_level3"); sr = median("size_restic"); sd = median("size_cairn_default")
  printf "%-44s %9.3f %9.3f %+8.1f%%   within 5%% of restic\n", "repo after full+incremental, zstd 3 (GiB)", sc / 1073741824, sr / 1073741824, 100 * (sc - sr) / sr
  printf "%-44s %9.3f %9s %9s\n", "repo after full+incremental, default (GiB)", sd / 1073741824, "-", ""
  printf "%-44s %9.2f %9s %9s\n", "full backup at zstd 3 (restic level)", median("cairn_full_level3"), "-", ""
  cfirst = median("chain_first"); clast = median("chain_last"); cref = median("chain_ref")
  if (cref > 0) {
    printf "%-44s %9.2f %9.2f %+8.1f%%   within 10%%\n", "restore: last of chain vs full of same image", cref, clast, 100 * (clast - cref) / cref
    printf "%-44s %9.2f %9.2f %+8.1f%%   (content differs: see script)\n", "restore: first vs last of the chain", cfirst, clast, 100 * (clast - cfirst) / cfirst
  }
}' "$RES"
echo "raw figures: $RES" >&2
