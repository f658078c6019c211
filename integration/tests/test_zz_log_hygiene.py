"""Secret hygiene, named to run last: a workload with known marker plaintexts on the local
backend and on every key store whose server is up (debug logging on), then every plugin log
under integration/.run/logs/ (this run's and the suite's earlier tests') and every server log
under integration/.run/ is searched for the plaintexts, the bytes of every key file the tests
made, and the tokens and secrets named by integration/.run/*.env. None may appear, in raw,
hex, base64 or Rust `Debug` (`[1, 2, 3]`) form."""

import base64
import json
import os
import re
from pathlib import Path

import grpc
import pytest

import stores
from conftest import LOG_DIR, RUN_DIR, keygen, local_config, v1_pb2, v2_pb2

# The dev server prints its own root token in its startup banner; polykms is not involved.
ALLOWED = {("openbao/server.log", "POLYKMS_VAULT_ROOT_TOKEN_FILE")}
SECRET_ENV = re.compile(r"(TOKEN|SECRET_ID|SECRET_ACCESS_KEY|PASSWORD|SA|PIN)(_FILE)?$")
MIN_TOKEN = 16  # shorter values (e.g. moto's dummy "polykms-test") are ordinary words in logs


def encodings(secret):
    forms = {
        "raw": secret,
        "hex": secret.hex().encode(),
        "HEX": secret.hex().upper().encode(),
        "base64": base64.b64encode(secret).rstrip(b"="),
        "base64url": base64.urlsafe_b64encode(secret).rstrip(b"="),
        "debug": ", ".join(str(b) for b in secret).encode(),
    }
    return {k: v for k, v in forms.items() if len(v) >= 12}


def marker(i):
    return f"polykms-marker-{i:02d}-{os.urandom(6).hex()}".encode()[:32]


def run_workload(plugin, stub_v1=None):
    """Round-trips markers and random seeds and provokes error paths; returns the plaintexts."""
    stub, used = plugin.v2(), []
    for i in range(4):
        for seed in (marker(i), os.urandom(32)):
            enc = stub.Encrypt(v2_pb2.EncryptRequest(plaintext=seed, uid=f"hyg-{i}"), timeout=10)
            req = v2_pb2.DecryptRequest(ciphertext=enc.ciphertext, key_id=enc.key_id,
                                        annotations=dict(enc.annotations), uid=f"hyg-{i}")
            assert stub.Decrypt(req, timeout=10).plaintext == seed
            used.append(seed)
            bad = bytearray(enc.ciphertext)
            bad[-1] ^= 1
            req.ciphertext = bytes(bad)
            with pytest.raises(grpc.RpcError):
                stub.Decrypt(req, timeout=10)
    secret_tail = marker(9)
    used.append(secret_tail)
    for call in (lambda: stub.Encrypt(v2_pb2.EncryptRequest(plaintext=secret_tail * 9), timeout=5),
                 lambda: stub.Decrypt(v2_pb2.DecryptRequest(ciphertext=secret_tail, key_id="k"), timeout=5)):
        with pytest.raises(grpc.RpcError):
            call()
    if stub_v1:
        seed = marker(7)
        used.append(seed)
        c = stub_v1.Encrypt(v1_pb2.EncryptRequest(version="v1beta1", plain=seed), timeout=10).cipher
        assert stub_v1.Decrypt(v1_pb2.DecryptRequest(version="v1beta1", cipher=c), timeout=10).plain == seed
        with pytest.raises(grpc.RpcError):
            stub_v1.Decrypt(v1_pb2.DecryptRequest(version="v1beta1", cipher=seed), timeout=5)
    return used


def env_secrets():
    """(env var, value) for every token or secret the env files name, inline or by file."""
    out = []
    for env_file in sorted(RUN_DIR.glob("*.env")):
        for line in env_file.read_text().splitlines():
            m = re.match(r"(?:export\s+)?([A-Z0-9_]+)=(.*)$", line.strip())
            if not m or not SECRET_ENV.search(m.group(1)) or "UNTRUSTED" in m.group(1):
                continue
            name, value = m.group(1), m.group(2).strip().strip("'\"")
            if name.endswith("_FILE"):
                try:
                    value = Path(value).read_text().strip()
                except OSError:
                    continue
                if name.endswith("SA_FILE"):
                    # A service-account JSON: its private key is the secret, line by line.
                    pem = json.loads(value).get("private_key", "")
                    for body_line in [l for l in pem.splitlines() if l and "-----" not in l][:3]:
                        out.append((name, body_line))
                    continue
            if len(value) >= MIN_TOKEN:
                out.append((name, value))
    return out


def key_files(own):
    """The workload's key files and every key file the suite's tests made (conftest's workdirs)."""
    found = set(own) | {p for p in Path("/tmp").glob("pk-*/**/*.key") if p.is_file()}
    return {str(p): p.read_bytes() for p in found if p.stat().st_size == 32}


def log_files():
    return sorted(set(LOG_DIR.glob("*.log")) | set(RUN_DIR.rglob("*.log")))


def long_runs(text):
    """Candidate hex and base64 encodings in a log: runs of their alphabet, 40+ long."""
    return re.findall(rb"[A-Za-z0-9+/_-]{40,}", text)


def test_no_plaintext_key_or_token_reaches_any_log(workdir, plugins, monkeypatch):
    monkeypatch.setenv("POLYKMS_TEST_RUST_LOG", "debug")
    key = keygen(workdir / "hygiene.key")
    p = plugins(workdir, local_config([key], apis=("v2", "v1beta1")), name="hygiene-local")
    plaintexts = run_workload(p, p.v1())
    for kind, store_class in stores.STORES.items():
        try:
            store = store_class()
        except pytest.skip.Exception:
            continue
        d = workdir / kind
        d.mkdir(mode=0o700)
        sp = plugins(d, stores.plugin_config([store.block(kind)], [kind]), name=f"hygiene-{kind}")
        plaintexts += run_workload(sp)
        sp.stop()
    p.stop()

    secrets = []  # (what, encoding name, bytes)
    for seed in plaintexts:
        secrets += [(f"plaintext {seed[:18]!r}", k, v) for k, v in encodings(seed).items()]
    for path, data in key_files([key]).items():
        secrets += [(f"key file {path}", k, v) for k, v in encodings(data).items()]
    tokens = env_secrets()
    leaks, scanned = [], 0
    for log in log_files():
        text = log.read_bytes()
        scanned += len(text)
        runs = long_runs(text)
        rel = str(log.relative_to(RUN_DIR))
        for what, form, enc in secrets:
            # Raw bytes and Debug lists are searched everywhere; text encodings in long runs.
            hit = enc in text if form in ("raw", "debug") else any(enc in r for r in runs)
            if hit:
                leaks.append(f"{rel}: {what} ({form})")
        for name, value in tokens:
            if value.encode() in text and (rel, name) not in ALLOWED:
                leaks.append(f"{rel}: token from {name}")
    print(f"hygiene: {len(log_files())} logs, {scanned} bytes, {len(secrets)} secret forms, "
          f"{len(tokens)} tokens")
    assert scanned > 0 and any(s[0].startswith("plaintext b'polykms-marker") for s in secrets)
    assert leaks == [], "\n".join(leaks[:50])
