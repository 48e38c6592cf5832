#!/bin/bash
# Boots Xen 4.17 + a PV dom0 under qemu-system-x86_64 (TCG) from the images of
# build-images.sh and runs xen-test.sh in dom0: xl save / xl restore of a PV
# domU with the stock helper, then through p2bmig-save-helper (pass-through,
# then p2bmig mode). Prints the TIMING lines and, last,
# "xen save/restore test: PASS" (exit 0) or "... FAIL" (exit 1).
#
# Env: W (build dir, default /tmp/p2bmig-xen/build), CPU (default qemu64),
#      TMO (hard limit in s, default 1200), LOG (serial log).
set -u
W=${W:-/tmp/p2bmig-xen/build}
CPU=${CPU:-qemu64}
TMO=${TMO:-1200}
LOG=${LOG:-$W/serial-$(date +%Y%m%d-%H%M%S).log}
for f in xen.elf vmlinuz dom0.cpio; do
  [ -f "$W/$f" ] || { echo "missing $W/$f: run build-images.sh first"; exit 2; }
done

XEN_ARGS="console=com1 com1=115200,8n1 dom0_mem=1024M,max:1024M dom0_max_vcpus=2 loglvl=all guest_loglvl=all console_timestamps=boot"
DOM0_ARGS="console=hvc0 earlyprintk=xen loglevel=4 xentest=1"
QEMU=(qemu-system-x86_64 -M pc -accel tcg,thread=multi -cpu "$CPU" -smp 2 -m 3072
  -nic none -vga none -no-reboot -kernel "$W/xen.elf" -append "$XEN_ARGS"
  -initrd "$W/vmlinuz $DOM0_ARGS,$W/dom0.cpio" -display none -monitor none -serial stdio)

echo "serial log: $LOG"
start=$(date +%s.%N)
timeout --kill-after=10 "$TMO" "${QEMU[@]}" </dev/null 2>&1 \
  > >(perl -MTime::HiRes=time -ne 'BEGIN{$|=1; $t0=time} printf "[%8.2f] %s", time-$t0, $_' > "$LOG") &
TPID=$!
while kill -0 "$TPID" 2>/dev/null; do
  sleep 1
  if grep -aq -E 'XEN-TEST-EXIT|XEN-TEST-FAILED|Panic on CPU|Kernel panic|Dom0 crashed' "$LOG"; then
    sleep 2
    break
  fi
done
kill "$TPID" 2>/dev/null  # timeout passes SIGTERM on to its QEMU
wait "$TPID" 2>/dev/null
echo "qemu ran $(awk -v a="$start" -v b="$(date +%s.%N)" 'BEGIN{printf "%.1f", b-a}') s"
grep -a -E 'DOM0-READY|TIMING|SAVE-SIZE|p2bmig-save-helper|XEN-TEST|disk:|Panic|panic' "$LOG"
if grep -aq XEN-TEST-OK "$LOG"; then
  echo "xen save/restore test: PASS"
  exit 0
fi
grep -a -A40 XEN-TEST-FAILED "$LOG" | tail -60
echo "xen save/restore test: FAIL"
exit 1
