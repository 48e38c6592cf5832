#!/usr/bin/env bash
# The p2bmig command as a user meets it: help, bad arguments, unreachable
# peers, malformed and mismatched input, and a save/inspect/restore round trip
# through a stream file. Usage: test_cli.sh PATH_TO_P2BMIG
source "$(dirname "$0")/lib.sh"

python3 - "$WORK/disk.img" <<'PY'
import os, sys
with open(sys.argv[1], "wb") as f:
    f.write(os.urandom(64 << 20))
PY

expect_exit 0 "help" -- "$P2BMIG" --help
expect_output "demo"; expect_output "send"; expect_output "receive"; expect_output "inspect"
expect_exit 2 "no subcommand" -- "$P2BMIG"
expect_exit 2 "send without a disk" -- "$P2BMIG" send --to 127.0.0.1:7000
expect_exit 2 "send with a bad rate" -- "$P2BMIG" send --output "$WORK/s" --disk "$WORK/disk.img" --rate fast
expect_output "not a number"
expect_exit 2 "send with an unknown workload" -- "$P2BMIG" send --output "$WORK/s" --disk "$WORK/disk.img" --workload nope
expect_output "unknown workload"
expect_exit 2 "bad endpoint" -- "$P2BMIG" send --to localhost --disk "$WORK/disk.img" --memory 64M
expect_output "HOST:PORT"

expect_exit 2 "lazy mode to a file" -- "$P2BMIG" send --output "$WORK/s" --disk "$WORK/disk.img" --mode lazy
expect_output "needs a receiver"
expect_exit 2 "unknown mode" -- "$P2BMIG" send --output "$WORK/s" --disk "$WORK/disk.img" --mode fast
expect_output "unknown mode"
expect_exit 2 "lazy receive from a file" -- "$P2BMIG" receive --input "$WORK/s" --disk "$WORK/disk.img" --mode lazy
expect_output "needs --listen"

# A peer that is not there.
expect_exit 1 "unreachable receiver" -- "$P2BMIG" send --to 127.0.0.1:9 --connect-wait 0.5 \
  --disk "$WORK/disk.img" --memory 64M --insecure
expect_output "cannot connect"
expect_output "warning: --insecure"
expect_exit 1 "nobody connects" -- "$P2BMIG" receive --listen 127.0.0.1:0 --timeout 0.5 \
  --disk "$WORK/disk.img" --memory 64M --insecure

# A link that is neither secured nor explicitly insecure is refused up front.
expect_exit 2 "send over an unsecured link" -- "$P2BMIG" send --to 127.0.0.1:9 \
  --disk "$WORK/disk.img" --memory 64M
expect_output "must be secured"
expect_exit 2 "receive over an unsecured link" -- "$P2BMIG" receive --listen 127.0.0.1:0 \
  --disk "$WORK/disk.img" --memory 64M
expect_output "must be secured"
echo 0011 >"$WORK/short.psk"
expect_exit 2 "a pre-shared key that is too short" -- "$P2BMIG" receive --listen 127.0.0.1:0 \
  --disk "$WORK/disk.img" --memory 64M --psk-file "$WORK/short.psk"
expect_output "16 to 64 bytes"

# Malformed streams.
head -c 4096 /dev/urandom >"$WORK/garbage"
expect_exit 1 "inspect garbage" -- "$P2BMIG" inspect "$WORK/garbage"
expect_output "malformed stream"
expect_exit 1 "receive garbage" -- "$P2BMIG" receive --input "$WORK/garbage" --disk "$WORK/disk.img" \
  --memory 64M --memory-file "$WORK/garbage.mem"
[ ! -e "$WORK/garbage.mem" ] || fail "a failed receive left its guest memory behind"

# Save to a file (as xl save with dedup would), inspect, restore, compare.
expect_exit 0 "send to a file" -- "$P2BMIG" send --output "$WORK/guest.stream" --disk "$WORK/disk.img" \
  --memory 64M --memory-file "$WORK/source.mem" --workload database --rate off --json
expect_output '"pages_mapped"'
size=$(stat -c %s "$WORK/guest.stream")
grep -q "\"link_bytes\":$size," "$WORK/out" || { cat "$WORK/out" >&2; fail "link_bytes is not the stream's size ($size)"; }
pass "link_bytes counts every byte of the stream"
expect_exit 0 "inspect the stream" -- "$P2BMIG" inspect "$WORK/guest.stream"
expect_output "P2B_PAGE_MAPPINGS"
expect_exit 0 "inspect --json" -- "$P2BMIG" inspect --json "$WORK/guest.stream"
head -c 1000000 "$WORK/guest.stream" >"$WORK/truncated.stream"
expect_exit 1 "inspect a truncated stream" -- "$P2BMIG" inspect "$WORK/truncated.stream"
expect_exit 0 "receive from the file" -- "$P2BMIG" receive --input "$WORK/guest.stream" \
  --disk "$WORK/disk.img" --memory 64M --memory-file "$WORK/target.mem" --json
cmp -s "$WORK/source.mem" "$WORK/target.mem" || fail "restored memory differs from the saved guest's"
pass "restored memory equals the source's byte for byte"

# The target's disk is not the source's: refused, nothing left behind.
head -c $((32 << 20)) /dev/urandom >"$WORK/other.img"
expect_exit 2 "receive with another disk" -- "$P2BMIG" receive --input "$WORK/guest.stream" \
  --disk "$WORK/other.img" --memory 64M --memory-file "$WORK/wrong.mem"
expect_output "not the same image"
[ ! -e "$WORK/wrong.mem" ] || fail "a refused receive left its guest memory behind"

# Same size, other content: the fetched blocks do not match their hashes.
head -c $((64 << 20)) /dev/urandom >"$WORK/same-size.img"
expect_exit 1 "receive with a changed disk" -- "$P2BMIG" receive --input "$WORK/guest.stream" \
  --disk "$WORK/same-size.img" --memory 64M --memory-file "$WORK/wrong.mem"
expect_output "verification failed"
[ ! -e "$WORK/wrong.mem" ] || fail "a failed receive left its guest memory behind"
echo "cli: PASS"
