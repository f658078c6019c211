#!/usr/bin/env bash
# Round-trips/s of polykms with the PKCS#11 backend on SoftHSM2 (README, Performance), at
# concurrency 1 and 16, unwrap cache off so that every Encrypt and Decrypt calls the token.
#
#   bash integration/bench/pkcs11.sh                # release build, then the bench
#   POLYKMS_BIN=target/debug/polykms bash integration/bench/pkcs11.sh --round-trips 200
#
# Extra arguments go to `polykms-bench backend`. Starts (and leaves) the SoftHSM2 token of
# integration/servers/softhsm.sh.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$root"
target="${CARGO_TARGET_DIR:-$root/target}"
if [[ -z "${POLYKMS_BIN:-}" ]]; then
  echo "== building polykms (release, all backends)" >&2
  cargo build --release --locked -p polykms --all-features
  POLYKMS_BIN="$target/release/polykms"
fi
echo "== building polykms-bench (release)" >&2
cargo build --release --locked -p polykms-bench

[[ -f integration/.run/softhsm.env ]] || bash integration/servers/softhsm.sh start
# shellcheck disable=SC1091
source integration/.run/softhsm.env
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
for mechanism in aes-gcm aes-key-wrap-pad; do
  cat >"$work/$mechanism.toml" <<CONF
[server]
socket = "$work/unused.sock"
[http]
listen = ""
[log]
level = "warn"
[decrypt]
cache_size = 0
[[backends]]
name = "hsm"
type = "pkcs11"
module = "$POLYKMS_PKCS11_MODULE"
token_label = "$POLYKMS_PKCS11_TOKEN_LABEL"
pin_file = "$POLYKMS_PKCS11_PIN_FILE"
key_label = "$POLYKMS_PKCS11_KEY_LABEL"
mechanism = "$mechanism"
max_sessions = 8
[encrypt]
with = ["hsm"]
CONF
  "$target/release/polykms-bench" backend --polykms "$POLYKMS_BIN" --config "$work/$mechanism.toml" "$@"
done
