#!/bin/bash
# Boots Xen 4.17 + a PV dom0 under qemu-system-x86_64 (TCG) from the images of
# build-images.sh and runs xen-test.sh in dom0 with a PV or a PVH guest.
#
#   run.sh pv    PV guest on a hypervisor with shadow paging (xen-shadow.elf,
#                the pinned bookworm point-release build), -cpu qemu64.
#                Without such a build (hypervisors.env), the current
#                hypervisor and no live migration: a loud SKIP, save/restore only.
#   run.sh pvh   PVH guest on the archive's current hypervisor, with QEMU's
#                emulated AMD SVM + nested paging (-cpu qemu64,+svm,+npt):
#                log-dirty then goes through HAP, no shadow paging needed.
#   run.sh pv|pvh shell   the same machine with a root shell on the console
#                (Ctrl-a x quits); /root/xen-test.sh runs the test by hand.
#
# Prints the serial log's TIMING/STEP/RETRY/XEN- lines and, last, the result
# line `XEN-RESULT ...` (exit 0) or the failure (exit 1).
# Env: W (build dir, default /tmp/p2bmig-xen/build), TMO (hard limit in s,
#      default 1800), LOG (serial log).
set -u
GUEST=${1:?usage: run.sh pv|pvh [shell]}
MODE=${2:-test}
W=${W:-/tmp/p2bmig-xen/build}
TMO=${TMO:-1800}
LOG=${LOG:-$W/serial-$GUEST-$(date +%Y%m%d-%H%M%S).log}
for f in xen-current.elf vmlinuz dom0.cpio hypervisors.env; do
  [ -f "$W/$f" ] || { echo "missing $W/$f: run build-images.sh first"; exit 2; }
done
. "$W/hypervisors.env"

EXTRA="domutype=$GUEST"
case $GUEST in
  pv)
    CPU=qemu64
    if [ -n "$XEN_SHADOW_VERSION" ]; then
      XEN=$W/xen-shadow.elf
      echo "PV guest on Xen $XEN_SHADOW_VERSION (CONFIG_SHADOW_PAGING=y), -cpu $CPU"
    else
      XEN=$W/xen-current.elf
      EXTRA="$EXTRA migrate=0"
      echo "################################################################"
      echo "SKIP: PV live migration is NOT tested: $XEN_SHADOW_MISSING."
      echo "Rebuild xen-hypervisor-4.17-amd64 from Debian's xen source package"
      echo "with CONFIG_SHADOW_PAGING=y to test it; PV save/restore still runs."
      echo "################################################################"
    fi
    ;;
  pvh)
    CPU=qemu64,+svm,+npt
    XEN=$W/xen-current.elf
    echo "PVH guest on Xen $XEN_CURRENT_VERSION, -cpu $CPU"
    ;;
  *) echo "run.sh: guest type must be pv or pvh"; exit 2 ;;
esac

XEN_ARGS="console=com1 com1=115200,8n1 dom0_mem=1536M,max:1536M dom0_max_vcpus=2 loglvl=all guest_loglvl=all console_timestamps=boot"
DOM0_ARGS="console=hvc0 earlyprintk=xen loglevel=4 $EXTRA"
[ "$MODE" = test ] && DOM0_ARGS="$DOM0_ARGS xentest=1"
QEMU=(qemu-system-x86_64 -M pc -accel tcg,thread=multi -cpu "$CPU" -smp 2 -m 3072
  -nic none -vga none -no-reboot -kernel "$XEN" -append "$XEN_ARGS"
  -initrd "$W/vmlinuz $DOM0_ARGS,$W/dom0.cpio")
if [ "$MODE" = shell ]; then
  exec timeout --foreground "$TMO" "${QEMU[@]}" -nographic -serial mon:stdio
fi

echo "serial log: $LOG"
start=$(date +%s.%N)
timeout --kill-after=10 "$TMO" "${QEMU[@]}" -display none -monitor none -serial stdio </dev/null 2>&1 \
  > >(perl -MTime::HiRes=time -ne 'BEGIN{$|=1; $t0=time} printf "[%8.2f] %s", time-$t0, $_' > "$LOG") &
TPID=$!
while kill -0 "$TPID" 2>/dev/null; do
  sleep 1
  if grep -aq -E 'XEN-TEST-EXIT|Panic on CPU|Kernel panic|Dom0 crashed' "$LOG"; then
    sleep 2
    break
  fi
done
kill "$TPID" 2>/dev/null  # timeout passes SIGTERM on to its QEMU
wait "$TPID" 2>/dev/null
echo "qemu ran $(awk -v a="$start" -v b="$(date +%s.%N)" 'BEGIN{printf "%.1f", b-a}') s (TCG, $GUEST)"
grep -a -E 'DOM0-READY|TIMING|STEP|RETRY|TRIPLE-FAULT|WARNING|SAVE-SIZE|p2bmig-save-helper|Triple fault|XEN-TEST|disk:|Panic|panic' "$LOG"
if grep -aq XEN-TEST-OK "$LOG"; then
  grep -a -o 'XEN-RESULT .*' "$LOG" | tr -d '\r' | tail -1
  exit 0
fi
grep -a -A60 XEN-TEST-FAILED "$LOG" | tail -70
if ! grep -aq XEN-TEST-FAILED "$LOG"; then
  echo "no result from dom0 (timeout ${TMO}s or a crash): last lines of $LOG:"
  tail -n 30 "$LOG"
fi
exit 1
