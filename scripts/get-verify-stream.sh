#!/usr/bin/env bash
# Makes Xen's own stream checker, verify-stream-v2 (Debian xen-utils-4.17),
# runnable without installing the package, and prints the path of a wrapper
# that runs it: `$(scripts/get-verify-stream.sh) -i stream.bin`.
#
# The package is downloaded (apt-get download) and unpacked (dpkg-deb -x)
# once into ${P2BMIG_CACHE:-~/.cache/p2bmig}/xen-utils; later runs only print
# the path.
set -euo pipefail

cache="${P2BMIG_CACHE:-$HOME/.cache/p2bmig}/xen-utils"
wrapper="$cache/verify-stream-v2"
if [[ -x "$wrapper" ]]; then
  echo "$wrapper"
  exit 0
fi

mkdir -p "$cache"
# Work in a private directory and rename into place at the end, so that an
# interrupted or concurrent run never leaves a half-made cache behind.
tmp="$(mktemp -d "$cache/.tmp.XXXXXX")"
trap 'rm -rf "$tmp"' EXIT

# A machine whose package lists were never fetched knows no such package yet.
if ! (cd "$tmp" && apt-get download -q xen-utils-4.17 >"$tmp/log" 2>&1) &&
   ! (apt-get update -qq >>"$tmp/log" 2>&1 && cd "$tmp" && apt-get download -q xen-utils-4.17 >>"$tmp/log" 2>&1); then
  cat "$tmp/log" >&2
  echo "get-verify-stream: apt-get download xen-utils-4.17 failed" >&2
  exit 1
fi
deb="$(ls "$tmp"/xen-utils-4.17_*.deb)"
dpkg-deb -x "$deb" "$tmp/root"

root="$cache/root"
xen="$root/usr/lib/xen-4.17"
cat >"$tmp/verify-stream-v2" <<WRAPPER
#!/bin/sh
# Runs verify-stream-v2 from the unpacked xen-utils-4.17 (see get-verify-stream.sh).
PYTHONPATH="$xen/lib/python\${PYTHONPATH:+:\$PYTHONPATH}" exec python3 "$xen/bin/verify-stream-v2" "\$@"
WRAPPER
chmod +x "$tmp/verify-stream-v2"

rm -rf "$root"
mv "$tmp/root" "$root"
mv "$tmp/verify-stream-v2" "$wrapper"
echo "$wrapper"
