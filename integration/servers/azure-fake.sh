#!/usr/bin/env bash
# Starts/stops the fake Azure Key Vault (integration/fakes/azure) on https://127.0.0.1:8443.
#   start  installs Python deps (shared venv), makes a throwaway test CA + server certificate and
#          a random bearer token, starts the fake, waits until it answers, seeds an RSA-2048 key
#          ("polykms-kek"), writes integration/.run/azure-fake.env
#   stop   stops what start started (idempotent)
#   env    prints the env file
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# POLYKMS_RUN_DIR: a run directory of its own, so that a second instance (another CI run, on
# another port) neither stops this one nor overwrites its env file.
run="${POLYKMS_RUN_DIR:-$here/.run}"
state="$run/azure-fake"
port="${POLYKMS_AZURE_FAKE_PORT:-8443}"
pidfile="$run/azure-fake.pid"
envfile="$run/azure-fake.env"
logfile="$run/azure-fake.log"
key="polykms-kek"

stop() {
  if [[ -f "$pidfile" ]]; then
    pid="$(cat "$pidfile")"
    if kill -0 "$pid" 2>/dev/null; then
      kill "$pid"
      for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
      kill -0 "$pid" 2>/dev/null && kill -9 "$pid"
    fi
    rm -f "$pidfile"
  fi
}

start() {
  stop
  venv="$(bash "$here/lib/venv.sh")"
  py="$venv/bin/python"
  mkdir -p "$state"
  chmod 700 "$state"
  # Throwaway test CA and token, made fresh each start (never real credentials).
  "$py" "$here/fakes/azure/gen_certs.py" "$state"
  (umask 077 && "$py" -c "import secrets; print('fake-kv-' + secrets.token_urlsafe(32))" >"$state/token")
  nohup "$py" "$here/fakes/azure/fake_keyvault.py" --port "$port" \
    --cert "$state/server.pem" --key "$state/server-key.pem" --token-file "$state/token" \
    >"$logfile" 2>&1 &
  echo $! >"$pidfile"
  url="https://127.0.0.1:$port"
  # POST to the control API, trusting only the test CA.
  control() {
    "$py" - "$state/ca.pem" "$url/__control/$1" "${2:-}" <<'PY'
import json, ssl, sys, urllib.request
ctx = ssl.create_default_context(cafile=sys.argv[1])
data = sys.argv[3].encode() if sys.argv[3] else None
req = urllib.request.Request(sys.argv[2], data=data, method="POST" if data else "GET",
                             headers={"Content-Type": "application/json"})
urllib.request.urlopen(req, timeout=5, context=ctx).read()
PY
  }
  for _ in $(seq 100); do
    if control health 2>/dev/null; then
      control "keys/$key" '{"kty":"RSA","size":2048}'
      cat >"$envfile" <<ENV
export POLYKMS_AZURE_VAULT_URL=$url
export POLYKMS_AZURE_CA_FILE=$state/ca.pem
export POLYKMS_AZURE_TOKEN_FILE=$state/token
export POLYKMS_AZURE_KEY=$key
ENV
      echo "azure fake key vault ready at $url (pid $(cat "$pidfile"), log $logfile)" >&2
      return 0
    fi
    if ! kill -0 "$(cat "$pidfile")" 2>/dev/null; then break; fi
    sleep 0.1
  done
  echo "azure fake key vault did not start; log follows:" >&2
  cat "$logfile" >&2
  stop
  return 1
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  env) cat "$envfile" ;;
  *) echo "usage: $0 start|stop|env" >&2; exit 64 ;;
esac
