"""The plugin over TLS to OpenBao (integration/servers/openbao-tls.sh): it connects to a listener
with approved cipher suites, and against a listener that offers only a non-approved one (TLS 1.2,
ECDHE-RSA-CHACHA20-POLY1305) the FIPS binary fails cleanly (health reports the backend down with
the TLS handshake failure, the process stays up, `polykms check` exits non-zero naming the
handshake) while the default binary connects. Each case runs against the binary of its kind:
conftest.BIN is the default build in run-tests.sh's first pass and the FIPS build in its second
(POLYKMS_FIPS_BIN adds a FIPS binary to a default run)."""

import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

import pytest

import conftest
from conftest import ROOT, RUN_DIR, v2_pb2
from stores import REQUIRE, plugin_config, toml_str

SCRIPT = ROOT / "integration" / "servers" / "openbao-tls.sh"


def _binaries():
    found = {("fips" if conftest.FIPS else "default"): conftest.BIN}
    if os.environ.get("POLYKMS_FIPS_BIN"):
        found.setdefault("fips", Path(os.environ["POLYKMS_FIPS_BIN"]))
    return found


BINS = _binaries()


def _four_free_ports():
    """A base port whose next three ports are free too (dev, cluster, TLS, ChaCha listeners)."""
    for _ in range(50):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            base = s.getsockname()[1]
        if base > 65530:
            continue
        ok = True
        for p in range(base, base + 4):
            with socket.socket() as s:
                try:
                    s.bind(("127.0.0.1", p))
                except OSError:
                    ok = False
                    break
        if ok:
            return base
    raise RuntimeError("no four consecutive free ports")


def _skip_or_fail(msg):
    if REQUIRE:
        pytest.fail(msg)
    pytest.skip(msg)


@pytest.fixture(scope="module")
def bao():
    """A private OpenBao with the two TLS listeners; its env file parsed into a dict."""
    if not shutil.which("openssl"):
        _skip_or_fail("openssl not installed")
    run_dir = RUN_DIR / f"fips-tls-{os.getpid()}"
    env = dict(os.environ, POLYKMS_RUN_DIR=str(run_dir), POLYKMS_OPENBAO_TLS_PORT=str(_four_free_ports()))
    r = subprocess.run(["bash", str(SCRIPT), "start"], env=env, capture_output=True, text=True, timeout=300)
    if r.returncode != 0:
        _skip_or_fail(f"openbao-tls.sh start failed: {r.stderr[-2000:]}")
    values = {}
    for line in (run_dir / "openbao-tls.env").read_text().splitlines():
        name, _, value = line.removeprefix("export ").partition("=")
        values[name] = value
    yield values
    subprocess.run(["bash", str(SCRIPT), "stop"], env=env, capture_output=True, timeout=60)
    shutil.rmtree(run_dir, ignore_errors=True)


def vault_block(bao, address, name="bao"):
    return (f'[[backends]]\nname = "{name}"\ntype = "vault"\naddress = {toml_str(address)}\n'
            f'key = {toml_str(bao["POLYKMS_VAULT_TLS_KEY"])}\ntimeout_ms = 2000\n'
            f'ca_file = {toml_str(bao["POLYKMS_VAULT_TLS_CA_FILE"])}\n'
            f'auth = {{ method = "token", token_file = {toml_str(bao["POLYKMS_VAULT_TLS_TOKEN_FILE"])} }}\n')


def needs(which):
    return pytest.mark.skipif(which not in BINS, reason=f"no {which} binary in this run (conftest.BIN is the other kind)")


BINARIES = [pytest.param(w, id=w, marks=needs(w)) for w in ("default", "fips")]


def binary(which):
    return BINS[which]


@pytest.fixture
def use_binary(monkeypatch):
    """Makes `plugins` start the chosen binary (conftest.Plugin reads conftest.BIN at start)."""

    def pick(which):
        monkeypatch.setattr(conftest, "BIN", binary(which))

    return pick


def check(which, config_path):
    return subprocess.run([str(binary(which)), "check", "--config", str(config_path)],
                          capture_output=True, text=True, timeout=60)


def wait(cond, limit=15, what="condition"):
    deadline = time.time() + limit
    while not cond():
        assert time.time() < deadline, f"{what} not reached in {limit}s"
        time.sleep(0.1)


@pytest.mark.parametrize("which", BINARIES)
def test_plugin_round_trips_through_openbao_over_tls(which, bao, workdir, plugins, use_binary):
    use_binary(which)
    config = plugin_config([vault_block(bao, bao["POLYKMS_VAULT_TLS_ADDR"])], ["bao"])
    p = plugins(workdir, config)
    wait(lambda: p.v2().Status(v2_pb2.StatusRequest(), timeout=5).healthz == "ok", what="healthy over TLS")
    seed = os.urandom(32)
    enc = p.v2().Encrypt(v2_pb2.EncryptRequest(plaintext=seed, uid="fips-tls"), timeout=10)
    dec = p.v2().Decrypt(v2_pb2.DecryptRequest(ciphertext=enc.ciphertext, key_id=enc.key_id,
                                               annotations=dict(enc.annotations), uid="fips-tls"), timeout=10)
    assert dec.plaintext == seed
    r = check(which, p.config)
    assert r.returncode == 0, r.stdout + r.stderr


@needs("default")
def test_default_binary_connects_to_the_chacha_only_listener(bao, workdir, plugins, use_binary):
    use_binary("default")
    config = plugin_config([vault_block(bao, bao["POLYKMS_VAULT_TLS_CHACHA_ADDR"])], ["bao"])
    p = plugins(workdir, config)
    wait(lambda: p.v2().Status(v2_pb2.StatusRequest(), timeout=5).healthz == "ok", what="healthy over ChaCha")
    r = check("default", p.config)
    assert r.returncode == 0, r.stdout + r.stderr


@needs("fips")
def test_fips_binary_fails_cleanly_against_only_non_approved_suites(bao, workdir, plugins, use_binary):
    use_binary("fips")
    config = plugin_config([vault_block(bao, bao["POLYKMS_VAULT_TLS_CHACHA_ADDR"])], ["bao"])
    p = plugins(workdir, config, expect_ready=False)
    wait(lambda: os.path.exists(p.socket), what="socket served")

    def healthz():
        try:
            return p.v2().Status(v2_pb2.StatusRequest(), timeout=5).healthz
        except Exception as e:  # not serving yet
            return f"status failed: {e}"

    wait(lambda: "handshake" in healthz().lower(), limit=20, what="health naming the TLS handshake")
    assert healthz() != "ok"
    code, body = p.http("/healthz")
    assert code != 200, body
    assert p.proc.poll() is None, "the FIPS binary must keep running with a backend down"
    r = check("fips", p.config)
    assert r.returncode != 0, r.stdout + r.stderr
    assert "handshake" in (r.stdout + r.stderr).lower(), r.stdout + r.stderr
