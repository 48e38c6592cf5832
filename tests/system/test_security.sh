#!/usr/bin/env bash
# Who may migrate to a receiver: mutual TLS with certificates and with a
# pre-shared key work end to end; a peer with a certificate from another CA,
# a receiver the source cannot verify, a wrong key, and plain TCP against TLS
# (both ways) are refused. A refused source gets nothing: the receiver
# creates no guest memory and keeps listening, so that the real source can
# still migrate; the refused source's guest never pauses and runs on.
# Usage: test_security.sh PATH_TO_P2BMIG
source "$(dirname "$0")/lib.sh"

head -c $((64 << 20)) /dev/urandom >"$WORK/disk.img"
bash "$SRC_DIR/scripts/make-certs.sh" "$WORK/good" localhost
bash "$SRC_DIR/scripts/make-certs.sh" "$WORK/rogue" localhost
(umask 077; openssl rand -hex 32 >"$WORK/a.psk"; openssl rand -hex 32 >"$WORK/b.psk")
good=(--tls-cert "$WORK/good/localhost.pem" --tls-key "$WORK/good/localhost.key" --tls-ca "$WORK/good/ca.pem")
# A certificate of another CA, presented to peers that trust only the good one.
rogue=(--tls-cert "$WORK/rogue/localhost.pem" --tls-key "$WORK/rogue/localhost.key" --tls-ca "$WORK/good/ca.pem")
common=(--disk "$WORK/disk.img" --memory 64M)

port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# start_receiver NAME ARGS...: a receiver in the background; its output in
# $WORK/NAME.out, its memory file $WORK/NAME.mem, its address in $addr.
start_receiver() {
  local name=$1; shift
  addr=127.0.0.1:$(port)
  "$P2BMIG" receive --listen "$addr" "${common[@]}" --memory-file "$WORK/$name.mem" "$@" \
    >"$WORK/$name.out" 2>&1 &
  receiver=$!
  sleep 0.3
}
# send NAME ARGS...: a source; exit status in $rc, output in $WORK/NAME.out.
send() {
  local name=$1; shift
  set +e
  "$P2BMIG" send --to "$addr" "${common[@]}" --workload database --rate off \
    --memory-file "$WORK/$name.src" --connect-wait 5 "$@" >"$WORK/$name.out" 2>&1
  rc=$?
  set -e
}
wait_receiver() { set +e; wait "$receiver"; rrc=$?; set -e; }
has() { grep -q -- "$2" "$WORK/$1.out" || { cat "$WORK/$1.out" >&2; fail "$1: output lacks '$2'"; }; }
no_memory() { [ ! -e "$WORK/$1.mem" ] && [ ! -e "$WORK/$1.mem.partial" ] || fail "$1: guest memory exists"; }

# Both ways of authenticating work, and carry the guest intact.
for mode in certs psk; do
  if [ $mode = certs ]; then args=("${good[@]}"); else args=(--psk-file "$WORK/a.psk"); fi
  start_receiver "ok-$mode" "${args[@]}" --timeout 30
  send "send-$mode" "${args[@]}"
  wait_receiver
  [ $rc -eq 0 ] && [ $rrc -eq 0 ] || { cat "$WORK/send-$mode.out" "$WORK/ok-$mode.out" >&2; fail "$mode migration failed"; }
  has "send-$mode" "the target committed"
  cmp -s "$WORK/send-$mode.src" "$WORK/ok-$mode.mem" || fail "$mode: target memory differs"
  pass "migration over TLS with $mode: memory identical"
done

# refused CASE RECEIVER_ARGS -- SENDER_ARGS: the source is refused, the
# receiver creates nothing and still accepts the right source afterwards.
refused() {
  local case=$1; shift
  local rargs=() sargs=()
  while [ "$1" != -- ]; do rargs+=("$1"); shift; done; shift
  sargs=("$@")
  start_receiver "r-$case" "${rargs[@]}" --timeout 30
  send "bad-$case" "${sargs[@]}"
  [ $rc -eq 1 ] || { cat "$WORK/bad-$case.out" >&2; fail "$case: source exit $rc, expected 1"; }
  has "bad-$case" "the guest was not paused and runs on\|guest resumed"
  no_memory "r-$case"
  kill -0 "$receiver" 2>/dev/null || { cat "$WORK/r-$case.out" >&2; fail "$case: receiver gave up"; }
  has "r-$case" "refused a connection"
  # The right source still gets through.
  send "good-$case" "${rargs[@]}"
  wait_receiver
  [ $rc -eq 0 ] && [ $rrc -eq 0 ] || { cat "$WORK/good-$case.out" "$WORK/r-$case.out" >&2; fail "$case: the right source was not accepted after the refusal"; }
  pass "$case: refused, nothing created, the right source migrated afterwards"
}
refused client-cert-of-another-ca "${good[@]}" -- "${rogue[@]}"
refused wrong-psk --psk-file "$WORK/a.psk" -- --psk-file "$WORK/b.psk"
refused psk-client-on-cert-receiver "${good[@]}" -- --psk-file "$WORK/a.psk"
refused plain-client-on-tls-receiver --psk-file "$WORK/a.psk" -- --insecure
grep -q "authentication failed" "$WORK/bad-client-cert-of-another-ca.out" || fail "no authentication error"

# The source does not trust the receiver (its certificate is from another
# CA): the source refuses to send anything.
start_receiver r-rogue "${rogue[@]}" --timeout 3
send bad-rogue-receiver "${good[@]}"
wait_receiver
[ $rc -eq 1 ] || fail "a source sent to a receiver it cannot verify"
has bad-rogue-receiver "certificate verification failed"
[ $rrc -eq 1 ] || fail "receiver exit $rrc"
has r-rogue "refused before"
no_memory r-rogue
pass "a receiver the source cannot verify gets nothing"

# A TLS source against a plain receiver: the receiver sees no valid stream and
# removes what it started; the source fails before its guest pauses.
start_receiver r-plain --insecure --timeout 30
send bad-tls-on-plain --psk-file "$WORK/a.psk"
wait_receiver
[ $rc -eq 1 ] && [ $rrc -eq 1 ] || fail "TLS source on plain receiver: exits $rc/$rrc"
has r-plain "malformed stream"
no_memory r-plain
pass "TLS source against a plain receiver: both fail, nothing left"
echo "security: PASS"
