"""The PKCS#11 backend end to end: the real binary over the unix socket, against SoftHSM2 tokens
made by integration/servers/softhsm.sh (the shared token) and by these tests (tokens of their
own, for rotation, deletion and re-creation), with key objects made by pkcs11-tool."""

import os
import re
import subprocess
import threading
import uuid

import grpc
import pytest

from conftest import BIN, ROOT, keygen, v2_pb2
from stores import need, plugin_config, toml_str

EXIT_CONFIG = 64


def env():
    need("SOFTHSM2_CONF", "POLYKMS_PKCS11_MODULE", "POLYKMS_PKCS11_TOKEN_LABEL",
         "POLYKMS_PKCS11_PIN_FILE", "POLYKMS_PKCS11_KEY_LABEL")
    return os.environ


def status(p):
    return p.v2().Status(v2_pb2.StatusRequest(), timeout=5)


def encrypt(p, seed):
    return p.v2().Encrypt(v2_pb2.EncryptRequest(plaintext=seed, uid="e2e"), timeout=10)


def decrypt(p, enc):
    return p.v2().Decrypt(v2_pb2.DecryptRequest(ciphertext=enc.ciphertext, key_id=enc.key_id,
                                                annotations=dict(enc.annotations), uid="e2e"),
                          timeout=10).plaintext


def wait(cond, limit=15, what="condition"):
    import time
    deadline = time.time() + limit
    while not cond():
        assert time.time() < deadline, f"{what} not reached in {limit}s"
        time.sleep(0.1)


def hsm_block(name, token_label, pin_file, max_sessions=8, mechanism="aes-gcm"):
    e = env()
    return (f'[[backends]]\nname = "{name}"\ntype = "pkcs11"\nmodule = {toml_str(e["POLYKMS_PKCS11_MODULE"])}\n'
            f'token_label = {toml_str(token_label)}\npin_file = {toml_str(pin_file)}\n'
            f'key_label = {toml_str(e["POLYKMS_PKCS11_KEY_LABEL"])}\nmechanism = "{mechanism}"\n'
            f'max_sessions = {max_sessions}\n')


def shared_block(name="hsm", **kw):
    e = env()
    return hsm_block(name, e["POLYKMS_PKCS11_TOKEN_LABEL"], e["POLYKMS_PKCS11_PIN_FILE"], **kw)


NO_CACHE = "[decrypt]\ncache_size = 0\n"


class Token:
    """A SoftHSM2 token of the test's own, deleted at the end."""

    def __init__(self, workdir):
        e = env()
        self.module = e["POLYKMS_PKCS11_MODULE"]
        self.key_label = e["POLYKMS_PKCS11_KEY_LABEL"]
        self.label = f"e2e-{uuid.uuid4().hex[:12]}"
        self.pin = uuid.uuid4().hex[:16]
        self.so_pin = uuid.uuid4().hex[:16]
        self.pin_file = workdir / f"{self.label}.pin"
        self.pin_file.write_text(self.pin + "\n")
        os.chmod(self.pin_file, 0o600)
        self.init()

    def init(self):
        subprocess.run(["softhsm2-util", "--init-token", "--free", "--label", self.label,
                        "--so-pin", self.so_pin, "--pin", self.pin], check=True, capture_output=True)

    def delete(self):
        subprocess.run(["softhsm2-util", "--delete-token", "--token", self.label], check=True,
                       capture_output=True)

    def tool(self, *args):
        return subprocess.run(["pkcs11-tool", "--module", self.module, "--token-label", self.label,
                               "--login", "--pin", self.pin, *args], check=True, capture_output=True)

    def keygen(self, key_id):
        self.tool("--keygen", "--key-type", "AES:32", "--sensitive", "--label", self.key_label,
                  "--id", key_id)

    def delete_key(self, key_id):
        self.tool("--delete-object", "--type", "secrkey", "--label", self.key_label, "--id", key_id)

    def block(self, name="hsm", **kw):
        return hsm_block(name, self.label, str(self.pin_file), **kw)


@pytest.fixture
def token(workdir):
    t = Token(workdir)
    t.keygen("01")
    yield t
    subprocess.run(["softhsm2-util", "--delete-token", "--token", t.label], capture_output=True)


@pytest.mark.parametrize("mechanism", ["aes-gcm", "aes-key-wrap-pad"])
def test_round_trip_key_id_matches_status(mechanism, workdir, plugins):
    p = plugins(workdir, plugin_config([shared_block(mechanism=mechanism)], ["hsm"]), name="hsm")
    st = status(p)
    assert st.healthz == "ok", st.healthz
    for _ in range(5):
        seed = os.urandom(32)
        enc = encrypt(p, seed)
        assert enc.key_id == st.key_id
        assert len(enc.ciphertext) <= 1024
        assert decrypt(p, enc) == seed


def test_check_prints_module_token_mechanism_and_key_version(workdir, plugins):
    e = env()
    cfg = workdir / "check.toml"
    cfg.write_text(plugin_config([shared_block()], ["hsm"]).replace("@SOCKET@", str(workdir / "s.sock"))
                   .replace("@HTTP@", "127.0.0.1:0"))
    r = subprocess.run([str(BIN), "check", "--config", str(cfg)], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr
    out = r.stdout
    assert f"module {e['POLYKMS_PKCS11_MODULE']}" in out, out
    assert re.search(rf'token label "{e["POLYKMS_PKCS11_TOKEN_LABEL"]}" serial "[0-9a-f]+" slot \d+', out), out
    assert "mechanism aes-gcm" in out, out
    assert f"key version: {e['POLYKMS_PKCS11_KEY_LABEL']}:01" in out, out
    assert open(e["POLYKMS_PKCS11_PIN_FILE"]).read().strip() not in out + r.stderr


def test_ciphertext_is_bound_to_the_provider_name_and_tampering_fails(workdir, plugins):
    a = plugins(workdir, plugin_config([shared_block()], ["hsm"], provider="cluster-a", extra=NO_CACHE), name="a")
    other = workdir / "b"
    other.mkdir()
    b = plugins(other, plugin_config([shared_block()], ["hsm"], provider="cluster-b", extra=NO_CACHE), name="b")
    seed = os.urandom(32)
    enc = encrypt(a, seed)
    with pytest.raises(grpc.RpcError) as e:
        decrypt(b, enc)
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT, e.value
    for i in range(len(enc.ciphertext) - 1, len(enc.ciphertext) - 40, -1):
        tampered = bytearray(enc.ciphertext)
        tampered[i] ^= 1
        with pytest.raises(grpc.RpcError) as e:
            decrypt(a, v2_pb2.EncryptResponse(ciphertext=bytes(tampered), key_id=enc.key_id,
                                              annotations=dict(enc.annotations)))
        assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT, (i, e.value)
    assert decrypt(a, enc) == seed
    assert status(a).healthz == "ok"


def test_a_key_object_with_a_higher_cka_id_rotates_key_id(token, workdir, plugins):
    p = plugins(workdir, plugin_config([token.block()], ["hsm"], extra=NO_CACHE), name="rot")
    before = status(p).key_id
    seed = os.urandom(32)
    old = encrypt(p, seed)
    token.keygen("02")
    wait(lambda: status(p).key_id != before, what="new key_id after a key object with CKA_ID 02")
    new_seed = os.urandom(32)
    new = encrypt(p, new_seed)
    assert new.key_id == status(p).key_id != before
    assert decrypt(p, old) == seed
    assert decrypt(p, new) == new_seed
    # Old ciphertexts decrypt until their key object is deleted.
    token.delete_key("01")
    with pytest.raises(grpc.RpcError) as e:
        decrypt(p, old)
    assert e.value.code() == grpc.StatusCode.FAILED_PRECONDITION, e.value
    assert f"{token.key_label}:01" in e.value.details(), e.value.details()
    assert decrypt(p, new) == new_seed
    assert status(p).healthz == "ok"


def test_deleting_the_key_object_is_unhealthy_and_failed_precondition(token, workdir, plugins):
    p = plugins(workdir, plugin_config([token.block()], ["hsm"], extra=NO_CACHE), name="del")
    assert status(p).healthz == "ok"
    enc = encrypt(p, os.urandom(32))
    token.delete_key("01")
    wait(lambda: status(p).healthz != "ok", what="unhealthy after the key object is deleted")
    assert p.http("/readyz")[0] == 503
    for call in (lambda: decrypt(p, enc), lambda: encrypt(p, os.urandom(32))):
        with pytest.raises(grpc.RpcError) as e:
            call()
        assert e.value.code() == grpc.StatusCode.FAILED_PRECONDITION, e.value
    assert p.proc.poll() is None


def test_a_wrong_pin_fails_serve_and_check_cleanly(token, workdir, plugins):
    wrong = workdir / "wrong.pin"
    wrong.write_text("0000-not-the-pin\n")
    os.chmod(wrong, 0o600)
    text = plugin_config([hsm_block("hsm", token.label, str(wrong))], ["hsm"])
    cfg = workdir / "wrong.toml"
    cfg.write_text(text.replace("@SOCKET@", str(workdir / "w.sock")).replace("@HTTP@", "127.0.0.1:0"))
    for cmd in ("serve", "check"):
        r = subprocess.run([str(BIN), cmd, "--config", str(cfg)], capture_output=True, text=True, timeout=60)
        assert r.returncode == EXIT_CONFIG, f"{cmd}: {r.returncode}\n{r.stdout}{r.stderr}"
        assert "refused the user PIN from pin_file (CKR_PIN_INCORRECT)" in r.stderr, r.stderr
        assert "not-the-pin" not in r.stdout + r.stderr
        assert "panicked" not in r.stderr
    # The token still takes the right PIN.
    p = plugins(workdir, plugin_config([token.block()], ["hsm"]), name="right-pin")
    assert status(p).healthz == "ok"


def test_a_group_readable_pin_file_is_a_config_error(token, workdir):
    os.chmod(token.pin_file, 0o640)
    cfg = workdir / "open.toml"
    cfg.write_text(plugin_config([token.block()], ["hsm"]).replace("@SOCKET@", str(workdir / "o.sock"))
                   .replace("@HTTP@", "127.0.0.1:0"))
    r = subprocess.run([str(BIN), "check", "--config", str(cfg)], capture_output=True, text=True, timeout=60)
    assert r.returncode == EXIT_CONFIG, r.stdout + r.stderr
    assert "pin_file" in r.stderr and "chmod 600" in r.stderr, r.stderr


def test_token_deleted_and_recreated_under_a_running_plugin_recovers(token, workdir, plugins):
    p = plugins(workdir, plugin_config([token.block()], ["hsm"], extra=NO_CACHE), name="recreate")
    assert status(p).healthz == "ok"
    token.delete()
    wait(lambda: status(p).healthz != "ok", what="unhealthy after the token is deleted")
    with pytest.raises(grpc.RpcError) as e:
        encrypt(p, os.urandom(32))
    assert e.value.code() == grpc.StatusCode.UNAVAILABLE, e.value
    token.init()
    token.keygen("01")
    wait(lambda: status(p).healthz == "ok", what="healthy after the token is re-created")
    seed = os.urandom(32)
    assert decrypt(p, encrypt(p, seed)) == seed
    assert p.proc.poll() is None


def test_sixty_four_concurrent_clients_on_four_sessions(workdir, plugins):
    p = plugins(workdir, plugin_config([shared_block(max_sessions=4)], ["hsm"], extra=NO_CACHE), name="c64")
    errors = []
    barrier = threading.Barrier(64)

    def client():
        try:
            stub = p.v2()
            barrier.wait(timeout=30)
            for _ in range(5):
                seed = os.urandom(32)
                enc = stub.Encrypt(v2_pb2.EncryptRequest(plaintext=seed, uid="c"), timeout=30)
                got = stub.Decrypt(v2_pb2.DecryptRequest(ciphertext=enc.ciphertext, key_id=enc.key_id,
                                                         annotations=dict(enc.annotations), uid="c"),
                                   timeout=30).plaintext
                assert got == seed
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(repr(e))

    threads = [threading.Thread(target=client) for _ in range(64)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors[:3]
    assert status(p).healthz == "ok"


def test_multi_wrap_hsm_and_local_then_a_node_without_the_hsm_decrypts(workdir, plugins):
    key = keygen(workdir / "dr.key")
    local = f'[[backends]]\nname = "local"\ntype = "local"\nkey_files = [{toml_str(key)}]\n'
    p = plugins(workdir, plugin_config([shared_block(), local], ["hsm", "local"]), name="multi")
    seed = os.urandom(32)
    enc = encrypt(p, seed)
    assert decrypt(p, enc) == seed
    other = workdir / "dr"
    other.mkdir()
    dr = plugins(other, plugin_config([local], ["local"]), name="dr")
    assert decrypt(dr, enc) == seed


def test_helm_chart_mounts_the_module_and_its_config_renders_a_working_pkcs11_backend(workdir):
    import test_deploy

    e = env()
    module_dir = os.path.dirname(e["POLYKMS_PKCS11_MODULE"])
    conf = e["SOFTHSM2_CONF"]
    values = {
        "backends": {"pkcs11": {"enabled": True, "module": e["POLYKMS_PKCS11_MODULE"],
                                "token_label": e["POLYKMS_PKCS11_TOKEN_LABEL"],
                                "key_label": e["POLYKMS_PKCS11_KEY_LABEL"]}},
        "pkcs11": {"hostPaths": [{"path": module_dir}, {"path": os.path.dirname(conf), "readOnly": False}],
                   "env": {"SOFTHSM2_CONF": conf}},
    }
    objs = test_deploy.rendered_objects(values)
    spec = objs["DaemonSet"]["spec"]["template"]["spec"]
    (c,) = spec["containers"]
    mounts = {m["mountPath"]: m for m in c["volumeMounts"]}
    assert mounts[module_dir]["readOnly"] is True
    assert mounts[os.path.dirname(conf)]["readOnly"] is False
    vols = {v["name"]: v for v in spec["volumes"]}
    assert vols[mounts[module_dir]["name"]]["hostPath"]["path"] == module_dir
    assert {"name": "SOFTHSM2_CONF", "value": conf} in c["env"]

    text = objs["ConfigMap"]["data"]["config.toml"]
    assert 'type = "pkcs11"' in text, text
    # The chart's pin_file is the credentials Secret's; point it at the test token's.
    text = text.replace('"/etc/polykms/credentials/hsm-pin"', toml_str(e["POLYKMS_PKCS11_PIN_FILE"]))
    cfg = workdir / "chart-pkcs11.toml"
    cfg.write_text(text)
    r = subprocess.run([str(BIN), "check", "--config", str(cfg)], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, text + r.stdout + r.stderr
    assert f"key version: {e['POLYKMS_PKCS11_KEY_LABEL']}:01" in r.stdout, r.stdout


def test_example_config_works_with_the_softhsm2_token(workdir):
    e = env()
    text = (ROOT / "configs" / "pkcs11.toml").read_text()
    for old, new in (('"/usr/lib/softhsm/libsofthsm2.so"', toml_str(e["POLYKMS_PKCS11_MODULE"])),
                     ('token_label = "kube-kek"', f'token_label = {toml_str(e["POLYKMS_PKCS11_TOKEN_LABEL"])}'),
                     ('"/etc/polykms/hsm-pin"', toml_str(e["POLYKMS_PKCS11_PIN_FILE"])),
                     ('key_label = "kube-kek"', f'key_label = {toml_str(e["POLYKMS_PKCS11_KEY_LABEL"])}'),
                     ('"/var/run/kmsplugin/socket.sock"', toml_str(workdir / "ex.sock")),
                     ('"127.0.0.1:8095"', '""')):
        assert old in text, old
        text = text.replace(old, new)
    cfg = workdir / "pkcs11.toml"
    cfg.write_text(text)
    r = subprocess.run([str(BIN), "check", "--config", str(cfg)], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "all 1 backend(s) OK" in r.stdout
