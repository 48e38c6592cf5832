#!/bin/bash
# The Xen system test: builds p2bmig-save-helper, a dom0 image with it
# (tests/xen/build-images.sh) and runs xl save / xl restore of a PV guest on
# Debian's Xen 4.17 under QEMU software emulation (tests/xen/run.sh).
# Not part of ctest: it needs root, the Debian archive, about 4 GB of RAM
# and several minutes. See docs/xen-integration.md.
#   scripts/test-xen.sh [build-dir]     (default: build)
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BUILD=${1:-$ROOT/build}
[ -f "$BUILD/CMakeCache.txt" ] || cmake --preset default -B "$BUILD" -S "$ROOT"
cmake --build "$BUILD" -j2 --target p2bmig-save-helper
bash "$ROOT/tests/xen/build-images.sh" "$BUILD/p2bmig-save-helper"
bash "$ROOT/tests/xen/run.sh"
