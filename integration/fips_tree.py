"""The crate tree of the FIPS build has no other implementation of AES, SHA-2, HMAC, HKDF or TLS
cryptography reachable at run time (docs/fips.md). Run by integration/supply-chain.sh:

    python3 integration/fips_tree.py

It reads `cargo tree -p polykms --features fips -e normal` (what is compiled into the binary)
and finds every crate of the list below. `ring` fails wherever it appears. Any other listed crate
may appear only behind one of the ALLOWED edges: a crate that is not on the list depending on
one that is, each with the reason the code behind it never runs in a FIPS build. A new path
fails the check and names itself.
"""

import re
import subprocess
import sys

# Implementations of ciphers, hashes, MACs, KDFs, key exchange and TLS cryptography, other
# than AWS-LC's FIPS module: ring, the non-FIPS AWS-LC, OpenSSL/BoringSSL bindings and the
# RustCrypto crates (and the dalek curves, ChaCha-based RNGs).
FORBIDDEN = {
    "ring", "aws-lc-sys", "openssl", "openssl-sys", "boring", "boring-sys",
    "aes", "aes-gcm", "aes-gcm-siv", "aes-kw", "aes-siv", "ccm", "eax", "ocb3", "ctr", "cbc",
    "cfb-mode", "ofb", "des", "chacha20", "chacha20poly1305", "salsa20", "xsalsa20poly1305",
    "poly1305", "ghash", "polyval", "sha1", "sha-1", "sha2", "sha3", "md-5", "md5", "md4",
    "blake2", "blake3", "ripemd", "whirlpool", "keccak", "shake", "turboshake", "k12", "hmac",
    "hkdf", "pbkdf2", "scrypt", "argon2", "cmac", "x25519-dalek", "curve25519-dalek",
    "ed25519-dalek", "p256", "p384", "p521", "ecdsa", "rsa", "ml-kem", "ml-dsa", "x-wing",
    "hpke", "rand_chacha",
}

# (parent not on the list, listed crate) -> why that code is not reached in a FIPS build.
ALLOWED = {
    ("aws-lc-rs", "aws-lc-sys"):
        "rustls' `aws_lc_rs` feature names the non-FIPS AWS-LC too; aws-lc-rs built with `fips` "
        "references only aws-lc-fips-sys, so it is not linked (integration/fips-check.sh reads "
        "the binary's symbols)",
    ("polykms-escrow", "hpke"):
        "the X-Wing escrow suite; a FIPS build refuses X-Wing keys at config load and `escrow "
        "keygen --kem x-wing` (the FIPS suite is ML-KEM-1024 on the module)",
    ("polykms-escrow", "x-wing"):
        "the X-Wing escrow suite, refused in a FIPS build (as above)",
    ("rand", "chacha20"):
        "rand 0.10's generator, used by the SDKs for retry jitter and ids (google-cloud-gax, "
        "azure_core's typespec_client_core): no key, secret or data passes through it; "
        "polykms' own random numbers come from the module's DRBG (no polykms crate uses rand)",
    ("rand", "rand_chacha"):
        "rand 0.9's generator, used by opentelemetry_sdk (inside google-cloud-gax-internal) for "
        "trace ids and sampling: no key, secret or data passes through it",
    ("aws-sigv4", "hmac"):
        "the AWS SDK's stock SigV4 signer, linked by aws-runtime and the credential providers: "
        "KMS requests are signed by polykms' own SigV4 on the module (crates/aws/src/sigv4.rs, "
        "the KMS client's sigv4 auth scheme in every build), and STS AssumeRole, the only other "
        "signed call, is refused in a FIPS build (assume_role_arn, a profile that assumes a role)",
    ("aws-sigv4", "sha2"):
        "as above (the SDK's stock SigV4 signer, not reached by KMS calls; AssumeRole refused)",
    ("google-cloud-auth", "hmac"):
        "SigV4 signing of GCP external-account credentials sourced from AWS; a FIPS build "
        "refuses such a credentials file at config load",
    ("google-cloud-auth", "sha2"):
        "as above (AWS-sourced external accounts), refused in a FIPS build",
}


def tree():
    out = subprocess.run(
        ["cargo", "tree", "-p", "polykms", "--features", "fips", "-e", "normal",
         "--prefix", "depth", "--format", "{p}"],
        check=True, capture_output=True, text=True).stdout
    edges = set()
    stack = []
    for line in out.splitlines():
        m = re.match(r"^(\d+)(\S+) v", line)
        if not m:
            continue
        depth, name = int(m.group(1)), m.group(2)
        del stack[depth:]
        if stack:
            edges.add((stack[-1], name))
        stack.append(name)
    return edges


def main():
    edges = tree()
    crates = {c for e in edges for c in e}
    present = sorted(crates & FORBIDDEN)
    entries = sorted((p, c) for p, c in edges if c in FORBIDDEN and p not in FORBIDDEN)
    bad = [(p, c) for p, c in entries if (p, c) not in ALLOWED]
    # polykms' own crates take every random number from the module (polykms_backend::crypto).
    bad += sorted((p, c) for p, c in edges if p.startswith("polykms") and c == "rand")
    print(f"fips tree: {len(crates)} crates; listed implementations present: {', '.join(present) or 'none'}")
    for p, c in entries:
        if (p, c) in ALLOWED:
            print(f"  allowed: {p} -> {c}: {ALLOWED[(p, c)]}")
    for p, c in bad:
        print(f"  FORBIDDEN: {p} -> {c}", file=sys.stderr)
    if "ring" in crates:
        print("  FORBIDDEN: ring is in the FIPS build", file=sys.stderr)
    if bad or "ring" in crates:
        print("fips tree: another implementation of the module's algorithms is reachable in the FIPS "
              "build; remove it, or refuse the setting that reaches it and add the edge to ALLOWED "
              "with the reason", file=sys.stderr)
        return 1
    print("fips tree: ok")
    return 0


if __name__ == "__main__":
    sys.exit(main())
