#!/usr/bin/env bash
# polykms benchmarks (issue 10): builds the release polykms with every backend and the bench,
# runs the bench against it over a unix socket, prints the table and writes JSON.
#
#   bash integration/bench/run.sh bench.json            # full run, about 2 minutes
#   bash integration/bench/run.sh bench.json --quick    # smoke run, a few seconds
#   POLYKMS_BIN=target/debug/polykms bash integration/bench/run.sh out.json --quick
#                                                       # measure that binary, build no polykms
#
# Extra arguments go to `polykms-bench run` (e.g. --rounds 9). Numbers from one machine are
# only comparable as the floor/plugin ratios the table prints.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$root"
if [[ $# -lt 1 || "$1" == -* ]]; then
  echo "usage: $0 OUT.json [--quick] [polykms-bench run options]" >&2
  exit 64
fi
out="$1"
shift
target="${CARGO_TARGET_DIR:-$root/target}"

# Two cargo invocations: building them together would unify features and change the binary
# being measured (and its size).
if [[ -z "${POLYKMS_BIN:-}" ]]; then
  echo "== building polykms (release, all backends)" >&2
  cargo build --release --locked -p polykms --all-features
  POLYKMS_BIN="$target/release/polykms"
fi
echo "== building polykms-bench (release)" >&2
cargo build --release --locked -p polykms-bench

echo "== running the bench against $POLYKMS_BIN" >&2
exec "$target/release/polykms-bench" run --polykms "$POLYKMS_BIN" --json "$out" "$@"
