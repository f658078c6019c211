"""End-to-end harness: starts the real polykms binary on a unix socket and talks to it with
grpcio, a client whose :authority we control (the way kube-apiserver 1.27-1.31 sends the socket
path). Stubs are generated from proto/ at session start."""

import os
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
import urllib.request
from pathlib import Path

import grpc
import pytest

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(os.environ.get("POLYKMS_BIN", ROOT / "target" / "debug" / "polykms"))
RUN_DIR = ROOT / "integration" / ".run"
LOG_DIR = RUN_DIR / "logs"


def _binary_is_fips():
    """Whether BIN is a FIPS build (`--features fips`): its version names the AWS-LC FIPS module.
    run-tests.sh runs the suite a second time with POLYKMS_BIN set to the FIPS binary."""
    try:
        out = subprocess.run([str(BIN), "version"], capture_output=True, text=True, timeout=60).stdout
    except OSError:
        return False
    return "cryptographic module: AWS-LC FIPS " in out


FIPS = _binary_is_fips()


def write_config(path, text, http=""):
    """Writes a config template for a command that serves nothing (check, audit): the socket
    beside the file, `http` as the listen address (empty: none)."""
    path.write_text(text.replace("@SOCKET@", str(path.with_suffix(".sock"))).replace("@HTTP@", http))
    return path


def _generate_stubs():
    from grpc_tools import protoc

    out = Path(tempfile.mkdtemp(prefix="polykms-stubs-"))
    proto_root = ROOT / "proto"
    for rel in ("kms/v2/api.proto", "kms/v1beta1/api.proto"):
        rc = protoc.main(["protoc", f"-I{proto_root}", f"--python_out={out}", f"--grpc_python_out={out}", str(proto_root / rel)])
        assert rc == 0, f"protoc failed for {rel}"
    for d in (out / "kms", out / "kms" / "v2", out / "kms" / "v1beta1"):
        (d / "__init__.py").touch()
    sys.path.insert(0, str(out))


_generate_stubs()
from kms.v1beta1 import api_pb2 as v1_pb2  # noqa: E402
from kms.v1beta1 import api_pb2_grpc as v1_grpc  # noqa: E402
from kms.v2 import api_pb2 as v2_pb2  # noqa: E402
from kms.v2 import api_pb2_grpc as v2_grpc  # noqa: E402

__all__ = ["v1_pb2", "v1_grpc", "v2_pb2", "v2_grpc"]


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def keygen(path):
    subprocess.run([str(BIN), "keygen", "--out", str(path)], check=True, capture_output=True)
    return path


class Plugin:
    """A running `polykms serve` process."""

    def __init__(self, workdir, config_text, name="polykms", extra_env=None, expect_ready=True, config_path=None):
        self.workdir = Path(workdir)
        self.socket = str(self.workdir / "kms.sock")
        self.http_port = free_port()
        self.config = Path(config_path) if config_path else self.workdir / f"{name}.toml"
        text = config_text.replace("@SOCKET@", self.socket).replace("@HTTP@", f"127.0.0.1:{self.http_port}")
        self.config.write_text(textwrap.dedent(text))
        LOG_DIR.mkdir(parents=True, exist_ok=True)
        self.log_path = LOG_DIR / f"{name}-{os.getpid()}-{time.monotonic_ns()}.log"
        self.extra_env = extra_env or {}
        self.proc = None
        self.start(expect_ready)

    def start(self, expect_ready=True):
        env = dict(os.environ, RUST_LOG=os.environ.get("POLYKMS_TEST_RUST_LOG", "info"), **self.extra_env)
        self.log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            [str(BIN), "serve", "--config", str(self.config), "--log-format", "json"],
            stdout=self.log, stderr=subprocess.STDOUT, env=env,
        )
        if expect_ready:
            self.wait_ready()

    def wait_ready(self, timeout=20):
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"polykms exited with {self.proc.returncode}:\n{self.logs()}")
            if os.path.exists(self.socket):
                try:
                    self.v2().Status(v2_pb2.StatusRequest(), timeout=1)
                    return
                except grpc.RpcError:
                    pass
            time.sleep(0.02)
        raise AssertionError(f"polykms not ready in {timeout}s:\n{self.logs()}")

    def channel(self, authority=None):
        opts = [("grpc.default_authority", authority)] if authority else []
        return grpc.insecure_channel(f"unix://{self.socket}", options=opts)

    def v2(self, authority=None):
        return v2_grpc.KeyManagementServiceStub(self.channel(authority))

    def v1(self, authority=None):
        return v1_grpc.KeyManagementServiceStub(self.channel(authority))

    def http(self, path):
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.http_port}{path}", timeout=5) as r:
                return r.status, r.read().decode()
        except urllib.error.HTTPError as e:
            return e.code, e.read().decode()

    def send_signal(self, sig):
        self.proc.send_signal(sig)

    def stop(self, sig=signal.SIGTERM, timeout=10):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.log:
            self.log.close()
        return self.proc.returncode

    def kill9(self):
        self.proc.kill()
        self.proc.wait()
        self.log.close()

    def restart(self):
        self.stop()
        self.start()

    def logs(self):
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""


@pytest.fixture
def workdir():
    # Short paths: unix socket paths are limited to 107 bytes.
    d = tempfile.mkdtemp(prefix="pk-", dir="/tmp")
    os.chmod(d, 0o700)
    yield Path(d)


@pytest.fixture
def plugins():
    started = []

    def make(workdir, config_text, **kw):
        p = Plugin(workdir, config_text, **kw)
        started.append(p)
        return p

    yield make
    for p in started:
        p.stop()


LOCAL_CONFIG = """
[server]
socket = "@SOCKET@"
apis = @APIS@
status_version = "@STATUS_VERSION@"
[http]
listen = "@HTTP@"
[health]
probe_interval = "1s"
unhealthy_probe_interval = "200ms"
[[backends]]
name = "local"
type = "local"
key_files = @KEY_FILES@
[encrypt]
with = ["local"]
"""


def local_config(key_files, apis=("v2",), status_version="v2"):
    files = "[" + ", ".join(f'"{k}"' for k in key_files) + "]"
    api_list = "[" + ", ".join(f'"{a}"' for a in apis) + "]"
    return (LOCAL_CONFIG.replace("@KEY_FILES@", files).replace("@APIS@", api_list)
            .replace("@STATUS_VERSION@", status_version))
