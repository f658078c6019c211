#!/usr/bin/env bash
# Starts / stops a PyKMIP server (PyPI pykmip, a real KMIP 1.0-2.0 server) over mutual TLS for
# the polykms-kmip tests.
#   start   make a CA and certificates (openssl), start the server on 127.0.0.1:15696 with a
#           fresh SQLite database, create and activate the key "polykms" with PyKMIP's own
#           client, write integration/.run/kmip.env
#   halt    stop the server process, keep certificates and database (outage tests)
#   resume  start it again on the same database (keys survive)
#   stop    stop it and remove everything start made (idempotent)
#   env     print the env file
#   instance PORT DIR [CERT]  run another server in the foreground (a test's own, for restarts);
#           CERT is the server certificate's name (server, or server-rsa)
#
# Certificates (integration/.run/kmip/):
#   ca.pem                     the CA the server and polykms trust
#   server.pem/.key            127.0.0.1 and localhost
#   server-rsa.pem/.key        the same names, an RSA key: PyKMIP then offers no suite that
#                              polykms accepts (RSA key exchange or CBC only)
#   client.pem/.key            CN=polykms: the identity that owns the test keys
#   other.pem/.key             CN=other-tenant, same CA: authenticated, owns nothing
#   rogue.pem/.key             CN=polykms from another CA: refused in the TLS handshake
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
run="$here/.run"
state="$run/kmip"
pidfile="$run/kmip.pid"
envfile="$run/kmip.env"
port="${POLYKMS_KMIP_PORT:-15696}"
key="polykms"

# The server runs in its own process group (setsid) with two multiprocessing children (a policy
# monitor and a Manager): the whole group is stopped, with SIGKILL. PyKMIP's SIGTERM handler
# only ends its accept loop at the next 10 s socket timeout and then joins every session thread
# for up to 10 s each; a kill is what a crash looks like, and SQLite keeps the database intact.
stop_server() {
  [[ -f "$pidfile" ]] || return 0
  local pid
  pid="$(cat "$pidfile")"
  if kill -0 "$pid" 2>/dev/null; then
    kill -KILL -- "-$pid" 2>/dev/null || kill -KILL "$pid" 2>/dev/null || true
    for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  fi
  rm -f "$pidfile"
}

stop() {
  stop_server
  rm -rf "$state" "$envfile"
}

make_ca() { # name subject
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 30 \
    -subj "/CN=$2" -keyout "$state/$1.key" -out "$state/$1.pem" \
    -addext basicConstraints=critical,CA:true -addext keyUsage=critical,keyCertSign,cRLSign \
    2>/dev/null
}

make_leaf() { # name ca cn extendedKeyUsage [subjectAltName] [rsa]
  local name="$1" ca="$2" cn="$3" eku="$4" san="${5:-}"
  local newkey=(-newkey ec -pkeyopt ec_paramgen_curve:P-256)
  [[ "${6:-}" == rsa ]] && newkey=(-newkey rsa:2048)
  openssl req -new "${newkey[@]}" -nodes -subj "/CN=$cn" \
    -keyout "$state/$name.key" -out "$state/$name.csr" 2>/dev/null
  {
    echo "basicConstraints=critical,CA:false"
    echo "keyUsage=critical,digitalSignature,keyEncipherment"
    echo "extendedKeyUsage=$eku"
    [[ -n "$san" ]] && echo "subjectAltName=$san"
  } >"$state/$name.ext"
  openssl x509 -req -in "$state/$name.csr" -CA "$state/$ca.pem" -CAkey "$state/$ca.key" \
    -CAcreateserial -days 30 -extfile "$state/$name.ext" -out "$state/$name.pem" 2>/dev/null
  rm -f "$state/$name.csr" "$state/$name.ext"
}

write_conf() { # file port database [server certificate name]
  local cert="${4:-server}"
  cat >"$1" <<CONF
[server]
hostname=127.0.0.1
port=$2
certificate_path=$state/$cert.pem
key_path=$state/$cert.key
ca_path=$state/ca.pem
auth_suite=TLS1.2
policy_path=$state/policies
enable_tls_client_auth=True
logging_level=INFO
database_path=$3
CONF
}

venv_python() {
  local venv
  venv="$(bash "$here/lib/venv.sh")"
  [[ -x "$venv/bin/pykmip-server" ]] || { echo "kmip.sh: pykmip-server missing in $venv" >&2; exit 1; }
  echo "$venv"
}

start_server() {
  local venv="$1"
  # setsid: the server must outlive this script's process group (CI, test harnesses).
  PYTHONWARNINGS=ignore setsid "$venv/bin/pykmip-server" -f "$state/server.conf" \
    >>"$state/server.log" 2>&1 </dev/null &
  echo $! >"$pidfile"
  for _ in $(seq 150); do
    if POLYKMS_KMIP_ENDPOINT="127.0.0.1:$port" POLYKMS_KMIP_CA_FILE="$state/ca.pem" \
      POLYKMS_KMIP_CLIENT_CERT_FILE="$state/client.pem" POLYKMS_KMIP_CLIENT_KEY_FILE="$state/client.key" \
      "$venv/bin/python" "$here/lib/kmip_admin.py" ping >/dev/null 2>&1; then
      return 0
    fi
    kill -0 "$(cat "$pidfile")" 2>/dev/null || break
    sleep 0.2
  done
  echo "kmip.sh: PyKMIP server did not become ready on 127.0.0.1:$port; log:" >&2
  tail -30 "$state/server.log" >&2
  return 1
}

start() {
  stop
  local venv
  venv="$(venv_python)"
  command -v openssl >/dev/null || { echo "kmip.sh: openssl is required" >&2; exit 1; }
  mkdir -p "$state/policies"
  chmod 700 "$state"
  make_ca ca "polykms test KMIP CA"
  make_ca rogue-ca "rogue CA"
  make_leaf server ca "127.0.0.1" serverAuth "IP:127.0.0.1,DNS:localhost"
  make_leaf server-rsa ca "127.0.0.1" serverAuth "IP:127.0.0.1,DNS:localhost" rsa
  make_leaf client ca "polykms" clientAuth
  make_leaf other ca "other-tenant" clientAuth
  make_leaf rogue rogue-ca "polykms" clientAuth
  write_conf "$state/server.conf" "$port" "$state/pykmip.db"
  if ! start_server "$venv"; then stop; exit 1; fi

  cat >"$envfile" <<ENV
export POLYKMS_KMIP_ENDPOINT=127.0.0.1:$port
export POLYKMS_KMIP_CA_FILE=$state/ca.pem
export POLYKMS_KMIP_CLIENT_CERT_FILE=$state/client.pem
export POLYKMS_KMIP_CLIENT_KEY_FILE=$state/client.key
export POLYKMS_KMIP_OTHER_CERT_FILE=$state/other.pem
export POLYKMS_KMIP_OTHER_KEY_FILE=$state/other.key
export POLYKMS_KMIP_ROGUE_CERT_FILE=$state/rogue.pem
export POLYKMS_KMIP_ROGUE_KEY_FILE=$state/rogue.key
export POLYKMS_KMIP_PYTHON=$venv/bin/python
export POLYKMS_KMIP_ADMIN=$here/lib/kmip_admin.py
export POLYKMS_KMIP_SCRIPT=$here/servers/kmip.sh
export POLYKMS_KMIP_KEY=$key
ENV
  # shellcheck disable=SC1090
  source "$envfile"
  "$venv/bin/python" "$here/lib/kmip_admin.py" create "$key" >"$state/key.uid"
  echo "export POLYKMS_KMIP_KEY_UID=$(cat "$state/key.uid")" >>"$envfile"
  echo "kmip.sh: PyKMIP server on 127.0.0.1:$port (pid $(cat "$pidfile")); env in $envfile" >&2
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  halt) stop_server ;;
  resume)
    [[ -f "$state/server.conf" ]] || { echo "kmip.sh: nothing to resume (run start)" >&2; exit 1; }
    # The port start used (POLYKMS_KMIP_PORT then), not this shell's: the readiness check
    # must ask the server that was started.
    port="$(sed -n 's/^port=//p' "$state/server.conf")"
    start_server "$(venv_python)"
    ;;
  env) cat "$envfile" ;;
  instance)
    # A separate server for one test, in the foreground: same certificates, its own port and
    # database (in DIR). Keys in DIR survive a restart of the instance.
    [[ -f "$state/ca.pem" ]] || { echo "kmip.sh: run start first" >&2; exit 1; }
    mkdir -p "$3"
    write_conf "$3/server.conf" "$2" "$3/pykmip.db" "${4:-server}"
    PYTHONWARNINGS=ignore exec "$(venv_python)/bin/pykmip-server" -f "$3/server.conf"
    ;;
  *) echo "usage: $0 start|stop|halt|resume|env|instance PORT DIR [CERT]" >&2; exit 2 ;;
esac
