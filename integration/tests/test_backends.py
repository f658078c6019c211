"""Every remote backend end to end: the real binary over the unix socket, against moto_server
(AWS), OpenBao (Vault Transit) and the GCP / Azure protocol fakes."""

import os
import time

import grpc
import pytest

from conftest import keygen, v2_pb2
from stores import STORES, AzureStore, GcpStore, plugin_config


def status(p):
    return p.v2().Status(v2_pb2.StatusRequest(), timeout=5)


def encrypt(p, seed):
    return p.v2("/var/run/kmsplugin/socket.sock").Encrypt(v2_pb2.EncryptRequest(plaintext=seed, uid="e2e"), timeout=10)


def decrypt(p, enc):
    return p.v2().Decrypt(v2_pb2.DecryptRequest(ciphertext=enc.ciphertext, key_id=enc.key_id,
                                                annotations=dict(enc.annotations), uid="e2e"), timeout=10).plaintext


def wait(cond, limit=15, what="condition"):
    deadline = time.time() + limit
    while not cond():
        assert time.time() < deadline, f"{what} not reached in {limit}s"
        time.sleep(0.1)


@pytest.fixture(params=sorted(STORES))
def store(request):
    return STORES[request.param]()


def test_round_trip_and_key_id_matches_status(store, workdir, plugins):
    p = plugins(workdir, plugin_config([store.block("remote")], ["remote"]), name=store.kind)
    st = status(p)
    assert st.healthz == "ok", st.healthz
    for _ in range(5):
        seed = os.urandom(32)
        enc = encrypt(p, seed)
        assert enc.key_id == st.key_id
        assert len(enc.ciphertext) <= 1024
        assert decrypt(p, enc) == seed


def test_ciphertext_bound_to_provider_name(store, workdir, plugins):
    a = plugins(workdir, plugin_config([store.block("remote")], ["remote"], provider="cluster-a"), name="a")
    other = workdir / "b"
    other.mkdir()
    b = plugins(other, plugin_config([store.block("remote")], ["remote"], provider="cluster-b"), name="b")
    enc = encrypt(a, os.urandom(32))
    with pytest.raises(grpc.RpcError) as e:
        decrypt(b, enc)
    assert e.value.code() in (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.PERMISSION_DENIED), e.value


def test_rotation_changes_key_id_and_old_ciphertexts_decrypt(store, workdir, plugins):
    p = plugins(workdir, plugin_config([store.block("remote")], ["remote"]), name=store.kind)
    before = status(p).key_id
    seed = os.urandom(32)
    old = encrypt(p, seed)
    store.rotate()
    wait(lambda: status(p).key_id != before, what="new key_id after rotation")
    new = encrypt(p, os.urandom(32))
    assert new.key_id == status(p).key_id != before
    assert decrypt(p, old) == seed


@pytest.mark.parametrize("kind", ["aws", "gcp", "azure"])
def test_disabled_key_makes_status_unhealthy_and_enabling_recovers(kind, workdir, plugins):
    store = STORES[kind]()
    p = plugins(workdir, plugin_config([store.block("remote")], ["remote"]), name=kind)
    assert status(p).healthz == "ok"
    store.disable()
    wait(lambda: status(p).healthz != "ok", what="unhealthy after disable")
    assert "remote" in status(p).healthz
    code, _ = p.http("/readyz")
    assert code == 503
    store.enable()
    wait(lambda: status(p).healthz == "ok", what="healthy after enable")
    assert p.http("/readyz")[0] == 200
    assert p.proc.poll() is None


def test_aws_emulator_outage_is_reported_and_recovers(workdir, plugins):
    import subprocess

    from conftest import ROOT

    store = STORES["aws"]()
    p = plugins(workdir, plugin_config([store.block("remote")], ["remote"]), name="aws")
    enc = encrypt(p, b"s" * 32)
    moto = ["bash", str(ROOT / "integration/servers/moto.sh")]
    subprocess.run(moto + ["pause"], check=True)
    try:
        wait(lambda: status(p).healthz != "ok", what="unhealthy while moto is frozen")
        started = time.time()
        with pytest.raises(grpc.RpcError) as e:
            p.v2().Decrypt(v2_pb2.DecryptRequest(ciphertext=enc.ciphertext, key_id=enc.key_id, uid="x"), timeout=3)
        assert e.value.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)
        assert time.time() - started < 4.5
    finally:
        subprocess.run(moto + ["resume"], check=True)
    wait(lambda: status(p).healthz == "ok", what="healthy after moto resumes")
    assert decrypt(p, enc) == b"s" * 32


def test_gcp_corrupted_checksums_are_rejected(workdir, plugins):
    store = GcpStore()
    p = plugins(workdir, plugin_config([store.block("remote")], ["remote"]), name="gcp")
    # More corrupted answers than the retry budget: Encrypt must fail, never accept them.
    store.control("corrupt-next", {"field": "ciphertextCrc32c", "count": 10, "method": "encrypt", "key": store.key})
    with pytest.raises(grpc.RpcError) as e:
        encrypt(p, os.urandom(32))
    assert e.value.code() == grpc.StatusCode.UNAVAILABLE
    assert "integrity" in e.value.details()
    store.control("reset", {})
    # One corrupted answer is retried and the call succeeds.
    store.control("corrupt-next", {"field": "ciphertextCrc32c", "count": 1, "method": "encrypt", "key": store.key})
    seed = os.urandom(32)
    assert decrypt(p, encrypt(p, seed)) == seed


def test_azure_429_with_retry_after_is_retried(workdir, plugins):
    store = AzureStore()
    p = plugins(workdir, plugin_config([store.block("remote")], ["remote"]), name="azure")
    store.fault(1, 429, 1)
    seed = os.urandom(32)
    enc = encrypt(p, seed)
    assert decrypt(p, enc) == seed


def test_migration_aws_to_local_and_back_without_losing_data(workdir, plugins):
    aws = STORES["aws"]()
    key = keygen(workdir / "local.key")
    local_block = f'[[backends]]\nname = "local"\ntype = "local"\nkey_files = ["{key}"]\n'
    blocks = [aws.block("aws"), local_block]
    p = plugins(workdir, plugin_config(blocks, ["aws"]), name="mig")
    s1 = os.urandom(32)
    e1 = encrypt(p, s1)
    kid_aws = e1.key_id
    # Switch encrypt.with to local and reload with SIGHUP: key_id changes, old data decrypts.
    import signal

    p.config.write_text(p.config.read_text().replace('with = ["aws"]', 'with = ["local"]'))
    p.send_signal(signal.SIGHUP)
    wait(lambda: status(p).key_id != kid_aws, what="key_id change after SIGHUP")
    s2 = os.urandom(32)
    e2 = encrypt(p, s2)
    assert decrypt(p, e1) == s1 and decrypt(p, e2) == s2
    # And back to AWS.
    p.config.write_text(p.config.read_text().replace('with = ["local"]', 'with = ["aws"]'))
    p.send_signal(signal.SIGHUP)
    wait(lambda: status(p).key_id == kid_aws, what="key_id back to aws")
    assert decrypt(p, e1) == s1 and decrypt(p, e2) == s2


def test_multi_wrap_across_clouds_survives_losing_one(workdir, plugins):
    gcp, azure = GcpStore(), AzureStore()
    p = plugins(workdir, plugin_config([gcp.block("gcp"), azure.block("azure")], ["gcp", "azure"]), name="multi")
    seed = os.urandom(32)
    enc = encrypt(p, seed)
    # A node that only has azure configured still decrypts (disaster recovery).
    other = workdir / "dr"
    other.mkdir()
    dr = plugins(other, plugin_config([azure.block("azure")], ["azure"]), name="dr")
    assert decrypt(dr, enc) == seed
