#!/usr/bin/env bash
# Builds p2bmig and runs every test: unit and integration tests (GoogleTest)
# and the system tests, which start their own NFS server and host processes;
# then the GoogleTest tests again under AddressSanitizer+UBSan and (the
# concurrency-heavy ones) ThreadSanitizer (scripts/test-sanitizers.sh;
# P2BMIG_SANITIZERS=0 skips them, and so do ctest options given here).
# Usage: scripts/test.sh [ctest options...]
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/build.sh
(cd build && ctest --output-on-failure --timeout 900 "$@")
if [ $# -eq 0 ] && [ "${P2BMIG_SANITIZERS:-1}" != 0 ]; then
  bash scripts/test-sanitizers.sh
fi
