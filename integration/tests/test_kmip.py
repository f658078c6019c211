"""The KMIP backend end to end: the real binary over the unix socket against a PyKMIP server
over mutual TLS (integration/servers/kmip.sh). Round trip, AAD binding and rotation run in
test_backends.py with the other key stores; here: revocation, destruction, a server outage,
`polykms check`, wrong client certificates, tampering and concurrency."""

import os
import subprocess
import threading

import grpc
import pytest

from conftest import BIN, ROOT, v2_pb2
from stores import KmipStore, plugin_config, need
from test_backends import decrypt, encrypt, status, wait

SCRIPT = ["bash", str(ROOT / "integration/servers/kmip.sh")]


def check(config):
    return subprocess.run([str(BIN), "check", "--config", str(config)], capture_output=True, text=True, timeout=60)


def test_kmip_check_prints_endpoint_negotiated_version_key_and_key_version(workdir, plugins):
    store = KmipStore()
    cfg = workdir / "kmip.toml"
    cfg.write_text(plugin_config([store.block("kmip")], ["kmip"]).replace("@SOCKET@", str(workdir / "s.sock"))
                   .replace("@HTTP@", ""))
    r = check(cfg)
    assert r.returncode == 0, r.stdout + r.stderr
    line = next(line for line in r.stdout.splitlines() if line.startswith("backend kmip"))
    assert store.endpoint in line and "KMIP 1.4" in line and f'key_name "{store.key}"' in line, line
    assert f"key version: {store.uids[0]}" in r.stdout, r.stdout


def test_kmip_revoked_key_is_unhealthy_and_decrypt_fails_precondition(workdir, plugins):
    store = KmipStore()
    p = plugins(workdir, plugin_config([store.block("kmip")], ["kmip"]), name="kmip")
    seed = os.urandom(32)
    enc = encrypt(p, seed)
    store.disable()
    wait(lambda: status(p).healthz != "ok", what="unhealthy after revocation")
    assert "kmip" in status(p).healthz
    assert p.http("/readyz")[0] == 503
    with pytest.raises(grpc.RpcError) as e:
        decrypt(p, enc)
    assert e.value.code() == grpc.StatusCode.FAILED_PRECONDITION, e.value
    assert store.uids[0] in e.value.details()
    with pytest.raises(grpc.RpcError) as e:
        encrypt(p, os.urandom(32))
    assert e.value.code() == grpc.StatusCode.FAILED_PRECONDITION, e.value


def test_kmip_destroyed_key_fails_precondition_naming_the_key_version(workdir, plugins):
    store = KmipStore()
    p = plugins(workdir, plugin_config([store.block("kmip")], ["kmip"]), name="kmip")
    enc = encrypt(p, os.urandom(32))
    store.destroy()
    with pytest.raises(grpc.RpcError) as e:
        decrypt(p, enc)
    assert e.value.code() == grpc.StatusCode.FAILED_PRECONDITION, e.value
    assert store.uids[0] in e.value.details()


def test_kmip_tampered_ciphertext_is_refused(workdir, plugins):
    store = KmipStore()
    p = plugins(workdir, plugin_config([store.block("kmip")], ["kmip"]), name="kmip")
    seed = os.urandom(32)
    enc = encrypt(p, seed)
    # The envelope ends with the KMIP wrap's GCM ciphertext, then a 32-byte commitment
    # (docs/envelope.md): the altered wrap reaches the KMIP server, whose tag check refuses it.
    bad = bytearray(enc.ciphertext)
    bad[-33] ^= 0x01
    with pytest.raises(grpc.RpcError) as e:
        p.v2().Decrypt(v2_pb2.DecryptRequest(ciphertext=bytes(bad), key_id=enc.key_id, uid="t"), timeout=10)
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT, e.value
    assert "wrong_key" in e.value.details() and store.uids[0] in e.value.details(), e.value.details()
    assert decrypt(p, enc) == seed


def test_kmip_wrong_client_certificate_is_a_clean_error(workdir, plugins):
    need("POLYKMS_KMIP_ROGUE_CERT_FILE")
    store = KmipStore()
    block = store.block("kmip", cert=os.environ["POLYKMS_KMIP_ROGUE_CERT_FILE"],
                        key=os.environ["POLYKMS_KMIP_ROGUE_KEY_FILE"])
    cfg = workdir / "rogue.toml"
    cfg.write_text(plugin_config([block], ["kmip"]).replace("@SOCKET@", str(workdir / "s.sock")).replace("@HTTP@", ""))
    r = check(cfg)
    assert r.returncode == 69, r.stdout + r.stderr
    assert "refused our client certificate" in r.stdout, r.stdout
    # Serving with it: up, unhealthy with the same reason, no crash.
    p = plugins(workdir, plugin_config([block], ["kmip"]), name="rogue")
    wait(lambda: status(p).healthz != "ok", what="unhealthy with a rogue certificate")
    assert "client certificate" in status(p).healthz
    assert p.proc.poll() is None


def test_kmip_server_stopped_and_restarted_recovers_without_restarting_the_plugin(workdir, plugins):
    store = KmipStore()
    p = plugins(workdir, plugin_config([store.block("kmip")], ["kmip"]), name="kmip")
    seed = os.urandom(32)
    enc = encrypt(p, seed)
    pid = p.proc.pid
    subprocess.run(SCRIPT + ["halt"], check=True)
    try:
        wait(lambda: status(p).healthz != "ok", what="unhealthy while the KMIP server is down")
        with pytest.raises(grpc.RpcError) as e:
            decrypt(p, enc)
        assert e.value.code() == grpc.StatusCode.UNAVAILABLE, e.value
    finally:
        subprocess.run(SCRIPT + ["resume"], check=True)
    wait(lambda: status(p).healthz == "ok", limit=30, what="healthy after the KMIP server is back")
    assert p.proc.pid == pid and p.proc.poll() is None
    assert decrypt(p, enc) == seed


def test_kmip_thirty_two_concurrent_clients(workdir, plugins):
    store = KmipStore()
    p = plugins(workdir, plugin_config([store.block("kmip")], ["kmip"]), name="kmip")
    errors = []

    def client(i):
        try:
            for _ in range(3):
                seed = os.urandom(32)
                enc = encrypt(p, seed)
                assert decrypt(p, enc) == seed
        except Exception as e:  # noqa: BLE001 — reported below with the client's number
            errors.append((i, repr(e)))

    threads = [threading.Thread(target=client, args=(i,)) for i in range(32)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not any(t.is_alive() for t in threads)
    assert errors == []
    assert status(p).healthz == "ok"


def test_example_kmip_config_parses_and_stops_at_its_missing_certificate_files():
    # configs/kmip.toml points at /etc/polykms/kmip/*: parsing and validation pass, and the
    # first file it needs is reported as a config error (exit 64) naming the field.
    r = check(ROOT / "configs" / "kmip.toml")
    assert r.returncode == 64, r.stdout + r.stderr
    assert "client_cert_file" in r.stderr and "/etc/polykms/kmip/client.pem" in r.stderr, r.stderr
