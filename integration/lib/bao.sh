# Sourced by integration/servers/openbao.sh and openbao-tls.sh: starts an OpenBao dev server
# detached from the caller and waits until it answers.
#
#   bao_start_dev NAME BAO STATE PIDFILE ADDR TOKEN [server flags...]
#
# setsid: the server must outlive the script's process group (CI, test harnesses). The log is
# STATE/server.log; BAO_ADDR and BAO_TOKEN are exported for the seeding that follows. Returns 1
# (after printing the log's tail) when the server does not come up within 10 s.
bao_start_dev() {
  local name="$1" bao="$2" state="$3" pidfile="$4" addr="$5" token="$6"
  shift 6
  setsid "$bao" server -dev -dev-root-token-id="$token" -dev-no-store-token "$@" \
    >"$state/server.log" 2>&1 </dev/null &
  echo $! >"$pidfile"
  export BAO_ADDR="$addr" BAO_TOKEN="$token"
  for _ in $(seq 100); do
    "$bao" status >/dev/null 2>&1 && return 0
    kill -0 "$(cat "$pidfile")" 2>/dev/null || break
    sleep 0.1
  done
  echo "$name: server did not become ready; log:" >&2
  tail -20 "$state/server.log" >&2
  return 1
}
