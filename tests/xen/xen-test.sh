#!/bin/bash
# The Xen system test, inside dom0 (tests/xen/run.sh boots it under QEMU).
#
# Guest: /root/domu/domu-$GUEST.cfg (GUEST from domutype=pv|pvh on the kernel
# command line), whose disk is a raw image file in dom0. Its workload
# (domu-init.sh) fills its page cache from that disk, keeps a tmpfs of random
# data, ticks every second and prints checksums of both every 10 ticks, after
# which it reads its files again (a guest that arrived by migration or
# restore is unknown to this dom0's map until it reads).
#
# Steps, each followed by the same checks (the guest ticks on, did not reboot,
# every checksum it printed is the image's / its first one):
#   1. xl migrate --debug to localhost with Xen's own save helper: the
#      baseline (bytes on the migration link counted at the receiver);
#   2. the same migration through p2bmig-save-helper in p2bmig mode on both
#      sides: most of the page cache must travel as mappings, the stock
#      restore's verify pass (--debug: after the VERIFY record the source
#      sends all memory again and the target compares every page) must find
#      no page that differs, and the link must carry fewer bytes;
#   3. PV only, if the image carries the patched xl
#      (xen-patches/xl-4.17-shared-storage.patch), the same migration with it: `xl migrate --shared-storage --debug`,
#      whose ssh rune runs the patched `xl migrate-receive --shared-storage
#      --domain-name domu` (disks from /etc/xen/domu.cfg); same checks as 2;
#   4. xl save / xl restore in p2bmig mode (the file holds mappings).
# Steps 1-2 are skipped (loudly) when migrate=0 is on the command line: PV
# live migration needs a hypervisor with shadow paging (see run.sh).
#
# Retries (PVH only, at most MAX_RETRIES in the whole run, each printed as a
# `RETRY` line with its cause). A PVH guest under QEMU's emulated nested SVM
# sometimes triple-faults during or right after a migration (an emulation
# artefact). It shows as `(XEN) d<N>v<V> Triple fault - invoking HVM shutdown
# action 1` in `xl dmesg` (and on the serial console), then libxl destroys
# the domain (on_reboot=destroy); on the source during pre-copy, libxc fails
# with `Failed to get types for pfn batch (3 = No such process)`. A step is
# re-run, with a freshly started guest, only when such a line with a time
# stamp after the step's start names a guest domain, and
#   * the step is the stock migration (Xen's own helper on both sides, the
#     first step: no p2bmig result exists yet that a retry could discard), or
#   * the step is the p2bmig migration, `xl migrate` succeeded, its verify
#     pass ran (`Verify mode enabled`) and found no page that differs, and the
#     fault hit the target's domain after that: memory was proven exact.
# A triple fault anywhere else (the source guest during the p2bmig
# migration's pre-copy, the dedup save/restore) fails the test, named as such.
# Any other failure fails the test.
#
# Output: TIMING/STEP lines, `XEN-RESULT guest=... mapped_pages=N data_pages=N
# link_bytes=N baseline_link_bytes=N ...`, and XEN-TEST-OK or XEN-TEST-FAILED.
set -u
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
GUEST=pv
grep -qw domutype=pvh /proc/cmdline && GUEST=pvh
MIGRATE=1
grep -qw migrate=0 /proc/cmdline && MIGRATE=0
IMAGE=/root/domu/disk.img
FILES_MD5=$(cat /root/domu/files.md5)
. /root/domu/workload.env  # DOMU_MEM, DOMU_FILE_PAGES
HELPER=/usr/local/bin/p2bmig-save-helper
TRACKD=/usr/local/bin/p2bmig-trackd
XL_WRAPPER=/usr/local/bin/p2bmig-xl
PATCHED_XL_DIR=/usr/local/lib/p2bmig/xl-patched  # holds only the patched `xl`
TAP_MODULE=/root/p2bmig/xen-blkback.ko
LOGDIR=/var/log/xen/console
WORK=/var/lib/xen/save  # a tmpfs of its own (dom0-init.sh)
# At least half of the pages the workload read must travel as mappings
# (the rest of the page cache may have been evicted or rewritten).
MIN_MAPPED=$((DOMU_FILE_PAGES / 2))
MAX_RETRIES=2

now() { date +%s.%N; }
dt() { awk -v a="$1" -v b="$2" 'BEGIN{printf "%.1f", b-a}'; }
T0=$(now)
timing() { echo "TIMING $GUEST $1 $2 s"; }
fail() {
  echo "XEN-TEST-FAILED: $GUEST: $*"
  xl list
  xl dmesg | tail -n 30
  for f in /var/log/xen/*.log $LOGDIR/*.log /var/log/p2bmig-trackd.log; do
    [ -f "$f" ] && { echo "---- $f"; tail -n 40 "$f" | tr -d '\r'; }
  done
  exit 1
}

# ---- what the guest prints on its console
console() { cat $LOGDIR/guest-*.log 2>/dev/null | tr -d '\r'; }
crashed() { xl list 2>/dev/null | awk '$1 ~ /^domu/ {print $5}' | grep -q c; }
maxtick() { console | awk '$1=="tick"{if($2>m)m=$2} END{print m+0}'; }
maxcheck() { console | awk '$1=="CHECK"{if($2>m)m=$2} END{print m+0}'; }
maxreread() { console | awk '$1=="REREAD"{if($2>m)m=$2} END{print m+0}'; }
wait_for() {  # seconds command...: until the command succeeds, or the guest crashes
  local to=$1 s
  shift
  s=$(date +%s)
  until "$@"; do
    sleep 0.5
    if crashed; then
      echo "wait for '$*': the guest crashed after $(($(date +%s) - s)) s"
      return 1
    fi
    if [ $(($(date +%s) - s)) -ge "$to" ]; then
      echo "wait for '$*': gave up after $to s"
      return 1
    fi
  done
}
newer() { [ "$("$1")" -gt "$2" ]; }
cached() { console | grep -q '^DOMU-CACHED'; }
# Every checksum the guest ever printed: the files' must be the image's, the
# tmpfs' must be the one it printed first.
checksums_ok() {
  local mem bad
  mem=$(console | sed -n 's/^DOMU-CACHED .*mem=\([0-9a-f]*\).*/\1/p' | tail -1)
  bad=$(console | awk -v f="files=$FILES_MD5" -v m="mem=$mem" '$1=="CHECK" && ($3!=f || $4!=m)')
  [ -z "$bad" ] || { echo "checksum mismatch: $bad (expected files=$FILES_MD5 mem=$mem)"; return 1; }
}

# guest_ok LABEL TICK: after a step, the guest ticks, checks and re-reads
# again with numbers above TICK, the last tick printed when the step's
# command returned: a CHECK numbered n starts after tick n, so it ran where
# the guest runs now, not on the source during a live migration. And all its
# checksums hold.
guest_ok() {
  local label=$1 t=$2 s
  s=$(now)
  wait_for 180 newer maxtick "$t" || { GUEST_FAILURE="$label: no tick after the step"; return 1; }
  wait_for 240 newer maxcheck "$t" || { GUEST_FAILURE="$label: no CHECK after the step"; return 1; }
  checksums_ok || { GUEST_FAILURE="$label: guest memory changed"; return 1; }
  timing "$label-guest-checked" "$(dt "$s" "$(now)")"
  # The map of a guest that arrived by migration or restore is empty until
  # it reads again: wait for its next re-read before the next p2bmig step.
  wait_for 300 newer maxreread "$t" || { GUEST_FAILURE="$label: no REREAD after the step"; return 1; }
}

BOOTS=0
start_guest() {
  local s
  s=$(now)
  xl create "$CFG" || fail "xl create"
  BOOTS=$((BOOTS + 1))
  timing "xl-create" "$(dt "$s" "$(now)")"
  wait_for 600 cached || fail "the guest did not print DOMU-CACHED"
  timing "create-to-cached" "$(dt "$s" "$(now)")"
  console | grep -E '^DOMU-(READY|CACHED)' | tail -2
  wait_for 240 newer maxcheck 0 || fail "the guest printed no CHECK"
  checksums_ok || fail "checksums wrong right after boot"
}
destroy_guests() {
  local d
  for d in $(xl list | awk '$1 ~ /^domu/ {print $2}'); do xl destroy "$d"; done
  mkdir -p $LOGDIR/old
  mv $LOGDIR/guest-*.log $LOGDIR/old/ 2>/dev/null
  return 0
}

# ---- p2bmig in dom0: the I/O tap and the map daemon
setup_p2bmig() {
  if [ -f "$TAP_MODULE" ]; then
    # blkfront must copy through bounce pages for the tap to see guest frames
    insmod "$TAP_MODULE" feature_persistent=0 || fail "insmod $TAP_MODULE"
    echo "STEP $GUEST: patched xen-blkback loaded ($(modinfo -F vermagic "$TAP_MODULE"))"
  else
    HAVE_TAP_NOTE="the image carries no patched xen-blkback (the I/O tap): no page can travel as a mapping"
    echo "WARNING: $HAVE_TAP_NOTE"
  fi
  if [ -x "$TRACKD" ]; then
    "$TRACKD" --foreground > /var/log/p2bmig-trackd.log 2>&1 &
    TRACKD_PID=$!
    wait_for 60 test -S /run/p2bmig/trackd.sock ||
      fail "p2bmig-trackd did not open /run/p2bmig/trackd.sock: $(cat /var/log/p2bmig-trackd.log)"
    echo "STEP $GUEST: p2bmig-trackd running"
  fi
}

# ---- the steps
# helper_stat LOG save|restore FIELD: a number from the wrapper's statistics line
helper_stat() {
  grep -a "p2bmig-save-helper: $2 of domain" "$1" | tail -1 | sed -n "s/.* $3=\([0-9]*\).*/\1/p"
}
# received bytes, as counted by /root/count-stdin on the receiving side
link_bytes_of() { awk '/bytes/ && /copied/ {print $1}' "$1" | tail -1; }

# migrate_once LABEL stock|p2bmig: one xl migrate --debug to localhost over
# ssh; p2bmig through p2bmig-xl migrate --shared-storage (or, in an image
# without it, the variables it sets, on both sides of the ssh rune). The
# receiving side counts the bytes that reach it. Sets STEP_FAILURE (empty on
# success) and leaves the log in $WORK/LABEL.log.
migrate_once() {
  local label=$1 mode=$2 log=$WORK/$1.log count=$WORK/$1.bytes t s recv cmd
  # <host> goes into the rune verbatim: "exec ssh <host> xl migrate-receive ..."
  recv="localhost /root/count-stdin $count"
  # -v: the receiving xl (same verbosity, through the rune) then logs
  # "Verify mode enabled" when the VERIFY record arrives.
  cmd=(xl -v migrate --debug domu "$recv")
  if [ "$mode" = patched-xl ]; then
    # The rune runs `xl` by name: on both sides PATH finds the patched one
    # first, and P2BMIG_SAVE_HELPER tells it where the wrapper helper is.
    local env=(env "P2BMIG_SAVE_HELPER=$HELPER" "PATH=$PATCHED_XL_DIR:$PATH")
    cmd=("${env[@]}" xl -v migrate --shared-storage --debug domu "$recv ${env[*]}")
  elif [ "$mode" = p2bmig ] && [ -x "$XL_WRAPPER" ]; then
    cmd=("$XL_WRAPPER" -v migrate --shared-storage --target-config "$CFG" --debug domu "$recv")
  elif [ "$mode" = p2bmig ]; then
    cmd=(env $P2BMIG_ENV xl -v migrate --debug domu "$recv env $P2BMIG_ENV")
  fi
  STEP_FAILURE=""
  s=$(now)
  echo "STEP $GUEST $label: ${cmd[*]}"
  if ! "${cmd[@]}" > "$log" 2>&1; then
    STEP_FAILURE="$label: xl migrate failed"
  fi
  t=$(maxtick)
  timing "$label-xl-migrate" "$(dt "$s" "$(now)")"
  grep -a -E 'p2bmig-save-helper|p2bmig enabled|rror|Migration|verify' "$log" | grep -v '^migration target' | tail -n 12
  if [ -z "$STEP_FAILURE" ]; then
    grep -aq 'Verify mode enabled' "$log" || STEP_FAILURE="$label: the verify pass did not run"
  fi
  if grep -aq 'verify pfn' "$log"; then
    STEP_FAILURE="$label: the verify pass found $(grep -ac 'verify pfn' "$log") page(s) that differ"
    return
  fi
  if [ -z "$STEP_FAILURE" ] && ! guest_ok "$label" "$t"; then
    STEP_FAILURE=$GUEST_FAILURE
  fi
}

# xen_now: the time stamp (s since Xen booted) of the newest `xl dmesg` line
xen_now() { xl dmesg | sed -n 's/^(XEN) \[ *\([0-9.]*\)\].*/\1/p' | tail -1; }
# triple_faults SINCE: the `Triple fault` lines of guest domains (not dom0)
# stamped after SINCE, as "<domid> <stamp>" lines. Time stamps, not line
# counts: the console ring drops old lines.
triple_faults() {
  xl dmesg | sed -n 's/^(XEN) \[ *\([0-9.]*\)\] d\([0-9]*\)v[0-9]* Triple fault.*/\2 \1/p' |
    awk -v t="$1" '$1 != 0 && $2 > t'
}
RETRIES=0
TRIPLE_FAULTS=0
MIGRATIONS=0

# migrate LABEL MODE: migrate_once, retried with a fresh guest under the
# policy in the header (PVH triple faults only, at most MAX_RETRIES in all).
migrate() {
  local label=$1 mode=$2 since src faults why
  while true; do
    since=$(xen_now)
    src=$(xl domid domu)
    MIGRATIONS=$((MIGRATIONS + 1))
    migrate_once "$label" "$mode"
    faults=$(triple_faults "$since")
    [ -z "$faults" ] || TRIPLE_FAULTS=$((TRIPLE_FAULTS + $(echo "$faults" | wc -l)))
    [ -z "$STEP_FAILURE" ] && [ -z "$faults" ] && return 0
    if [ -n "$faults" ]; then
      echo "TRIPLE-FAULT $GUEST $label: domain(s) $(echo "$faults" | awk '{printf "d%s at %s s; ", $1, $2}')source was d$src"
      xl dmesg | grep 'Triple fault' | tail -n 3
    fi
    if [ -z "$STEP_FAILURE" ]; then
      # A fault the step's own checks did not notice (the guest had already
      # shown it runs): still not a pass.
      STEP_FAILURE="$label: a guest domain triple-faulted during the step"
    fi
    why=""
    if [ -n "$faults" ] && [ "$GUEST" = pvh ]; then
      if [ "$mode" = stock ]; then
        why="triple fault during the stock migration (Xen's own helper on both sides; no p2bmig result yet)"
      elif ! echo "$faults" | awk -v s="$src" '$1 == s {f=1} END{exit !f}' &&
           grep -aq 'Verify mode enabled' "$WORK/$label.log" && ! grep -aq 'verify pfn' "$WORK/$label.log" &&
           grep -aq 'Migration successful' "$WORK/$label.log"; then
        why="the target's guest triple-faulted after the migration, whose verify pass had found every page exact"
      fi
    fi
    if [ -n "$why" ] && [ "$RETRIES" -lt "$MAX_RETRIES" ]; then
      RETRIES=$((RETRIES + 1))
      echo "RETRY $GUEST $label ($RETRIES/$MAX_RETRIES in this run): $STEP_FAILURE; cause: $why" \
        "(QEMU's emulated nested SVM); destroying the guest, starting a fresh one, migrating again"
      destroy_guests
      start_guest
      continue
    fi
    if [ -n "$faults" ]; then
      if [ -n "$why" ]; then
        STEP_FAILURE="$STEP_FAILURE (triple fault; retries exhausted: $RETRIES of $MAX_RETRIES)"
      else
        STEP_FAILURE="$STEP_FAILURE (triple fault, not retried: no verify pass proved this p2bmig migration exact first)"
      fi
    fi
    fail "$STEP_FAILURE"
  done
}

save_restore_dedup() {
  local label=p2bmig-save log=$WORK/p2bmig-save.log file=$WORK/p2bmig.save t s since
  s=$(now)
  since=$(xen_now)
  local save=(env $P2BMIG_ENV xl save domu "$file") restore=(env $P2BMIG_ENV xl restore "$file")
  if [ -x "$XL_WRAPPER" ]; then
    save=("$XL_WRAPPER" save --dedup domu "$file")
    restore=("$XL_WRAPPER" restore --dedup --disks "$DISK" "$file")
  fi
  echo "STEP $GUEST $label: ${save[*]}; ${restore[*]}"
  "${save[@]}" > "$log" 2>&1 || { cat "$log"; fail "$label: xl save"; }
  timing "$label-xl-save" "$(dt "$s" "$(now)")"
  SAVE_BYTES=$(stat -c %s "$file")
  xl list domu > /dev/null 2>&1 && fail "$label: the guest still exists after xl save"
  s=$(now)
  "${restore[@]}" >> "$log" 2>&1 || { cat "$log"; fail "$label: xl restore"; }
  t=$(maxtick)
  timing "$label-xl-restore" "$(dt "$s" "$(now)")"
  grep -a 'p2bmig-save-helper' "$log"
  echo "SAVE-SIZE $GUEST $SAVE_BYTES"
  if ! guest_ok "$label" "$t"; then
    # No verify pass here (xl save/restore have none): a triple fault is named, never retried.
    [ -z "$(triple_faults "$since")" ] ||
      GUEST_FAILURE="$GUEST_FAILURE (the guest triple-faulted: $(triple_faults "$since" | tr '\n' ' '); not retried, no verify pass)"
    fail "$GUEST_FAILURE"
  fi
  [ -z "$(triple_faults "$since")" ] || fail "$label: the guest triple-faulted: $(triple_faults "$since" | tr '\n' ' ')"
  rm -f "$file"
}

# check_mapped LABEL LOG: the p2bmig statistics of a save and its restore
check_mapped() {
  local label=$1 log=$2 smapped sdata rmapped
  smapped=$(helper_stat "$log" save mapped)
  sdata=$(helper_stat "$log" save data)
  rmapped=$(helper_stat "$log" restore mapped)
  [ -n "$smapped" ] && [ -n "$sdata" ] || fail "$label: no statistics line from the source's p2bmig-save-helper"
  [ -n "$rmapped" ] || fail "$label: no statistics line from the target's p2bmig-save-helper"
  [ "$rmapped" = "$smapped" ] || fail "$label: the source sent $smapped mappings, the target resolved $rmapped"
  if [ "$smapped" -lt "$MIN_MAPPED" ]; then
    local msg="$label: only $smapped pages travelled as mappings, expected at least $MIN_MAPPED (half of the $DOMU_FILE_PAGES pages the guest read)"
    # Without the tap this is known in advance: run the other steps, fail at the end.
    [ -n "$HAVE_TAP_NOTE" ] || fail "$msg"
    LATE_FAILURES="${LATE_FAILURES}${msg}: $HAVE_TAP_NOTE; "
  fi
  echo "STEP $GUEST $label: mapped=$smapped data=$sdata (at least $MIN_MAPPED mapped required)"
}

# ---- run
xl info | grep -E 'xen_version|xen_extra'
[ -x "$HELPER" ] || fail "no $HELPER in the image"
missing=$(ldd "$HELPER" $( [ -x "$TRACKD" ] && echo "$TRACKD") | grep 'not found')
[ -z "$missing" ] || fail "p2bmig programs lack libraries: $missing"
cat > /root/count-stdin <<'EOF'
#!/bin/sh
# count-stdin FILE COMMAND...: runs COMMAND with this stdin passed through dd,
# which writes the number of bytes it copied to FILE when the input ends.
f=$1
shift
dd bs=64K 2>"$f" | "$@"
EOF
chmod +x /root/count-stdin
ssh -o BatchMode=yes localhost true || fail "ssh localhost does not work"

HAVE_TAP_NOTE="" LATE_FAILURES=""
setup_p2bmig
# The image goes to the guest through a loop device set up here ("phy"):
# the stock hotplug script's "file" path (losetup under a lock) can exceed
# libxl's 10 s hotplug timeout when QEMU runs on a busy machine.
DISK=$(losetup -f --show "$IMAGE") || fail "losetup $IMAGE"
CFG=/root/domu/run-$GUEST.cfg
sed "s|target=[^' ]*|target=$DISK|" "/root/domu/domu-$GUEST.cfg" > "$CFG"
P2BMIG_ENV="LIBXL_SAVE_HELPER=$HELPER P2BMIG_MODE=p2bmig P2BMIG_DISKS=$DISK"
echo "STEP $GUEST: disk $IMAGE on $DISK: $(grep '^disk' "$CFG")"
start_guest

MAPPED=0 DATA=0 LINK=0 BASE=0 XL_LINK=0 XL_MAPPED=0
if [ "$MIGRATE" = 1 ]; then
  migrate stock-migrate stock
  BASE=$(link_bytes_of "$WORK/stock-migrate.bytes")
  echo "STEP $GUEST stock-migrate: OK, link_bytes=$BASE (verify pass: no page differs)"
  migrate p2bmig-migrate p2bmig
  LINK=$(link_bytes_of "$WORK/p2bmig-migrate.bytes")
  check_mapped p2bmig-migrate "$WORK/p2bmig-migrate.log"
  MAPPED=$(helper_stat "$WORK/p2bmig-migrate.log" save mapped)
  DATA=$(helper_stat "$WORK/p2bmig-migrate.log" save data)
  echo "STEP $GUEST p2bmig-migrate: OK, link_bytes=$LINK (verify pass: no page differs)"
  # Not asserted: two live migrations of a guest that keeps re-reading (so
  # rewriting) its page cache send different numbers of dirty rounds, so
  # their byte counts are not comparable run to run; the mapped pages are.
  [ "$LINK" -lt "$BASE" ] ||
    echo "NOTE: p2bmig-migrate: $LINK bytes on the link, not fewer than the baseline's $BASE (more dirty rounds this time)"
  # The patched xl only sets the helper's environment and the rune's flags,
  # the same for every guest type: it runs with the PV guest, which migrates
  # without the emulated-SVM triple faults, so the PVH run keeps a single
  # p2bmig migration that such a fault could fail without a retry.
  if [ "$GUEST" = pvh ]; then
    echo "NOTE: the patched xl's migration runs in the PV run only"
  elif [ -x "$PATCHED_XL_DIR/xl" ]; then
    missing=$(ldd "$PATCHED_XL_DIR/xl" | grep 'not found')
    [ -z "$missing" ] || fail "the patched xl lacks libraries: $missing"
    cp "$CFG" /etc/xen/domu.cfg  # the target's own configuration of the guest
    migrate patched-xl-migrate patched-xl
    XL_LINK=$(link_bytes_of "$WORK/patched-xl-migrate.bytes")
    check_mapped patched-xl-migrate "$WORK/patched-xl-migrate.log"
    XL_MAPPED=$(helper_stat "$WORK/patched-xl-migrate.log" save mapped)
    # The patched xl prints this on each side as it enables p2bmig (the
    # target's stderr comes back through ssh): both sides ran it.
    [ "$(grep -ac '^p2bmig enabled, disks: ' "$WORK/patched-xl-migrate.log")" -ge 2 ] ||
      fail "patched-xl-migrate: the patched xl did not enable p2bmig on both sides"
    echo "STEP $GUEST patched-xl-migrate: OK, link_bytes=$XL_LINK mapped=$XL_MAPPED (verify pass: no page differs)"
  else
    echo "NOTE: the image carries no patched xl: xl migrate --shared-storage not run"
  fi
else
  echo "WARNING: $GUEST live migration SKIPPED (migrate=0): the hypervisor cannot live-migrate this guest, see run.sh's message"
fi

save_restore_dedup
check_mapped p2bmig-save "$WORK/p2bmig-save.log"
SAVE_MAPPED=$(helper_stat "$WORK/p2bmig-save.log" save mapped)

# The guest never rebooted (but for retries), and its disk holds every tick.
sleep 2
last=$(maxtick)
destroy_guests
mkdir -p /mnt/d
mount "$DISK" /mnt/d || fail "mount the domU disk in dom0"  # rw: replays the journal
echo "disk: bootcount=$(cat /mnt/d/bootcount) boots=$BOOTS ticks-on-disk=$(wc -l < /mnt/d/ticks) last-on-console=$last"
[ "$(cat /mnt/d/bootcount)" = "$BOOTS" ] || fail "the guest rebooted (bootcount != $BOOTS)"
[ "$(tail -n 1 /mnt/d/ticks | cut -d' ' -f2)" -ge $((last - 1)) ] || fail "ticks missing on the disk"
umount /mnt/d
[ -n "${TRACKD_PID:-}" ] && kill "$TRACKD_PID"
timing whole-test "$(dt "$T0" "$(now)")"
[ -z "$LATE_FAILURES" ] || fail "$LATE_FAILURES"
echo "XEN-RESULT guest=$GUEST migrate=$MIGRATE mapped_pages=$MAPPED data_pages=$DATA link_bytes=$LINK baseline_link_bytes=$BASE save_mapped_pages=$SAVE_MAPPED save_bytes=$SAVE_BYTES xl_mapped_pages=$XL_MAPPED xl_link_bytes=$XL_LINK retries=$RETRIES triple_faults=$TRIPLE_FAULTS migrations=$MIGRATIONS"
echo "XEN-TEST-OK"
