#!/usr/bin/env bash
# Prepares a SoftHSM2 token for the PKCS#11 backend (no server process: SoftHSM2 is a library
# that polykms loads). Everything lives in a temporary SOFTHSM2_CONF and token directory under
# integration/.run/softhsm; the system's SoftHSM2 configuration is never touched.
#   start  install softhsm2 and opensc (pkcs11-tool) if missing, make a fresh token
#          "polykms-test" holding the AES-256 key object "kube-kek" (CKA_ID 01), write the PIN
#          files (0600) and integration/.run/softhsm.env
#   stop   remove the token directory and the env file (idempotent)
#   env    print the env file
#
# Tests source the env file: SOFTHSM2_CONF, POLYKMS_PKCS11_MODULE, POLYKMS_PKCS11_TOKEN_LABEL,
# POLYKMS_PKCS11_PIN_FILE, POLYKMS_PKCS11_SO_PIN_FILE, POLYKMS_PKCS11_KEY_LABEL. They make
# further tokens and key objects in the same directory with softhsm2-util and pkcs11-tool.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
run="$here/.run"
state="$run/softhsm"
envfile="$run/softhsm.env"
token_label="polykms-test"
key_label="kube-kek"

find_module() {
  for m in /usr/lib/softhsm/libsofthsm2.so /usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so \
           /usr/lib/aarch64-linux-gnu/softhsm/libsofthsm2.so /usr/local/lib/softhsm/libsofthsm2.so; do
    [[ -f "$m" ]] && { echo "$m"; return; }
  done
  return 1
}

stop() {
  rm -rf "$state" "$envfile"
}

start() {
  stop
  if ! command -v softhsm2-util >/dev/null 2>&1 || ! command -v pkcs11-tool >/dev/null 2>&1 \
      || ! find_module >/dev/null; then
    echo "softhsm.sh: installing softhsm2 and opensc" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >&2 || true
    apt-get install -y -qq --no-install-recommends softhsm2 opensc >&2
  fi
  module="$(find_module)" || { echo "softhsm.sh: libsofthsm2.so not found" >&2; exit 1; }
  mkdir -p "$state/tokens"
  chmod 700 "$state"
  cat >"$state/softhsm2.conf" <<CONF
directories.tokendir = $state/tokens
objectstore.backend = file
log.level = ERROR
slots.removable = false
CONF
  export SOFTHSM2_CONF="$state/softhsm2.conf"
  # Random PINs: nothing in the repository or the environment holds them, only the 0600 files.
  user_pin="$(od -An -N8 -tx1 /dev/urandom | tr -d ' \n')"
  so_pin="$(od -An -N8 -tx1 /dev/urandom | tr -d ' \n')"
  (umask 077; printf '%s\n' "$user_pin" >"$state/user-pin"; printf '%s\n' "$so_pin" >"$state/so-pin")
  softhsm2-util --init-token --free --label "$token_label" --so-pin "$so_pin" --pin "$user_pin" >/dev/null
  pkcs11-tool --module "$module" --token-label "$token_label" --login --pin "$user_pin" \
    --keygen --key-type AES:32 --sensitive --label "$key_label" --id 01 >/dev/null 2>&1
  cat >"$envfile" <<ENV
export SOFTHSM2_CONF=$state/softhsm2.conf
export POLYKMS_PKCS11_MODULE=$module
export POLYKMS_PKCS11_TOKEN_LABEL=$token_label
export POLYKMS_PKCS11_PIN_FILE=$state/user-pin
export POLYKMS_PKCS11_SO_PIN_FILE=$state/so-pin
export POLYKMS_PKCS11_KEY_LABEL=$key_label
ENV
  echo "softhsm.sh: token $token_label with key $key_label (id 01) ready in $state" >&2
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  env) cat "$envfile" ;;
  *) echo "usage: $0 start|stop|env" >&2; exit 2 ;;
esac
