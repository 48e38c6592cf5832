#!/usr/bin/env bash
# Checks that every xen-patches/xl-*.patch applies to Debian 12's xen source
# and that xl builds with it: fetches the source package (apt-get source,
# cached), applies each patch with --dry-run and then for real to a fresh
# copy of tools/xl, compiles all of xl's sources against the installed
# libxen-dev (libxenlight, libxlutil) and links xl. The patched files must
# compile without warnings. Prints each step and its time.
#
# The machine's apt configuration is not touched: the deb-src entries live in
# a temporary sources file, with package lists in the cache directory.
#
# Usage: scripts/check-xen-patches.sh [--out FILE]
#   --out FILE   also keep the patched xl as FILE (the Xen system test runs it
#                in its dom0, which has the same Debian Xen libraries)
# Environment: P2BMIG_CACHE (default ~/.cache/p2bmig), XEN_SRC_VERSION (a
# version of Debian's xen source package; default: the installed libxen-dev's
# if the archive still has it, else the newest it has).
# Needs: gcc, libxen-dev, libyajl-dev, dpkg-dev, patch, xz-utils (scripts/setup.sh).
set -euo pipefail
OUT=""
case "${1:-}" in
  --out) [ $# -eq 2 ] || { echo "usage: $0 [--out FILE]" >&2; exit 2; }; OUT=$(readlink -f "$2") ;;
  "") ;;
  *) echo "usage: $0 [--out FILE]" >&2; exit 2 ;;
esac
cd "$(dirname "$0")/.."
ROOT=$PWD
CACHE=${P2BMIG_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/p2bmig}/xen-src
WORK=$(mktemp -d /tmp/p2bmig-xen-patches.XXXXXX)
trap 'rm -rf "$WORK"' EXIT
START=$EPOCHREALTIME

step() { printf '[%6.1fs] %s\n' "$(awk -v a="$START" -v b="$EPOCHREALTIME" 'BEGIN { print b - a }')" "$*"; }
die() { echo "check-xen-patches: $*" >&2; exit 1; }

for tool in gcc apt-get dpkg-source patch; do
  command -v "$tool" >/dev/null || die "$tool is missing (run scripts/setup.sh)"
done
[ -e /usr/include/libxl.h ] || die "libxen-dev is missing (run scripts/setup.sh)"
[ -e /usr/include/yajl/yajl_gen.h ] || die "libyajl-dev is missing (run scripts/setup.sh)"
shopt -s nullglob
patches=("$ROOT"/xen-patches/xl-*.patch)
[ ${#patches[@]} -gt 0 ] || die "no xen-patches/xl-*.patch"

# --- Debian's xen source, cached ---------------------------------------------
mkdir -p "$CACHE"
APT=(-o "Dir::Etc::SourceList=$CACHE/sources.list" -o Dir::Etc::SourceParts=/nonexistent
  -o "Dir::State::Lists=$CACHE/lists" -o "Dir::Cache=$CACHE/apt-cache"
  -o APT::Sandbox::User=root -o Debug::NoLocking=1)
cached=("$CACHE"/xen-4.17*/)
src=${cached[0]:-}
if [ -z "$src" ]; then
  step "fetching Debian's xen source package (deb-src in a private sources list)"
  mkdir -p "$CACHE/lists/partial" "$CACHE/apt-cache/archives/partial"
  cat >"$CACHE/sources.list" <<'EOF'
deb-src [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian bookworm main
deb-src [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian bookworm-updates main
deb-src [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian-security bookworm-security main
EOF
  apt-get "${APT[@]}" update >"$WORK/apt-update.log" 2>&1 || { cat "$WORK/apt-update.log"; die "apt-get update failed"; }
  available=$(apt-cache "${APT[@]}" showsrc xen | sed -n 's/^Version: //p' | sort -V)
  [ -n "$available" ] || die "the archive has no xen source package"
  installed=$(dpkg-query -W -f '${Version}' libxen-dev 2>/dev/null || true)
  want=${XEN_SRC_VERSION:-}
  dl_dir=$(mktemp -d "$CACHE/dl.XXXXXX")
  # The installed libraries' own source first; mirrors do not always keep
  # the security archive's files, so fall back to the newest one there is.
  for v in $want $installed $(echo "$available" | tac); do
    if (cd "$dl_dir" && apt-get "${APT[@]}" source --download-only "xen=$v" >"$WORK/apt-source.log" 2>&1); then
      version=$v
      break
    fi
    rm -f "$dl_dir"/*
  done
  [ -n "${version:-}" ] || { cat "$WORK/apt-source.log"; die "cannot download the xen source package"; }
  step "downloaded xen $version ($(du -sh "$dl_dir" | cut -f1)); unpacking (Debian's patches applied)"
  dsc=$(ls "$dl_dir"/*.dsc)
  (cd "$CACHE" && dpkg-source -x "$dsc" "xen-$version" >"$WORK/dpkg-source.log" 2>&1) ||
    { cat "$WORK/dpkg-source.log"; die "dpkg-source -x failed"; }
  rm -rf "$dl_dir"
  src=$CACHE/xen-$version/
else
  step "using the cached source $src"
fi
src=${src%/}
[ -d "$src/tools/xl" ] || die "$src has no tools/xl"

# --- Apply the patches to a fresh copy ---------------------------------------
mkdir -p "$WORK/tree/tools"
cp -r "$src/tools/xl" "$WORK/tree/tools/"
for p in "${patches[@]}"; do
  (cd "$WORK/tree" && patch -p1 --dry-run --quiet <"$p") >"$WORK/patch.log" 2>&1 ||
    { cat "$WORK/patch.log"; die "$(basename "$p") does not apply to $(basename "$src")"; }
  (cd "$WORK/tree" && patch -p1 --quiet --no-backup-if-mismatch <"$p")
  step "applied $(basename "$p") (dry run, then for real)"
done
changed=$(cd "$WORK/tree" && { diff -rq "$src/tools/xl" tools/xl || true; } | awk '{ print $4 }' | xargs -n1 basename | sort)
step "patched: $(echo $changed)"

# --- Build xl against the installed libxen-dev --------------------------------
# What xl takes from tools/config.h (configure), with Debian's paths.
cat >"$WORK/config.h" <<'EOF'
#define XEN_CONFIG_DIR "/etc/xen"
#define XEN_LOCK_DIR "/var/lock"
#define XEN_DUMP_DIR "/var/lib/xen/dump"
#define XEN_SCRIPT_DIR "/etc/xen/scripts"
#define XENFIRMWAREDIR "/usr/lib/xen-4.17/boot"
#define HAVE_YAJL_YAJL_VERSION_H 1
EOF
X=$WORK/tree/tools/xl
# xl's own warning flags (tools/xl/Makefile); <xen-tools/libs.h> from the source.
CFLAGS=(-O1 -std=gnu99 -Wall -Wno-format-zero-length -Wmissing-declarations -Wformat-nonliteral
  -Wshadow -fno-strict-aliasing -D_LARGEFILE_SOURCE -D_LARGEFILE64_SOURCE
  -include "$WORK/config.h" -I"$X" -idirafter "$src/tools/include")
mkdir -p "$WORK/obj"
nobj=0
for f in "$X"/*.c; do
  name=$(basename "$f" .c)
  extra=()
  # The files the patches touch compile without any warning; the rest as
  # upstream (the compiler here warns about a few unused variables there).
  if echo "$changed" | grep -qx "$name.c"; then
    extra=(-Werror -Wno-error=unused-but-set-variable)
  fi
  gcc "${CFLAGS[@]}" "${extra[@]}" -c "$f" -o "$WORK/obj/$name.o" 2>>"$WORK/cc.log" ||
    { cat "$WORK/cc.log"; die "compiling $name.c failed"; }
  nobj=$((nobj + 1))
done
step "compiled $nobj xl sources (the patched ones with -Werror)"
gcc -o "$WORK/xl" "$WORK"/obj/*.o -lxlutil -lxenlight -lxentoollog -lyajl 2>"$WORK/ld.log" ||
  { cat "$WORK/ld.log"; die "linking xl failed"; }
for opt in --shared-storage --dedup --domain-name; do
  grep -q -- "$opt" "$WORK/xl" || die "the built xl lacks $opt"
done
step "linked xl against libxenlight $(dpkg-query -W -f '${Version}' libxen-dev) ($(stat -c %s "$WORK/xl") bytes); it knows --shared-storage, --dedup"
if [ -n "$OUT" ]; then
  install -m 755 "$WORK/xl" "$OUT"
  step "kept the patched xl as $OUT"
fi
echo "check-xen-patches: OK (${#patches[@]} patch(es) applied to $(basename "$src"), xl built)"
