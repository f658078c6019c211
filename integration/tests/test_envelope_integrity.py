"""Envelope integrity, tried from outside as an attacker with write access to etcd would: every
single-bit flip at every byte of single-, two- and three-wrap ciphertexts (and of one whose
wraps overflow into annotations), truncations, an extra byte, flips in every annotation value.
Each altered request must be refused with INVALID_ARGUMENT while the plugin keeps serving; the
intact envelope then decrypts on nodes that hold only one of its backends. Format downgrades
(version 3 rewritten as version 1 or 2, alone and with wraps spliced in from other envelopes)
are refused by every node with the default config. Also: version-1 and version-2 envelopes
written before format version 3 keep decrypting, and per-backend plaintext bounds."""

import base64
import json
import os
import shutil
import time
from pathlib import Path

import grpc
import pytest

from conftest import v2_pb2
from stores import AzureStore, plugin_config, toml_str

FIXTURES = Path(__file__).parent / "fixtures" / "envelope-v1"
FIXTURES_V2 = Path(__file__).parent / "fixtures" / "envelope-v2"
COMMITMENT_LEN = 32
PROVIDER = "integrity"


def local_block(name, key):
    return f'[[backends]]\nname = "{name}"\ntype = "local"\nkey_files = [{toml_str(key)}]\n'


def local_keys(workdir, names):
    """Copies of the committed fixture keys (git does not keep mode 0600)."""
    out = {}
    for n in names:
        dst = workdir / f"{n}.key"
        shutil.copy(FIXTURES / f"{n}.key", dst)
        os.chmod(dst, 0o600)
        out[n] = dst
    return out


def decrypt_request(ciphertext, key_id, annotations):
    return v2_pb2.DecryptRequest(ciphertext=bytes(ciphertext), key_id=key_id,
                                 annotations=annotations, uid="tamper")


def refused(p, requests):
    """Sends every request (64 in flight at a time) and returns those NOT refused with
    INVALID_ARGUMENT, with what came back instead."""
    stub = p.v2()
    bad = []
    for start in range(0, len(requests), 64):
        batch = requests[start:start + 64]
        futures = [stub.Decrypt.future(req, timeout=20) for _, req in batch]
        for (what, _), fut in zip(batch, futures):
            try:
                fut.result()
                bad.append((what, "DECRYPTED"))
            except grpc.RpcError as e:
                if e.code() != grpc.StatusCode.INVALID_ARGUMENT:
                    bad.append((what, f"{e.code()}: {e.details()}"))
    return bad


def tamper_everything(p, enc):
    """Every altered form of `enc` the attacker can store; all must be refused."""
    ct, ann, kid = enc.ciphertext, dict(enc.annotations), enc.key_id
    reqs = []
    for i in range(len(ct)):
        for bit in range(8):
            altered = bytearray(ct)
            altered[i] ^= 1 << bit
            reqs.append((f"bit {bit} of byte {i}", decrypt_request(altered, kid, ann)))
    for cut in range(1, len(ct)):
        reqs.append((f"truncated to {cut}", decrypt_request(ct[:cut], kid, ann)))
    for extra in (b"\x00", b"\xff"):
        reqs.append((f"extra byte {extra!r}", decrypt_request(ct + extra, kid, ann)))
    for key, value in ann.items():
        for i in range(len(value)):
            altered = dict(ann)
            v = bytearray(value)
            v[i] ^= 1 << (i % 8)
            altered[key] = bytes(v)
            reqs.append((f"{key} byte {i}", decrypt_request(ct, kid, altered)))
        dropped = {k: v for k, v in ann.items() if k != key}
        reqs.append((f"{key} removed", decrypt_request(ct, kid, dropped)))
    if ann:
        added = dict(ann, **{"wrap-7.polykms.io": b"x"})
        reqs.append(("annotation added", decrypt_request(ct, kid, added)))
    return reqs


def check_tamper_proof(p, enc, seed):
    reqs = tamper_everything(p, enc)
    bad = refused(p, reqs)
    assert not bad, f"{len(bad)} of {len(reqs)} altered requests not refused: {bad[:10]}"
    # Still serving, and the intact envelope still decrypts.
    assert p.v2().Status(v2_pb2.StatusRequest(), timeout=5).healthz == "ok"
    out = p.v2().Decrypt(decrypt_request(enc.ciphertext, enc.key_id, dict(enc.annotations)), timeout=20)
    assert out.plaintext == seed
    return len(reqs)


@pytest.mark.parametrize("wraps", [["a"], ["a", "b"], ["a", "b", "c"]], ids=["1-wrap", "2-wraps", "3-wraps"])
def test_every_bit_flip_truncation_and_extension_is_refused(wraps, workdir, plugins):
    keys = local_keys(workdir, wraps)
    blocks = [local_block(n, keys[n]) for n in wraps]
    p = plugins(workdir, plugin_config(blocks, wraps, provider=PROVIDER))
    seed = os.urandom(32)
    enc = p.v2().Encrypt(v2_pb2.EncryptRequest(plaintext=seed, uid="tamper"), timeout=10)
    assert enc.ciphertext[:3] == b"PK\x03"
    n = check_tamper_proof(p, enc, seed)
    assert n >= 8 * len(enc.ciphertext)
    # Any one backend alone decrypts the intact envelope.
    for name in wraps:
        d = workdir / f"only-{name}"
        d.mkdir()
        alone = plugins(d, plugin_config([local_block(name, keys[name])], [name], provider=PROVIDER),
                        name=f"only-{name}")
        out = alone.v2().Decrypt(decrypt_request(enc.ciphertext, enc.key_id, dict(enc.annotations)), timeout=10)
        assert out.plaintext == seed, name


def test_wraps_in_annotations_are_covered_too(workdir, plugins):
    # Two RSA-4096 Key Vault keys: 512-byte wraps, so at least one moves to an annotation.
    big = [AzureStore(size=4096), AzureStore(size=4096)]
    keys = local_keys(workdir, ["a"])
    blocks = [local_block("a", keys["a"]), big[0].block("kv1"), big[1].block("kv2")]
    p = plugins(workdir, plugin_config(blocks, ["a", "kv1", "kv2"], provider=PROVIDER))
    seed = os.urandom(32)
    enc = p.v2().Encrypt(v2_pb2.EncryptRequest(plaintext=seed, uid="tamper"), timeout=20)
    assert enc.annotations, "expected wraps in annotations"
    assert len(enc.ciphertext) <= 1024
    check_tamper_proof(p, enc, seed)
    for i, (name, block) in enumerate([("a", blocks[0]), ("kv1", blocks[1]), ("kv2", blocks[2])]):
        d = workdir / f"only-{name}"
        d.mkdir()
        alone = plugins(d, plugin_config([block], [name], provider=PROVIDER), name=f"only-{name}")
        out = alone.v2().Decrypt(decrypt_request(enc.ciphertext, enc.key_id, dict(enc.annotations)), timeout=20)
        assert out.plaintext == seed, name


def parse_wraps(ct):
    """The wraps of an envelope as (flags, name, version, inline) byte strings, and whether a
    commitment follows (docs/envelope.md)."""
    count, at, wraps = ct[3], 4, []
    for _ in range(count):
        flags, nlen = ct[at], ct[at + 1]
        name = ct[at + 2:at + 2 + nlen]
        at += 2 + nlen
        vlen = int.from_bytes(ct[at:at + 2], "big")
        version = ct[at + 2:at + 2 + vlen]
        at += 2 + vlen
        clen = int.from_bytes(ct[at:at + 2], "big")
        inline = ct[at + 2:at + 2 + clen]
        at += 2 + clen
        wraps.append((flags, name, version, inline))
    assert len(ct) - at == (COMMITMENT_LEN if ct[2] >= 2 else 0)
    return wraps


def encode_v1(wraps):
    out = bytearray(b"PK\x01") + bytes([len(wraps)])
    for flags, name, version, inline in wraps:
        out += bytes([flags, len(name)]) + name
        out += len(version).to_bytes(2, "big") + version
        out += len(inline).to_bytes(2, "big") + inline
    return bytes(out)


def downgrades(encs):
    """What an etcd writer can make of envelopes that share backends and key versions: each
    rewritten as version 1 (commitment cut, format byte 1) or as version 2 (format byte 2), and
    version-1 envelopes whose wraps come from different envelopes (every mix of the first
    two). The key_id is the same for all (same backends and key versions)."""
    out = []
    for n, enc in enumerate(encs):
        ct, ann = enc.ciphertext, dict(enc.annotations)
        v1 = bytearray(ct[:-COMMITMENT_LEN])
        v1[2] = 1
        out.append((f"envelope {n} as v1", bytes(v1), ann))
        v2 = bytearray(ct)
        v2[2] = 2
        out.append((f"envelope {n} as v2", bytes(v2), ann))
    a, b = encs[0], encs[1]
    wa, wb = parse_wraps(a.ciphertext), parse_wraps(b.ciphertext)
    for mask in range(1, 2 ** len(wa) - 1):
        picks = [(wb if mask >> i & 1 else wa)[i] for i in range(len(wa))]
        ann = {}
        for i in range(len(wa)):
            src = b if mask >> i & 1 else a
            key = f"wrap-{i}.polykms.io"
            if key in src.annotations:
                ann[key] = src.annotations[key]
        out.append((f"spliced mask {mask:b}", encode_v1(picks), ann))
    return out


def check_downgrades_refused(nodes, encs):
    bad = []
    key_id = encs[0].key_id
    assert all(e.key_id == key_id for e in encs)
    for node_name, node in nodes:
        reqs = [(f"{what} at {node_name}", decrypt_request(ct, key_id, ann))
                for what, ct, ann in downgrades(encs)]
        bad += refused(node, reqs)
    assert not bad, bad


@pytest.mark.parametrize("wraps", [["a", "b"], ["a", "b", "c"]], ids=["2-wraps", "3-wraps"])
def test_downgrade_alone_and_with_spliced_wraps_is_refused_by_every_node(wraps, workdir, plugins):
    keys = local_keys(workdir, wraps)
    blocks = [local_block(n, keys[n]) for n in wraps]
    # The default config: accept_legacy_multi_wrap is left at its default (true).
    p = plugins(workdir, plugin_config(blocks, wraps, provider=PROVIDER))
    encs = [p.v2().Encrypt(v2_pb2.EncryptRequest(plaintext=os.urandom(32), uid="dg"), timeout=10)
            for _ in range(2)]
    nodes = [("all", p)]
    for name in wraps:
        d = workdir / f"only-{name}"
        d.mkdir()
        nodes.append((name, plugins(d, plugin_config([local_block(name, keys[name])], [name],
                                                        provider=PROVIDER), name=f"only-{name}")))
    check_downgrades_refused(nodes, encs)


def test_downgrade_of_wraps_in_annotations_is_refused_by_every_node(workdir, plugins):
    big = [AzureStore(size=4096), AzureStore(size=4096)]
    keys = local_keys(workdir, ["a"])
    blocks = [local_block("a", keys["a"]), big[0].block("kv1"), big[1].block("kv2")]
    names = ["a", "kv1", "kv2"]
    p = plugins(workdir, plugin_config(blocks, names, provider=PROVIDER))
    encs = [p.v2().Encrypt(v2_pb2.EncryptRequest(plaintext=os.urandom(32), uid="dg"), timeout=20)
            for _ in range(2)]
    assert all(e.annotations for e in encs)
    nodes = [("all", p)]
    for name, block in zip(names, blocks):
        d = workdir / f"only-{name}"
        d.mkdir()
        nodes.append((name, plugins(d, plugin_config([block], [name], provider=PROVIDER),
                                    name=f"only-{name}")))
    check_downgrades_refused(nodes, encs)


def test_version_2_envelopes_keep_decrypting(workdir, plugins):
    keys = {}
    for n in "abc":
        dst = workdir / f"{n}.key"
        shutil.copy(FIXTURES / f"{n}.key", dst)
        os.chmod(dst, 0o600)
        keys[n] = dst
    blocks = [local_block(n, keys[n]) for n in "abc"]
    p = plugins(workdir, plugin_config(blocks, ["a"], provider="fixtures"))
    data = json.loads((FIXTURES_V2 / "cases.json").read_text())
    cases = [c for c in data["cases"] if c["name"].startswith("local-")]
    assert len(cases) == 4
    for case in cases:
        ct = base64.b64decode(case["ciphertext_b64"])
        assert ct[:3] == b"PK\x02"
        out = p.v2().Decrypt(decrypt_request(ct, case["key_id"], {}), timeout=10)
        assert out.plaintext == base64.b64decode(case["plaintext_b64"]), case["name"]
    _, metrics = p.http("/metrics")
    assert "polykms_legacy_envelopes_total 0" in metrics


def load_v1_cases():
    data = json.loads((FIXTURES / "cases.json").read_text())
    return [c for c in data["cases"] if c["name"].startswith("local-")]


def v1_plugin(workdir, plugins, extra=""):
    keys = local_keys(workdir, ["a", "b", "c"])
    blocks = [local_block(n, keys[n]) for n in "abc"]
    return plugins(workdir, plugin_config(blocks, ["a"], provider="fixtures", extra=extra))


def test_version_1_envelopes_keep_decrypting_and_multi_wrap_ones_are_counted(workdir, plugins):
    p = v1_plugin(workdir, plugins)
    multi = 0
    for case in load_v1_cases():
        ct = base64.b64decode(case["ciphertext_b64"])
        assert ct[:3] == b"PK\x01"
        ann = {k: base64.b64decode(v) for k, v in case["annotations"].items()}
        for _ in range(2):
            out = p.v2().Decrypt(decrypt_request(ct, case["key_id"], ann), timeout=10)
            assert out.plaintext == base64.b64decode(case["plaintext_b64"]), case["name"]
        if len(case["encrypt_with"]) > 1:
            multi += 2
    _, metrics = p.http("/metrics")
    assert f"polykms_legacy_envelopes_total {multi}" in metrics
    # Logged once per distinct envelope, with no secret in the line. Log lines reach the file
    # through a batching writer a few milliseconds later: wait for them, then check no more come.
    def legacy_lines():
        return [line for line in p.logs().splitlines() if "version-1 multi-wrap" in line]
    deadline = time.time() + 10
    while len(legacy_lines()) < multi // 2 and time.time() < deadline:
        time.sleep(0.05)
    time.sleep(0.2)
    lines = legacy_lines()
    assert len(lines) == multi // 2, lines
    for case in load_v1_cases():
        assert case["plaintext_b64"] not in p.logs()


def test_version_1_multi_wrap_envelopes_can_be_refused(workdir, plugins):
    p = v1_plugin(workdir, plugins, extra="[decrypt]\naccept_legacy_multi_wrap = false\n")
    for case in load_v1_cases():
        ct = base64.b64decode(case["ciphertext_b64"])
        req = decrypt_request(ct, case["key_id"], {})
        if len(case["encrypt_with"]) > 1:
            with pytest.raises(grpc.RpcError) as e:
                p.v2().Decrypt(req, timeout=10)
            assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        else:
            assert p.v2().Decrypt(req, timeout=10).plaintext == base64.b64decode(case["plaintext_b64"])


def test_oversize_plaintext_is_refused_up_front_naming_backend_and_limit(workdir, plugins):
    # RSA-OAEP-256 on a 2048-bit key wraps 190 bytes, 32 of which carry the AAD digest.
    store = AzureStore(size=2048)
    p = plugins(workdir, plugin_config([store.block("kv")], ["kv"], provider=PROVIDER))
    with pytest.raises(grpc.RpcError) as e:
        p.v2().Encrypt(v2_pb2.EncryptRequest(plaintext=os.urandom(159), uid="big"), timeout=10)
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "backend kv" in e.value.details() and "at most 158" in e.value.details(), e.value.details()
    seed = os.urandom(158)
    enc = p.v2().Encrypt(v2_pb2.EncryptRequest(plaintext=seed, uid="big"), timeout=10)
    out = p.v2().Decrypt(decrypt_request(enc.ciphertext, enc.key_id, dict(enc.annotations)), timeout=10)
    assert out.plaintext == seed
