#!/usr/bin/env bash
# Installs what is missing, configures and builds p2bmig (Release with debug
# info) into build/. Usage: scripts/build.sh [targets...]
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
[ -f build/build.ninja ] || cmake --preset default >/dev/null
if [ $# -gt 0 ]; then
  cmake --build build -j"$(nproc)" --target "$@"
else
  cmake --build build -j"$(nproc)"
fi
