#!/usr/bin/env bash
# Builds p2bmig and runs every test: unit and integration tests (GoogleTest)
# and the system tests, which start their own NFS server and host processes;
# then the Xen system test (scripts/test-xen.sh: Debian's Xen 4.17 under
# QEMU, a PV and a PVH guest migrated with and without p2bmig); then the
# GoogleTest tests again under AddressSanitizer+UBSan and (the
# concurrency-heavy ones) ThreadSanitizer (scripts/test-sanitizers.sh).
#
# The steps run one after the other, never side by side: QEMU's software
# emulation and the sanitizer runs are each CPU-bound on a 2-core machine.
# A failing Xen system test does not stop the sanitizer runs; the script
# exits non-zero at the end. The Xen system test enforces its own time
# limits (P2BMIG_XEN_TIMEOUT, default 2400 s in all; see scripts/test-xen.sh
# and, for measured times, docs/xen-integration.md) and needs root, about
# 4.5 GB of free memory and the Debian archive.
#
# Usage: scripts/test.sh [ctest options...]
# Given ctest options, only ctest runs. P2BMIG_XEN_TEST=0 leaves out the Xen
# system test, P2BMIG_SANITIZERS=0 the sanitizer runs (each loudly).
set -euo pipefail
cd "$(dirname "$0")/.."
lap() { echo "test.sh: $1 took $(($(date +%s) - $2)) s"; }
t=$(date +%s)
bash scripts/build.sh
lap build "$t"
t=$(date +%s)
(cd build && ctest --output-on-failure --timeout 900 "$@")
lap ctest "$t"
[ $# -eq 0 ] || exit 0

xen_rc=0
if [ "${P2BMIG_XEN_TEST:-1}" != 0 ]; then
  t=$(date +%s)
  bash scripts/test-xen.sh build all || xen_rc=$?
  lap "the Xen system test" "$t"
else
  echo "test.sh: SKIPPED the Xen system test (P2BMIG_XEN_TEST=0)"
fi

if [ "${P2BMIG_SANITIZERS:-1}" != 0 ]; then
  t=$(date +%s)
  bash scripts/test-sanitizers.sh
  lap "the sanitizer runs" "$t"
else
  echo "test.sh: SKIPPED the sanitizer runs (P2BMIG_SANITIZERS=0)"
fi
[ "$xen_rc" -eq 0 ] || { echo "test.sh: the Xen system test FAILED (exit $xen_rc)"; exit 1; }
