#!/usr/bin/env bash
# Builds p2bmig and runs every test: unit and integration tests (GoogleTest)
# and the system tests, which start their own NFS server and host processes.
# Usage: scripts/test.sh [ctest options...]
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/build.sh
cd build
ctest --output-on-failure --timeout 900 "$@"
