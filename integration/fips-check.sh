#!/usr/bin/env bash
# Proves that a FIPS build of polykms runs the AWS-LC FIPS module and links no other
# implementation of its algorithms (docs/fips.md, "How to check a binary"):
#
#   bash integration/fips-check.sh target/fips/polykms
#
# 1. `polykms version` starts the module (its integrity check and power-on self tests run at
#    start, a failure aborts) and names it: "AWS-LC FIPS <version> (FIPS mode)".
# 2. The symbol table (an unstripped build: the dev profile, as run-tests.sh builds it) holds
#    the FIPS module's prefixed symbols, none of the non-FIPS AWS-LC (aws-lc-sys, which rustls'
#    feature list names but nothing references in a FIPS build) and none of ring.
# The crates in the tree are checked by integration/supply-chain.sh (cargo tree).
set -euo pipefail
bin="${1:?usage: bash integration/fips-check.sh BINARY}"
fail() { echo "fips-check: $*" >&2; exit 1; }

line="$("$bin" version | grep '^cryptographic module:' || true)"
[[ "$line" =~ ^cryptographic\ module:\ AWS-LC\ FIPS\ [^\ ]+\ \(FIPS\ mode\) ]] \
  || fail "$bin does not run the AWS-LC FIPS module in FIPS mode: '${line:-no module line}'"
echo "fips-check: $line"

command -v nm >/dev/null || fail "nm (binutils) is needed"
symbols="$(mktemp)"
trap 'rm -f "$symbols"' EXIT
nm --defined-only "$bin" 2>/dev/null | awk '{print $NF}' >"$symbols" || true
[[ -s "$symbols" ]] || fail "$bin has no symbol table (stripped?): check an unstripped build"
fips_syms=$(grep -c '^aws_lc_fips_' "$symbols" || true)
other_awslc=$(grep -cE '^aws_lc_[0-9]' "$symbols" || true)
ring_syms=$(grep -cE '^ring_core_' "$symbols" || true)
echo "fips-check: symbols: $fips_syms from the AWS-LC FIPS module, $other_awslc from non-FIPS AWS-LC, $ring_syms from ring"
((fips_syms > 0)) || fail "no AWS-LC FIPS module symbol in $bin"
((other_awslc == 0)) || fail "$bin links the non-FIPS AWS-LC: $(grep -E '^aws_lc_[0-9]' "$symbols" | head -3 | tr '\n' ' ')"
((ring_syms == 0)) || fail "$bin links ring: $(grep -E '^ring_core_' "$symbols" | head -3 | tr '\n' ' ')"
echo "fips-check: ok"
