#!/usr/bin/env bash
# Makes a migration CA and a certificate for each host, for
# `p2bmig send/receive --tls-cert/--tls-key/--tls-ca`. Every host trusts the
# CA (ca.pem) and presents its own certificate; keep ca.key offline.
#
# Usage: scripts/make-certs.sh DIR [HOST...]
#   HOST: a name or IP address the host is reached by (default: localhost,
#   which also covers 127.0.0.1 and ::1). Writes DIR/ca.pem, DIR/ca.key and,
#   per host, DIR/HOST.pem and DIR/HOST.key (EC P-256, valid 825 days).
set -euo pipefail
dir=${1:?usage: $0 DIR [HOST...]}
shift
hosts=("$@")
[ ${#hosts[@]} -gt 0 ] || hosts=(localhost)
mkdir -p "$dir"
umask 077
if [ ! -f "$dir/ca.pem" ]; then
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 825 \
    -subj "/CN=p2bmig migration CA $(date +%s%N)" -keyout "$dir/ca.key" -out "$dir/ca.pem" \
    -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign,cRLSign \
    2>/dev/null
fi
for h in "${hosts[@]}"; do
  if [[ $h =~ ^[0-9.]+$ || $h == *:* ]]; then
    san="IP:$h"
  elif [ "$h" = localhost ]; then
    san="DNS:localhost,IP:127.0.0.1,IP:::1"
  else
    san="DNS:$h"
  fi
  openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "/CN=$h" \
    -keyout "$dir/$h.key" -out "$dir/$h.csr" 2>/dev/null
  openssl x509 -req -in "$dir/$h.csr" -CA "$dir/ca.pem" -CAkey "$dir/ca.key" -CAcreateserial \
    -days 825 -out "$dir/$h.pem" \
    -extfile <(printf 'subjectAltName=%s\nextendedKeyUsage=serverAuth,clientAuth\nkeyUsage=critical,digitalSignature\n' "$san") \
    2>/dev/null
  rm -f "$dir/$h.csr"
done
chmod 644 "$dir"/*.pem
