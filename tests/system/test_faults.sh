#!/usr/bin/env bash
# Faults at every phase of a migration between two p2bmig processes, each
# produced for real: SIGKILL and SIGTERM of either side, a cut link (network
# namespaces, `ip link set down`), blocks of the shared image corrupted behind
# the resolver's back, and a full file system under the target's memory.
# P2BMIG_TEST_STALL holds one process for a moment on entering a phase, so
# that the fault lands exactly there.
#
# Every case checks invariant I6: both commands exit non-zero and name the
# phase; the source reports its guest resumed, running and with its kernel
# memory intact (or never paused); the target leaves no guest memory behind
# (a SIGKILLed target cannot clean up: then only its ".partial" file is left,
# which is never taken for a guest and which the next receive removes).
# Usage: test_faults.sh PATH_TO_P2BMIG
source "$(dirname "$0")/lib.sh"

head -c $((64 << 20)) /dev/urandom >"$WORK/pristine.img"
(umask 077; openssl rand -hex 32 >"$WORK/link.psk")
sec=(--psk-file "$WORK/link.psk" --link-timeout 3)

port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# run_case NAME: resets the disk and names the files of one case.
run_case() {
  case_name=$1
  cp "$WORK/pristine.img" "$WORK/disk.img"
  addr=127.0.0.1:$(port)
  rmem="$WORK/$case_name.target.mem"
  rout="$WORK/$case_name.target.out"
  sout="$WORK/$case_name.source.out"
}
# start_receiver [ENV=VALUE...] -- [ARGS...]
start_receiver() {
  local envs=()
  while [ "$1" != -- ]; do envs+=("$1"); shift; done; shift
  env "${envs[@]}" "${ns_receiver[@]}" "$P2BMIG" receive --listen "$addr" --disk "$WORK/disk.img" \
    --memory 64M --memory-file "$rmem" --timeout 30 "${sec[@]}" "$@" >"$rout" 2>&1 &
  receiver=$!
}
start_sender() {
  local envs=()
  while [ "$1" != -- ]; do envs+=("$1"); shift; done; shift
  env "${envs[@]}" "${ns_sender[@]}" "$P2BMIG" send --to "$addr" --disk "$WORK/disk.img" --memory 64M \
    --memory-file "$WORK/$case_name.source.mem" --workload fileserver --rate 200mbit \
    --connect-wait 10 "${sec[@]}" "$@" >"$sout" 2>&1 &
  sender=$!
}
# wait_for FILE TEXT: until TEXT shows up in FILE (10 s at most).
wait_for() {
  for _ in $(seq 100); do grep -q -- "$2" "$1" 2>/dev/null && return 0; sleep 0.1; done
  cat "$1" >&2; fail "$case_name: '$2' never showed up"
}
finish() {
  set +e
  wait "$sender"; src=$?
  wait "$receiver"; dst=$?
  set -e
}
show() { echo "--- source:" >&2; cat "$sout" >&2; echo "--- target:" >&2; cat "$rout" >&2; }
# expect_source_failed PHASE_REGEX: exit 1, phase named, guest resumed intact.
expect_source_failed() {
  [ "$src" -eq 1 ] || { show; fail "$case_name: source exit $src, expected 1"; }
  grep -Eq "in phase '($1)" "$sout" || { show; fail "$case_name: source does not name phase '$1'"; }
  grep -Eq "guest resumed: it ran [1-9][0-9]* operations .* its kernel memory is intact|the guest was not paused and runs on|nothing to undo" "$sout" \
    || { show; fail "$case_name: source guest not shown running and intact"; }
}
# expect_target_failed PHASE_REGEX [killed]: phase named, no memory left.
expect_target_failed() {
  if [ "${2:-}" = killed ]; then
    [ "$dst" -eq 137 ] || { show; fail "$case_name: target exit $dst, expected SIGKILL"; }
  else
    [ "$dst" -eq 1 ] || { show; fail "$case_name: target exit $dst, expected 1"; }
    grep -Eq "in phase '($1)" "$rout" || { show; fail "$case_name: target does not name phase '$1'"; }
    [ ! -e "$rmem.partial" ] || fail "$case_name: target left $rmem.partial"
  fi
  [ ! -e "$rmem" ] || fail "$case_name: target left a guest memory file"
}
ok() { pass "$case_name"; }

t0=$(date +%s)
ns_sender=(); ns_receiver=()

# --- before the first round -------------------------------------------------
run_case sigterm-source-in-warm-up
start_receiver -- --json
start_sender P2BMIG_TEST_STALL=warm-up:5 --
wait_for "$sout" "stalling"
kill -TERM "$sender"
sleep 0.2; kill -TERM "$receiver"
finish
expect_source_failed "warm-up"
grep -q "SIGTERM" "$sout" || { show; fail "source does not name the signal"; }
expect_target_failed "waiting for the source"
ok

run_case sigkill-target-before-first-round
start_receiver -- --json
start_sender P2BMIG_TEST_STALL="before the first round:1.5" --
wait_for "$sout" "stalling"
kill -KILL "$receiver"
finish
expect_source_failed "before the first round|pre-copy round 1"
expect_target_failed "" killed
ok

run_case full-target-disk
mkdir -p "$WORK/full"
if mount -t tmpfs -o size=16m tmpfs "$WORK/full" 2>/dev/null; then
  rmem="$WORK/full/guest.mem"
  start_receiver -- --json
  start_sender --
  finish
  umount "$WORK/full"
  expect_source_failed "before the first round|pre-copy round 1|after the last page"
  expect_target_failed "before the first round"
  grep -q "No space left on device" "$rout" || { show; fail "target does not say the disk is full"; }
  ok
else
  echo "skip: $case_name (cannot mount a tmpfs here)"
fi

# --- mid-round ----------------------------------------------------------------
run_case sigkill-target-mid-round
start_receiver P2BMIG_TEST_STALL="receiving memory:1.5" -- --json
start_sender --
wait_for "$rout" "stalling"
kill -KILL "$receiver"
finish
expect_source_failed "pre-copy round [0-9]+"
expect_target_failed "" killed
ok

run_case sigkill-source-mid-round
start_receiver -- --json
start_sender P2BMIG_TEST_STALL="pre-copy round 1:5" --
wait_for "$sout" "stalling"
kill -KILL "$sender"
finish
[ "$src" -eq 137 ] || fail "source not killed"
expect_target_failed "receiving memory"
ok

run_case sigterm-target-mid-round
start_receiver P2BMIG_TEST_STALL="receiving memory:1.5" -- --json
start_sender --
wait_for "$rout" "stalling"
kill -TERM "$receiver"
finish
expect_source_failed "pre-copy round [0-9]+"
expect_target_failed "receiving memory"
grep -q "cancelled by SIGTERM" "$rout" || { show; fail "target does not name the signal"; }
ok

run_case sigterm-source-mid-round
start_receiver -- --json
start_sender P2BMIG_TEST_STALL="pre-copy round 1:1.5" --
wait_for "$sout" "stalling"
kill -TERM "$sender"
finish
expect_source_failed "pre-copy round 1"
grep -q "cancelled by SIGTERM" "$sout" || { show; fail "source does not name the signal"; }
expect_target_failed "receiving memory"
ok

# The link goes down between two network namespaces (veth pair).
ns=p2bfault$$
if ip netns add "${ns}a" 2>/dev/null && ip netns add "${ns}b"; then
  trap 'ip netns del ${ns}a 2>/dev/null; ip netns del ${ns}b 2>/dev/null; rm -rf "$WORK"' EXIT
  ip link add "${ns}x" netns "${ns}a" type veth peer name "${ns}y" netns "${ns}b"
  ip -n "${ns}a" addr add 10.77.0.1/24 dev "${ns}x"; ip -n "${ns}a" link set "${ns}x" up
  ip -n "${ns}b" addr add 10.77.0.2/24 dev "${ns}y"; ip -n "${ns}b" link set "${ns}y" up
  ip -n "${ns}a" link set lo up; ip -n "${ns}b" link set lo up
  run_case link-cut-mid-round
  addr=10.77.0.2:$(port)
  ns_sender=(ip netns exec "${ns}a"); ns_receiver=(ip netns exec "${ns}b")
  start_receiver -- --json
  start_sender P2BMIG_TEST_STALL="pre-copy round 1:1" --
  wait_for "$sout" "stalling"
  ip -n "${ns}a" link set "${ns}x" down
  finish
  ns_sender=(); ns_receiver=()
  expect_source_failed "pre-copy round [0-9]+"
  expect_target_failed "receiving memory|stop-and-copy"
  grep -q "timed out\|Connection timed out" "$sout" "$rout" || { show; fail "no timeout reported"; }
  ok
else
  echo "skip: link-cut-mid-round (no network namespaces here)"
fi

# --- stop-and-copy --------------------------------------------------------------
run_case sigkill-target-in-stop-and-copy
start_receiver -- --json
start_sender P2BMIG_TEST_STALL="stop-and-copy:1.5" --
wait_for "$sout" "stalling"
kill -KILL "$receiver"
finish
expect_source_failed "stop-and-copy.*|after the last page.*"
expect_target_failed "" killed
ok

run_case sigterm-source-in-stop-and-copy
start_receiver -- --json
start_sender P2BMIG_TEST_STALL="stop-and-copy:1.5" --
wait_for "$sout" "stalling"
kill -TERM "$sender"
finish
expect_source_failed "stop-and-copy.*"
expect_target_failed "receiving memory|stop-and-copy.*|draining.*"
ok

# --- while the fetch queue drains -------------------------------------------------
# The shared image changes behind the resolver's back once mappings are on
# their way: fetched blocks no longer match their hashes.
run_case corrupt-share-while-fetching
start_receiver -- --json
start_sender P2BMIG_TEST_STALL="pre-copy round 1:1.5" --
wait_for "$sout" "stalling"
head -c $((64 << 20)) /dev/urandom | dd of="$WORK/disk.img" conv=notrunc status=none
finish
expect_source_failed "after the last page.*|stop-and-copy.*"
grep -q "without committing" "$sout" || { show; fail "source does not say the target did not commit"; }
expect_target_failed "draining the fetch queue.*"
grep -q "verification failed" "$rout" || { show; fail "target does not report the hash mismatch"; }
ok

run_case sigterm-target-while-draining
start_receiver P2BMIG_TEST_STALL="draining the fetch queue:1.5" -- --json
start_sender --
wait_for "$rout" "stalling"
kill -TERM "$receiver"
finish
expect_source_failed "after the last page.*|stop-and-copy.*"
expect_target_failed "draining the fetch queue.*"
ok

# --- after the last byte -----------------------------------------------------------
run_case sigkill-target-after-last-byte
start_receiver P2BMIG_TEST_STALL="after the last byte:1.5" -- --json
start_sender --
wait_for "$rout" "stalling"
kill -KILL "$receiver"
finish
expect_source_failed "after the last page.*"
grep -q "without committing" "$sout" || { show; fail "source does not say the target did not commit"; }
expect_target_failed "" killed
# What the killed target left is only a ".partial" file, and the next
# receive on the same path removes it.
"$P2BMIG" receive --listen "127.0.0.1:0" --disk "$WORK/disk.img" --memory 64M \
  --memory-file "$rmem" --timeout 0.3 --insecure >/dev/null 2>&1 || true
[ ! -e "$rmem.partial" ] || fail "a new receive did not remove the killed one's partial memory"
ok

run_case sigterm-target-after-last-byte
start_receiver P2BMIG_TEST_STALL="after the last byte:1.5" -- --json
start_sender --
wait_for "$rout" "stalling"
kill -TERM "$receiver"
finish
expect_source_failed "after the last page.*"
expect_target_failed "after the last byte.*"
ok

# And without a fault the same set-up migrates (the cases above fail for
# their fault, not for the set-up).
run_case no-fault
start_receiver -- --json
start_sender --
finish
[ "$src" -eq 0 ] && [ "$dst" -eq 0 ] || { show; fail "migration without a fault failed"; }
cmp -s "$WORK/no-fault.source.mem" "$rmem" || fail "target memory differs"
ok
echo "faults: PASS in $(( $(date +%s) - t0 )) s"
