#!/usr/bin/env bash
# demo.sh: build cairn and run its main job on embedded defaults: back up a
# disk image into a new local repository, change it, back it up again
# incrementally, restore it, and verify it byte for byte.
#
#   ./demo.sh                 a 1 GiB sample image
#   IMAGE=/path/to/disk.img ./demo.sh
#
# Everything goes under ${CAIRN_DEMO_DIR:-$HOME/.local/share/cairn/demo}.
set -euo pipefail
cd "$(dirname "$0")"
DEMO=${CAIRN_DEMO_DIR:-${XDG_DATA_HOME:-$HOME/.local/share}/cairn/demo}
mkdir -p "$DEMO" bin
go build -o bin/cairn ./cmd/cairn
go build -o bin/mkimage ./bench/mkimage
CAIRN=$PWD/bin/cairn
export CAIRN_REPO=$DEMO/repo CAIRN_KEY_FILE=$DEMO/repo.key

run() { printf '\n$ %s\n' "$*"; "$@"; }

IMG=${IMAGE:-$DEMO/disk.img}
if [ -z "${IMAGE:-}" ]; then
  echo "making a 1 GiB sample image (random, text and zeros): $IMG"
  bin/mkimage gen -size 1073741824 -o "$IMG"
fi
if [ ! -f "$CAIRN_REPO/config" ]; then
  run "$CAIRN" repo init
fi
run "$CAIRN" repo backup --tag demo=full "$IMG"
if [ -z "${IMAGE:-}" ]; then
  echo; echo "changing 1% of the image in scattered places"
  bin/mkimage modify -seed "$RANDOM" -percent 1 -extent 1048576 -extents "$DEMO/changed.txt" "$IMG"
  run "$CAIRN" repo backup --tag demo=incremental --changed-extents "$DEMO/changed.txt" "$IMG"
fi
run "$CAIRN" repo ls
rm -f "$DEMO/restored.img"
run "$CAIRN" repo restore latest "$DEMO/restored.img"
run cmp "$IMG" "$DEMO/restored.img"
echo "restored image is byte-identical"
run "$CAIRN" repo check --read-data-subset 10%
echo
echo "repository: $CAIRN_REPO (key file $CAIRN_KEY_FILE: keep a copy)"
