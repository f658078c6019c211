#!/usr/bin/env bash
# The whole test suite: builds polykms, starts every server the tests talk to (moto_server,
# OpenBao, the GCP and Azure fakes, etcd, a SoftHSM2 token, PyKMIP), runs the Rust tests (unit +
# integration against those servers) and the end-to-end suite over the unix socket, then stops
# what it started. Then the same again for the FIPS build (`--features fips`, docs/fips.md): the
# crates that hold cryptography run their tests on the AWS-LC FIPS module, the FIPS binary is
# checked to link no other implementation (integration/fips-check.sh), and the end-to-end
# files in FIPS_TESTS run over its socket.
#
#   bash integration/run-tests.sh            # everything
#   bash integration/run-tests.sh -k vault   # extra args go to pytest (both passes)
#   POLYKMS_SKIP_FIPS=1 bash integration/run-tests.sh   # the default build only
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
target="${CARGO_TARGET_DIR:-$root/target}"
echo "== building polykms (all backends)"
cargo build --workspace --all-targets

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
cargo test --workspace

echo "== end-to-end suite (pytest, real binary over the unix socket)"
POLYKMS_BIN="$target/debug/polykms" \
  "$venv/bin/pytest" -q -p no:cacheprovider integration/tests "$@"

if [[ -n "${POLYKMS_SKIP_FIPS:-}" ]]; then
  echo "== FIPS pass skipped (POLYKMS_SKIP_FIPS)"
  exit 0
fi
# The end-to-end files run against the FIPS binary: every backend with a real server here
# (local, Vault/OpenBao, AWS/moto, KMIP/PyKMIP, PKCS#11/SoftHSM2, the GCP and Azure fakes),
# the conformance replays, the tamper and downgrade checks, escrow, audit/reencrypt on etcd
# and the TLS refusals of test_fips_tls.py.
FIPS_TESTS=(test_kms_v2.py test_compat.py test_envelope_integrity.py test_backends.py test_kmip.py
  test_pkcs11.py test_escrow.py test_cli.py test_operations.py test_audit.py test_reencrypt.py
  test_fips_tls.py)
echo "== FIPS build (cargo build -p polykms --features fips)"
cargo build -p polykms --features fips
mkdir -p "$target/fips"
cp "$target/debug/polykms" "$target/fips/polykms"
bash integration/fips-check.sh "$target/fips/polykms"

echo "== cargo test --features fips (the crates with cryptography, on the FIPS module)"
cargo test --features fips -p polykms-backend -p polykms-core -p polykms-local -p polykms-escrow \
  -p polykms-net -p polykms-aws -p polykms

echo "== end-to-end suite against the FIPS binary"
POLYKMS_BIN="$target/fips/polykms" \
  "$venv/bin/pytest" -q -p no:cacheprovider "${FIPS_TESTS[@]/#/integration/tests/}" "$@"
# Leave target/debug/polykms the default build again (a few crates recompile: `-p polykms`
# unifies features differently from the workspace build above).
cargo build -p polykms
