#!/usr/bin/env bash
# Starts / stops a real etcd (Debian etcd-server) on 127.0.0.1 for `polykms audit` and the
# rotation drills.
#   start  install etcd-server if missing, start it on 127.0.0.1:2479 with a fresh data dir,
#          wait until healthy, write integration/.run/etcd.env
#   stop   stop what start started (idempotent), remove the data dir
#   env    print the env file
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
run="$here/.run"
state="$run/etcd"
pidfile="$run/etcd.pid"
envfile="$run/etcd.env"
port="${POLYKMS_ETCD_PORT:-2479}"
peer_port="$((port + 1))"
endpoint="http://127.0.0.1:$port"

find_etcd() {
  for c in etcd /usr/bin/etcd; do
    command -v "$c" >/dev/null 2>&1 && { command -v "$c"; return; }
  done
  return 1
}

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

start() {
  stop
  if ! etcd_bin="$(find_etcd)"; then
    echo "etcd.sh: installing etcd-server" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >&2 || true
    apt-get install -y -qq --no-install-recommends etcd-server >&2
    etcd_bin="$(find_etcd)"
  fi
  mkdir -p "$state"
  # Debian's package starts a system etcd on 2379; ours uses its own ports and data dir.
  ETCD_UNSUPPORTED_ARCH="${ETCD_UNSUPPORTED_ARCH:-}" setsid "$etcd_bin" \
    --name polykms-test --data-dir "$state/data" \
    --listen-client-urls "$endpoint" --advertise-client-urls "$endpoint" \
    --listen-peer-urls "http://127.0.0.1:$peer_port" --initial-advertise-peer-urls "http://127.0.0.1:$peer_port" \
    --initial-cluster "polykms-test=http://127.0.0.1:$peer_port" \
    >"$state/etcd.log" 2>&1 </dev/null &
  echo $! >"$pidfile"
  for _ in $(seq 100); do
    if curl -fsS "$endpoint/health" 2>/dev/null | grep -q '"health":"true"'; then
      echo "export POLYKMS_ETCD_ENDPOINTS=$endpoint" >"$envfile"
      echo "etcd.sh: etcd ready on $endpoint" >&2
      return
    fi
    kill -0 "$(cat "$pidfile")" 2>/dev/null || { cat "$state/etcd.log" >&2; echo "etcd.sh: etcd exited" >&2; exit 1; }
    sleep 0.1
  done
  cat "$state/etcd.log" >&2
  echo "etcd.sh: etcd not healthy after 10 s" >&2
  exit 1
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  env) cat "$envfile" ;;
  *) echo "usage: $0 start|stop|env" >&2; exit 2 ;;
esac
