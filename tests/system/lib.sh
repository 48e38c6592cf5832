# Shared helpers for the system test scripts: a scratch directory removed on
# exit, and assertions that print what went wrong and fail the script.
set -euo pipefail

SRC_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
P2BMIG=${1:?usage: $0 PATH_TO_P2BMIG}
WORK=$(mktemp -d /tmp/p2bmig-system.XXXXXX)
trap 'rm -rf "$WORK"' EXIT

fail() { echo "FAIL: $*" >&2; exit 1; }
pass() { echo "ok: $*"; }

# expect_exit CODE DESCRIPTION -- COMMAND...: runs COMMAND, output in $WORK/out.
expect_exit() {
  local want=$1 what=$2; shift 3
  set +e; "$@" >"$WORK/out" 2>&1; local got=$?; set -e
  [ "$got" -eq "$want" ] || { cat "$WORK/out" >&2; fail "$what: exit $got, expected $want"; }
  pass "$what (exit $got)"
}
expect_output() {
  grep -q -- "$1" "$WORK/out" || { cat "$WORK/out" >&2; fail "output lacks '$1'"; }
}
