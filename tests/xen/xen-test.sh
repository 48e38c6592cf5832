#!/bin/bash
# Runs inside dom0 (tests/xen/run.sh boots it): xl save / xl restore of a small
# PV domU, first with the stock libxl-save-helper (baseline), then with
# LIBXL_SAVE_HELPER pointing at p2bmig-save-helper in pass-through mode, then
# in p2bmig mode. After each restore the guest must tick on without having
# rebooted. Prints "TIMING <step> <s> s", "SAVE-SIZE <name> <bytes>", and
# XEN-TEST-OK or XEN-TEST-FAILED.
set -u
LOGDIR=/var/log/xen/console
CFG=/root/domu/domu.cfg
DISK=/root/domu/disk.img
SAVEDIR=/var/lib/xen/save
WRAPPER=/usr/local/bin/p2bmig-save-helper
now() { date +%s.%N; }
dt() { awk -v a="$1" -v b="$2" 'BEGIN{printf "%.2f", b-a}'; }
T0=$(now)
fail() {
  echo "XEN-TEST-FAILED: $*"
  xl list
  for f in /var/log/xen/*.log $LOGDIR/*.log; do echo "---- $f"; tail -n 40 "$f"; done 2>/dev/null
  exit 1
}
crashed() { xl list domu 2>/dev/null | awk 'NR==2{print $5}' | grep -q c; }
maxtick() { cat $LOGDIR/guest-*.log 2>/dev/null | tr -d '\r' | grep -ao 'tick [0-9]*' | awk 'BEGIN{m=0}{if($2>m)m=$2}END{print m}'; }
wait_tick_after() {  # tick newer than $1 within $2 s
  local n=$1 to=$2 s
  s=$(now)
  while [ "$(maxtick)" -le "$n" ]; do
    sleep 0.25
    crashed && return 1
    [ "$(dt "$s" "$(now)" | cut -d. -f1)" -ge "$to" ] && return 1
  done
  return 0
}
wait_log() {
  local pat=$1 to=$2 s
  s=$(now)
  until cat $LOGDIR/guest-*.log 2>/dev/null | grep -aq "$pat"; do
    sleep 0.25
    crashed && return 1
    [ "$(dt "$s" "$(now)" | cut -d. -f1)" -ge "$to" ] && return 1
  done
  return 0
}
timing() { echo "TIMING $1 $2 s"; }

# save_restore <label> [VAR=value...]: xl save then xl restore with that environment.
save_restore() {
  local label=$1 file=$SAVEDIR/$1.save n s
  shift
  n=$(maxtick)
  s=$(now)
  env "$@" xl save domu "$file" || fail "$label: xl save"
  timing "$label-xl-save" "$(dt "$s" "$(now)")"
  echo "SAVE-SIZE $label $(stat -c %s "$file")"
  xl list domu >/dev/null 2>&1 && fail "$label: domu still exists after save"
  s=$(now)
  env "$@" xl restore "$file" || fail "$label: xl restore"
  timing "$label-xl-restore" "$(dt "$s" "$(now)")"
  wait_tick_after "$n" 120 || fail "$label: domU did not tick after restore"
  timing "$label-restore-to-ticking" "$(dt "$s" "$(now)")"
  rm -f "$file"
}

xl info | grep -E 'xen_version|xen_extra'
missing=$(ldd "$WRAPPER" | grep 'not found')
[ -z "$missing" ] || fail "p2bmig-save-helper lacks libraries: $missing"

s=$(now)
xl create "$CFG" || fail "xl create"
wait_log DOMU-READY 300 || fail "domU did not print DOMU-READY"
timing domU-create-to-ready "$(dt "$s" "$(now)")"
wait_tick_after 1 60 || fail "no ticks from domU"

save_restore stock
save_restore wrapper-off LIBXL_SAVE_HELPER=$WRAPPER P2BMIG_MODE=off
save_restore wrapper-p2bmig LIBXL_SAVE_HELPER=$WRAPPER P2BMIG_MODE=p2bmig P2BMIG_DISKS=$DISK

# The guest never rebooted, and its disk holds every tick it printed.
sleep 3
last=$(maxtick)
xl destroy domu || fail "xl destroy"
mkdir -p /mnt/d
mount -o loop "$DISK" /mnt/d || fail "mount the domU disk in dom0"
echo "disk: bootcount=$(cat /mnt/d/bootcount) ticks-on-disk=$(wc -l < /mnt/d/ticks) last-on-console=$last"
[ "$(cat /mnt/d/bootcount)" = 1 ] || fail "guest rebooted (bootcount != 1)"
[ "$(wc -l < /mnt/d/ticks)" -ge $((last - 1)) ] || fail "ticks missing on disk"
umount /mnt/d
timing whole-test "$(dt "$T0" "$(now)")"
echo "XEN-TEST-OK"
