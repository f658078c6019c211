#!/usr/bin/env bash
# Where does polykms spend CPU that the floor does not? Builds polykms and the bench with
# symbols (release profile, not stripped, in their own target dir), runs the bench, records
# `perf` samples of the plugin and of the floor over the same round-trip phase, and prints the
# difference by crate (compare.py). Needs perf (Debian: linux-perf). Not part of CI.
#
#   bash integration/bench/profile/run.sh OUT_PREFIX [polykms-bench run options]
#
# OUT_PREFIX.floor.data / OUT_PREFIX.plugin.data stay for `perf report -i`.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../../.." && pwd)"
cd "$root"
if [[ $# -lt 1 || "$1" == -* ]]; then
  echo "usage: $0 OUT_PREFIX [polykms-bench run options]" >&2
  exit 64
fi
out="$1"
shift
command -v perf >/dev/null || { echo "perf not found (apt-get install linux-perf)" >&2; exit 69; }
target="${POLYKMS_PROFILE_TARGET:-/tmp/polykms-profile-target}"
export CARGO_PROFILE_RELEASE_STRIP=none CARGO_PROFILE_RELEASE_DEBUG=line-tables-only
CARGO_TARGET_DIR="$target" cargo build --release --locked -p polykms --all-features
CARGO_TARGET_DIR="$target" cargo build --release --locked -p polykms-bench

"$target/release/polykms-bench" run --polykms "$target/release/polykms" "$@" >"$out.bench.txt" 2>&1 &
bench=$!
floor="" plugin=""
for _ in $(seq 1 300); do
  floor=$(pgrep -f "polykms-bench echo-server" | head -1 || true)
  plugin=$(pgrep -f "serve --config .*/plugin.toml" | head -1 || true)
  [[ -n "$floor" && -n "$plugin" ]] && break
  sleep 0.1
done
[[ -n "$floor" && -n "$plugin" ]] || { echo "bench servers did not start; see $out.bench.txt" >&2; exit 1; }
perf record -F 1999 -g -p "$floor" -o "$out.floor.data" >/dev/null 2>&1 &
pf=$!
perf record -F 1999 -g -p "$plugin" -o "$out.plugin.data" >/dev/null 2>&1 &
pp=$!
# The floor stops right after the round-trip rounds: that is the window for both.
while kill -0 "$floor" 2>/dev/null; do sleep 0.05; done
kill -INT "$pp" 2>/dev/null || true
wait "$pf" "$pp" 2>/dev/null || true
wait "$bench" || true
grep -A5 "round-trips (" "$out.bench.txt" || true
python3 "$root/integration/bench/profile/compare.py" "$out"
