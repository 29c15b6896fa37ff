#!/usr/bin/env bash
# volume-bench.sh: the volume engine's figures, with the peer's from the
# same run where there is one.
#
#   bench/volume-bench.sh                 # everything
#   bench/volume-bench.sh fio snapshots   # some parts: snaptime memory incremental fio snapshots
#
# fio       fio through volume -> NBD -> nbdfuse -> loop (direct I/O) -> ext4,
#           cairn volume serve against nbdkit's file plugin serving a plain
#           sparse file on the same disk, alternating, BENCH_ROUNDS rounds.
# snapshots the same fio on a volume with 100 snapshots against one with none.
# snaptime  snapshot creation time on 1 GiB to 1 TiB volumes with data.
# memory    the block index's memory per TiB of volume.
# incremental  a 16 GiB volume of mixed content: full backup, 1% scattered
#           writes, incremental backup; bytes read from disk; restores.
# mixedread a cold read, in 4 MiB requests as a backup reads, of a snapshot
#           taken after 8 KiB pages were written over 20% of a 1 GiB volume
#           (most of its blocks then mixed, as on a database's volume), and
#           of the snapshot before them; with BENCH_BASELINE=REV, the same
#           with the engine of REV alongside, alternating.
#
# Needs root, /dev/fuse and loop devices. Environment: BENCH_DIR (default
# /var/tmp/cairn-volbench, needs ~40 GiB for incremental), BENCH_ROUNDS (3),
# FIO_RT (seconds per fio job, 8), BENCH_VOLSIZE (incremental, 16 GiB).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
DIR=${BENCH_DIR:-/var/tmp/cairn-volbench}
ROUNDS=${BENCH_ROUNDS:-3}
export RT=${FIO_RT:-8}
VOLSIZE=${BENCH_VOLSIZE:-17179869184}
PARTS=("$@")
[ ${#PARTS[@]} -eq 0 ] && PARTS=(snaptime memory incremental mixedread fio snapshots)

need=()
command -v fio >/dev/null || need+=(fio)
command -v nbdkit >/dev/null || need+=(nbdkit)
command -v nbdfuse >/dev/null || need+=(libnbd-bin)
command -v fusermount3 >/dev/null || need+=(fuse3)
command -v qemu-img >/dev/null || need+=(qemu-utils)
[ -x /usr/bin/time ] || need+=(time)
if [ ${#need[@]} -gt 0 ]; then
  echo "installing ${need[*]}" >&2
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi

mkdir -p "$DIR"
cd "$ROOT"
go build -o "$DIR/cairn" ./cmd/cairn
go build -o "$DIR/volbench" ./bench/volbench
CAIRN=$DIR/cairn VB=$DIR/volbench
export CAIRN_PASSWORD=bench CAIRN_ATTACH=fuse

log() { echo "[$(date +%T)] $*" >&2; }
drop() { sync; echo 3 > /proc/sys/vm/drop_caches; }
wait_for() { local t=$1; shift; for _ in $(seq $((t * 10))); do "$@" && return 0; sleep 0.1; done; return 1; }

# --- serving --------------------------------------------------------------
SERVE_PID=
serve_cairn() { # serve_cairn DATA-DIR
  "$CAIRN" volume serve --data-dir "$1" 2>"$DIR/serve.log" &
  SERVE_PID=$!
  wait_for 20 test -S "$1/nbd.sock" || { cat "$DIR/serve.log"; exit 1; }
}
stop_serve() {
  [ -n "$SERVE_PID" ] || return 0
  kill "$SERVE_PID" 2>/dev/null || true
  wait "$SERVE_PID" 2>/dev/null || true
  SERVE_PID=
}

MNT=$DIR/mnt
LOOP= FUSEDIR= FUSEPID=
# mount_dev DEV: ext4 on DEV at $MNT.
mount_dev() {
  mkdir -p "$MNT"
  mkfs.ext4 -q -F -E lazy_itable_init=0,lazy_journal_init=0 "$1"
  mount "$1" "$MNT"
  [ "$(findmnt -n -o SOURCE --mountpoint "$MNT")" = "$1" ] || { echo "not our mount" >&2; exit 1; }
}

# run_fio LABEL: the fio jobs on $MNT, one line per job into $DIR/results.
run_fio() {
  DIR="$MNT" fio --output-format=json "$ROOT/bench/${FIO_JOBS:-fio-chain.fio}" > "$DIR/fio.json"
  LABEL=$1 python3 - "$DIR/fio.json" >> "$DIR/results" <<'PY'
import json, os, sys
d = json.load(open(sys.argv[1]))
for j in d['jobs']:
    for k in ('read', 'write'):
        x = j[k]
        if x['io_bytes'] > 0:
            print(os.environ['LABEL'], j['jobname'], round(x['bw_bytes'] / 2**20, 1), round(x['iops']))
PY
  rm -f "$MNT/fio.bin"
}

# chain_cairn LABEL [SNAPSHOTS]: a 2 GiB volume through the chain.
chain_cairn() {
  local data=$DIR/data-fio
  rm -rf "$data"
  "$CAIRN" volume create fio --size 2G --data-dir "$data" >/dev/null
  serve_cairn "$data"
  local dev; dev=$("$CAIRN" volume attach fio --data-dir "$data")
  mount_dev "$dev"
  if [ $# -ge 2 ]; then
    # Lay the file out, then take snapshots with writes all over it in
    # between, so reads and writes cross many layers.
    dd if=/dev/urandom of="$MNT/fio.bin" bs=1M count=512 oflag=direct status=none
    for i in $(seq 1 "$2"); do
      if [ "$2" -gt 1 ]; then
        dd if=/dev/urandom of="$MNT/fio.bin" bs=1M count=4 seek=$(( (i * 37) % 508 )) oflag=direct conv=notrunc status=none
      fi
      "$CAIRN" volume snapshot create fio --name "s$i" --data-dir "$data" >/dev/null
    done
  fi
  run_fio "$1"
  umount "$MNT"
  "$CAIRN" volume detach fio --data-dir "$data" >/dev/null
  stop_serve
  rm -rf "$data"
}

# chain_nbdkit LABEL: nbdkit's file plugin on a sparse 2 GiB file.
chain_nbdkit() {
  local img=$DIR/nbdkit.img sock=$DIR/nbdkit.sock
  rm -f "$img" "$sock"; truncate -s 2G "$img"
  nbdkit -U "$sock" -P "$DIR/nbdkit.pid" file "$img"
  wait_for 10 test -S "$sock"
  mkdir -p "$DIR/fuse"
  nbdfuse -P "$DIR/nbdfuse.pid" "$DIR/fuse/nbd" --unix "$sock" >"$DIR/nbdfuse.log" 2>&1 &
  wait_for 10 test -s "$DIR/nbdfuse.pid" -a -f "$DIR/fuse/nbd"
  local dev; dev=$(losetup -f --show --direct-io=on "$DIR/fuse/nbd")
  mount_dev "$dev"
  run_fio "$1"
  umount "$MNT"
  losetup -d "$dev"
  fusermount3 -u "$DIR/fuse"
  wait_for 10 bash -c "! kill -0 $(cat "$DIR/nbdfuse.pid") 2>/dev/null" || true
  kill "$(cat "$DIR/nbdkit.pid")"; rm -f "$img" "$DIR/nbdkit.pid"
}

cleanup() {
  findmnt -n --mountpoint "$MNT" >/dev/null 2>&1 && umount "$MNT"
  stop_serve
}
trap cleanup EXIT

# medians LABEL-A LABEL-B: per job, the medians of both and their ratio.
medians() {
  python3 - "$DIR/results" "$1" "$2" <<'PY'
import sys, statistics, collections
path, a, b = sys.argv[1:]
bw = collections.defaultdict(list); iops = collections.defaultdict(list)
for line in open(path):
    label, job, mib, io = line.split()
    bw[(label, job)].append(float(mib)); iops[(label, job)].append(float(io))
jobs = sorted({j for (_, j) in bw}, key=lambda j: ['seqwrite-1m-qd8','seqread-1m-qd8','randwrite-4k-qd32','randread-4k-qd32'].index(j))
print(f"{'job':20} {a+' MiB/s':>16} {'IOPS':>8} {b+' MiB/s':>16} {'IOPS':>8} {'ratio':>7}")
for j in jobs:
    ma, mb = statistics.median(bw[(a, j)]), statistics.median(bw[(b, j)])
    ia, ib = statistics.median(iops[(a, j)]), statistics.median(iops[(b, j)])
    print(f"{j:20} {ma:16.1f} {ia:8.0f} {mb:16.1f} {ib:8.0f} {ma/mb:7.2f}")
PY
}

for part in "${PARTS[@]}"; do
  case $part in
  snaptime)
    log "snapshot creation time"
    rm -rf "$DIR/data-snap"
    "$VB" snapshot-time -dir "$DIR/data-snap"
    rm -rf "$DIR/data-snap"
    ;;
  memory)
    log "index memory"
    rm -rf "$DIR/data-mem"
    "$VB" memory -dir "$DIR/data-mem"
    rm -rf "$DIR/data-mem"
    ;;
  incremental)
    data=$DIR/data-inc repo=$DIR/repo-inc
    rm -rf "$data" "$repo"
    log "filling a $((VOLSIZE >> 30)) GiB volume"
    "$VB" fill -dir "$data" -name v -size "$VOLSIZE"
    export CAIRN_DATA_DIR=$data CAIRN_REPO=$repo
    "$CAIRN" repo init >/dev/null
    drop
    /usr/bin/time -f '%e %I %M' -o "$DIR/time" "$CAIRN" --json repo backup --volume v > "$DIR/full.json"
    read -r fwall fin frss < "$DIR/time"
    "$VB" scribble -dir "$data" -name v -percent 1 -seed 2
    drop
    /usr/bin/time -f '%e %I %M' -o "$DIR/time" "$CAIRN" --json repo backup --volume v > "$DIR/inc.json"
    read -r iwall iin irss < "$DIR/time"
    python3 - "$DIR/full.json" "$DIR/inc.json" "$VOLSIZE" "$fwall" "$fin" "$iwall" "$iin" <<'PY'
import json, sys
full, inc = json.load(open(sys.argv[1])), json.load(open(sys.argv[2]))
size = int(sys.argv[3]); fwall, fin, iwall, iin = map(float, sys.argv[4:])
g = 2**30
print(f"{'backup':12} {'wall s':>8} {'read (stats)':>14} {'read from disk':>15} {'% of volume':>12} {'stored':>10}")
for name, m, wall, blocks in (("full", full, fwall, fin), ("incremental", inc, iwall, iin)):
    disk = blocks * 512
    print(f"{name:12} {wall:8.2f} {m['stats']['bytes_read']/g:11.2f} GiB {disk/g:12.2f} GiB {100*disk/size:11.2f}% {m['stats']['bytes_stored']/g:6.2f} GiB")
print(f"incremental: changed-block tracking {inc['changed_block_tracking']}, {inc['changed_bytes']/2**20:.1f} MiB listed as changed")
PY
    # Both backups restore, byte for byte, in about the same time.
    full_id=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["id"])' "$DIR/full.json")
    inc_id=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["id"])' "$DIR/inc.json")
    snap=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["snapshot"])' "$DIR/inc.json")
    for b in "$full_id" "$inc_id"; do
      rm -f "$DIR/restored.img"; drop
      /usr/bin/time -f '%e' -o "$DIR/time" "$CAIRN" repo restore "$b" "$DIR/restored.img" >/dev/null
      echo "restore of ${b:0:8}: $(cat "$DIR/time") s"
    done
    serve_cairn "$data"
    if qemu-img compare -q -f raw -F raw "$DIR/restored.img" "nbd+unix:///$snap?socket=$data/nbd.sock"; then
      echo "incremental restore is byte-identical to its snapshot"
    else
      echo "INCREMENTAL RESTORE DIFFERS FROM ITS SNAPSHOT"; exit 1
    fi
    stop_serve
    unset CAIRN_DATA_DIR CAIRN_REPO
    rm -rf "$data" "$repo" "$DIR/restored.img"
    ;;
  mixedread)
    data=$DIR/data-mix
    rm -rf "$data"
    readers=(this)
    if [ -n "${BENCH_BASELINE:-}" ]; then
      # The baseline's engine, read by this revision's volbench.
      wt=$(mktemp -d "$DIR/wt.XXXXXX")
      git -C "$ROOT" worktree add -q --detach "$wt" "$BENCH_BASELINE"
      cp bench/volbench/main.go "$wt/bench/volbench/main.go"
      (cd "$wt" && go build -o "$DIR/volbench-baseline" ./bench/volbench)
      git -C "$ROOT" worktree remove --force "$wt"
      readers+=(baseline)
    fi
    log "filling a 1 GiB volume, then 8 KiB pages over 20% of it"
    "$VB" fill -dir "$data" -name v -size $((1 << 30))
    "$VB" snapshot -dir "$data" -name v -snapshot before
    "$VB" scribble -dir "$data" -name v -percent 20 -page 8192
    "$VB" snapshot -dir "$data" -name v -snapshot mixed
    : > "$DIR/results"
    for r in $(seq "$ROUNDS"); do
      for who in "${readers[@]}"; do
        bin=$VB; [ "$who" = baseline ] && bin=$DIR/volbench-baseline
        for snap in before mixed; do
          drop
          secs=$("$bin" read -dir "$data" -name v -snapshot "$snap" | sed -E 's/.* in ([0-9.]+)(m?s),.*/\1 \2/' |
            awk '{print ($2 == "ms") ? $1 / 1000 : $1}')
          echo "$who $snap $secs" >> "$DIR/results"
        done
      done
    done
    python3 - "$DIR/results" <<'PY'
import statistics, sys
t = {}
for line in open(sys.argv[1]):
    who, snap, secs = line.split()
    t.setdefault((who, snap), []).append(float(secs))
print(f"{'engine':10} {'snapshot':8} {'median s':>9} {'MB/s':>7}   runs")
for (who, snap), v in sorted(t.items()):
    m = statistics.median(v)
    print(f"{who:10} {snap:8} {m:9.2f} {2**30/m/1e6:7.0f}   {' '.join(f'{x:.2f}' for x in v)}")
PY
    rm -rf "$data"
    ;;
  fio)
    : > "$DIR/results"
    for r in $(seq "$ROUNDS"); do
      log "fio round $r/$ROUNDS: cairn"; chain_cairn cairn
      log "fio round $r/$ROUNDS: nbdkit"; chain_nbdkit nbdkit
    done
    echo "fio through the chain, medians of $ROUNDS rounds (ratio = cairn / nbdkit file):"
    medians cairn nbdkit
    ;;
  snapshots)
    # Reads first (fio-depth.fio), so they cross the layers. A write after
    # a snapshot is a block's first in a fresh head; with no snapshot it
    # overwrites blocks the head holds: snap1 (one snapshot, taken last)
    # pays the same first writes at depth 1, so 100 / 1 isolates depth.
    : > "$DIR/results"
    export FIO_JOBS=fio-depth.fio
    for r in $(seq "$ROUNDS"); do
      log "fio round $r/$ROUNDS: 100 snapshots"; chain_cairn snap100 100
      log "fio round $r/$ROUNDS: no snapshots"; chain_cairn snap0 0
      log "fio round $r/$ROUNDS: 1 snapshot"; chain_cairn snap1 1
    done
    unset FIO_JOBS
    echo "fio on a volume with 100 snapshots and with none, medians of $ROUNDS rounds (ratio = 100 / none):"
    medians snap100 snap0
    echo "the same against one snapshot (ratio = 100 / 1: the cost of depth alone):"
    medians snap100 snap1
    ;;
  *) echo "unknown part $part" >&2; exit 2 ;;
  esac
done
