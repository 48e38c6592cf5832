#!/usr/bin/env bash
# p2bmig-xl, the wrapper around stock xl, without Xen: xl and ssh are replaced
# by fakes (xl cannot run without a hypervisor; ssh would need a second host).
# The fake xl records its argv and the environment libxl would see, answers
# the queries the wrapper makes (domid, domname, list -l), and runs the
# migration rune of "migrate -s ''" with sh -c as xl does. The fake ssh runs
# the remote command with a clean environment and another configuration
# directory, as a second host would. Checked: environment on both sides, the
# rune, disk lists from each side's own view, pass-through, exit codes and
# errors. Usage: test_xl_wrapper.sh PATH_TO_P2BMIG (p2bmig-xl is next to it).
source "$(dirname "$0")/lib.sh"

WRAPPER=$(cd "$(dirname "$P2BMIG")" && pwd)/p2bmig-xl
[ -x "$WRAPPER" ] || fail "no p2bmig-xl next to $P2BMIG"
mkdir -p "$WORK/bin" "$WORK/source-etc" "$WORK/target-etc"
LOG=$WORK/xl.log
export FAKE_XL_LOG=$LOG FAKE_XL_LIST=$WORK/list.json
# A stand-in for the save helper: the wrapper only checks that it can run it.
printf '#!/bin/sh\nexit 0\n' >"$WORK/helper"
chmod +x "$WORK/helper"
export P2BMIG_SAVE_HELPER=$WORK/helper

# --- The fake xl -------------------------------------------------------------
cat >"$WORK/bin/xl" <<'EOF'
#!/bin/sh
# fake xl: records argv and environment, one block per run.
{
  echo "--- run"
  for a in "$@"; do printf 'arg[%s]\n' "$a"; done
  for v in LIBXL_SAVE_HELPER P2BMIG_MODE P2BMIG_DISKS P2BMIG_TRACKING; do
    eval "printf '%s=%s\n' $v \"\${$v-<unset>}\""
  done
} >>"$FAKE_XL_LOG"
while [ $# -gt 0 ]; do case $1 in -*) shift ;; *) break ;; esac; done
cmd=$1; shift
case $cmd in
domid)
  case $1 in vm1 | 7) echo 7; exit 0 ;; *) echo "xl: domain \"$1\" not found" >&2; exit 1 ;; esac ;;
domname)
  [ "$1" = 7 ] && echo vm1 && exit 0
  exit 1 ;;
list)
  [ "$1" = -l ] && [ "$2" = 7 ] || exit 1
  cat "$FAKE_XL_LIST"; exit 0 ;;
migrate)
  ssh=ssh
  while [ $# -gt 0 ]; do
    case $1 in
    -s) ssh=$2; shift 2 ;;
    -C) shift 2 ;;
    --) shift; break ;;
    -*) shift ;;
    *) break ;;
    esac
  done
  rune=$2
  if [ -z "$ssh" ]; then
    sh -c "$rune" </dev/null >"$FAKE_XL_RUNE_STDOUT"
    echo "rune exit $?" >>"$FAKE_XL_LOG"
  fi ;;
esac
exit "${FAKE_XL_STATUS:-0}"
EOF
# --- The fake ssh: "another host" ------------------------------------------
cat >"$WORK/bin/ssh" <<'EOF'
#!/bin/sh
# fake ssh: logs its arguments and runs the remote command in a clean
# environment with the target's configuration directory.
echo "ssh $*" >>"$FAKE_XL_LOG"
while [ $# -gt 0 ]; do case $1 in -p) shift 2 ;; -*) shift ;; *) break ;; esac; done
shift  # the host
exec env -i PATH="$PATH" FAKE_XL_LOG="$FAKE_XL_LOG" FAKE_XL_LIST="$FAKE_XL_LIST" \
  FAKE_XL_RUNE_STDOUT="$FAKE_XL_RUNE_STDOUT" P2BMIG_SAVE_HELPER="$P2BMIG_SAVE_HELPER" \
  P2BMIG_XEN_CONFIG_DIR="$TARGET_ETC" sh -c "$*"
EOF
chmod +x "$WORK/bin/xl" "$WORK/bin/ssh"
ln -s "$WRAPPER" "$WORK/bin/p2bmig-xl"
export PATH=$WORK/bin:$PATH TARGET_ETC=$WORK/target-etc FAKE_XL_RUNE_STDOUT=$WORK/rune.stdout

# libxl's record of the running domain: configuration order is b, then a
# (xvdb listed first), so that order by device id would be wrong.
cat >"$FAKE_XL_LIST" <<'EOF'
[
    {
        "domid": 7,
        "config": {
            "c_info": { "name": "vm1" },
            "disks": [
                {
                    "pdev_path": "/srv/nfs/vm1/b.img",
                    "vdev": "xvdb",
                    "format": "raw"
                },
                {
                    "pdev_path": "/srv/nfs/vm1/a.img",
                    "vdev": "xvda",
                    "format": "raw",
                    "readwrite": 1
                }
            ]
        }
    }
]
EOF
# The target's own configuration of vm1: the same images at its mount point.
cat >"$WORK/target-etc/vm1.cfg" <<'EOF'
name = "vm1"
memory = 512
# disk = [ '/wrong/commented-out.img' ]
disk = [ 'file:/mnt/shared/vm1/b.img,xvdb,w',   # data
         "format=raw, vdev=xvda, access=rw, target=/mnt/shared/vm1/a.img" ]
vif = [ 'bridge=xenbr0' ]
EOF

# last_run FIELD: the values of FIELD in the last fake xl run ("arg" gives
# the argv, one per line).
last_run() {
  awk -v f="$1" '/^--- run/ { out = "" } index($0, f) == 1 { out = out $0 "\n" } END { printf "%s", out }' "$LOG"
}
expect_argv() {
  local want got
  want=$(for a in "$@"; do printf 'arg[%s]\n' "$a"; done)
  got=$(last_run 'arg[')
  [ "$got" = "$want" ] || { cat "$LOG" >&2; fail "xl argv: got
$got
expected
$want"; }
}
expect_env() {
  local got
  got=$(last_run "$1=")
  [ "$got" = "$1=$2" ] || { cat "$LOG" >&2; fail "xl saw $got, expected $1=$2"; }
}
runs() { grep -c '^--- run' "$LOG" || true; }

# --- Help and pass-through ---------------------------------------------------
expect_exit 0 "help" -- "$WRAPPER" --help
expect_output "migrate --shared-storage"; expect_output "save --dedup"; expect_output "restore --dedup"
expect_exit 2 "no command" -- "$WRAPPER"

: >"$LOG"
expect_exit 0 "other commands pass through" -- "$WRAPPER" -v vcpu-list "a b" "it's"
expect_argv -v vcpu-list "a b" "it's"
expect_env LIBXL_SAVE_HELPER "<unset>"
expect_env P2BMIG_MODE "<unset>"
expect_exit 0 "save without --dedup passes through" -- "$WRAPPER" save -c vm1 "$WORK/s file"
expect_argv save -c vm1 "$WORK/s file"
expect_env LIBXL_SAVE_HELPER "<unset>"
expect_exit 0 "migrate without --shared-storage passes through" -- "$WRAPPER" migrate -s "ssh -p 2" vm1 h
expect_argv migrate -s "ssh -p 2" vm1 h
expect_env P2BMIG_DISKS "<unset>"
FAKE_XL_STATUS=3 expect_exit 3 "xl's exit status is kept (pass-through)" -- "$WRAPPER" vcpu-list

# --- save --dedup ------------------------------------------------------------
: >"$LOG"
expect_exit 0 "save --dedup" -- "$WRAPPER" save --dedup -p vm1 "$WORK/vm1.save"
expect_argv save -p -- vm1 "$WORK/vm1.save"
expect_env LIBXL_SAVE_HELPER "$WORK/helper"
expect_env P2BMIG_MODE p2bmig
expect_env P2BMIG_DISKS "/srv/nfs/vm1/b.img,/srv/nfs/vm1/a.img"
P2BMIG_TRACKING=index expect_exit 0 "P2BMIG_TRACKING reaches xl" -- "$WRAPPER" save --dedup vm1 f
expect_env P2BMIG_TRACKING index
FAKE_XL_STATUS=5 expect_exit 5 "xl's exit status is kept (save --dedup)" -- "$WRAPPER" save --dedup vm1 f

: >"$LOG"
expect_exit 1 "unknown domain" -- "$WRAPPER" save --dedup nosuch "$WORK/x.save"
expect_output 'there is no domain "nosuch"'
[ -z "$(last_run 'arg[save')" ] || fail "xl save ran for an unknown domain"
expect_exit 2 "save --dedup without a file" -- "$WRAPPER" save --dedup vm1
P2BMIG_SAVE_HELPER=$WORK/none expect_exit 1 "missing save helper" -- "$WRAPPER" save --dedup vm1 f
expect_output "cannot run the p2bmig save helper $WORK/none"
[ -z "$(last_run 'arg[save')" ] || fail "xl save ran without the helper"

cp "$FAKE_XL_LIST" "$WORK/list.good"
sed -i 's|"/srv/nfs/vm1/b.img"|""|' "$FAKE_XL_LIST"
expect_exit 1 "a disk without an image (empty CD-ROM)" -- "$WRAPPER" save --dedup vm1 f
expect_output "has no image"
sed -i 's|"pdev_path": ""|"pdev_path": "/srv/a,b.img"|' "$FAKE_XL_LIST"
expect_exit 1 "an image path with a comma" -- "$WRAPPER" save --dedup vm1 f
expect_output "holds a comma"
cp "$WORK/list.good" "$FAKE_XL_LIST"

# --- restore --dedup ---------------------------------------------------------
: >"$LOG"
expect_exit 0 "restore --dedup with a config file" -- "$WRAPPER" restore --dedup -p "$TARGET_ETC/vm1.cfg" "$WORK/vm1.save"
expect_argv restore -p -- "$TARGET_ETC/vm1.cfg" "$WORK/vm1.save"
expect_env P2BMIG_DISKS "/mnt/shared/vm1/b.img,/mnt/shared/vm1/a.img"
expect_env P2BMIG_MODE p2bmig
expect_exit 0 "restore --dedup --disks" -- "$WRAPPER" restore --dedup --disks /x.img,/y.img "$WORK/vm1.save"
expect_env P2BMIG_DISKS "/x.img,/y.img"
: >"$LOG"
expect_exit 2 "restore --dedup without a disk list" -- "$WRAPPER" restore --dedup "$WORK/vm1.save"
expect_output "never taken from the saved file"
[ "$(runs)" = 0 ] || fail "xl ran without a disk list"
printf 'name = "x"\nmemory = 1\n' >"$WORK/nodisk.cfg"
expect_exit 1 "restore --dedup with a config without disks" -- "$WRAPPER" restore --dedup "$WORK/nodisk.cfg" s
expect_output "no \"disk = \[ ... \]\" list"

# --- migrate --shared-storage through ssh --------------------------------------
: >"$LOG"
expect_exit 0 "migrate --shared-storage" -- "$WRAPPER" migrate --shared-storage vm1 host2
want_rune="exec ssh host2 p2bmig-xl migrate-receive --shared-storage --domain-name vm1"
grep -qxF "arg[$want_rune]" "$LOG" || { cat "$LOG" >&2; fail "rune is not '$want_rune'"; }
pass "the rune runs p2bmig-xl migrate-receive --shared-storage on the target"
# First xl run with migrate: the source side.
src=$(awk '/^--- run/ { n++ } n >= 1 && /^arg\[migrate\]/ { found = n } END { print found }' "$LOG")
block() { awk -v n="$1" '/^--- run/ { k++ } k == n' "$LOG"; }
block "$src" | grep -qxF "P2BMIG_DISKS=/srv/nfs/vm1/b.img,/srv/nfs/vm1/a.img" ||
  { cat "$LOG" >&2; fail "source xl did not get the source's disks"; }
block "$src" | grep -qxF "LIBXL_SAVE_HELPER=$WORK/helper" || fail "source xl lacks LIBXL_SAVE_HELPER"
block "$src" | grep -qxF "arg[-s]" || fail "source xl not run with -s"
grep -qxF "ssh host2 p2bmig-xl migrate-receive --shared-storage --domain-name vm1" "$LOG" ||
  fail "ssh did not run the receiver"
expect_argv migrate-receive
expect_env P2BMIG_DISKS "/mnt/shared/vm1/b.img,/mnt/shared/vm1/a.img"
expect_env P2BMIG_MODE p2bmig
expect_env LIBXL_SAVE_HELPER "$WORK/helper"
pass "the target's disks come from its own configuration, not the source's"
[ ! -s "$WORK/rune.stdout" ] || fail "the receiver wrote to stdout (the migration channel)"
grep -qxF "rune exit 0" "$LOG" || fail "rune failed"

: >"$LOG"
expect_exit 0 "migrate with options" -- "$WRAPPER" -v -v migrate -e -p --debug -C "$WORK/my cfg" \
  -s "ssh -p 2222" --shared-storage vm1 host2
grep -qxF "arg[exec ssh -p 2222 host2 p2bmig-xl -vv migrate-receive --shared-storage --domain-name vm1 -e -d -p]" "$LOG" ||
  { cat "$LOG" >&2; fail "options did not reach the rune"; }
grep -qxF "arg[$WORK/my cfg]" "$LOG" || fail "-C lost"
expect_argv -vv migrate-receive -e -d -p
pass "-v, -e, -d, -p reach the receiver as xl passes them"

: >"$LOG"
expect_exit 0 "migrate --target-config" -- "$WRAPPER" migrate --shared-storage --target-config "$TARGET_ETC/vm1.cfg" vm1 host2
grep -qF -- "migrate-receive --shared-storage --config $TARGET_ETC/vm1.cfg]" "$LOG" || { cat "$LOG" >&2; fail "--config not in the rune"; }
expect_env P2BMIG_DISKS "/mnt/shared/vm1/b.img,/mnt/shared/vm1/a.img"

: >"$LOG"
rm "$TARGET_ETC/vm1.cfg.missing" 2>/dev/null || true
mv "$TARGET_ETC/vm1.cfg" "$TARGET_ETC/vm1.cfg.away"
expect_exit 0 "migrate to a target without the domain's configuration (xl reports the failure)" -- \
  "$WRAPPER" migrate --shared-storage vm1 host2
grep -qxF "rune exit 1" "$LOG" || { cat "$LOG" >&2; fail "receiver did not fail"; }
[ -z "$(last_run 'arg[migrate-receive')" ] || fail "xl migrate-receive ran without a disk list"
expect_output "cannot read the domain configuration $TARGET_ETC/vm1.cfg"
mv "$TARGET_ETC/vm1.cfg.away" "$TARGET_ETC/vm1.cfg"
pass "a target without the configuration refuses before xl migrate-receive runs"

expect_exit 1 "migrate of an unknown domain" -- "$WRAPPER" migrate --shared-storage nosuch host2
expect_output 'there is no domain "nosuch"'
expect_exit 2 "migrate without a host" -- "$WRAPPER" migrate --shared-storage vm1

# --- migrate -s "" (the receiver is a local command) ----------------------------
: >"$LOG"
P2BMIG_XEN_CONFIG_DIR=$TARGET_ETC expect_exit 0 'migrate -s ""' -- \
  "$WRAPPER" migrate --shared-storage -s "" vm1 "xl migrate-receive -e"
grep -qE "^arg\[exec '[^']*p2bmig-xl' migrate-receive --shared-storage --domain-name vm1 -e\]$" "$LOG" ||
  { cat "$LOG" >&2; fail "local rune"; }
expect_argv migrate-receive -e
expect_env P2BMIG_DISKS "/mnt/shared/vm1/b.img,/mnt/shared/vm1/a.img"
pass "a local receiver runs as p2bmig-xl with --shared-storage, disks from its configuration"
: >"$LOG"
expect_exit 0 'migrate -s "" through a command of ones own' -- \
  "$WRAPPER" migrate --shared-storage -s "" vm1 "ssh host3 xl migrate-receive"
grep -qxF "arg[exec ssh host3 p2bmig-xl migrate-receive --shared-storage --domain-name vm1]" "$LOG" ||
  { cat "$LOG" >&2; fail "rune through ssh"; }
expect_env P2BMIG_DISKS "/mnt/shared/vm1/b.img,/mnt/shared/vm1/a.img"
expect_exit 2 'migrate -s "" with a command that is not a receiver' -- \
  "$WRAPPER" migrate --shared-storage -s "" vm1 "cat > /tmp/x"
expect_output "must be a command running"

# --- migrate-receive directly ---------------------------------------------------
: >"$LOG"
"$WRAPPER" migrate-receive --shared-storage --disks /d1,/d2 -e >"$WORK/recv.stdout" 2>"$WORK/recv.stderr" ||
  fail "migrate-receive --disks"
[ ! -s "$WORK/recv.stdout" ] || fail "migrate-receive wrote to stdout"
expect_argv migrate-receive -e
expect_env P2BMIG_DISKS "/d1,/d2"
expect_exit 1 "migrate-receive with a bad domain name" -- "$WRAPPER" migrate-receive --shared-storage --domain-name ../etc/x
expect_output "bad domain name"
expect_exit 2 "migrate-receive --shared-storage without a disk source" -- "$WRAPPER" migrate-receive --shared-storage
expect_exit 0 "migrate-receive without --shared-storage passes through" -- "$WRAPPER" migrate-receive -e -d
expect_argv migrate-receive -e -d
expect_env LIBXL_SAVE_HELPER "<unset>"
echo "xl wrapper: PASS"
