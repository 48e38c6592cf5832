#!/usr/bin/env bash
# Hosts and links for the migration benchmark: a source host, a target host
# and a NAS host as network namespaces, joined by veth pairs shaped with tc.
#
#   p2b-src  eth0 198.18.1.1 ─┐
#   p2b-tgt  eth0 198.18.1.2 ─┼─ p2b-sw (a bridge: the hosts' LAN)
#   p2b-nas  eth0 198.18.1.3 ─┘
#   p2b-tgt  sto  198.18.2.2 ─── 198.18.2.1 sto  p2b-nas   (storage link)
#
# The NAS is reachable two ways, and the client picks one by address:
#   own link:  nfs://198.18.2.1/...  the target's NAS traffic has its own link
#   shared:    nfs://198.18.1.3/...  it shares the target's LAN port with the
#              migration (both arrive through the switch port to p2b-tgt)
# Every link is shaped in both directions (tbf on the egress of each end; for
# the LAN, on each host's eth0 and on the switch's port towards it), so a
# flow crosses the rate limit once per hop and flows into one host share it.
# The namespaces have no default route and nothing links them to the root
# namespace: no packet leaves the machine. 198.18.0.0/15 is the RFC 2544
# benchmarking range.
#
# Usage: netns.sh up [LAN_RATE [STORAGE_RATE]]   create (again) and shape
#        netns.sh shape LAN_RATE [STORAGE_RATE]   reshape (e.g. 1gbit, 10gbit, off)
#        netns.sh down                            delete the namespaces
#        netns.sh status                          list them and their qdiscs
# STORAGE_RATE defaults to LAN_RATE. QUEUE_MS (environment, default 50) is
# the most a link queues, in milliseconds of its rate (tbf's latency). Run
# as root.
set -euo pipefail

SRC=p2b-src TGT=p2b-tgt NAS=p2b-nas SW=p2b-sw
HOSTS="$SRC $TGT $NAS"
die() { echo "netns.sh: $*" >&2; exit 1; }

# tbf needs a bucket of at least one timer tick's worth of bytes plus one
# 64 KiB GSO packet (measured: smaller bursts cap the rate below its setting).
burst_for() {
  local num unit mult
  [[ $1 =~ ^([0-9]+)([kmg]?)bit$ ]] || die "bad rate $1 (e.g. 1gbit, 500mbit)"
  num=${BASH_REMATCH[1]} unit=${BASH_REMATCH[2]}
  case $unit in k) mult=1000 ;; m) mult=1000000 ;; g) mult=1000000000 ;; *) mult=1 ;; esac
  # The kernel tick here is 250 Hz (CONFIG_HZ_250).
  echo $((num * mult / 8 / 250 + 65536))
}

shape_dev() {  # NS DEV RATE
  local ns=$1 dev=$2 rate=$3
  tc -n "$ns" qdisc del dev "$dev" root 2>/dev/null || true
  [ "$rate" = off ] && return 0
  tc -n "$ns" qdisc add dev "$dev" root tbf rate "$rate" burst "$(burst_for "$rate")" \
    latency "${QUEUE_MS:-50}ms"
}

cmd_shape() {
  local lan=${1:?LAN_RATE} sto=${2:-$1} h
  for h in $HOSTS; do
    shape_dev "$h" eth0 "$lan"
    shape_dev "$SW" "p-${h#p2b-}" "$lan"
  done
  shape_dev "$TGT" sto "$sto"
  shape_dev "$NAS" sto "$sto"
}

cmd_down() {
  local n
  for n in $HOSTS $SW; do ip netns del "$n" 2>/dev/null || true; done
}

cmd_up() {
  local lan=${1:-1gbit} sto=${2:-${1:-1gbit}} n h i=1
  [ "$(id -u)" -eq 0 ] || die "needs root (network namespaces)"
  cmd_down
  for n in $HOSTS $SW; do
    ip netns add "$n"
    ip -n "$n" link set lo up
  done
  ip -n "$SW" link add br0 type bridge
  ip -n "$SW" link set br0 up
  for h in $HOSTS; do
    ip link add eth0 netns "$h" type veth peer name "p-${h#p2b-}" netns "$SW"
    ip -n "$SW" link set "p-${h#p2b-}" master br0 up
    ip -n "$h" addr add "198.18.1.$i/24" dev eth0
    ip -n "$h" link set eth0 up
    i=$((i + 1))
  done
  ip link add sto netns "$TGT" type veth peer name sto netns "$NAS"
  ip -n "$TGT" addr add 198.18.2.2/24 dev sto
  ip -n "$NAS" addr add 198.18.2.1/24 dev sto
  ip -n "$TGT" link set sto up
  ip -n "$NAS" link set sto up
  cmd_shape "$lan" "$sto"
  # The bridge needs a moment to forward (no STP, but ports start "learning").
  for i in $(seq 100); do
    ip netns exec "$SRC" ping -c1 -W1 198.18.1.2 >/dev/null 2>&1 &&
      ip netns exec "$TGT" ping -c1 -W1 198.18.1.3 >/dev/null 2>&1 &&
      ip netns exec "$TGT" ping -c1 -W1 198.18.2.1 >/dev/null 2>&1 && return 0
    sleep 0.05
  done
  die "hosts cannot reach each other"
}

cmd_status() {
  local n
  for n in $HOSTS $SW; do
    ip netns list | grep -qw "$n" || { echo "$n: absent"; continue; }
    echo "$n:"
    tc -n "$n" qdisc show | grep tbf | sed 's/^/  /' || true
  done
}

case "${1:-}" in
  up) shift; cmd_up "$@" ;;
  shape) shift; cmd_shape "$@" ;;
  down) cmd_down ;;
  status) cmd_status ;;
  *) die "usage: netns.sh up [LAN_RATE [STORAGE_RATE]] | shape LAN_RATE [STORAGE_RATE] | down | status" ;;
esac
