#!/bin/bash
# Builds xen-blkback with the p2bmig completion tap
# (xen-patches/linux-6.1-xen-blkback-p2b-tap.patch) as an out-of-tree module
# for one Debian 12 kernel.
#
#   scripts/build-blkback-tap.sh [--kernel-abi 6.1.0-NN-amd64] OUTDIR
#
# Leaves OUTDIR/xen-blkback.ko (module name xen_blkback: it replaces the
# stock one) and OUTDIR/xen-blkback-tap.h (the record layout). The default
# ABI is the kernel tests/xen/build-images.sh boots: the one Debian's
# linux-image-amd64 depends on (override with --kernel-abi or KERNEL_ABI).
#
# What it does: installs (apt) linux-headers-<abi> and linux-source-6.1 of
# the same Debian version, extracts only drivers/block/xen-blkback from the
# source tarball, checks the patch with `patch -p1 --dry-run`, applies it and
# runs the kernel's kbuild (make -C /usr/src/linux-headers-<abi> M=...).
# Building does not need a Xen or even a matching running kernel. The
# extracted source and the built module are cached in $CACHE (default
# /var/cache/p2bmig/blkback-tap): a rerun with the same patch and ABI only
# copies the module. Needs root for apt (not if the packages are installed).
#
# On the dom0 (see docs/xen-integration.md, "The blkback completion tap"):
#   rmmod xen_blkback   # with no guest disk attached
#   insmod xen-blkback.ko feature_persistent=0
# then start p2bmig-trackd, then the guests.
set -euo pipefail

usage() {
  echo "usage: $0 [--kernel-abi 6.1.0-NN-amd64] OUTDIR" >&2
  exit 2
}

ABI=${KERNEL_ABI:-}
OUT=
while [ $# -gt 0 ]; do
  case "$1" in
    --kernel-abi) [ $# -ge 2 ] || usage; ABI=$2; shift 2 ;;
    --kernel-abi=*) ABI=${1#*=}; shift ;;
    -h|--help) usage ;;
    -*) echo "$0: unknown option $1" >&2; usage ;;
    *) [ -z "$OUT" ] || usage; OUT=$1; shift ;;
  esac
done
[ -n "$OUT" ] || usage

ROOT=$(cd "$(dirname "$0")/.." && pwd)
PATCH=$ROOT/xen-patches/linux-6.1-xen-blkback-p2b-tap.patch
CACHE=${CACHE:-/var/cache/p2bmig/blkback-tap}
export DEBIAN_FRONTEND=noninteractive
t0=$(date +%s.%N)
lap() { awk -v a="$t0" -v b="$(date +%s.%N)" -v n="$1" 'BEGIN{printf "build-blkback-tap: %-10s %6.1f s\n", n, b-a}' >&2; }
die() { echo "build-blkback-tap: $*" >&2; exit 1; }

[ -f "$PATCH" ] || die "missing $PATCH"

# The same rule as tests/xen/build-images.sh (KPKG): the kernel that
# linux-image-amd64 depends on.
if [ -z "$ABI" ]; then
  KPKG=$(apt-cache depends linux-image-amd64 2>/dev/null |
    awk '/Depends: linux-image-[0-9]/{print $2; exit}')
  if [ -z "$KPKG" ]; then
    apt-get update -qq
    KPKG=$(apt-cache depends linux-image-amd64 | awk '/Depends: linux-image-[0-9]/{print $2; exit}')
  fi
  [ -n "$KPKG" ] || die "cannot tell which kernel linux-image-amd64 is; pass --kernel-abi"
  ABI=${KPKG#linux-image-}
fi
case "$ABI" in
  6.1.*-*) ;;
  *) die "kernel ABI '$ABI' is not a Debian 12 6.1 kernel (e.g. 6.1.0-28-amd64)" ;;
esac

# The Debian version of that ABI (e.g. 6.1.192-2): headers and source must
# be the same upload.
version_of() { apt-cache show "$1" 2>/dev/null | awk '/^Version:/{print $2; exit}'; }
VER=$(dpkg-query -W -f='${Version}' "linux-headers-$ABI" 2>/dev/null || true)
[ -n "$VER" ] || VER=$(version_of "linux-headers-$ABI")
if [ -z "$VER" ]; then
  apt-get update -qq
  VER=$(version_of "linux-headers-$ABI")
fi
[ -n "$VER" ] || die "no package linux-headers-$ABI in the configured archive"

installed() { [ "$(dpkg-query -W -f='${Status} ${Version}' "$1" 2>/dev/null)" = "install ok installed $2" ]; }
if ! installed "linux-headers-$ABI" "$VER" || ! installed linux-source-6.1 "$VER"; then
  if ! apt-get install -y -qq --no-install-recommends --allow-downgrades \
    "linux-headers-$ABI=$VER" "linux-source-6.1=$VER" >&2; then
    die "cannot install linux-headers-$ABI and linux-source-6.1 version $VER (apt-get update? is $VER still in the archive?)"
  fi
fi
KDIR=/usr/src/linux-headers-$ABI
[ -f "$KDIR/Makefile" ] || die "$KDIR is not a kernel build tree"
TARBALL=/usr/src/linux-source-6.1.tar.xz
[ -f "$TARBALL" ] || die "missing $TARBALL (package linux-source-6.1)"
lap packages

# Pristine xen-blkback of this source version, extracted once.
SRC=$CACHE/src-$VER
if [ ! -f "$SRC/.done" ]; then
  rm -rf "$SRC"
  mkdir -p "$SRC"
  tar -xJf "$TARBALL" -C "$SRC" --strip-components=1 --wildcards \
    'linux-source-6.1/drivers/block/xen-blkback/*'
  touch "$SRC/.done"
fi
lap extract

KEY=$(cat "$PATCH" <(echo "$ABI $VER") | sha256sum | cut -c1-16)
BUILD=$CACHE/build-$ABI
if [ ! -f "$BUILD/.done-$KEY" ]; then
  rm -rf "$BUILD"
  mkdir -p "$BUILD"
  cp -a "$SRC/drivers" "$BUILD/"
  if ! (cd "$BUILD" && patch -p1 --dry-run -s < "$PATCH" >/dev/null); then
    (cd "$BUILD" && patch -p1 --dry-run < "$PATCH") >&2 || true
    die "$(basename "$PATCH") does not apply to linux-source-6.1 $VER (see above)"
  fi
  (cd "$BUILD" && patch -p1 -s < "$PATCH")
  lap patch
  if ! make -C "$KDIR" M="$BUILD/drivers/block/xen-blkback" -j2 modules > "$BUILD/make.log" 2>&1; then
    cat "$BUILD/make.log" >&2
    die "module build failed against $KDIR"
  fi
  if grep -q "warning:" "$BUILD/make.log"; then
    grep "warning:" "$BUILD/make.log" >&2
    die "the patched module builds with warnings"
  fi
  touch "$BUILD/.done-$KEY"
  lap build
fi

mkdir -p "$OUT"
cp "$BUILD/drivers/block/xen-blkback/xen-blkback.ko" "$OUT/xen-blkback.ko"
cp "$BUILD/drivers/block/xen-blkback/xen-blkback-tap.h" "$OUT/xen-blkback-tap.h"
vermagic=$(modinfo -F vermagic "$OUT/xen-blkback.ko" 2>/dev/null || true)
case "$vermagic" in
  "$ABI "*) ;;
  *) die "built module has vermagic '$vermagic', expected $ABI" ;;
esac
lap done
echo "$OUT/xen-blkback.ko ($ABI, linux-source-6.1 $VER)"
