#!/usr/bin/env bash
# Several migrations at once: 4 source/target pairs run concurrently, each
# over its own TLS (pre-shared key) connection, every target reading its
# guest's disk through the one NFS server (nfs-ganesha on loopback, libnfs).
# Each pair's target memory must equal its source's at the pause.
# Usage: test_load.sh PATH_TO_P2BMIG
source "$(dirname "$0")/lib.sh"

export_dir=/tmp/p2bmig-nfs-export  # shared with the other NFS tests
mkdir -p "$export_dir"
url=$(bash "$SRC_DIR/scripts/nfs-server.sh" start "$export_dir")
(umask 077; openssl rand -hex 32 >"$WORK/link.psk")
pairs=4
tag=load-$$-$(date +%s%N)  # never reuse a file name on the share
t0=$(date +%s)
for i in $(seq $pairs); do
  head -c $((64 << 20)) /dev/urandom >"$export_dir/$tag-$i.img"
done
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
senders=(); receivers=()
for i in $(seq $pairs); do
  addr=127.0.0.1:$(port)
  "$P2BMIG" receive --listen "$addr" --disk "$url/$tag-$i.img?version=3&nfsport=2049&mountport=20048" \
    --memory 64M --memory-file "$WORK/t$i.mem" --psk-file "$WORK/link.psk" --timeout 60 --json \
    >"$WORK/t$i.out" 2>&1 &
  receivers+=($!)
  "$P2BMIG" send --to "$addr" --disk "$export_dir/$tag-$i.img" --memory 64M \
    --memory-file "$WORK/s$i.mem" --workload database --seed "$i" --rate 1gbit \
    --psk-file "$WORK/link.psk" --json >"$WORK/s$i.out" 2>&1 &
  senders+=($!)
done
failed=0
for i in $(seq $pairs); do
  set +e
  wait "${senders[$((i - 1))]}"; s=$?
  wait "${receivers[$((i - 1))]}"; r=$?
  set -e
  if [ $s -ne 0 ] || [ $r -ne 0 ]; then
    cat "$WORK/s$i.out" "$WORK/t$i.out" >&2
    failed=1
    continue
  fi
  cmp -s "$WORK/s$i.mem" "$WORK/t$i.mem" || { echo "pair $i: memory differs" >&2; failed=1; }
  grep -q '"nas_bytes":[1-9]' "$WORK/t$i.out" || { echo "pair $i: nothing read over NFS" >&2; failed=1; }
done
rm -f "$export_dir/$tag"-*.img
[ $failed -eq 0 ] || fail "concurrent migrations"
pass "$pairs concurrent migrations through one NFS server: memory identical"
echo "load: PASS in $(( $(date +%s) - t0 )) s"
