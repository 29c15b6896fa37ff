#!/usr/bin/env bash
# demo.sh: build cairn and run its main job on embedded defaults: the block
# storage service (SQLite catalog, local volumes, local repository), then,
# as a client of its API: create a volume, write a disk image into it over
# NBD, snapshot it, back it up, change it, back it up incrementally,
# restore the incremental into a new volume and compare it byte for byte.
#
#   ./demo.sh                  a 1 GiB sample image
#   IMAGE=/path/to/disk.img ./demo.sh
#
# Everything goes under ${CAIRN_DEMO_DIR:-$HOME/.local/share/cairn/demo}.
# Needs nbdcopy (Debian libnbd-bin; installed when missing, as root).
set -euo pipefail
cd "$(dirname "$0")"
DEMO=${CAIRN_DEMO_DIR:-${XDG_DATA_HOME:-$HOME/.local/share}/cairn/demo}
if ! command -v nbdcopy >/dev/null; then
  if [ "$(id -u)" = 0 ]; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq libnbd-bin >/dev/null
  else
    echo "demo.sh needs nbdcopy: apt-get install libnbd-bin" >&2; exit 1
  fi
fi
mkdir -p "$DEMO" bin
go build -buildvcs=auto -o bin/cairn ./cmd/cairn
go build -o bin/mkimage ./bench/mkimage
export CAIRN_DATA_DIR=$DEMO/data PATH=$PWD/bin:$PATH

run() { printf '\n$ %s\n' "$*"; "$@"; }

IMG=${IMAGE:-$DEMO/disk.img}
if [ -z "${IMAGE:-}" ]; then
  echo "making a 1 GiB sample image (random, text and zeros): $IMG"
  mkimage gen -size 1073741824 -o "$IMG"
fi
GIB=$(( ($(stat -c %s "$IMG") + (1 << 30) - 1) >> 30 ))

echo; echo "$ cairn serve --listen 127.0.0.1:0 &      # logs: $DEMO/serve.log"
cairn serve --listen 127.0.0.1:0 > "$DEMO/serve.log" 2>&1 &
SERVE=$!
# On the way out: stop serve; and its data plane (the process serving the
# volumes), which a clean stop leaves running while volumes are attached.
stop_all() {
  kill $SERVE 2>/dev/null; wait $SERVE 2>/dev/null
  if [ -S "$CAIRN_DATA_DIR/control.sock" ]; then
    dp=$(sed -n 's/^pid //p' "$CAIRN_DATA_DIR/engine.lock" 2>/dev/null)
    [ -n "$dp" ] && kill "$dp" 2>/dev/null
  fi
}
trap stop_all EXIT
# Ready when it has published its address; gone if it failed to start.
until [ -S "$CAIRN_DATA_DIR/nbd.sock" ] && [ -f "$CAIRN_DATA_DIR/service.json" ]; do
  kill -0 $SERVE 2>/dev/null || { cat "$DEMO/serve.log" >&2; echo "cairn serve did not start" >&2; exit 1; }
  sleep 0.1
done
uri() { cairn volume attach "$1" --json | sed -n 's/.*"\(nbd+unix:[^"]*\)".*/\1/p'; }

name=demo-$(date +%s)
run cairn volume create "$name" --size "$GIB" --wait
URI=$(uri "$name"); echo "attached: $URI"
run nbdcopy "$IMG" "$URI"
run cairn snapshot create "$name" --name "$name-1" --force --wait
run cairn backup create --snapshot-id "$name-1" --name "$name-full" --wait
if [ -z "${IMAGE:-}" ]; then
  echo; echo "changing 1% of the image in scattered places and writing it again"
  mkimage modify -seed "$RANDOM" -percent 1 -extent 1048576 -extents "$DEMO/changed.txt" "$IMG"
  run nbdcopy "$IMG" "$URI"
fi
run cairn snapshot create "$name" --name "$name-2" --force --wait
run cairn backup create --snapshot-id "$name-2" --incremental --name "$name-incr" --wait
run cairn backup list
run cairn backup restore "$name-incr" --name "$name-restored" --wait
RURI=$(uri "$name-restored")
rm -f "$DEMO/restored.img"
run nbdcopy "$RURI" "$DEMO/restored.img"
run cmp -n "$(stat -c %s "$IMG")" "$IMG" "$DEMO/restored.img"
echo "the restored volume is byte-identical to the image"
run cairn volume detach "$name"
run cairn volume detach "$name-restored"
echo
echo "data directory: $CAIRN_DATA_DIR (backup key: backup.key, keep a copy; admin token: admin-token)"
