"""The escrow backend over the real socket: a second wrap of every seed under an offline
post-quantum public key (type = "escrow"). Recovery when the cloud key is gone (mount the
private key, reload, every earlier ciphertext decrypts), a clean FailedPrecondition naming the
escrow backend without it, key_id unchanged by adding or removing the private key, every-bit
tamper checks on escrow envelopes, escrow alone in encrypt.with, keygen and load-time refusals."""

import os
import re
import signal
import subprocess
import time

import grpc
import pytest

from conftest import BIN, FIPS, ROOT, keygen, v2_pb2, write_config
from stores import plugin_config, toml_str
from test_envelope_integrity import check_tamper_proof

ESCROW = "offline-escrow"
PROVIDER = "escrow-e2e"


def escrow_keygen(workdir, stem="escrow", kem=None):
    """Makes an escrow key pair; `kem` is keygen's --kem (None: the build's default)."""
    pub, key = workdir / f"{stem}.pub", workdir / f"{stem}.key"
    kem_args = ["--kem", kem] if kem else []
    r = subprocess.run([str(BIN), "escrow", "keygen", *kem_args, "--public-out", str(pub),
                        "--private-out", str(key)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    if kem == "ml-kem-1024":
        assert "suite: ML-KEM-1024, HKDF-SHA256, AES-256-GCM" in r.stdout, r.stdout
        assert "MLKEM1024 PUBLIC KEY" in pub.read_text()
    fingerprint = re.search(r"fingerprint: (escrow:[0-9a-f]{16})", r.stdout).group(1)
    return pub, key, fingerprint


def local_block(name, key):
    return f'[[backends]]\nname = "{name}"\ntype = "local"\nkey_files = [{toml_str(key)}]\n'


def escrow_block(pub, key=None):
    block = f'[[backends]]\nname = "{ESCROW}"\ntype = "escrow"\npublic_key_file = {toml_str(pub)}\n'
    if key:
        block += f"private_key_file = {toml_str(key)}\n"
    return block


def config(blocks, encrypt_with, extra=""):
    return plugin_config(blocks, encrypt_with, provider=PROVIDER, extra=extra)


def encrypt(p, seed):
    return p.v2().Encrypt(v2_pb2.EncryptRequest(plaintext=seed, uid="escrow"), timeout=20)


def decrypt(p, enc):
    req = v2_pb2.DecryptRequest(ciphertext=enc.ciphertext, key_id=enc.key_id,
                                annotations=dict(enc.annotations), uid="escrow")
    return p.v2().Decrypt(req, timeout=20).plaintext


def key_id(p):
    return p.v2().Status(v2_pb2.StatusRequest(), timeout=5).key_id


def reloads(p):
    _, metrics = p.http("/metrics")
    m = re.search(r'polykms_config_reloads_total\{outcome="success"\} (\d+)', metrics)
    return int(m.group(1)) if m else 0


def reconfigure(p, text):
    """Writes a new config and reloads with SIGHUP; returns once a reload succeeded."""
    before = reloads(p)
    p.config.write_text(text.replace("@SOCKET@", p.socket).replace("@HTTP@", f"127.0.0.1:{p.http_port}"))
    p.send_signal(signal.SIGHUP)
    deadline = time.time() + 20
    while reloads(p) <= before:
        assert time.time() < deadline, f"no successful reload:\n{p.logs()[-3000:]}"
        time.sleep(0.1)


# None: the build's default KEM (X-Wing in the default build, ML-KEM-1024 in a FIPS build).
@pytest.mark.parametrize("kem", [None, "ml-kem-1024"], ids=["default-kem", "ml-kem-1024"])
def test_the_escrow_private_key_recovers_every_ciphertext_once_the_cloud_key_is_gone(workdir, plugins, kem):
    a = keygen(workdir / "a.key")
    pub, key, fingerprint = escrow_keygen(workdir, kem=kem)
    p = plugins(workdir, config([local_block("a", a), escrow_block(pub)], ["a", ESCROW]))
    seeds = [os.urandom(32) for _ in range(5)]
    encs = [encrypt(p, s) for s in seeds]
    for enc in encs:
        # The escrow wrap (~1.2 KB X-Wing, ~1.6 KB ML-KEM-1024) travels in an annotation; its key
        # version is the fingerprint.
        assert len(enc.ciphertext) <= 1024
        assert fingerprint.encode() in enc.ciphertext
        assert set(enc.annotations) == {"wrap-1.polykms.io"}
    assert all(decrypt(p, e) == s for e, s in zip(encs, seeds))
    kid = key_id(p)

    # Mounting the private key (recovery mode) is no rotation: the apiservers see the same key_id.
    reconfigure(p, config([local_block("a", a), escrow_block(pub, key)], ["a", ESCROW]))
    assert key_id(p) == kid

    # The cloud key is gone: a's key file and its backend are removed, a new key store b takes
    # over new writes. Every earlier ciphertext decrypts through the escrow wrap.
    os.remove(a)
    b = keygen(workdir / "b.key")
    recovery = config([local_block("b", b), escrow_block(pub, key)], ["b", ESCROW])
    reconfigure(p, recovery)
    assert [decrypt(p, e) for e in encs] == seeds
    fresh_seed = os.urandom(32)
    fresh = encrypt(p, fresh_seed)

    # Without the private key, the earlier ciphertexts are refused cleanly, naming the backend;
    # what b wrapped still decrypts, and removing the private key changes no key_id.
    kid_b = key_id(p)
    reconfigure(p, config([local_block("b", b), escrow_block(pub)], ["b", ESCROW]))
    assert key_id(p) == kid_b
    for enc in encs:
        with pytest.raises(grpc.RpcError) as e:
            decrypt(p, enc)
        assert e.value.code() == grpc.StatusCode.FAILED_PRECONDITION, e.value
        assert ESCROW in e.value.details(), e.value.details()
    assert decrypt(p, fresh) == fresh_seed
    assert p.v2().Status(v2_pb2.StatusRequest(), timeout=5).healthz == "ok"


def test_escrow_envelopes_refuse_every_bit_flip_on_both_kinds_of_node(workdir, plugins):
    a = keygen(workdir / "a.key")
    pub, key, _ = escrow_keygen(workdir)
    p = plugins(workdir, config([local_block("a", a), escrow_block(pub)], ["a", ESCROW]))
    seed = os.urandom(32)
    enc = encrypt(p, seed)
    check_tamper_proof(p, enc, seed)
    # A recovery node holding only the escrow private key refuses them just the same.
    d = workdir / "recovery"
    d.mkdir()
    r = plugins(d, config([escrow_block(pub, key)], [ESCROW]), name="recovery")
    check_tamper_proof(r, enc, seed)


def test_escrow_alone_in_encrypt_with_keeps_even_its_first_wrap_in_an_annotation(workdir, plugins):
    pub, key, _ = escrow_keygen(workdir)
    p = plugins(workdir, config([escrow_block(pub, key)], [ESCROW]))
    seed = os.urandom(32)
    enc = encrypt(p, seed)
    assert set(enc.annotations) == {"wrap-0.polykms.io"}
    assert len(enc.annotations["wrap-0.polykms.io"]) > 1024
    assert decrypt(p, enc) == seed
    check_tamper_proof(p, enc, seed)

    # Wrap-only: Encrypt works, nothing on the node decrypts, and check says so.
    d = workdir / "wrap-only"
    d.mkdir()
    w = plugins(d, config([escrow_block(pub)], [ESCROW]), name="wrap-only")
    seed2 = os.urandom(32)
    enc2 = encrypt(w, seed2)
    with pytest.raises(grpc.RpcError) as e:
        decrypt(w, enc2)
    assert e.value.code() == grpc.StatusCode.FAILED_PRECONDITION and ESCROW in e.value.details()
    assert decrypt(p, enc2) == seed2
    out = subprocess.run([str(BIN), "check", "--config", str(w.config)], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "wrap-only: private key not on this node (as intended)" in out.stdout
    assert "nothing on this" in out.stdout and "WARNING" in out.stdout
    out = subprocess.run([str(BIN), "check", "--config", str(p.config)], capture_output=True, text=True)
    assert out.returncode == 0 and "round trip:  ok" in out.stdout and "WARNING" not in out.stdout, out.stdout


def serve_exit(workdir, text):
    path = workdir / "refused.toml"
    path.write_text(text.replace("@SOCKET@", str(workdir / "r.sock")).replace("@HTTP@", "127.0.0.1:0"))
    r = subprocess.run([str(BIN), "serve", "--config", str(path), "--log-format", "text"],
                       capture_output=True, text=True, timeout=30)
    return r.returncode, r.stdout + r.stderr


def test_v1beta1_with_escrow_in_encrypt_with_is_refused_at_load(workdir):
    a = keygen(workdir / "a.key")
    pub, _, _ = escrow_keygen(workdir)
    text = config([local_block("a", a), escrow_block(pub)], ["a", ESCROW]).replace(
        "[http]", 'apis = ["v2", "v1beta1"]\n[http]')
    code, out = serve_exit(workdir, text)
    assert code == 64, out
    assert f'encrypt.with[1]: "{ESCROW}"' in out and "server.apis" in out and "v1beta1" in out, out


def test_bad_escrow_keys_are_refused_at_load_naming_the_file(workdir):
    pub, key, _ = escrow_keygen(workdir)
    _, other_key, _ = escrow_keygen(workdir, "other")
    # A private key of another pair: refused by fingerprint.
    code, out = serve_exit(workdir, config([escrow_block(pub, other_key)], [ESCROW]))
    assert code == 64 and "is the private key of escrow:" in out and str(other_key) in out, out
    # A private key readable by group/others.
    os.chmod(key, 0o640)
    code, out = serve_exit(workdir, config([escrow_block(pub, key)], [ESCROW]))
    assert code == 64 and "chmod 600" in out and str(key) in out, out
    # A public key of the wrong type: the private key file, or a PEM block of another kind.
    code, out = serve_exit(workdir, config([escrow_block(other_key)], [ESCROW]))
    assert code == 64 and "not the public key" in out, out
    rsa = workdir / "rsa.pem"
    rsa.write_text("-----BEGIN PUBLIC KEY-----\nMIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8A\n-----END PUBLIC KEY-----\n")
    code, out = serve_exit(workdir, config([escrow_block(rsa)], [ESCROW]))
    assert code == 64 and "'PUBLIC KEY'" in out and str(rsa) in out, out


def test_keygen_writes_a_private_0600_key_never_overwrites_and_prints_the_key_version(workdir):
    pub, key, fingerprint = escrow_keygen(workdir)
    assert oct(os.stat(key).st_mode & 0o777) == "0o600"
    before = key.read_bytes()
    r = subprocess.run([str(BIN), "escrow", "keygen", "--public-out", str(workdir / "n.pub"),
                        "--private-out", str(key)], capture_output=True, text=True)
    assert r.returncode == 73 and "exists" in r.stderr, r.stderr
    assert key.read_bytes() == before and not (workdir / "n.pub").exists()
    r = subprocess.run([str(BIN), "escrow", "keygen", "--public-out", str(pub)], capture_output=True, text=True)
    assert r.returncode == 64, r.stderr
    # The fingerprint keygen printed is the key version check reports.
    cfg = write_config(workdir / "c.toml", config([escrow_block(pub)], [ESCROW]), http="127.0.0.1:0")
    out = subprocess.run([str(BIN), "check", "--config", str(cfg)], capture_output=True, text=True)
    assert f"key version: {fingerprint}" in out.stdout, out.stdout


XWING_PUB = ROOT / "integration" / "tests" / "fixtures" / "escrow-xwing" / "escrow.pub"


def test_x_wing_keys_load_in_the_default_build_and_are_refused_by_a_fips_build(workdir):
    """A FIPS build refuses X-Wing (X25519, ChaCha20-Poly1305 are not approved) at config load
    and at keygen, naming the file and the way out; the default build loads the same file."""
    a = keygen(workdir / "a.key")
    cfg = write_config(workdir / "xwing.toml", config([local_block("a", a), escrow_block(XWING_PUB)], ["a", ESCROW]))
    r = subprocess.run([str(BIN), "check", "--config", str(cfg)], capture_output=True, text=True, timeout=60)
    kg = subprocess.run([str(BIN), "escrow", "keygen", "--kem", "x-wing", "--public-out", str(workdir / "x.pub"),
                         "--private-out", str(workdir / "x.key")], capture_output=True, text=True, timeout=60)
    if FIPS:
        assert r.returncode == 64, r.stdout + r.stderr
        assert str(XWING_PUB) in r.stderr and "not FIPS-approved" in r.stderr, r.stderr
        assert "--kem ml-kem-1024" in r.stderr, r.stderr
        assert kg.returncode == 64 and "--kem ml-kem-1024" in kg.stderr, kg.stdout + kg.stderr
        assert not (workdir / "x.pub").exists() and not (workdir / "x.key").exists()
    else:
        assert r.returncode == 0, r.stdout + r.stderr
        assert "escrow:e65a96579ce300d1" in r.stdout, r.stdout
        assert kg.returncode == 0, kg.stderr
