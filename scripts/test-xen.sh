#!/bin/bash
# The Xen system test: real Xen 4.17 (Debian's) under QEMU software emulation.
# Builds p2bmig-save-helper, p2bmig-trackd and the patched xen-blkback for the
# kernel the image boots, a dom0 image with them (tests/xen/build-images.sh),
# then boots it twice (tests/xen/run.sh): a PV guest on the pinned hypervisor
# build that has shadow paging, and a PVH guest on the current one. In each,
# tests/xen/xen-test.sh migrates the guest to localhost with Xen's own helper
# and with p2bmig, and saves/restores it with p2bmig, checking that the guest
# runs on with its memory intact and that its page cache travels as mappings.
#
#   scripts/test-xen.sh [build-dir] [pv|pvh|all]   (default: build, all)
#
# Needs root, about 4.5 GB of free RAM and the Debian archive; no KVM. Runs in
# ctest with the label `xen` (ctest -L xen; ctest -LE xen leaves it out).
# Ends with `xen system test: PASS` and a line of numbers summed over the
# runs, or `xen system test: FAIL (...)` and exit 1.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BUILD=${1:-$ROOT/build}
BUILD=$(mkdir -p "$BUILD" && cd "$BUILD" && pwd)
GUESTS=${2:-all}
[ "$GUESTS" = all ] && GUESTS="pv pvh"
# Images and serial logs live in the build directory (a fresh build
# directory builds them from scratch; the debootstrap tree is reused after).
export W=${W:-$BUILD/xen-images}
T0=$(date +%s)
die() {
  echo "$*" >&2
  echo "xen system test: FAIL ($*)"
  exit 1
}

# What the machine must have; anything missing is a failure, not a skip.
[ "$(id -u)" -eq 0 ] || die "must run as root (debootstrap, chroot, apt)"
avail_kb=$(awk '/MemAvailable/{print $2}' /proc/meminfo)
[ "$avail_kb" -ge $((4500 * 1024)) ] ||
  die "needs 4.5 GB of available memory for QEMU, has $((avail_kb / 1024)) MB"
[ "$(nproc)" -ge 2 ] || echo "warning: 1 CPU, QEMU will be slow" >&2

# The p2bmig programs; the map daemon and the tap are built when present.
[ -f "$BUILD/CMakeCache.txt" ] || cmake --preset default -B "$BUILD" -S "$ROOT"
targets=(p2bmig-save-helper)
TRACKD_ARG=()
if grep -q '/p2bmig-trackd\.dir$' "$BUILD/CMakeFiles/TargetDirectories.txt"; then
  targets+=(p2bmig-trackd)
  TRACKD_ARG=(--trackd "$BUILD/p2bmig-trackd")
fi
cmake --build "$BUILD" -j2 --target "${targets[@]}"
XL_WRAPPER_ARG=()
[ ! -f "$ROOT/tools/xl-wrapper/p2bmig-xl.in" ] ||
  XL_WRAPPER_ARG=(--xl-wrapper "$ROOT/tools/xl-wrapper/p2bmig-xl.in")
BLKBACK_ARG=()
if [ -f "$ROOT/scripts/build-blkback-tap.sh" ]; then
  BLKBACK_ARG=(--blkback-builder "$ROOT/scripts/build-blkback-tap.sh")
fi
bash "$ROOT/tests/xen/build-images.sh" --helper "$BUILD/p2bmig-save-helper" \
  "${TRACKD_ARG[@]}" "${XL_WRAPPER_ARG[@]}" "${BLKBACK_ARG[@]}" || die "building the images failed"
echo "TIMING images $(($(date +%s) - T0)) s"

declare -A result
failed=""
for g in $GUESTS; do
  t=$(date +%s)
  out=$(mktemp)
  if bash "$ROOT/tests/xen/run.sh" "$g" 2>&1 | tee "$out"; then
    result[$g]=$(grep -o 'XEN-RESULT .*' "$out" | tail -1)
    echo "xen system test ($g): PASS in $(($(date +%s) - t)) s: ${result[$g]#XEN-RESULT }"
  else
    failed="$failed $g"
    echo "xen system test ($g): FAIL after $(($(date +%s) - t)) s"
  fi
  rm -f "$out"
done
echo "TIMING whole $(($(date +%s) - T0)) s"
[ -z "$failed" ] || die "failed:$failed"
sum() { for g in $GUESTS; do echo "${result[$g]}"; done |
  tr ' ' '\n' | awk -F= -v k="$1" '$1==k{s+=$2} END{printf "%d", s}'; }
echo "xen system test: migrations=$(sum migrations) triple_faults=$(sum triple_faults) retries=$(sum retries) (each retry is a RETRY line above, with its cause)"
for g in $GUESTS; do
  case " ${result[$g]} " in
    *" migrate=0 "*)
      echo "################################################################"
      echo "SKIPPED: $g live migration was NOT tested (no hypervisor build with"
      echo "shadow paging was available, see the $g run's message above)."
      echo "################################################################" ;;
  esac
done
echo "xen system test: PASS"
echo "mapped_pages=$(sum mapped_pages) data_pages=$(sum data_pages) link_bytes=$(sum link_bytes) baseline_link_bytes=$(sum baseline_link_bytes)"
