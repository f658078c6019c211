"""KMS v2 over the real socket with the local backend: the walking skeleton's contract."""

import os
import signal
import stat
import subprocess
import threading
import time

import grpc
import pytest

from conftest import BIN, keygen, local_config, v2_pb2

# What clients really send as :authority: grpcio's default for unix sockets is
# "localhost"; kube-apiserver 1.27-1.31 sends the socket path; grpcio with a path target in
# older versions percent-encodes it.
AUTHORITIES = [None, "localhost", "/var/run/kmsplugin/socket.sock", "tmp%2Fkms.sock", "a b/c?d#e"]


@pytest.fixture
def local_plugin(workdir, plugins):
    key = keygen(workdir / "current.key")
    return plugins(workdir, local_config([key]))


def encrypt(stub, plaintext, uid="uid-1"):
    return stub.Encrypt(v2_pb2.EncryptRequest(plaintext=plaintext, uid=uid), timeout=5)


def decrypt(stub, resp, **over):
    req = dict(ciphertext=resp.ciphertext, key_id=resp.key_id, annotations=dict(resp.annotations), uid="uid-2")
    req.update(over)
    return stub.Decrypt(v2_pb2.DecryptRequest(**req), timeout=5)


@pytest.mark.parametrize("authority", AUTHORITIES)
def test_round_trips_many_calls_on_one_connection_with_any_authority(local_plugin, authority):
    stub = local_plugin.v2(authority)
    status = stub.Status(v2_pb2.StatusRequest(), timeout=5)
    assert (status.version, status.healthz) == ("v2", "ok")
    assert 1 <= len(status.key_id) <= 1024
    # HPACK indexes the authority after the first request: later calls reference the table.
    for i in range(150):
        seed = os.urandom(32)
        enc = encrypt(stub, seed, uid=f"uid-{i}")
        assert enc.key_id == status.key_id
        assert 1 <= len(enc.ciphertext) <= 1024
        assert seed not in enc.ciphertext
        assert decrypt(stub, enc).plaintext == seed
        if i % 50 == 0:
            assert stub.Status(v2_pb2.StatusRequest(), timeout=5).key_id == status.key_id


def test_bad_inputs_get_clean_errors_and_the_socket_stays_served(local_plugin):
    stub = local_plugin.v2("/var/run/kmsplugin/socket.sock")
    enc = encrypt(stub, os.urandom(32))
    tampered = bytearray(enc.ciphertext)
    tampered[-1] ^= 1
    cases = [
        dict(ciphertext=b""),
        dict(ciphertext=b"x" * 1025),
        dict(key_id=""),
        dict(key_id="pk1-" + "0" * 32),
        dict(key_id="k" * 2000),
        dict(ciphertext=bytes(tampered)),
        dict(ciphertext=b"k8s:enc:kms:v2:not-ours"),
        dict(ciphertext=enc.ciphertext[:10]),
        dict(annotations={"evil.example.com": b"x"}),
        dict(annotations={"wrap-1.polykms.io": b"x"}),
    ]
    for over in cases:
        with pytest.raises(grpc.RpcError) as e:
            decrypt(stub, enc, **over)
        assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT, (over.keys(), e.value)
    for bad in (b"", b"x" * 257):
        with pytest.raises(grpc.RpcError) as e:
            encrypt(stub, bad)
        assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    # A 4 MiB message is refused by the size limit, not processed.
    with pytest.raises(grpc.RpcError) as e:
        encrypt(stub, b"x" * (4 * 1024 * 1024))
    # tonic reports its decoding limit as OUT_OF_RANGE.
    assert e.value.code() in (grpc.StatusCode.RESOURCE_EXHAUSTED, grpc.StatusCode.OUT_OF_RANGE)
    # Invalid UTF-8 in a string field is a protocol error for the request alone.
    with pytest.raises(grpc.RpcError):
        local_plugin.channel().unary_unary("/v2.KeyManagementService/Decrypt")(b"\x12\x02\xff\xfe", timeout=5)
    # Still serving, same connection and a new one.
    assert decrypt(stub, enc).plaintext
    assert local_plugin.v2().Status(v2_pb2.StatusRequest(), timeout=5).healthz == "ok"
    assert local_plugin.proc.poll() is None


def test_sixty_four_concurrent_clients(local_plugin):
    errors = []

    def worker(n):
        stub = local_plugin.v2("/var/run/kmsplugin/socket.sock" if n % 2 else None)
        try:
            for _ in range(25):
                seed = os.urandom(32)
                if decrypt(stub, encrypt(stub, seed)).plaintext != seed:
                    errors.append("mismatch")
        except grpc.RpcError as e:
            errors.append(repr(e))

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(64)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []


def test_rotation_prepend_key_and_restart(workdir, plugins):
    old_key = keygen(workdir / "old.key")
    p = plugins(workdir, local_config([old_key]))
    stub = p.v2()
    before = stub.Status(v2_pb2.StatusRequest(), timeout=5).key_id
    seed = os.urandom(32)
    old = encrypt(stub, seed)
    new_key = keygen(workdir / "new.key")
    p.stop()
    p.config.write_text(p.config.read_text().replace(f'["{old_key}"]', f'["{new_key}", "{old_key}"]'))
    p.start()
    stub = p.v2()
    after = stub.Status(v2_pb2.StatusRequest(), timeout=5).key_id
    assert after != before
    assert encrypt(stub, os.urandom(32)).key_id == after
    assert decrypt(stub, old).plaintext == seed


def test_socket_is_0600_and_removed_on_sigterm(local_plugin):
    mode = stat.S_IMODE(os.stat(local_plugin.socket).st_mode)
    assert mode == 0o600
    assert local_plugin.stop(signal.SIGTERM) == 0
    assert not os.path.exists(local_plugin.socket)


def test_sigterm_drains_in_flight_calls(local_plugin):
    stub = local_plugin.v2()
    results = []

    def worker():
        for _ in range(200):
            try:
                encrypt(stub, os.urandom(32))
                results.append("ok")
            except grpc.RpcError as e:
                results.append(e.code())
                return

    t = threading.Thread(target=worker)
    t.start()
    time.sleep(0.3)
    local_plugin.send_signal(signal.SIGTERM)
    t.join(10)
    assert local_plugin.proc.wait(10) == 0
    assert "ok" in results
    # Calls end cleanly (served, or refused once the listener closed), never mid-call failures.
    assert all(r == "ok" or r == grpc.StatusCode.UNAVAILABLE for r in results), results


def test_stale_socket_after_kill9_is_replaced_and_old_ciphertexts_decrypt(local_plugin):
    stub = local_plugin.v2()
    seed = os.urandom(32)
    enc = encrypt(stub, seed)
    local_plugin.kill9()
    assert os.path.exists(local_plugin.socket), "kill -9 leaves the socket file behind"
    local_plugin.start()
    assert decrypt(local_plugin.v2(), enc).plaintext == seed


def test_refuses_a_path_that_is_not_a_socket_and_keeps_it(workdir):
    key = keygen(workdir / "k.key")
    victim = workdir / "kms.sock"
    victim.write_text("precious")
    cfg = workdir / "c.toml"
    cfg.write_text(local_config([key]).replace("@SOCKET@", str(victim)).replace("@HTTP@", ""))
    r = subprocess.run([str(BIN), "serve", "--config", str(cfg)], capture_output=True, text=True, timeout=20)
    assert r.returncode != 0
    assert "not a socket" in r.stderr
    assert victim.read_text() == "precious"


def test_second_instance_does_not_steal_a_live_socket(local_plugin, workdir):
    cfg = workdir / "second.toml"
    cfg.write_text(local_plugin.config.read_text().replace(f"127.0.0.1:{local_plugin.http_port}", ""))
    r = subprocess.run([str(BIN), "serve", "--config", str(cfg)], capture_output=True, text=True, timeout=20)
    assert r.returncode != 0 and "another process" in r.stderr
    assert local_plugin.v2().Status(v2_pb2.StatusRequest(), timeout=5).healthz == "ok"


def test_abstract_socket(workdir, plugins):
    key = keygen(workdir / "k.key")
    name = f"polykms-test-{os.getpid()}"
    p = plugins(workdir, local_config([key]).replace('"@SOCKET@"', f'"@{name}"'), expect_ready=False)
    p.socket = f"@{name}"
    deadline = time.time() + 10
    while True:
        try:
            ch = grpc.insecure_channel(f"unix-abstract:{name}")
            from conftest import v2_grpc
            st = v2_grpc.KeyManagementServiceStub(ch).Status(v2_pb2.StatusRequest(), timeout=1)
            assert st.healthz == "ok"
            break
        except grpc.RpcError:
            assert time.time() < deadline, p.logs()
            time.sleep(0.05)


def test_parent_directory_is_created(workdir, plugins):
    key = keygen(workdir / "k.key")
    p = plugins(workdir, local_config([key]).replace("@SOCKET@", str(workdir / "run" / "kmsplugin" / "s.sock")),
                expect_ready=False)
    p.socket = str(workdir / "run" / "kmsplugin" / "s.sock")
    p.wait_ready()
    assert stat.S_IMODE(os.stat(workdir / "run" / "kmsplugin").st_mode) == 0o700
