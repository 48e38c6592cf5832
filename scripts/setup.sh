#!/usr/bin/env bash
# Installs everything p2bmig needs to build, test and run its demo, from
# Debian's archive only. Idempotent and quiet when everything is present.
set -euo pipefail

PKGS=(
  build-essential cmake ninja-build pkg-config git python3
  libboost-dev libboost-system-dev libssl-dev openssl  # openssl: scripts/make-certs.sh
  libgtest-dev libgmock-dev libbenchmark-dev
  libxxhash-dev libzstd-dev libcli11-dev libspdlog-dev libfmt-dev nlohmann-json3-dev
  libxen-dev libnfs-dev libnfs-utils
  nfs-ganesha nfs-ganesha-vfs rpcbind
  iproute2 procps iputils-ping
  python3-matplotlib  # bench/run.py: plots
  clang libclang-rt-14-dev  # scripts/fuzz.sh: clang's libFuzzer and sanitizer runtimes
  dpkg-dev patch xz-utils libyajl-dev  # scripts/check-xen-patches.sh: xen source, xl build
)

missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0

SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
echo "setup: installing ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
# Keep apt from starting daemons (ganesha, rpcbind): the scripts start their own.
if [ ! -e /usr/sbin/policy-rc.d ]; then
  printf '#!/bin/sh\nexit 101\n' | $SUDO tee /usr/sbin/policy-rc.d >/dev/null
  $SUDO chmod +x /usr/sbin/policy-rc.d
  trap '$SUDO rm -f /usr/sbin/policy-rc.d' EXIT
fi
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
