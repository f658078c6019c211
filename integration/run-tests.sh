#!/usr/bin/env bash
# The whole test suite: builds polykms, starts every server the tests talk to (moto_server,
# OpenBao, the GCP and Azure fakes, etcd, a SoftHSM2 token, PyKMIP), runs the Rust tests (unit +
# integration against those servers) and the end-to-end suite over the unix socket, then stops
# what it started.
#
#   bash integration/run-tests.sh            # everything
#   bash integration/run-tests.sh -k vault   # extra args go to pytest
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
servers=(moto openbao gcp-fake azure-fake etcd softhsm kmip)

stop_all() {
  for s in "${servers[@]}"; do
    bash "integration/servers/$s.sh" stop >/dev/null 2>&1 || true
  done
}
trap stop_all EXIT INT TERM

venv="$(bash integration/lib/venv.sh)"
echo "== building polykms (all backends)"
cargo build --workspace --all-features --all-targets

echo "== starting servers: ${servers[*]}"
for s in "${servers[@]}"; do
  bash "integration/servers/$s.sh" start
  # shellcheck disable=SC1090
  source "integration/.run/$s.env"
done
export POLYKMS_REQUIRE_INTEGRATION=1
# Every server is on 127.0.0.1; the proxy tests set their own proxy settings, so a proxy in
# the caller's environment must not leak into them.
unset HTTP_PROXY HTTPS_PROXY ALL_PROXY NO_PROXY http_proxy https_proxy all_proxy no_proxy

echo "== cargo test"
cargo test --workspace --all-features

echo "== end-to-end suite (pytest, real binary over the unix socket)"
POLYKMS_BIN="${CARGO_TARGET_DIR:-$root/target}/debug/polykms" \
  "$venv/bin/pytest" -q -p no:cacheprovider integration/tests "$@"
