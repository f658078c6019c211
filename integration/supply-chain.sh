#!/usr/bin/env bash
# Supply-chain checks with cargo-deny against deny.toml: RustSec advisories, licenses,
# banned/duplicate crates and sources (crates.io only), with every backend feature on (and the
# FIPS build's: integration/fips_tree.py checks its crate tree for other crypto implementations).
#
#   bash integration/supply-chain.sh           # all four checks, advisories from the snapshot
#   bash integration/supply-chain.sh --fetch   # advisories from the live RustSec database
#
# Advisories are checked offline against a snapshot of the RustSec database:
# POLYKMS_ADVISORY_DB, default ../shared/advisory-db beside the repository (see its README).
# cargo-deny fetches advisory databases with `git` and wants a host name in their URLs, so the
# snapshot is committed into a throwaway git repository in a temporary directory and given to
# cargo-deny under a never-resolvable https://….invalid URL that git, through
# GIT_CONFIG_* url.<local path>.insteadOf, reads from that directory: no network. A crate with
# an advisory in Cargo.lock fails the check unless deny.toml ignores
# it with a written reason.
#
# cargo-deny is installed with `cargo install --locked` at a pinned version when missing, into
# POLYKMS_TOOLS_ROOT (default ~/.cache/polykms/tools; CI passes its persistent cache directory)
# with its build in POLYKMS_TOOLS_TARGET, so a machine that keeps them builds it once
# (measured: ~20 min on 2 cores from nothing).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
version="${CARGO_DENY_VERSION:-0.20.2}"
tools="${POLYKMS_TOOLS_ROOT:-$HOME/.cache/polykms/tools}"
export PATH="$tools/bin:$PATH"

fetch=0
case "${1:-}" in
  --fetch) fetch=1 ;;
  "") ;;
  *) echo "usage: $0 [--fetch]" >&2; exit 64 ;;
esac

installed="$(cargo deny --version 2>/dev/null | awk '{print $2}' || true)"
if [[ "$installed" != "$version" ]]; then
  echo "== installing cargo-deny $version into $tools (found: ${installed:-none})" >&2
  started=$(date +%s)
  CARGO_TARGET_DIR="${POLYKMS_TOOLS_TARGET:-$tools/target}" \
    cargo install --locked --quiet --version "$version" --root "$tools" cargo-deny
  echo "== cargo-deny installed in $(($(date +%s) - started)) s" >&2
fi

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
config="$tmp/deny.toml"
cp deny.toml "$config"
if [[ $fetch == 0 ]]; then
  snapshot="${POLYKMS_ADVISORY_DB:-$root/../shared/advisory-db}"
  if [[ ! -d "$snapshot/crates" ]]; then
    echo "error: no RustSec advisory snapshot at $snapshot (set POLYKMS_ADVISORY_DB)" >&2
    exit 1
  fi
  db="$tmp/advisory-db"
  cp -R "$snapshot" "$db"
  chmod -R u+w "$db"
  git -C "$db" init -q -b main
  git -C "$db" add -A
  git -C "$db" -c user.name=polykms -c user.email=ci@polykms.invalid \
    commit -q -m "RustSec advisory-db snapshot" --no-gpg-sign
  echo "== advisories from the snapshot at $snapshot ($(find "$db/crates" -name '*.md' | wc -l) advisories)" >&2
  # Point [advisories] at the throwaway repository and a private database directory.
  url="https://advisory-db.snapshot.invalid/rustsec/advisory-db"
  export GIT_CONFIG_COUNT=1 GIT_CONFIG_KEY_0="url.file://$db.insteadOf" GIT_CONFIG_VALUE_0="$url"
  # Point [advisories] at that URL and a private database directory.
  python3 - "$config" "$url" "$tmp/dbs" <<'EOF'
import sys
path, url, dbs = sys.argv[1:]
text = open(path).read()
marker = "[advisories]\n"
assert marker in text, "deny.toml has no [advisories] table"
text = text.replace(marker, f'{marker}db-urls = ["{url}"]\ndb-path = "{dbs}"\n', 1)
open(path, "w").write(text)
EOF
fi

echo "== cargo deny check advisories bans licenses sources" >&2
cargo deny --all-features --config "$config" check advisories bans licenses sources

# The FIPS build (docs/fips.md): no other implementation of the module's algorithms reachable.
echo "== FIPS build crate tree (integration/fips_tree.py)" >&2
python3 integration/fips_tree.py
