#!/usr/bin/env bash
# A real Linux guest as the reference for how much of a running guest's memory
# is page cache. Boots Debian 12 (its own kernel and initramfs, a debootstrap
# root file system on a raw ext4 disk image) under qemu-system-x86_64 (TCG),
# with guest RAM in a file (memory-backend-file, share=on). In the guest a
# workload reads the files of /usr (page cache), builds a heap in Python
# (anonymous memory), writes and syncs a file, and prints /proc/meminfo. Then
# QEMU stops the guest and `p2bmig analyze` counts the captured memory's zero
# pages and pages byte-identical to 4 KiB blocks of the disk image.
#
# Usage: bench/realguest/run.sh [OUT_JSON]      (root; Debian archive needed)
# Env: MEM (MiB, default 1024), DISK_MB (default 3072), W (work dir, default
# /var/tmp/p2bmig-realguest), P2BMIG (binary, default build/p2bmig),
# TIMEOUT (seconds for boot + workload, default 1800), MIRROR.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
W=${W:-/var/tmp/p2bmig-realguest}
MEM=${MEM:-1024}
DISK_MB=${DISK_MB:-3072}
P2BMIG=${P2BMIG:-$ROOT/build/p2bmig}
TIMEOUT=${TIMEOUT:-1800}
MIRROR=${MIRROR:-http://deb.debian.org/debian}
OUT=${1:-$W/realguest.json}
MEMFILE=/dev/shm/p2bmig-realguest-$$.mem
log() { echo "[$(date +%H:%M:%S)] $*" >&2; }

[ "$(id -u)" -eq 0 ] || { echo "run.sh: needs root" >&2; exit 2; }
need=""
for p in qemu-system-x86 debootstrap e2fsprogs; do
  dpkg -s "$p" >/dev/null 2>&1 || need="$need $p"
done
if [ -n "$need" ]; then
  log "installing$need"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $need >/dev/null
fi
mkdir -p "$W"
t0=$(date +%s)

# --- root file system: Debian's kernel (with its initramfs) and python3 ----
if [ ! -f "$W/rootfs/.done" ]; then
  rm -rf "$W/rootfs"
  log "debootstrap (minbase + linux-image-amd64, initramfs-tools, python3)"
  debootstrap --variant=minbase --include=linux-image-amd64,initramfs-tools,python3 \
    bookworm "$W/rootfs" "$MIRROR" >"$W/debootstrap.log" 2>&1
  touch "$W/rootfs/.done"
fi
cat >"$W/rootfs/sbin/p2bmig-init" <<'INIT'
#!/bin/sh
# PID 1 of the reference guest: a workload, then wait to be captured.
export PATH=/usr/sbin:/usr/bin:/sbin:/bin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev 2>/dev/null
mount -o remount,rw /
echo "P2BMIG-GUEST-UP"
# Page cache: every file of /usr, as a system that has run for a while has
# read its programs, libraries and data.
find /usr -xdev -type f -print0 | xargs -0 cat >/dev/null 2>&1
# Anonymous memory: a heap of Python objects (strings, lists, dicts).
python3 -c '
import random, time
random.seed(1)
heap = [{"id": i, "name": "item-%d" % i, "tags": [random.random() for _ in range(8)]}
        for i in range(300000)]
print("P2BMIG-HEAP-READY", len(heap), flush=True)
time.sleep(1e9)
' &
# A written file: its pages are page cache that equals the disk once synced.
dd if=/dev/urandom of=/var/tmp/written bs=1M count=32 2>/dev/null
sync
sleep 10
echo "P2BMIG-MEMINFO-BEGIN"
cat /proc/meminfo
echo "P2BMIG-MEMINFO-END"
echo "P2BMIG-WORKLOAD-DONE"
while :; do sleep 1000; done
INIT
chmod +x "$W/rootfs/sbin/p2bmig-init"
KERNEL=$(ls "$W"/rootfs/boot/vmlinuz-* | head -1)
INITRD=$(ls "$W"/rootfs/boot/initrd.img-* | head -1)

# --- disk image: ext4 with 4 KiB blocks, made from the tree --------------------
log "making the ${DISK_MB} MiB disk image"
rm -f "$W/disk.img"
mkfs.ext4 -q -b 4096 -L root -d "$W/rootfs" "$W/disk.img" "${DISK_MB}M"

# --- boot, run the workload, stop, capture -------------------------------------
rm -f "$W/serial.log" "$W/monitor.sock" "$MEMFILE"
log "booting the guest (${MEM} MiB, TCG)"
qemu-system-x86_64 -M pc,memory-backend=mem -accel tcg -cpu qemu64 -smp 1 -m "${MEM}M" \
  -object "memory-backend-file,id=mem,size=${MEM}M,mem-path=$MEMFILE,share=on" \
  -kernel "$KERNEL" -initrd "$INITRD" \
  -append "root=/dev/vda rw init=/sbin/p2bmig-init console=ttyS0 quiet" \
  -drive "file=$W/disk.img,format=raw,if=virtio" \
  -nic none -vga none -display none -serial "file:$W/serial.log" \
  -monitor "unix:$W/monitor.sock,server,nowait" &
QPID=$!
cleanup() { kill "$QPID" 2>/dev/null || true; wait "$QPID" 2>/dev/null || true; rm -f "$MEMFILE"; }
trap cleanup EXIT
monitor() {
  /usr/bin/python3 - "$W/monitor.sock" "$1" <<'PY'
import socket, sys, time
s = socket.socket(socket.AF_UNIX)
s.connect(sys.argv[1])
s.sendall((sys.argv[2] + "\n").encode())
time.sleep(0.5)
PY
}
for ((i = 0; i < TIMEOUT; i += 2)); do
  grep -q P2BMIG-WORKLOAD-DONE "$W/serial.log" 2>/dev/null && break
  kill -0 "$QPID" 2>/dev/null || { tail -20 "$W/serial.log" >&2; echo "guest died" >&2; exit 1; }
  sleep 2
done
grep -q P2BMIG-WORKLOAD-DONE "$W/serial.log" || { tail -20 "$W/serial.log" >&2; echo "timeout" >&2; exit 1; }
monitor stop
log "guest stopped after $(($(date +%s) - t0)) s; analysing"
"$P2BMIG" analyze "$MEMFILE" "$W/disk.img" --json >"$W/analyze.json"
/usr/bin/python3 - "$W/analyze.json" "$W/serial.log" "$OUT" "$MEM" "$KERNEL" <<'PY'
import json, re, sys
a = json.load(open(sys.argv[1]))
serial = open(sys.argv[2], errors="replace").read()
m = re.search(r"P2BMIG-MEMINFO-BEGIN(.*?)P2BMIG-MEMINFO-END", serial, re.S)
meminfo = {}
for line in (m[1] if m else "").splitlines():
    f = line.replace(":", " ").split()
    if len(f) >= 2 and f[1].isdigit():
        meminfo[f[0]] = int(f[1]) * 1024
a.update(guest_memory_mib=int(sys.argv[4]), kernel=sys.argv[5].rsplit("/", 1)[-1],
         meminfo={k: meminfo.get(k) for k in ("MemTotal", "MemFree", "Cached", "Buffers",
                                               "AnonPages", "Shmem", "Slab")})
json.dump(a, open(sys.argv[3], "w"), indent=1)
print(json.dumps(a, indent=1))
PY
monitor quit || true
