"""What operators see: /metrics under load, readiness, JSON request logs, and a live switch of
encrypt.with by SIGHUP with no failed call."""

import json
import os
import signal
import threading
import time
import uuid

import grpc
from prometheus_client.openmetrics.parser import text_string_to_metric_families

from conftest import keygen, local_config, v2_pb2


def families(text):
    return {f.name: f for f in text_string_to_metric_families(text)}


def load(p, n, authority=None):
    stub = p.v2(authority)
    out = []
    for i in range(n):
        seed = os.urandom(32)
        enc = stub.Encrypt(v2_pb2.EncryptRequest(plaintext=seed, uid=str(uuid.uuid4())), timeout=5)
        dec = stub.Decrypt(v2_pb2.DecryptRequest(ciphertext=enc.ciphertext, key_id=enc.key_id,
                                                 uid=str(uuid.uuid4())), timeout=5)
        assert dec.plaintext == seed
        out.append(enc)
    return out


def test_metrics_parse_and_hold_every_series_with_bounded_labels(workdir, plugins):
    key = keygen(workdir / "k.key")
    p = plugins(workdir, local_config([key]))
    threads = [threading.Thread(target=load, args=(p, 100)) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    with __import__("pytest").raises(grpc.RpcError):
        p.v2().Decrypt(v2_pb2.DecryptRequest(ciphertext=b"junk", key_id="x", uid="junk-call-qz"), timeout=5)
    code, text = p.http("/metrics")
    assert code == 200
    fams = families(text)
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value for f in fams.values() for s in f.samples}

    def value(name, **labels):
        return samples[(name, tuple(sorted(labels.items())))]

    assert value("polykms_requests_total", api="v2", method="Encrypt", code="OK") == 400
    assert value("polykms_requests_total", api="v2", method="Decrypt", code="OK") == 400
    assert value("polykms_requests_total", api="v2", method="Decrypt", code="InvalidArgument") == 1
    assert value("polykms_request_duration_seconds_count", api="v2", method="Encrypt") == 400
    assert value("polykms_backend_requests_total", backend="local", operation="wrap", outcome="ok") == 400
    assert value("polykms_backend_request_duration_seconds_count", backend="local", operation="unwrap", outcome="ok") <= 400
    assert value("polykms_backend_healthy", backend="local") == 1
    assert value("polykms_backend_last_successful_probe_timestamp_seconds", backend="local") > time.time() - 120
    assert value("polykms_in_flight_requests") == 0
    assert value("polykms_key_id_changes_total") == 0
    assert "polykms_decrypt_coalesced" in fams
    # The FIPS build says so (docs/fips.md): fips="true" only when the module runs in FIPS mode.
    from conftest import FIPS

    build = fams["polykms_build_info"].samples
    assert len(build) == 1 and build[0].labels["fips"] == ("true" if FIPS else "false"), build
    kid = p.v2().Status(v2_pb2.StatusRequest(), timeout=5).key_id
    info = [s for s in fams["polykms_key_id_info"].samples]
    assert len(info) == 1 and info[0].labels["key_id"] == kid and info[0].labels["backend"] == "local"
    # 800 requests with distinct uids: series count stays small (no uid, no key material).
    assert len(samples) < 200, len(samples)
    # The uid is no label value (a marker no hex key_id can contain: q and z are not hex digits).
    assert "uid" not in text and "junk-call-qz" not in text


def test_request_logs_are_json_with_uid_method_outcome_latency(workdir, plugins):
    key = keygen(workdir / "k.key")
    p = plugins(workdir, local_config([key]))
    uid = str(uuid.uuid4())
    stub = p.v2()
    enc = stub.Encrypt(v2_pb2.EncryptRequest(plaintext=b"k" * 32, uid=uid), timeout=5)
    stub.Decrypt(v2_pb2.DecryptRequest(ciphertext=enc.ciphertext, key_id=enc.key_id, uid=uid), timeout=5)
    time.sleep(0.2)
    lines = [json.loads(line) for line in p.logs().splitlines() if line.startswith("{")]
    mine = [entry for entry in lines if entry.get("uid") == uid]
    assert {entry["method"] for entry in mine} == {"Encrypt", "Decrypt"}
    for entry in mine:
        assert entry["outcome"] == "ok"
        assert entry["latency_ms"] >= 0
        assert entry["level"] == "INFO"
    assert all(entry.get("backend") == "local" for entry in mine), mine


def test_readyz_reflects_socket_and_backend_health(workdir, plugins):
    key = keygen(workdir / "k.key")
    p = plugins(workdir, local_config([key]))
    assert p.http("/livez") == (200, "ok\n")
    assert p.http("/readyz")[0] == 200
    assert p.http("/healthz")[0] == 200
    assert p.http("/nope")[0] == 404


def test_sighup_switches_encrypt_backend_with_no_failed_call(workdir, plugins):
    ka, kb = keygen(workdir / "a.key"), keygen(workdir / "b.key")
    cfg = (local_config([ka]).replace('name = "local"', 'name = "a"').replace('with = ["local"]', 'with = ["a"]')
           + f'\n[[backends]]\nname = "b"\ntype = "local"\nkey_files = ["{kb}"]\n')
    # [[backends]] after [encrypt] would nest: keep the table order valid.
    head, enc = cfg.split("[encrypt]")
    enc_table, extra = enc.split("\n[[backends]]", 1)
    cfg = head + "[[backends]]" + extra + "\n[encrypt]" + enc_table
    p = plugins(workdir, cfg)
    stub = p.v2()
    kid_a = stub.Status(v2_pb2.StatusRequest(), timeout=5).key_id
    old = load(p, 5)
    stop = threading.Event()
    failures, done = [], []

    def worker():
        s = p.v2("/var/run/kmsplugin/socket.sock")
        while not stop.is_set():
            try:
                seed = os.urandom(32)
                e = s.Encrypt(v2_pb2.EncryptRequest(plaintext=seed, uid="w"), timeout=5)
                d = s.Decrypt(v2_pb2.DecryptRequest(ciphertext=e.ciphertext, key_id=e.key_id, uid="w"), timeout=5)
                if d.plaintext != seed:
                    failures.append("mismatch")
                done.append(e.key_id)
            except grpc.RpcError as err:
                failures.append(repr(err))

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    time.sleep(0.5)
    p.config.write_text(p.config.read_text().replace('with = ["a"]', 'with = ["b"]'))
    p.send_signal(signal.SIGHUP)
    deadline = time.time() + 10
    while stub.Status(v2_pb2.StatusRequest(), timeout=5).key_id == kid_a:
        assert time.time() < deadline, p.logs()
        time.sleep(0.05)
    time.sleep(0.5)
    stop.set()
    for t in threads:
        t.join()
    assert failures == []
    kid_b = stub.Status(v2_pb2.StatusRequest(), timeout=5).key_id
    assert kid_a in done and kid_b in done
    for e in old:
        stub.Decrypt(v2_pb2.DecryptRequest(ciphertext=e.ciphertext, key_id=e.key_id, uid="old"), timeout=5)
    _, metrics = p.http("/metrics")
    assert 'polykms_config_reloads_total{outcome="success"} 1' in metrics


def test_bad_reload_keeps_the_running_config(workdir, plugins):
    key = keygen(workdir / "k.key")
    p = plugins(workdir, local_config([key]))
    kid = p.v2().Status(v2_pb2.StatusRequest(), timeout=5).key_id
    p.config.write_text(p.config.read_text().replace('with = ["local"]', 'with = ["missing"]'))
    p.send_signal(signal.SIGHUP)
    time.sleep(1)
    assert p.v2().Status(v2_pb2.StatusRequest(), timeout=5).key_id == kid
    _, metrics = p.http("/metrics")
    assert 'polykms_config_reloads_total{outcome="failure"} 1' in metrics
    assert "reload rejected" in p.logs()


def test_identical_failures_under_a_retrying_client_are_logged_once_then_counted(workdir, plugins):
    """A key removed before re-encryption finished: the apiserver retries the same Decrypt
    (a real one logged 189 identical WARN lines in 3 minutes). polykms logs the first in full,
    counts the rest in one summary line (written at the latest at shutdown), and its metrics
    count every call."""
    ka, kb = keygen(workdir / "a.key"), keygen(workdir / "b.key")
    p = plugins(workdir, local_config([ka]))
    stub = p.v2()
    kid = stub.Status(v2_pb2.StatusRequest(), timeout=5).key_id
    enc = stub.Encrypt(v2_pb2.EncryptRequest(plaintext=os.urandom(32), uid="before"), timeout=5)
    p.config.write_text(p.config.read_text().replace(f'["{ka}"]', f'["{kb}"]'))
    p.send_signal(signal.SIGHUP)
    deadline = time.time() + 10
    while stub.Status(v2_pb2.StatusRequest(), timeout=5).key_id == kid:
        assert time.time() < deadline, p.logs()
        time.sleep(0.05)
    codes = []
    for i in range(189):
        try:
            stub.Decrypt(v2_pb2.DecryptRequest(ciphertext=enc.ciphertext, key_id=enc.key_id, uid=f"retry-{i}",
                                               annotations=enc.annotations), timeout=5)
        except grpc.RpcError as e:
            codes.append(e.code())
    # Another kind of failure (another method and error kind) is logged on its own.
    try:
        stub.Encrypt(v2_pb2.EncryptRequest(plaintext=b"", uid="empty"), timeout=5)
    except grpc.RpcError as e:
        codes.append(e.code())
    assert codes[:189] == [grpc.StatusCode.FAILED_PRECONDITION] * 189 and len(codes) == 190
    _, text = p.http("/metrics")
    assert 'polykms_requests_total{api="v2",method="Decrypt",code="FailedPrecondition"} 189' in text, text
    assert p.stop() == 0
    lines = [json.loads(line) for line in p.logs().splitlines() if line.startswith("{")]
    failed = [e for e in lines if e.get("message", e.get("msg", "")).startswith("request failed")]
    decrypts = [e for e in failed if e.get("method") == "Decrypt"]
    assert [e["level"] for e in decrypts] == ["WARN", "WARN"], decrypts
    first, summary = decrypts
    assert first["uid"] == "retry-0" and first["outcome"] == "key_unavailable" and first["backend"] == "local"
    assert summary["repeated"] == 188 and summary["outcome"] == "key_unavailable", summary
    assert "not in key_files" in summary["error"] or summary["error"] == first["error"]
    assert [e["method"] for e in failed if e.get("method") != "Decrypt"] == ["Encrypt"]
