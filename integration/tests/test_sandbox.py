"""Self-confinement, tried over the socket on the real binary: the serving process runs with
no_new_privs, confines itself with Landlock by default (or says in one INFO line that the kernel
has none), and a reload that names a file outside what it confined itself to at start is refused
with a message naming the sandbox while the running configuration keeps serving. The rest of the
end-to-end suite runs with the same defaults on: every backend, reload and config watch."""

import json
import os
import signal
import tempfile
import time
from pathlib import Path

import pytest

from conftest import keygen, local_config, v2_pb2


def proc_status(p):
    fields = {}
    for line in Path(f"/proc/{p.proc.pid}/status").read_text().splitlines():
        k, _, v = line.partition(":")
        fields[k] = v.strip()
    return fields


def log_lines(p):
    out = []
    for line in p.logs().splitlines():
        try:
            out.append(json.loads(line))
        except ValueError:
            pass
    return out


def message(line):
    return line.get("message") or ""


def sandbox_line(p):
    def lines():
        return [l for l in log_lines(p) if message(l).startswith("sandbox")]

    wait_for(lines, timeout=5)  # written in batches by the log thread
    lines = lines()
    assert len(lines) == 1, lines
    return lines[0]


def landlock_enforced(p):
    return "enforced" in message(sandbox_line(p))


def reloads(p, outcome):
    _, metrics = p.http("/metrics")
    for line in metrics.splitlines():
        if line.startswith(f'polykms_config_reloads_total{{outcome="{outcome}"}}'):
            return float(line.split()[1])
    return 0.0


def wait_for(predicate, timeout=20):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return False


def round_trip(p):
    stub = p.v2()
    enc = stub.Encrypt(v2_pb2.EncryptRequest(plaintext=b"s" * 32, uid="sandbox"), timeout=5)
    dec = stub.Decrypt(v2_pb2.DecryptRequest(ciphertext=enc.ciphertext, uid="sandbox", key_id=enc.key_id,
                                             annotations=enc.annotations), timeout=5)
    assert dec.plaintext == b"s" * 32
    return enc.key_id


def outside_dir():
    d = tempfile.mkdtemp(prefix="pk-outside-", dir="/tmp")
    os.chmod(d, 0o700)
    return Path(d)


def test_the_serving_process_has_no_new_privs_and_reports_its_sandbox(workdir, plugins):
    key = keygen(workdir / "k.key")
    p = plugins(workdir, local_config([key]))
    assert proc_status(p)["NoNewPrivs"] == "1"
    line = sandbox_line(p)
    assert line["level"] == "INFO", line
    if landlock_enforced(p):
        assert int(line["landlock_abi"]) >= 1, line
    else:
        assert "no Landlock" in message(line), line
    round_trip(p)


def test_a_reload_whose_key_file_is_outside_the_sandbox_is_refused_and_the_running_config_serves(workdir, plugins):
    keys = workdir / "keys"
    keys.mkdir()
    key = keygen(keys / "k.key")
    p = plugins(workdir, local_config([key]))
    if not landlock_enforced(p):
        pytest.skip("this kernel has no Landlock")
    key_id = round_trip(p)
    elsewhere = outside_dir()
    moved = keygen(elsewhere / "k2.key")
    p.config.write_text(p.config.read_text().replace(str(key), f'{moved}", "{key}'))
    p.send_signal(signal.SIGHUP)
    assert wait_for(lambda: reloads(p, "failure") >= 1), p.logs()
    # Log lines are written in batches by their own thread: wait for the line too.
    assert wait_for(lambda: any("reload rejected" in message(l) for l in log_lines(p))), p.logs()
    refused = [l for l in log_lines(p) if "reload rejected" in message(l)]
    error = refused[-1]["error"]
    assert "sandbox" in error and "restart" in error and str(elsewhere) in error, error
    # The running configuration keeps serving, with the key it started with.
    assert round_trip(p) == key_id
    assert p.v2().Status(v2_pb2.StatusRequest(), timeout=5).key_id == key_id
    assert reloads(p, "success") == 0
    # A restart picks the new directory up.
    p.restart()
    assert round_trip(p) != key_id


def test_a_new_key_next_to_the_named_one_is_picked_up_by_reload(workdir, plugins):
    keys = workdir / "keys"
    keys.mkdir()
    key = keygen(keys / "k.key")
    p = plugins(workdir, local_config([key]))
    key_id = round_trip(p)
    new = keygen(keys / "k2.key")
    p.config.write_text(p.config.read_text().replace(str(key), f'{new}", "{key}'))
    p.send_signal(signal.SIGHUP)
    assert wait_for(lambda: reloads(p, "success") >= 1), p.logs()
    assert round_trip(p) != key_id


def test_with_the_sandbox_off_a_reload_may_name_any_directory(workdir, plugins):
    key = keygen(workdir / "k.key")
    p = plugins(workdir, local_config([key]).replace("[server]\n", '[server]\nsandbox = "off"\n'))
    assert proc_status(p)["NoNewPrivs"] == "1"
    assert "sandbox off" in message(sandbox_line(p))
    key_id = round_trip(p)
    moved = keygen(outside_dir() / "k2.key")
    p.config.write_text(p.config.read_text().replace(str(key), f'{moved}", "{key}'))
    p.send_signal(signal.SIGHUP)
    assert wait_for(lambda: reloads(p, "success") >= 1), p.logs()
    assert round_trip(p) != key_id


def test_sandbox_read_paths_that_do_not_exist_stop_the_start_naming_the_setting(workdir, plugins):
    key = keygen(workdir / "k.key")
    cfg = local_config([key]).replace("[server]\n", '[server]\nsandbox_read_paths = ["/nonexistent/hsm"]\n')
    p = plugins(workdir, cfg, expect_ready=False)
    assert p.proc.wait(timeout=20) == 64
    assert "server.sandbox_read_paths" in p.logs() and "/nonexistent/hsm" in p.logs(), p.logs()


def test_a_watched_config_directory_swap_still_reloads_under_the_sandbox(workdir, plugins):
    """The layout of a mounted ConfigMap: config.toml -> ..data/config.toml, ..data -> ..v1.
    An update swaps ..data to a new directory, which the sandbox allows because it allows the
    config file's directory."""
    keys = workdir / "keys"
    keys.mkdir()
    key = keygen(keys / "k.key")
    conf_dir = workdir / "conf"
    (conf_dir / "..v1").mkdir(parents=True)
    os.symlink("..v1", conf_dir / "..data")
    os.symlink("..data/polykms.toml", conf_dir / "polykms.toml")
    p = plugins(workdir, local_config([key]), config_path=conf_dir / "polykms.toml")
    key_id = round_trip(p)
    new = keygen(keys / "k2.key")
    (conf_dir / "..v2").mkdir()
    (conf_dir / "..v2" / "polykms.toml").write_text(p.config.read_text().replace(str(key), f'{new}", "{key}'))
    os.symlink("..v2", conf_dir / "..data_tmp")
    os.rename(conf_dir / "..data_tmp", conf_dir / "..data")
    assert wait_for(lambda: reloads(p, "success") >= 1), p.logs()
    assert round_trip(p) != key_id


def test_a_kernel_without_landlock_serves_unconfined_and_says_so_once(workdir, plugins, monkeypatch):
    """strace fails the Landlock syscalls with ENOSYS, as on a kernel built without it."""
    import shutil

    import conftest

    strace = shutil.which("strace")
    if not strace:
        pytest.skip("strace is not installed")
    wrapper = workdir / "no-landlock.sh"
    wrapper.write_text(f'#!/bin/sh\nexec {strace} -f -o /dev/null -e trace=landlock_create_ruleset '
                       f'-e inject=landlock_create_ruleset:error=ENOSYS {conftest.BIN} "$@"\n')
    wrapper.chmod(0o755)
    key = keygen(workdir / "k.key")
    monkeypatch.setattr(conftest, "BIN", wrapper)
    p = plugins(workdir, local_config([key]))
    (child,) = Path(f"/proc/{p.proc.pid}/task/{p.proc.pid}/children").read_text().split()
    try:
        line = sandbox_line(p)
        assert line["level"] == "INFO" and "no Landlock" in message(line), line
        assert "NoNewPrivs:\t1" in Path(f"/proc/{child}/status").read_text()
        round_trip(p)
    finally:
        # strace detaches on SIGTERM and leaves polykms running: stop polykms itself.
        os.kill(int(child), signal.SIGTERM)
        p.proc.wait(timeout=20)
