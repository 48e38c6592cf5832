#!/usr/bin/env bash
# A loopback NFS server (nfs-ganesha, VFS FSAL, NFSv3 + v4) for tests and
# benchmarks. Ports are fixed (2049, 20048), so one such server runs per
# machine; this script finds and reuses it.
#
#   nfs-server.sh start EXPORT_DIR [STATE_DIR]
#       Serves EXPORT_DIR as /export; prints the base URL
#       (nfs://127.0.0.1/export). Does nothing if our server already serves
#       EXPORT_DIR; restarts it if it serves another directory. Starts
#       rpcbind (needed by ganesha for NFSv3) if none answers.
#   nfs-server.sh stop [STATE_DIR]     stops what start started (by pid)
#   nfs-server.sh status [STATE_DIR]   prints the URL and exits 0 if running
#
# Clients: append "/FILE?version=3&nfsport=2049&mountport=20048" (or
# version=4) to the URL; with explicit ports libnfs never asks the portmapper.
# STATE_DIR (default /tmp/p2bmig-nfs) holds the config, log and pids.
#
# In a network namespace (the NAS host of bench/netns.sh):
#   NFS_NETNS=NAME [NFS_BIND=ADDR] nfs-server.sh start EXPORT_DIR STATE_DIR
# runs the server inside namespace NAME, bound to ADDR (default: all of the
# namespace's addresses), with an rpcbind of its own. Both run in a private
# mount namespace with their own /run and /var/lib/nfs/ganesha, so they never
# touch the machine's rpcbind registrations or the loopback server's state,
# and ganesha runs under the name "nas-ganesha" so that the loopback server's
# "is another ganesha running?" check does not mistake it for a rival.
# STATE_DIR is then required (it must not be the loopback server's). stop and
# status need only the STATE_DIR.
set -euo pipefail

SRC_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
TEMPLATE="$SRC_DIR/tests/system/nfs/ganesha.conf.in"
PSEUDO=/export
DEFAULT_STATE=/tmp/p2bmig-nfs

die() { echo "nfs-server: $*" >&2; exit 1; }

alive() { [ -f "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }

# Is our ganesha running (and still ganesha, not a reused pid)?
ganesha_alive() {
  local state=$1
  alive "$state/ganesha.pid" || return 1
  grep -q ganesha "/proc/$(cat "$state/ganesha.pid")/comm" 2>/dev/null
}

kill_pidfile() {
  local f=$1 p i
  [ -f "$f" ] || return 0
  p=$(cat "$f")
  if kill -0 "$p" 2>/dev/null; then
    kill -TERM "$p" 2>/dev/null || true
    # ganesha needs ~4 s for a clean exit.
    for i in $(seq 100); do kill -0 "$p" 2>/dev/null || break; sleep 0.05; done
    kill -0 "$p" 2>/dev/null && kill -KILL "$p" 2>/dev/null || true
    for i in $(seq 40); do kill -0 "$p" 2>/dev/null || break; sleep 0.05; done
  fi
  rm -f "$f"
}

# The URL clients use for the server of STATE_DIR.
url_of() { cat "$1/url" 2>/dev/null || echo "nfs://127.0.0.1$PSEUDO"; }

cmd_stop() {
  local state=${1:-$DEFAULT_STATE}
  kill_pidfile "$state/ganesha.pid"
  kill_pidfile "$state/rpcbind.pid"
  rm -f "$state/export" "$state/url" "$state/netns"
}

cmd_status() {
  local state=${1:-$DEFAULT_STATE}
  if ganesha_alive "$state"; then
    url_of "$state"
    echo "serving $(cat "$state/export" 2>/dev/null) (pid $(cat "$state/ganesha.pid"))" >&2
    return 0
  fi
  echo "not running" >&2
  return 1
}

cmd_start() {
  [ $# -ge 1 ] || die "usage: nfs-server.sh start EXPORT_DIR [STATE_DIR]"
  local export state gpid i netns=${NFS_NETNS:-} bind url
  [ -d "$1" ] || die "export directory $1 does not exist"
  export=$(readlink -f "$1")
  state=${2:-$DEFAULT_STATE}
  command -v ganesha.nfsd >/dev/null || die "ganesha.nfsd not installed (scripts/setup.sh)"
  if [ -n "$netns" ]; then
    [ $# -ge 2 ] || die "NFS_NETNS needs a STATE_DIR of its own"
    ip netns exec "$netns" true 2>/dev/null || die "no network namespace $netns"
    bind=${NFS_BIND:-0.0.0.0}
  else
    bind=${NFS_BIND:-127.0.0.1}
  fi
  if [ "$bind" = 0.0.0.0 ] && [ -z "$netns" ]; then
    url="nfs://127.0.0.1$PSEUDO"
  elif [ "$bind" = 0.0.0.0 ]; then
    url="nfs://$(ip netns exec "$netns" ip -4 -o addr show scope global |
      awk '{sub("/.*", "", $4); print $4; exit}')$PSEUDO"
  else
    url="nfs://$bind$PSEUDO"
  fi
  mkdir -p "$state"
  state=$(readlink -f "$state")

  # One start at a time (tests may run in parallel).
  exec 9>"$state/lock"
  flock -w 60 9 || die "another nfs-server.sh start holds $state/lock"

  if ganesha_alive "$state"; then
    if [ "$(cat "$state/export" 2>/dev/null)" = "$export" ] &&
      [ "$(cat "$state/netns" 2>/dev/null)" = "$netns" ] && [ "$(url_of "$state")" = "$url" ]; then
      echo "$url"
      return 0
    fi
    echo "nfs-server: restarting to serve $export instead of $(cat "$state/export" 2>/dev/null)" >&2
    kill_pidfile "$state/ganesha.pid"
    kill_pidfile "$state/rpcbind.pid"
  fi
  if [ -z "$netns" ] && pgrep -x ganesha.nfsd >/dev/null; then
    die "another nfs-ganesha (pid $(pgrep -x ganesha.nfsd | tr '\n' ' ')) owns the NFS ports; stop it first"
  fi
  sed -e "s|@EXPORT_PATH@|$export|" -e "s|@PSEUDO_PATH@|$PSEUDO|" -e "s|@BIND_ADDR@|$bind|" \
    "$TEMPLATE" >"$state/ganesha.conf"
  rm -f "$state/ganesha.log"
  if [ -n "$netns" ]; then
    start_in_netns "$netns" "$state"
  else
    start_on_loopback "$state"
  fi
  echo "$export" >"$state/export"
  echo "$netns" >"$state/netns"
  echo "$url" >"$state/url"
  echo "$url"
}

# Waits until the ganesha of pid $1 is serving (log in $2).
wait_ready() {
  local gpid=$1 state=$2 i
  for i in $(seq 500); do
    grep -q 'NFS SERVER INITIALIZED' "$state/ganesha.log" 2>/dev/null && break
    if ! kill -0 "$gpid" 2>/dev/null; then
      rm -f "$state/ganesha.pid"
      grep -E 'MAJ|FATAL|CRIT' "$state/ganesha.log" 2>/dev/null | grep -v DBUS >&2 || true
      die "ganesha exited during startup (log: $state/ganesha.log)"
    fi
    sleep 0.02
  done
  grep -q 'NFS SERVER INITIALIZED' "$state/ganesha.log" || die "ganesha not ready after 10 s"
}

start_on_loopback() {
  local state=$1 gpid i

  mkdir -p /run/rpcbind /var/run/ganesha /var/lib/nfs/ganesha
  # ganesha refuses to start NFSv3 without a portmapper. It registers through
  # /run/rpcbind.sock, shared by the whole machine: reuse any that answers.
  if ! rpcinfo -p 127.0.0.1 >/dev/null 2>&1; then
    setsid rpcbind -f -w </dev/null >/dev/null 2>&1 9>&- &
    echo $! >"$state/rpcbind.pid"
    for i in $(seq 100); do rpcinfo -p 127.0.0.1 >/dev/null 2>&1 && break; sleep 0.02; done
  fi

  # Not a child of the caller's session: it must outlive the test that
  # started it, and ignore the caller's terminal signals.
  setsid ganesha.nfsd -F -f "$state/ganesha.conf" -L "$state/ganesha.log" \
    -p "$state/ganesha.lockpid" </dev/null >/dev/null 2>&1 9>&- &
  gpid=$!
  echo "$gpid" >"$state/ganesha.pid"
  wait_ready "$gpid" "$state"
}

# ganesha and its own rpcbind inside network namespace $1, in a private mount
# namespace: /run (rpcbind's socket, which is not per network namespace) and
# ganesha's recovery directory are fresh tmpfs that only these two see.
start_in_netns() {
  local netns=$1 state=$2 gpid
  ln -sfn "$(command -v ganesha.nfsd)" "$state/nas-ganesha"
  mkdir -p /var/lib/nfs/ganesha
  rm -f "$state/rpcbind.pid"
  # setsid, ip netns exec, unshare and the final exec keep one pid: ganesha's.
  setsid ip netns exec "$netns" unshare --mount --propagation private bash -c '
    set -e
    state=$1
    mount -t tmpfs -o mode=0755 p2bmig-nas-run /run
    mkdir -p /run/rpcbind /run/ganesha
    mount -t tmpfs -o mode=0755 p2bmig-nas-ganesha /var/lib/nfs/ganesha
    rpcbind -f -w &
    echo $! >"$state/rpcbind.pid"
    for i in $(seq 100); do rpcinfo -p 127.0.0.1 >/dev/null 2>&1 && break; sleep 0.02; done
    exec "$state/nas-ganesha" -F -f "$state/ganesha.conf" -L "$state/ganesha.log" \
      -p "$state/ganesha.lockpid"' nas-ganesha "$state" </dev/null >/dev/null 2>&1 9>&- &
  gpid=$!
  echo "$gpid" >"$state/ganesha.pid"
  wait_ready "$gpid" "$state"
}

case "${1:-}" in
  start) shift; cmd_start "$@" ;;
  stop) shift; cmd_stop "$@" ;;
  status) shift; cmd_status "$@" ;;
  *) die "usage: nfs-server.sh start EXPORT_DIR [STATE_DIR] | stop [STATE_DIR] | status [STATE_DIR]" ;;
esac
