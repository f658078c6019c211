"""The operator surface as a new user meets it: exit codes that match the README, errors that
name what to change (an environment variable, a directory given as the config file, the socket
directory's owner), each printed once; `check` that writes nothing; `--socket` that a reload does
not mistake for an edit; nothing left behind by a failed start; log numbers a person can read;
metrics that exist before the first event."""

import hashlib
import json
import os
import signal
import socket
import subprocess
import time

import pytest

from conftest import BIN, LOG_DIR, free_port, keygen, local_config, v2_pb2


def run(*args, env=None, **kw):
    full = dict(os.environ, **(env or {}))
    return subprocess.run([str(BIN), *args], capture_output=True, text=True, timeout=30, env=full, **kw)


def write_config(workdir, text, name="c.toml", http=""):
    cfg = workdir / name
    cfg.write_text(text.replace("@SOCKET@", str(workdir / "kms.sock")).replace("@HTTP@", http))
    return cfg


def test_check_writes_nothing_and_says_what_serve_would_generate(workdir):
    key = workdir / "keys" / "new.key"
    cfg = write_config(workdir, local_config([str(key)]).replace(
        "key_files =", "generate_if_missing = true\nkey_files ="))
    r = run("check", "--config", str(cfg))
    assert r.returncode == 0, r.stdout + r.stderr
    assert not key.exists() and not key.parent.exists(), "check created the key file"
    assert "would generate a new key there" in r.stdout and str(key) in r.stdout, r.stdout
    # Once the key exists, check round-trips through it.
    subprocess.run([str(BIN), "keygen", "--out", str(key)], check=True, capture_output=True)
    r = run("check", "--config", str(cfg))
    assert r.returncode == 0 and "round trip:  ok" in r.stdout, r.stdout


def test_a_bad_environment_override_names_the_variable_not_the_file(workdir):
    key = keygen(workdir / "k.key")
    cfg = write_config(workdir, local_config([key]))
    for var, value in [("POLYKMS_SERVER__SOKET", "/x"), ("POLYKMS_SERVER__DEFAULT_TIMEOUT", "soon")]:
        r = run("check", "--config", str(cfg), env={var: value})
        assert r.returncode == 64, r.stderr
        assert f"environment variable {var}" in r.stderr, r.stderr
        assert str(cfg) not in r.stderr, f"the file is blamed: {r.stderr}"


def test_a_directory_given_as_config_is_called_a_directory(workdir):
    r = run("check", "--config", str(workdir))
    assert r.returncode == 64
    assert "is a directory" in r.stderr and "no such" not in r.stderr, r.stderr


def test_every_error_is_printed_once(workdir):
    key = keygen(workdir / "k.key")
    cfg = write_config(workdir, local_config([key]).replace('with = ["local"]', 'with = ["nope"]'))
    for cmd in (["check"], ["serve"]):
        r = run(*cmd, "--config", str(cfg))
        assert r.returncode == 64, (cmd, r.stderr)
        assert r.stderr.count("no backend is named") == 1, (cmd, r.stderr)
    # Failures after logging started too, in either log format.
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        cfg = write_config(workdir, local_config([key]), http=f"127.0.0.1:{taken.getsockname()[1]}")
        for fmt in ("text", "json"):
            r = run("serve", "--config", str(cfg), "--log-format", fmt)
            assert r.returncode == 71, r.stderr
            assert r.stderr.count("binding http.listen") == 1, (fmt, r.stderr)


def test_http_port_in_use_exits_71_and_leaves_no_socket(workdir):
    key = keygen(workdir / "k.key")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        cfg = write_config(workdir, local_config([key]), http=f"127.0.0.1:{port}")
        r = run("serve", "--config", str(cfg), "--log-format", "text")
    assert r.returncode == 71, r.stderr
    assert "http.listen" in r.stderr, r.stderr
    assert not (workdir / "kms.sock").exists(), "a failed start left its socket behind"


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to run the plugin as another user")
def test_socket_directory_refusing_the_plugins_user_names_user_and_directory(workdir):
    key = keygen(workdir / "k.key")
    os.chown(key, 65534, 65534)
    os.chmod(workdir, 0o755)
    private = workdir / "private"
    private.mkdir(mode=0o700)
    cfg = workdir / "c.toml"
    cfg.write_text(local_config([key]).replace("@SOCKET@", str(private / "kms.sock")).replace("@HTTP@", ""))
    os.chmod(cfg, 0o644)
    r = subprocess.run(["setpriv", "--reuid", "65534", "--regid", "65534", "--clear-groups",
                        str(BIN), "serve", "--config", str(cfg), "--log-format", "text"],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 71, r.stderr
    assert "uid 65534" in r.stderr and f"access to {private}" in r.stderr, r.stderr


def test_sighup_with_socket_flag_and_nothing_changed_does_not_warn(workdir):
    key = keygen(workdir / "k.key")
    http = free_port()
    cfg = write_config(workdir, local_config([key]), http=f"127.0.0.1:{http}")
    sock = workdir / "other.sock"
    LOG_DIR.mkdir(parents=True, exist_ok=True)
    log_path = LOG_DIR / f"socket-flag-{os.getpid()}.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen([str(BIN), "serve", "--config", str(cfg), "--socket", str(sock),
                                 "--log-format", "json"], stdout=log, stderr=subprocess.STDOUT)
        try:
            deadline = time.time() + 20
            while not sock.exists() and time.time() < deadline:
                time.sleep(0.05)
            assert sock.exists()
            proc.send_signal(signal.SIGHUP)
            deadline = time.time() + 20
            while "configuration reloaded" not in log_path.read_text() and time.time() < deadline:
                time.sleep(0.05)
            text = log_path.read_text()
            assert "configuration reloaded" in text, text
            assert "only after a restart" not in text, text
            # A real [server] edit still warns, naming the setting.
            cfg.write_text(cfg.read_text().replace("[server]", '[server]\nprovider_name = "changed"'))
            proc.send_signal(signal.SIGHUP)
            deadline = time.time() + 20
            while "only after a restart" not in log_path.read_text() and time.time() < deadline:
                time.sleep(0.05)
            warn = [json.loads(line) for line in log_path.read_text().splitlines()
                    if "only after a restart" in line]
            assert warn and "server.provider_name" in json.dumps(warn[0]), warn
            assert "server.socket" not in json.dumps(warn[0]), warn
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=10)
    assert not sock.exists()


def test_latency_is_logged_to_the_microsecond_and_reload_counters_start_at_zero(workdir, plugins):
    key = keygen(workdir / "k.key")
    p = plugins(workdir, local_config([key]))
    _, metrics = p.http("/metrics")
    assert 'polykms_config_reloads_total{outcome="failure"} 0' in metrics
    assert 'polykms_config_reloads_total{outcome="success"} 0' in metrics
    kid = p.v2().Status(v2_pb2.StatusRequest(), timeout=5).key_id
    want = "sha256:" + hashlib.sha256(kid.encode()).hexdigest()
    assert f'key_id_hash="{want}"' in metrics, metrics
    for i in range(20):
        p.v2().Encrypt(v2_pb2.EncryptRequest(plaintext=os.urandom(32), uid=f"u{i}"), timeout=5)
    deadline = time.time() + 10
    lines = []
    while time.time() < deadline:
        lines = [line for line in p.logs().splitlines() if '"latency_ms"' in line]
        if len(lines) >= 20:
            break
        time.sleep(0.05)
    assert lines
    for line in lines:
        raw = line.split('"latency_ms":', 1)[1].split(",", 1)[0].split("}", 1)[0]
        decimals = raw.split(".", 1)[1] if "." in raw else ""
        assert len(decimals) <= 3, line
