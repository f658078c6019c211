"""What each kube-apiserver generation does with the plugin, replayed: startup (Status, one
Encrypt per key_id, a burst of Decrypts of the same few seeds) and steady state (Status polling),
for KMS v2 with status_version "v2" and "v2beta1", and for KMS v1beta1."""

import os
import signal
import threading
from concurrent.futures import ThreadPoolExecutor

import grpc
import pytest

from conftest import keygen, local_config, v1_pb2, v2_pb2

SOCKET_PATH_AUTHORITY = "/var/run/kmsplugin/socket.sock"  # what 1.27-1.31 send


def replay_v2(stub, expected_version):
    # Startup: Status, then one Encrypt for the current key_id.
    st = stub.Status(v2_pb2.StatusRequest(), timeout=3)
    assert (st.version, st.healthz) == (expected_version, "ok")
    seeds = [os.urandom(32) for _ in range(4)]
    encs = [stub.Encrypt(v2_pb2.EncryptRequest(plaintext=s, uid=f"enc-{i}"), timeout=3) for i, s in enumerate(seeds)]
    assert all(e.key_id == st.key_id for e in encs)

    # Reads of existing Secrets after a restart: identical concurrent Decrypts, no de-duplication.
    def read(i):
        e = encs[i % 4]
        out = stub.Decrypt(v2_pb2.DecryptRequest(ciphertext=e.ciphertext, key_id=e.key_id,
                                                 annotations=dict(e.annotations), uid=f"dec-{i}"), timeout=3)
        return out.plaintext == seeds[i % 4]

    with ThreadPoolExecutor(32) as pool:
        assert all(pool.map(read, range(256)))
    # Steady state: Status polling; version and key_id never change.
    for _ in range(50):
        again = stub.Status(v2_pb2.StatusRequest(), timeout=3)
        assert (again.version, again.healthz, again.key_id) == (expected_version, "ok", st.key_id)
    return st


@pytest.mark.parametrize("generation,status_version,authority", [
    ("1.27-1.28", "v2beta1", SOCKET_PATH_AUTHORITY),
    ("1.29-1.31", "v2", SOCKET_PATH_AUTHORITY),
    ("1.29-1.31 with v2beta1", "v2beta1", SOCKET_PATH_AUTHORITY),
    ("1.32+", "v2", "localhost"),
])
def test_kms_v2_generations(generation, status_version, authority, workdir, plugins):
    key = keygen(workdir / "k.key")
    p = plugins(workdir, local_config([key], status_version=status_version))
    replay_v2(p.v2(authority), status_version)


def test_status_version_never_changes_across_reload(workdir, plugins):
    key = keygen(workdir / "k.key")
    p = plugins(workdir, local_config([key], status_version="v2beta1"))
    stub = p.v2()
    assert stub.Status(v2_pb2.StatusRequest(), timeout=3).version == "v2beta1"
    p.config.write_text(p.config.read_text().replace('status_version = "v2beta1"', 'status_version = "v2"'))
    p.send_signal(signal.SIGHUP)
    for _ in range(20):
        assert stub.Status(v2_pb2.StatusRequest(), timeout=3).version == "v2beta1"
    assert "restart" in p.logs()


def test_kms_v1beta1_is_served_with_the_same_backends(workdir, plugins):
    key = keygen(workdir / "k.key")
    p = plugins(workdir, local_config([key], apis=("v2", "v1beta1")))
    v1 = p.v1(SOCKET_PATH_AUTHORITY)
    ver = v1.Version(v1_pb2.VersionRequest(version="v1beta1"), timeout=3)
    assert (ver.version, ver.runtime_name) == ("v1beta1", "polykms")
    assert ver.runtime_version
    with pytest.raises(grpc.RpcError) as e:
        v1.Version(v1_pb2.VersionRequest(version="v2"), timeout=3)
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    # v1 calls Encrypt on every write: many concurrent writers.
    errors = []

    def writer(n):
        try:
            for _ in range(40):
                dek = os.urandom(32)
                c = v1.Encrypt(v1_pb2.EncryptRequest(version="v1beta1", plain=dek), timeout=3).cipher
                assert 1 <= len(c) <= 1024
                if v1.Decrypt(v1_pb2.DecryptRequest(version="v1beta1", cipher=c), timeout=3).plain != dek:
                    errors.append("mismatch")
        except grpc.RpcError as err:
            errors.append(repr(err))

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(32)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    # Both APIs on one socket, same envelope: a v1 ciphertext decrypts through v2 and back.
    dek = os.urandom(32)
    c1 = v1.Encrypt(v1_pb2.EncryptRequest(version="v1beta1", plain=dek), timeout=3).cipher
    v2 = p.v2()
    kid = v2.Status(v2_pb2.StatusRequest(), timeout=3).key_id
    assert v2.Decrypt(v2_pb2.DecryptRequest(ciphertext=c1, key_id=kid, uid="x"), timeout=3).plaintext == dek
    # Its own metric labels.
    _, metrics = p.http("/metrics")
    assert 'polykms_requests_total{api="v1beta1",method="Encrypt",code="OK"}' in metrics
    assert 'polykms_requests_total{api="v2",method="Decrypt",code="OK"}' in metrics


def test_v1beta1_only_plugin_does_not_serve_v2(workdir, plugins):
    key = keygen(workdir / "k.key")
    p = plugins(workdir, local_config([key], apis=("v1beta1",)), expect_ready=False)
    import time

    deadline = time.time() + 20
    while True:
        try:
            p.v1().Version(v1_pb2.VersionRequest(version="v1beta1"), timeout=1)
            break
        except grpc.RpcError:
            assert time.time() < deadline, p.logs()
            time.sleep(0.05)
    with pytest.raises(grpc.RpcError) as e:
        p.v2().Status(v2_pb2.StatusRequest(), timeout=3)
    assert e.value.code() == grpc.StatusCode.UNIMPLEMENTED
