#!/usr/bin/env bash
# Starts/stops the fake Cloud KMS (integration/fakes/gcp) on 127.0.0.1:8281.
#   start  installs Python deps (shared venv), makes two throwaway service-account keys, starts
#          the fake with one key trusted, waits until it answers, writes integration/.run/gcp-fake.env
#   stop   stops what start started (idempotent)
#   env    prints the env file
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# POLYKMS_RUN_DIR: a run directory of its own, so that a second instance (another CI run, on
# another port) neither stops this one nor overwrites its env file.
run="${POLYKMS_RUN_DIR:-$here/.run}"
port="${POLYKMS_GCP_FAKE_PORT:-8281}"
pidfile="$run/gcp-fake.pid"
envfile="$run/gcp-fake.env"
logfile="$run/gcp-fake.log"
key="projects/polykms-test/locations/global/keyRings/polykms/cryptoKeys/kek"

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
  # A stale env file would point tests at a dead server instead of letting them skip.
  rm -f "$envfile"
}

start() {
  stop
  venv="$(bash "$here/lib/venv.sh")"
  mkdir -p "$run"
  # Throwaway test keys (never real credentials): one the fake trusts, one it does not.
  for name in gcp-fake-sa gcp-fake-untrusted-sa; do
    [[ -s "$run/$name.json" ]] || "$venv/bin/python" - "$run/$name.json" "$name" <<'PY'
import json, os, sys
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
path, name = sys.argv[1], sys.argv[2]
pem = rsa.generate_private_key(public_exponent=65537, key_size=2048).private_bytes(
    serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
sa = {"type": "service_account", "project_id": "polykms-test", "private_key_id": os.urandom(20).hex(),
      "private_key": pem.decode(), "client_email": f"{name}@polykms-test.iam.gserviceaccount.com",
      "client_id": "1", "token_uri": "https://oauth2.googleapis.com/token"}
fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
with os.fdopen(fd, "w") as f:
    json.dump(sa, f)
PY
  done
  cd "$here/fakes/gcp"
  nohup "$venv/bin/python" server.py --port "$port" --seed-key "$key" \
    --trust-sa-file "$run/gcp-fake-sa.json" >"$logfile" 2>&1 &
  echo $! >"$pidfile"
  endpoint="http://127.0.0.1:$port"
  for _ in $(seq 100); do
    if "$venv/bin/python" -c "import urllib.request,sys; urllib.request.urlopen(sys.argv[1], timeout=1)" \
        "$endpoint/__control/health" 2>/dev/null; then
      cat >"$envfile" <<ENV
export POLYKMS_GCP_ENDPOINT=$endpoint
export POLYKMS_GCP_KEY=$key
export POLYKMS_GCP_SA_FILE=$run/gcp-fake-sa.json
export POLYKMS_GCP_UNTRUSTED_SA_FILE=$run/gcp-fake-untrusted-sa.json
ENV
      echo "gcp fake kms ready at $endpoint (pid $(cat "$pidfile"), log $logfile)" >&2
      return 0
    fi
    if ! kill -0 "$(cat "$pidfile")" 2>/dev/null; then break; fi
    sleep 0.1
  done
  echo "gcp fake kms did not start; log follows:" >&2
  cat "$logfile" >&2
  stop
  return 1
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  env) cat "$envfile" 2>/dev/null || { echo "gcp fake kms is not running" >&2; exit 1; } ;;
  *) echo "usage: $0 start|stop|env" >&2; exit 64 ;;
esac
