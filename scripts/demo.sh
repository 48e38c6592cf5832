#!/usr/bin/env bash
# The main job: a live migration of a simulated guest between two host
# processes on this machine, stock pre-copy vs p2bmig, with the guest's disk
# image on shared storage served by a real NFS server (nfs-ganesha on
# loopback; the target reads it through libnfs). Prints the comparison.
#
# Usage: scripts/demo.sh [p2bmig demo options...]   e.g. --json, --workload memory
#        P2BMIG_STORE=dir scripts/demo.sh            to use a plain shared directory
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/build.sh p2bmig >&2  # stdout is the demo's (--json)
export_dir=${P2BMIG_EXPORT_DIR:-/tmp/p2bmig-nfs-export}
mkdir -p "$export_dir"
if [ "${P2BMIG_STORE:-nfs}" = nfs ]; then
  url="$(bash scripts/nfs-server.sh start "$export_dir")?version=3&nfsport=2049&mountport=20048"
  exec build/p2bmig demo --dir "$export_dir" --nfs "$url" "$@"
else
  exec build/p2bmig demo --dir "$export_dir" "$@"
fi
