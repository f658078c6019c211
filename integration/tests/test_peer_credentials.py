"""Only the apiserver may call the socket: every connection's peer uid/gid (SO_PEERCRED) is
checked before any call is served. Tried from outside with a client running as another user
(uid 65534), over a path socket shared with a group and over an abstract socket (which has no
file permissions at all): refused with PERMISSION_DENIED naming the uid and the setting, counted,
logged once; allowed once the setting names it; root is served with no configuration."""

import json
import os
import subprocess
import sys
import time

import pytest

from conftest import keygen, local_config, v2_pb2



NOBODY = 65534
needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="needs root to run a client as uid 65534")
# A client with no generated stubs: Status is an empty message, sent as raw bytes.
CLIENT = r"""
import json, sys, grpc
ch = grpc.insecure_channel(sys.argv[1])
call = ch.unary_unary("/v2.KeyManagementService/Status",
                      request_serializer=lambda b: b, response_deserializer=lambda b: b)
try:
    call(b"", timeout=10)
    print(json.dumps({"code": "OK"}))
except grpc.RpcError as e:
    print(json.dumps({"code": e.code().name, "details": e.details()}))
"""


def status_as(uid, target):
    r = subprocess.run(["setpriv", "--reuid", str(uid), "--regid", str(uid), "--clear-groups",
                        sys.executable, "-c", CLIENT, target],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def refused_count(p):
    _, metrics = p.http("/metrics")
    for line in metrics.splitlines():
        if line.startswith("polykms_peer_refused_total "):
            return float(line.split()[1])
    raise AssertionError("polykms_peer_refused_total missing")


def shared_socket_config(key, extra=""):
    return local_config([key]).replace(
        "[server]\n", f'[server]\nsocket_mode = "0660"\nsocket_group = "{NOBODY}"\n{extra}')


@needs_root
def test_a_caller_of_another_uid_is_refused_naming_its_uid_and_counted(workdir, plugins):
    os.chmod(workdir, 0o755)
    key = keygen(workdir / "k.key")
    p = plugins(workdir, shared_socket_config(key))
    assert oct(os.stat(p.socket).st_mode & 0o777) == "0o660"
    assert os.stat(p.socket).st_gid == NOBODY
    assert refused_count(p) == 0
    for _ in range(3):
        out = status_as(NOBODY, f"unix://{p.socket}")
        assert out["code"] == "PERMISSION_DENIED", out
        assert f"uid {NOBODY}" in out["details"] and "allowed_peer_uids" in out["details"], out
    assert refused_count(p) == 3
    # Root (the apiserver of a static pod) is served with no configuration.
    assert p.v2().Status(v2_pb2.StatusRequest(), timeout=5).healthz == "ok"
    # Logged once for this uid, not once per call.
    time.sleep(0.3)
    lines = [line for line in p.logs().splitlines() if "peer_refused" in line]
    assert len(lines) == 1, lines


@needs_root
def test_the_setting_that_names_the_caller_lets_it_in(workdir, plugins):
    os.chmod(workdir, 0o755)
    key = keygen(workdir / "k.key")
    p = plugins(workdir, shared_socket_config(key, f"allowed_peer_gids = [{NOBODY}]\n"))
    assert status_as(NOBODY, f"unix://{p.socket}")["code"] == "OK"
    assert refused_count(p) == 0


@needs_root
def test_an_abstract_socket_is_checked_the_same(workdir, plugins):
    key = keygen(workdir / "k.key")
    name = f"polykms-peer-test-{os.getpid()}"
    p = plugins(workdir, local_config([key]).replace('socket = "@SOCKET@"', f'socket = "@{name}"'),
                expect_ready=False)
    target = f"unix-abstract:{name}"
    deadline = time.time() + 20
    while time.time() < deadline:
        out = status_as(0, target)
        if out["code"] == "OK":
            break
        time.sleep(0.1)
    assert out["code"] == "OK", out
    out = status_as(NOBODY, target)
    assert out["code"] == "PERMISSION_DENIED" and f"uid {NOBODY}" in out["details"], out
    assert refused_count(p) == 1


@needs_root
def test_allowed_peers_any_turns_the_check_off(workdir, plugins):
    key = keygen(workdir / "k.key")
    name = f"polykms-peer-any-{os.getpid()}"
    cfg = local_config([key]).replace('socket = "@SOCKET@"', f'socket = "@{name}"\nallowed_peers = "any"')
    p = plugins(workdir, cfg, expect_ready=False)
    deadline = time.time() + 20
    out = {}
    while time.time() < deadline:
        out = status_as(NOBODY, f"unix-abstract:{name}")
        if out["code"] == "OK":
            break
        time.sleep(0.1)
    assert out["code"] == "OK", out
    assert refused_count(p) == 0


def test_the_serving_process_has_no_new_privs(workdir, plugins):
    key = keygen(workdir / "k.key")
    p = plugins(workdir, local_config([key]))
    status = open(f"/proc/{p.proc.pid}/status").read()
    assert "NoNewPrivs:\t1" in status, status
