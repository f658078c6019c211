#!/usr/bin/env bash
# Supply-chain checks with cargo-deny against deny.toml: licenses, banned/duplicate crates,
# sources (crates.io only) and RustSec advisories.
#
#   bash integration/supply-chain.sh              # every check
#   bash integration/supply-chain.sh --offline    # skip advisories (no advisory DB needed)
#
# cargo-deny is installed with `cargo install --locked` at a pinned version when missing or
# older; the build reuses a persistent target dir (POLYKMS_TOOLS_TARGET, default
# ~/.cache/polykms/tools-target), so CI caches that and ~/.cargo/bin to skip the build.
# Advisories need the RustSec DB, a git clone from github.com (into ~/.cargo/advisory-dbs): where
# that host is unreachable, run with --offline and run the advisories check where it is:
#   cargo deny --all-features check advisories
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
version="${CARGO_DENY_VERSION:-0.20.2}"

offline=0
[[ "${1:-}" == "--offline" ]] && offline=1

installed="$(cargo deny --version 2>/dev/null | awk '{print $2}' || true)"
if [[ "$installed" != "$version" ]]; then
  echo "== installing cargo-deny $version (found: ${installed:-none})" >&2
  started=$(date +%s)
  CARGO_TARGET_DIR="${POLYKMS_TOOLS_TARGET:-$HOME/.cache/polykms/tools-target}" \
    cargo install --locked --version "$version" cargo-deny
  echo "== cargo-deny installed in $(($(date +%s) - started)) s" >&2
fi

checks=(bans licenses sources)
if [[ $offline == 0 ]]; then
  checks=(advisories "${checks[@]}")
fi
echo "== cargo deny check ${checks[*]}" >&2
cargo deny --all-features check "${checks[@]}"
