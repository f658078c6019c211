#!/usr/bin/env bash
# Starts / stops moto_server (AWS API emulator, PyPI moto[server]) for the polykms-aws tests.
#   start   install (shared venv), start on 127.0.0.1:5055, seed a symmetric KMS key with
#           alias/polykms-test, write integration/.run/moto.env
#   stop    stop what start started (idempotent)
#   pause   freeze the server (SIGSTOP): calls time out, state is kept (outage tests)
#   resume  thaw it (SIGCONT)
#   env     print the env file
# moto keeps everything in memory: stop + start is a fresh server with a new key ARN (same alias).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
run="$here/.run"
state="$run/moto"
pidfile="$run/moto.pid"
envfile="$run/moto.env"
port="${POLYKMS_MOTO_PORT:-5055}"
endpoint="http://127.0.0.1:$port"
region="us-east-1"
alias_name="alias/polykms-test"

pid_alive() { [[ -f "$pidfile" ]] && kill -0 "$(cat "$pidfile")" 2>/dev/null; }

stop() {
  if [[ -f "$pidfile" ]]; then
    pid="$(cat "$pidfile")"
    if kill -0 "$pid" 2>/dev/null; then
      kill -CONT "$pid" 2>/dev/null || true
      kill "$pid" 2>/dev/null || true
      for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
      kill -9 "$pid" 2>/dev/null || true
    fi
    rm -f "$pidfile"
  fi
  rm -f "$envfile"
}

start() {
  stop
  venv="$(bash "$here/lib/venv.sh")"
  py="$venv/bin/python"
  [[ -x "$venv/bin/moto_server" ]] || { echo "moto.sh: moto_server missing (moto[server] not installed?)" >&2; exit 1; }
  if "$py" - "$port" <<'PY'
import socket, sys
s = socket.socket()
s.settimeout(0.5)
sys.exit(0 if s.connect_ex(("127.0.0.1", int(sys.argv[1]))) == 0 else 1)
PY
  then
    echo "moto.sh: 127.0.0.1:$port is already in use by another process" >&2
    exit 1
  fi
  mkdir -p "$state"
  # setsid: the server must outlive this script's process group (CI, test harnesses).
  setsid "$venv/bin/moto_server" -H 127.0.0.1 -p "$port" >"$state/server.log" 2>&1 </dev/null &
  echo $! >"$pidfile"

  export AWS_ACCESS_KEY_ID=polykms-test AWS_SECRET_ACCESS_KEY=polykms-test AWS_REGION="$region"
  export AWS_DEFAULT_REGION="$region" AWS_EC2_METADATA_DISABLED=true
  # Waits (bounded, ~15 s) for the server, then seeds the key; prints its ARN.
  if ! key_arn="$("$py" - "$endpoint" "$alias_name" "$pidfile" <<'PY'
import os, sys, time
import boto3, botocore.config
endpoint, alias, pidfile = sys.argv[1:4]
kms = boto3.client("kms", endpoint_url=endpoint,
                   config=botocore.config.Config(retries={"max_attempts": 1}, connect_timeout=1, read_timeout=5))
deadline = time.monotonic() + 15
while True:
    try:
        kms.list_keys(Limit=1)
        break
    except Exception as e:
        pid = int(open(pidfile).read())
        try:
            os.kill(pid, 0)
        except OSError:
            sys.exit("moto_server exited")
        if time.monotonic() > deadline:
            sys.exit(f"moto_server not ready: {e}")
        time.sleep(0.1)
key = kms.create_key(Description="polykms integration key", KeyUsage="ENCRYPT_DECRYPT",
                     KeySpec="SYMMETRIC_DEFAULT")["KeyMetadata"]
kms.create_alias(AliasName=alias, TargetKeyId=key["KeyId"])
print(key["Arn"])
PY
  )"; then
    echo "moto.sh: server did not become ready or seeding failed; log:" >&2
    tail -20 "$state/server.log" >&2
    stop
    exit 1
  fi

  cat >"$envfile" <<ENV
export POLYKMS_AWS_ENDPOINT=$endpoint
export POLYKMS_AWS_REGION=$region
export POLYKMS_AWS_KEY_ARN=$key_arn
export POLYKMS_AWS_KEY_ALIAS=$alias_name
export POLYKMS_MOTO_PID_FILE=$pidfile
export AWS_ACCESS_KEY_ID=polykms-test
export AWS_SECRET_ACCESS_KEY=polykms-test
export AWS_REGION=$region
export AWS_EC2_METADATA_DISABLED=true
export AWS_ENDPOINT_URL_STS=$endpoint
ENV
  echo "moto.sh: moto_server on $endpoint (pid $(cat "$pidfile")), key $key_arn; env in $envfile" >&2
}

signal() {
  pid_alive || { echo "moto.sh: not running" >&2; exit 1; }
  kill "-$1" "$(cat "$pidfile")"
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  pause) signal STOP ;;
  resume) signal CONT ;;
  env) cat "$envfile" ;;
  *) echo "usage: $0 start|stop|pause|resume|env" >&2; exit 2 ;;
esac
