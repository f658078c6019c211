"""Encryption at rest, proven against a real etcd: `polykms audit`, the apiserver envelope
emulator, and the rotation and migration drills of docs/rotation.md.

Needs etcd (integration/servers/etcd.sh, env POLYKMS_ETCD_ENDPOINTS) and the emulator binary
(`cargo build -p polykms-apiserver-emulator`). Each test works under its own etcd key prefix and
deletes it afterwards."""

import base64
import json
import os
import subprocess
import textwrap
import time
import uuid
from pathlib import Path

import pytest
import requests
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDFExpand

from conftest import BIN, ROOT, free_port, keygen, local_config, v2_pb2

ETCD = os.environ.get("POLYKMS_ETCD_ENDPOINTS", "")
REQUIRED = os.environ.get("POLYKMS_REQUIRE_INTEGRATION") == "1"
EMULATOR = Path(os.environ.get(
    "POLYKMS_EMULATOR_BIN",
    Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "target")) / "debug" / "apiserver-emulator",
))


def _need(condition, why):
    if not condition:
        if REQUIRED:
            pytest.fail(why)
        pytest.skip(why)


@pytest.fixture
def etcd():
    _need(ETCD, "POLYKMS_ETCD_ENDPOINTS is unset (start integration/servers/etcd.sh)")
    return Etcd(ETCD.split(",")[0])


@pytest.fixture
def prefix(etcd):
    p = f"/polykms-test/{uuid.uuid4().hex[:12]}/secrets/"
    yield p
    etcd.delete_prefix(p)


@pytest.fixture
def emulator():
    _need(EMULATOR.exists(), f"{EMULATOR} missing: cargo build -p polykms-apiserver-emulator")

    def run(plugin, prefix, *args, check=True):
        cmd = [str(EMULATOR), "--socket", plugin.socket, "--etcd-endpoints", ETCD,
               "--prefix", prefix, *args]
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
        if check:
            assert r.returncode == 0, f"{cmd}: rc={r.returncode}\n{r.stdout}\n{r.stderr}"
        return json.loads(r.stdout) if r.stdout.strip() else None

    return run


class Etcd:
    """etcd's v3 JSON gateway: enough to plant raw values and clean up, no extra client."""

    def __init__(self, endpoint):
        self.url = endpoint.rstrip("/")

    @staticmethod
    def _b64(b):
        return base64.b64encode(b if isinstance(b, bytes) else b.encode()).decode()

    def _post(self, path, body):
        r = requests.post(f"{self.url}/v3/{path}", json=body, timeout=10)
        r.raise_for_status()
        return r.json()

    def put(self, key, value):
        self._post("kv/put", {"key": self._b64(key), "value": self._b64(value)})

    def get(self, key):
        kvs = self._post("kv/range", {"key": self._b64(key)}).get("kvs", [])
        return base64.b64decode(kvs[0]["value"]) if kvs else None

    def delete_prefix(self, prefix):
        end = prefix[:-1] + chr(ord(prefix[-1]) + 1)
        self._post("kv/deleterange", {"key": self._b64(prefix), "range_end": self._b64(end)})


def audit(prefix, *args, endpoints=None):
    cmd = [str(BIN), "audit", "--etcd-endpoints", endpoints or ETCD, "--prefix", prefix, *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120)


def audit_json(prefix, *args):
    r = audit(prefix, "--output", "json", *args)
    assert r.returncode in (0, 1), r.stderr
    return r.returncode, json.loads(r.stdout)


def key_id(plugin):
    return plugin.v2().Status(v2_pb2.StatusRequest(), timeout=5).key_id


def reconfigure(plugin, text):
    """Rewrites the plugin's config (same socket and HTTP port) and restarts it."""
    text = text.replace("@SOCKET@", plugin.socket).replace("@HTTP@", f"127.0.0.1:{plugin.http_port}")
    plugin.config.write_text(textwrap.dedent(text))
    plugin.restart()


def two_backend_config(a_keys, b_keys, encrypt_with):
    def files(keys):
        return "[" + ", ".join(f'"{k}"' for k in keys) + "]"

    text = local_config(a_keys).replace('name = "local"', 'name = "a"')
    text = text.replace('with = ["local"]', f'with = ["{encrypt_with}"]')
    if b_keys:
        text += f'\n[[backends]]\nname = "b"\ntype = "local"\nkey_files = {files(b_keys)}\n'
    return text


def test_audit_exit_codes_without_etcd(tmp_path):
    port = free_port()  # nothing listens there
    r = audit("/registry/secrets/", endpoints=f"http://127.0.0.1:{port}")
    assert r.returncode == 69, r.stdout + r.stderr
    assert "etcd" in r.stderr
    bad = {
        "--output": ["--output", "yaml"],
        "--cert and --key": ["--cert", str(tmp_path / "c.pem")],
        "--cacert": ["--cacert", str(tmp_path / "missing.pem")],
    }
    for needle, args in bad.items():
        r = audit("/registry/secrets/", *args, endpoints=f"http://127.0.0.1:{port}")
        assert r.returncode == 64, (needle, r.stderr)
        assert needle in r.stderr, (needle, r.stderr)
    r = subprocess.run([str(BIN), "audit"], capture_output=True, text=True, timeout=30)
    assert r.returncode == 64 and "--etcd-endpoints" in r.stderr


def test_audit_classifies_every_storage_format_and_names_offenders(etcd, prefix, emulator, workdir, plugins):
    p = plugins(workdir, local_config([keygen(workdir / "a.key")]))
    emulator(p, prefix, "write", "--namespace", "app", "--count", "20")
    emulator(p, prefix, "write-plaintext", "--namespace", "legacy", "--count", "2")
    etcd.put(f"{prefix}legacy/json", b'{"kind":"Secret"}')
    etcd.put(f"{prefix}old/cbc", b"k8s:enc:aescbc:v1:key1:" + os.urandom(48))
    etcd.put(f"{prefix}old/v1", b"k8s:enc:kms:v1:vault:" + os.urandom(40))
    etcd.put(f"{prefix}old/broken", b"k8s:enc:kms:v2:polykms:\xff\xff")
    rc, out = audit_json(prefix)
    assert rc == 1
    report = out["report"]
    assert report["total"] == 26
    assert report["classes"] == {"kms-v2": 20, "identity": 3, "aescbc": 1, "kms-v1": 1, "kms-v2-malformed": 1}
    assert report["kms_v2"] == {"polykms": {key_id(p): 20}}
    # Read from the envelope header alone: what this plugin writes is the current format version (3, crates/core FORMAT_CURRENT).
    assert report["envelope_formats"] == {"v3": 20}
    offenders = {f["key"] for f in report["findings"]}
    assert offenders == {f"{prefix}legacy/plain-00000", f"{prefix}legacy/plain-00001", f"{prefix}legacy/json",
                         f"{prefix}old/cbc", f"{prefix}old/v1", f"{prefix}old/broken"}
    table = audit(prefix)
    assert table.returncode == 1
    assert f"{prefix}old/cbc" in table.stdout and "6 key(s) FAIL" in table.stdout
    assert "ENVELOPE" in table.stdout and "v1-multi-wrap" not in table.stdout
    # The audit never prints what it read.
    assert etcd.get(f"{prefix}old/cbc")[23:].hex() not in table.stdout


def test_emulator_envelope_is_the_upstream_layout(etcd, prefix, emulator, workdir, plugins):
    """Reads an emulator-written Secret with an independent implementation of the apiserver's
    read path: protobuf EncryptedObject, Decrypt of the seed, HKDF-SHA256 Expand with the first
    32 bytes as info, AES-GCM with the next 12 as nonce and the etcd key as AAD."""
    p = plugins(workdir, local_config([keygen(workdir / "a.key")]))
    emulator(p, prefix, "write", "--namespace", "ns", "--count", "1")
    key = f"{prefix}ns/secret-00000"
    value = etcd.get(key)
    head = b"k8s:enc:kms:v2:polykms:"
    assert value.startswith(head)
    fields = parse_protobuf(value[len(head):])
    assert fields[5] == [1]  # HKDF_SHA256_XNONCE_AES_GCM_SEED
    assert fields[2] == [key_id(p).encode()]
    annotations = dict(parse_map_entry(e) for e in fields.get(4, []))
    seed = p.v2().Decrypt(v2_pb2.DecryptRequest(
        ciphertext=fields[3][0], uid=str(uuid.uuid4()), key_id=fields[2][0].decode(),
        annotations=annotations), timeout=5).plaintext
    assert len(seed) == 32
    data = fields[1][0]
    dek = HKDFExpand(algorithm=hashes.SHA256(), length=32, info=data[:32]).derive(seed)
    obj = json.loads(AESGCM(dek).decrypt(data[32:44], data[44:], key.encode()))
    assert obj["metadata"] == {"namespace": "ns", "name": "secret-00000"}
    with pytest.raises(Exception):
        AESGCM(dek).decrypt(data[32:44], data[44:], f"{prefix}ns/other".encode())


def test_rotation_drill(etcd, prefix, emulator, workdir, plugins):
    old_key = keygen(workdir / "old.key")
    p = plugins(workdir, local_config([old_key]))
    old_id = key_id(p)
    emulator(p, prefix, "write", "--namespace", "app", "--count", "200")
    emulator(p, prefix, "write-plaintext", "--namespace", "legacy", "--count", "3")

    rc, out = audit_json(prefix)
    assert rc == 1
    assert out["report"]["classes"] == {"kms-v2": 200, "identity": 3}
    assert out["report"]["findings_total"] == 3

    # Rotate: prepend a new key, restart: Status reports a new key_id.
    new_key = keygen(workdir / "new.key")
    reconfigure(p, local_config([new_key, old_key]))
    new_id = key_id(p)
    assert new_id != old_id
    rc, out = audit_json(prefix, "--expect-key-id", new_id)
    assert rc == 1 and out["report"]["findings_total"] == 203

    # The `kubectl replace` step.
    summary = emulator(p, prefix, "rewrite")
    assert summary["rewritten"] == 203 and summary["failed"] == 0
    assert summary["rewritten_from"] == {old_id: 200, "identity": 3}
    assert summary["decrypt_calls"] == 1  # one seed for all 200, as the apiserver caches it
    rc, out = audit_json(prefix, "--expect-key-id", new_id, "--expect-provider", "polykms")
    assert rc == 0, out
    assert out["report"]["kms_v2"] == {"polykms": {new_id: 203}}
    again = emulator(p, prefix, "rewrite")
    assert again["rewritten"] == 0 and again["unchanged"] == 203

    # Old key removed: everything still reads.
    reconfigure(p, local_config([new_key]))
    assert key_id(p) == new_id
    read = emulator(p, prefix, "read-all")
    assert read["read"] == 203 and read["failed"] == 0 and read["kms_v2_key_ids"] == {new_id: 203}


def test_removing_the_old_key_before_rewrite_breaks_reads(etcd, prefix, emulator, workdir, plugins):
    # The counterpart of the drill's last step: it is the rewrite that makes removal safe.
    old_key = keygen(workdir / "old.key")
    p = plugins(workdir, local_config([old_key]))
    emulator(p, prefix, "write", "--namespace", "app", "--count", "5")
    reconfigure(p, local_config([keygen(workdir / "new.key")]))
    r = emulator(p, prefix, "read-all", check=False)
    assert r["failed"] == 5 and r["read"] == 0


def test_migration_drill_local_a_to_local_b(etcd, prefix, emulator, workdir, plugins):
    a_key, b_key = keygen(workdir / "a.key"), keygen(workdir / "b.key")
    p = plugins(workdir, two_backend_config([a_key], None, "a"))
    a_id = key_id(p)
    emulator(p, prefix, "write", "--namespace", "app", "--count", "200")
    rc, _ = audit_json(prefix, "--expect-key-id", a_id)
    assert rc == 0

    # Add B, encrypt with B; A stays for reads.
    reconfigure(p, two_backend_config([a_key], [b_key], "b"))
    b_id = key_id(p)
    assert b_id != a_id
    rc, out = audit_json(prefix, "--expect-key-id", b_id)
    assert rc == 1 and out["report"]["findings_total"] == 200
    summary = emulator(p, prefix, "rewrite")
    assert summary["rewritten"] == 200 and summary["rewritten_from"] == {a_id: 200}
    rc, out = audit_json(prefix, "--expect-key-id", b_id)
    assert rc == 0, out

    # Remove A: only B is configured, everything reads.
    text = local_config([b_key]).replace('name = "local"', 'name = "b"').replace('with = ["local"]', 'with = ["b"]')
    reconfigure(p, text)
    assert key_id(p) == b_id
    read = emulator(p, prefix, "read-all")
    assert read["read"] == 200 and read["failed"] == 0


def parse_varint(buf, i):
    shift = value = 0
    while True:
        b = buf[i]
        i += 1
        value |= (b & 0x7F) << shift
        shift += 7
        if b < 0x80:
            return value, i


def parse_protobuf(buf):
    """Field number -> list of values (varints as int, length-delimited as bytes)."""
    fields, i = {}, 0
    while i < len(buf):
        tag, i = parse_varint(buf, i)
        number, wire = tag >> 3, tag & 7
        if wire == 0:
            v, i = parse_varint(buf, i)
        elif wire == 2:
            n, i = parse_varint(buf, i)
            v, i = buf[i:i + n], i + n
        else:
            raise AssertionError(f"unexpected wire type {wire}")
        fields.setdefault(number, []).append(v)
    return fields


def parse_map_entry(entry):
    f = parse_protobuf(entry)
    return f[1][0].decode(), f.get(2, [b""])[0]


def test_audit_of_a_prefix_that_holds_nothing_fails_and_says_so(etcd, prefix, emulator, workdir, plugins):
    # A canary that is gone, or a mistyped --prefix, must not pass: nothing was checked.
    r = audit(prefix + "canary/")
    assert r.returncode == 1, r.stdout + r.stderr
    assert f"no key under {prefix}canary/" in r.stderr and "nothing was checked" in r.stderr
    assert "FAIL: no keys under" in r.stdout
    rc, out = audit_json(prefix + "canary/")
    assert rc == 1 and out["passed"] is False and out["report"]["total"] == 0
    # The same prefix with one value under the expected key passes.
    p = plugins(workdir, local_config([keygen(workdir / "a.key")]))
    emulator(p, prefix, "write", "--namespace", "canary", "--count", "1")
    rc, out = audit_json(prefix + "canary/", "--expect-key-id", key_id(p))
    assert rc == 0 and out["passed"] is True


def audit_config(workdir, key_files):
    """A polykms config for `audit --config`: the local backend with these key files."""
    path = workdir / f"audit-{uuid.uuid4().hex[:6]}.toml"
    text = local_config(key_files).replace("@SOCKET@", str(workdir / "unused.sock")).replace("@HTTP@", "")
    path.write_text(textwrap.dedent(text))
    return path


def census_rows(out):
    return {(r["backend"], r["key_version"]): r for r in out["census"]["key_versions"]}


def test_retiring_the_older_key_is_proven_unsafe_until_its_objects_are_rewritten(
        etcd, prefix, emulator, workdir, plugins):
    k1, k2 = keygen(workdir / "k1.key"), keygen(workdir / "k2.key")
    p = plugins(workdir, local_config([k1]))
    emulator(p, prefix, "write", "--namespace", "app", "--count", "7")
    reconfigure(p, local_config([k2, k1]))
    emulator(p, prefix, "write", "--namespace", "new", "--count", "3")

    # The census: two key versions of the local backend, one DEK envelope each.
    rc, out = audit_json(prefix)
    assert rc == 0, out
    rows = census_rows(out)
    assert len(rows) == 2 and {k[0] for k in rows} == {"local"}
    by_count = {r["objects"]: r for r in rows.values()}
    old, new = by_count[7], by_count[3]
    assert old["dek_envelopes"] == 1 and new["dek_envelopes"] == 1
    assert old["resources"] == {prefix: 7}  # outside --etcd-prefix: named by the prefix
    assert out["census"]["objects"] == 10 and out["census"]["dek_envelopes"] == 2
    assert out["unwrap"] is None
    rc, out = audit_json(prefix, "--etcd-prefix", prefix.rsplit("/secrets/", 1)[0])
    assert census_rows(out)[("local", old["key_version"])]["resources"] == {"secrets": 7}
    table = audit(prefix)
    assert "DEK ENVELOPES BY WRAP: 10 KMS value(s), 2 distinct DEK envelope(s)" in table.stdout
    assert old["key_version"] in table.stdout and new["key_version"] in table.stdout

    # Only the newer key: the 7 objects under k1 would become unreadable.
    only_new = audit_config(workdir, [k2])
    r = audit(prefix, "--config", str(only_new), "--unwrap")
    assert r.returncode == 1, r.stdout + r.stderr
    assert "7 object(s) would become unreadable" in r.stderr, r.stderr
    assert f"local {old['key_version']}" in r.stderr
    assert f"UNREADABLE under local {old['key_version']}: 7 object(s), 1 DEK envelope(s) (key_unavailable: 1)" in r.stdout
    assert f"{prefix}app/secret-00000" in r.stdout and f"{prefix}app/secret-00004" in r.stdout
    assert f"{prefix}app/secret-00005" not in r.stdout and "... and 2 more" in r.stdout
    assert f"{prefix}new/" not in r.stdout  # readable ones are not listed
    rc, out = audit_json(prefix, "--config", str(only_new))  # --config alone implies --unwrap
    assert rc == 1 and out["passed"] is False
    u = out["unwrap"]
    assert (u["dek_envelopes"], u["unwrap_calls"], u["readable_objects"], u["unreadable_objects"]) == (2, 2, 3, 7)
    [group] = u["unreadable"]
    assert group["key_versions"] == [{"backend": "local", "key_version": old["key_version"]}]
    assert group["objects"] == 7 and group["reasons"] == {"key_unavailable": 1}
    assert group["first_objects"] == [f"{prefix}app/secret-0000{i}" for i in range(5)]

    # Both keys: every object stays readable.
    both = audit_config(workdir, [k2, k1])
    r = audit(prefix, "--config", str(both), "--unwrap")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "OK: every object's DEK envelope unwraps through --config" in r.stdout
    rc, out = audit_json(prefix, "--config", str(both), "--unwrap")
    assert rc == 0 and out["unwrap"]["readable_objects"] == 10 and out["unwrap"]["unreadable"] == []

    # The drill's order: rewrite, then the newer key alone proves safe.
    emulator(p, prefix, "rewrite")
    r = audit(prefix, "--config", str(only_new), "--unwrap")
    assert r.returncode == 0, r.stdout + r.stderr
    # Seeds and wrapped keys are never printed.
    for text in (r.stdout, r.stderr):
        assert k1.read_bytes().hex() not in text and k2.read_bytes().hex() not in text


def test_unwrap_refuses_a_missing_config_and_an_empty_prefix_or_resource(etcd, prefix, emulator, workdir, plugins):
    r = audit(prefix, "--unwrap")
    assert r.returncode == 64, r.stderr
    assert "--unwrap needs --config" in r.stderr
    k = keygen(workdir / "k.key")
    config = audit_config(workdir, [k])
    r = audit(prefix + "nothing/", "--config", str(config), "--unwrap")
    assert r.returncode == 1, r.stdout + r.stderr
    assert f"no key under {prefix}nothing/" in r.stderr and "nothing was checked" in r.stderr
    for bad in (["--qps=-1"], ["--concurrency", "0"]):
        r = audit(prefix, "--config", str(config), *bad)
        assert r.returncode == 64 and bad[0].split("=")[0] in r.stderr, r.stderr
    r = audit(prefix, "--config", str(workdir / "missing.toml"))
    assert r.returncode == 64, r.stderr

    # --resources: each resource named must hold a value.
    p = plugins(workdir, local_config([k]))
    root = prefix.rsplit("/secrets/", 1)[0]
    emulator(p, prefix, "write", "--namespace", "app", "--count", "2")

    def by_resource(*args):
        cmd = [str(BIN), "audit", "--etcd-endpoints", ETCD, "--etcd-prefix", root, "--config", str(config), *args]
        return subprocess.run(cmd, capture_output=True, text=True, timeout=120)

    r = by_resource("--resources", "secrets", "--output", "json")
    assert r.returncode == 0, r.stdout + r.stderr
    out = json.loads(r.stdout)
    assert out["scanned"] == [{"resource": "secrets", "prefix": prefix, "keys": 2}]
    assert census_rows(out) and all(row["resources"] == {"secrets": 2} for row in census_rows(out).values())
    r = by_resource("--resources", "secrets,configmaps")
    assert r.returncode == 1, r.stdout + r.stderr
    assert f"resource configmaps holds no key under {root}/configmaps/" in r.stderr
    r = by_resource("--resources", "secrets", "--prefix", prefix)
    assert r.returncode == 64 and "--prefix" in r.stderr, r.stderr
    etcd.delete_prefix(f"{root}/configmaps/")


def test_kms_v1_values_are_unwrapped_once_per_object_within_qps(etcd, prefix, emulator, workdir, plugins):
    k1, k2 = keygen(workdir / "k1.key"), keygen(workdir / "k2.key")
    p = plugins(workdir, local_config([k1]))
    emulator(p, prefix, "write", "--namespace", "v1", "--count", "12", "--kms-v1")
    rc, out = audit_json(prefix, "--allow-kms-v1")
    assert rc == 0, out
    assert out["report"]["classes"] == {"kms-v1": 12}
    [row] = out["census"]["key_versions"]
    assert row["objects"] == 12 and row["dek_envelopes"] == 12

    config = audit_config(workdir, [k1])
    started = time.monotonic()
    rc, out = audit_json(prefix, "--allow-kms-v1", "--config", str(config), "--qps", "10", "--concurrency", "2")
    elapsed = time.monotonic() - started
    assert rc == 0, out
    assert out["unwrap"]["unwrap_calls"] == 12 and out["unwrap"]["readable_objects"] == 12
    assert elapsed >= 1.1, elapsed  # 12 calls at 10 per second: the last one 1.1 s after the first

    # Without k1, every KMS v1 object is listed under k1's key version.
    rc, out = audit_json(prefix, "--allow-kms-v1", "--config", str(audit_config(workdir, [k2])), "--qps", "0")
    assert rc == 1
    [group] = out["unwrap"]["unreadable"]
    assert group["key_versions"] == [{"backend": "local", "key_version": row["key_version"]}]
    assert group["objects"] == 12 and group["dek_envelopes"] == 12 and len(group["first_objects"]) == 5
