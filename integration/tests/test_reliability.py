"""Reliability of the real binary: a key store outage through a TCP proxy the test controls,
kill -9 under load, two nodes on one config, a bounded load run, hostile bytes on the socket.

The outage tests need the GCP fake (POLYKMS_GCP_ENDPOINT, POLYKMS_GCP_KEY from
integration/.run/gcp-fake.env); they skip without it unless POLYKMS_REQUIRE_INTEGRATION=1.
POLYKMS_LOAD_SECONDS sets the measured part of the load run (default 10)."""

import os
import random
import select
import socket
import struct
import threading
import time
from urllib.parse import urlsplit

import grpc
import pytest

from conftest import keygen, local_config, v2_pb2

REQUIRED = os.environ.get("POLYKMS_REQUIRE_INTEGRATION") == "1"
PROBE_INTERVAL, UNHEALTHY_INTERVAL, PROBE_TIMEOUT = 1.0, 0.5, 1.0
# Slack for a loaded 2-core CI machine on top of every bound derived from the config.
MARGIN = 3.0


def need_env(*names):
    missing = [n for n in names if not os.environ.get(n)]
    if missing:
        (pytest.fail if REQUIRED else pytest.skip)(f"{', '.join(missing)} not set (see integration/servers)")
    return [os.environ[n] for n in names]


def rst_close(sock):
    """Closes with SO_LINGER 0: the peer sees a TCP RST, not an orderly FIN."""
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    except OSError:
        pass
    sock.close()


class FaultProxy:
    """A TCP proxy on 127.0.0.1 in front of `target`. Modes, switched at any time, apply to new
    and open connections alike: forward; reset (every connection is cut with RST, as when the
    key store dies); blackhole (connections are accepted, bytes swallowed, nothing answers);
    slow (bytes forwarded after `delay` seconds per chunk)."""

    def __init__(self, target_host, target_port):
        self.target = (target_host, target_port)
        self.mode, self.delay = "forward", 0.0
        self.closed = False
        self.listener = socket.socket()
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(128)
        self.listener.settimeout(0.1)
        self.port = self.listener.getsockname()[1]
        self.accepted = 0
        self.threads = [threading.Thread(target=self._accept_loop, daemon=True)]
        self.threads[0].start()

    @property
    def url(self):
        return f"http://127.0.0.1:{self.port}"

    def set_mode(self, mode, delay=0.0):
        assert mode in ("forward", "reset", "blackhole", "slow")
        self.mode, self.delay = mode, delay

    def close(self):
        self.closed = True
        for t in self.threads:
            t.join(5)
        self.listener.close()

    def _accept_loop(self):
        while not self.closed:
            try:
                client, _ = self.listener.accept()
            except socket.timeout:
                continue
            self.accepted += 1
            t = threading.Thread(target=self._serve, args=(client,), daemon=True)
            self.threads.append(t)
            t.start()

    def _serve(self, client):
        upstream = None
        try:
            if self.mode == "reset":
                return rst_close(client)
            if self.mode != "blackhole":
                try:
                    upstream = socket.create_connection(self.target, timeout=2)
                except OSError:
                    return rst_close(client)
            self._pump(client, upstream)
        finally:
            for s in (client, upstream):
                if s is not None and s.fileno() != -1:
                    rst_close(s)

    def _pump(self, client, upstream):
        peers = {client: upstream, upstream: client} if upstream else {client: None}
        while not self.closed:
            if self.mode == "reset":
                return
            readable, _, _ = select.select(list(peers), [], [], 0.05)
            for s in readable:
                data = s.recv(65536)
                if not data:
                    return
                mode, other = self.mode, peers[s]
                if mode == "blackhole" or other is None:
                    continue
                if mode == "slow":
                    time.sleep(self.delay)
                if self.mode == "reset":
                    return
                other.sendall(data)


def gcp_config(endpoint, key, timeout_ms=1000):
    return f"""
[server]
socket = "@SOCKET@"
[http]
listen = "@HTTP@"
[health]
probe_interval = "{PROBE_INTERVAL}s"
unhealthy_probe_interval = "{UNHEALTHY_INTERVAL}s"
probe_timeout = "{PROBE_TIMEOUT}s"
[decrypt]
cache_ttl = "5m"  # outlives every outage drill: what was unwrapped before stays readable
[[backends]]
name = "gcp"
type = "gcp"
key = "{key}"
endpoint = "{endpoint}"
auth = {{ method = "anonymous" }}
timeout_ms = {timeout_ms}
[encrypt]
with = ["gcp"]
"""


@pytest.fixture
def gcp_proxy():
    endpoint, key = need_env("POLYKMS_GCP_ENDPOINT", "POLYKMS_GCP_KEY")
    u = urlsplit(endpoint)
    proxy = FaultProxy(u.hostname, u.port or 80)
    yield proxy, key
    proxy.close()


def encrypt(stub, seed, timeout=5):
    return stub.Encrypt(v2_pb2.EncryptRequest(plaintext=seed, uid="rel"), timeout=timeout)


def decrypt(stub, enc, timeout=5):
    return stub.Decrypt(v2_pb2.DecryptRequest(ciphertext=enc.ciphertext, key_id=enc.key_id,
                                              annotations=dict(enc.annotations), uid="rel"), timeout=timeout)


def wait_for(predicate, limit, what):
    """Polls `predicate` every 50 ms; returns the seconds it took, fails after `limit`."""
    started = time.monotonic()
    while not predicate():
        elapsed = time.monotonic() - started
        assert elapsed < limit, f"{what}: not within {limit:.1f}s"
        time.sleep(0.05)
    return time.monotonic() - started


def healthz(stub):
    # Status answers from memory: it must stay fast during an outage too.
    return stub.Status(v2_pb2.StatusRequest(), timeout=1).healthz


@pytest.mark.parametrize("mode", ["reset", "blackhole", "slow"])
def test_backend_outage_fails_fast_and_recovers_without_restart(workdir, plugins, gcp_proxy, mode):
    proxy, key = gcp_proxy
    p = plugins(workdir, gcp_config(proxy.url, key), name=f"outage-{mode}")
    stub = p.v2()
    status = stub.Status(v2_pb2.StatusRequest(), timeout=5)
    assert status.healthz == "ok", p.logs()
    seed = os.urandom(32)
    before = encrypt(stub, seed)
    assert decrypt(stub, before).plaintext == seed  # now in the unwrap cache (30 s)
    unread = encrypt(stub, os.urandom(32))  # never decrypted: only the key store can unwrap it

    proxy.set_mode(mode, delay=5.0)
    # The next probe comes within the healthy interval and fails within its timeout.
    took = wait_for(lambda: healthz(stub) != "ok", PROBE_INTERVAL + PROBE_TIMEOUT + MARGIN, "unhealthy")
    print(f"{mode}: unhealthy after {took:.2f}s")
    assert p.http("/readyz")[0] == 503 and p.http("/livez")[0] == 200
    deadline = 2.0
    for call in (lambda: encrypt(stub, os.urandom(32), deadline), lambda: decrypt(stub, unread, deadline)) * 3:
        started = time.monotonic()
        with pytest.raises(grpc.RpcError) as e:
            call()
        elapsed = time.monotonic() - started
        # Our own answer ends the call (DEADLINE_EXCEEDED would mean the client's timer did).
        assert e.value.code() == grpc.StatusCode.UNAVAILABLE, (mode, e.value)
        assert elapsed < deadline + 0.5, f"{mode}: answered after {elapsed:.2f}s"
    # A seed unwrapped just before the outage is answered from the unwrap cache.
    assert decrypt(stub, before, deadline).plaintext == seed
    assert p.proc.poll() is None
    assert stub.Status(v2_pb2.StatusRequest(), timeout=1).key_id == status.key_id, "an outage changed key_id"

    proxy.set_mode("forward")
    took = wait_for(lambda: healthz(stub) == "ok", UNHEALTHY_INTERVAL + PROBE_TIMEOUT + MARGIN, "recovered")
    print(f"{mode}: healthy again after {took:.2f}s")
    assert decrypt(stub, before).plaintext == seed
    after = encrypt(stub, seed)
    assert after.key_id == status.key_id and decrypt(stub, after).plaintext == seed
    assert p.http("/readyz")[0] == 200


def test_a_failed_call_triggers_a_probe_before_the_healthy_interval(workdir, plugins, gcp_proxy):
    proxy, key = gcp_proxy
    # A long healthy interval: only the failed call's early probe can flip Status in time.
    cfg = gcp_config(proxy.url, key).replace(f'probe_interval = "{PROBE_INTERVAL}s"', 'probe_interval = "1h"', 1)
    p = plugins(workdir, cfg, name="outage-early-probe")
    stub = p.v2()
    assert healthz(stub) == "ok"
    proxy.set_mode("reset")
    with pytest.raises(grpc.RpcError) as e:
        encrypt(stub, os.urandom(32), timeout=2)
    assert e.value.code() == grpc.StatusCode.UNAVAILABLE
    wait_for(lambda: healthz(stub) != "ok", PROBE_TIMEOUT + MARGIN, "unhealthy after a failed call")
    proxy.set_mode("forward")
    wait_for(lambda: healthz(stub) == "ok", UNHEALTHY_INTERVAL + PROBE_TIMEOUT + MARGIN, "recovered")


def test_kill9_under_concurrent_load_then_every_ciphertext_decrypts(workdir, plugins):
    p = plugins(workdir, local_config([keygen(workdir / "k.key")]), name="crash")
    made, lock, stop = [], threading.Lock(), threading.Event()

    def worker():
        stub = p.v2()
        while not stop.is_set():
            seed = os.urandom(32)
            try:
                enc = encrypt(stub, seed, timeout=2)
            except grpc.RpcError:
                return
            with lock:
                made.append((seed, enc))

    threads = [threading.Thread(target=worker) for _ in range(16)]
    for t in threads:
        t.start()
    wait_for(lambda: len(made) >= 300, 30, "300 ciphertexts before the crash")
    p.kill9()  # the workers are mid-call
    stop.set()
    for t in threads:
        t.join(10)
    assert os.path.exists(p.socket), "kill -9 leaves the socket file behind"
    p.start()
    stub = p.v2()
    with lock:
        snapshot = list(made)
    for seed, enc in snapshot:
        assert decrypt(stub, enc).plaintext == seed
    print(f"{len(snapshot)} ciphertexts made before kill -9 decrypt after restart")


@pytest.mark.parametrize("backend", ["local", "gcp"])
def test_two_nodes_with_one_config_decrypt_each_others_ciphertexts(tmp_path_factory, plugins, backend):
    if backend == "gcp":
        endpoint, key = need_env("POLYKMS_GCP_ENDPOINT", "POLYKMS_GCP_KEY")
        config = gcp_config(endpoint, key, timeout_ms=5000)
    else:
        shared = tmp_path_factory.mktemp("shared")
        config = local_config([keygen(shared / "cluster.key")])
    nodes = []
    for name in ("node-a", "node-b"):
        d = tmp_path_factory.mktemp(name)
        os.chmod(d, 0o700)
        nodes.append(plugins(d, config, name=f"two-nodes-{backend}-{name}"))
    a, b = (n.v2() for n in nodes)
    assert a.Status(v2_pb2.StatusRequest()).key_id == b.Status(v2_pb2.StatusRequest()).key_id
    for src, dst in ((a, b), (b, a)):
        for _ in range(20):
            seed = os.urandom(32)
            assert decrypt(dst, encrypt(src, seed)).plaintext == seed


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))


def fd_count(pid):
    return len(os.listdir(f"/proc/{pid}/fd"))


def test_sixty_four_clients_for_a_bounded_time(workdir, plugins):
    p = plugins(workdir, local_config([keygen(workdir / "k.key")], apis=("v2", "v1beta1")), name="load")
    pid, seconds = p.proc.pid, float(os.environ.get("POLYKMS_LOAD_SECONDS", "10"))
    fds_idle = fd_count(pid)
    errors, counts, stop = [], [0] * 64, threading.Event()

    def client(n):
        # A connection of its own per client (grpcio shares subchannels by default).
        channel = grpc.insecure_channel(f"unix://{p.socket}", options=[("grpc.use_local_subchannel_pool", 1)])
        stub = v2_pb2_grpc_stub(channel)
        try:
            while not stop.is_set():
                seed = os.urandom(32)
                enc = encrypt(stub, seed)
                if decrypt(stub, enc).plaintext != seed:
                    errors.append("mismatch")
                if counts[n] % 20 == 0:
                    stub.Status(v2_pb2.StatusRequest(), timeout=5)
                counts[n] += 1
        except grpc.RpcError as e:
            errors.append(repr(e))
        finally:
            channel.close()

    threads = [threading.Thread(target=client, args=(n,)) for n in range(64)]
    for t in threads:
        t.start()
    time.sleep(3)  # warm-up: connections, allocator arenas, runtime threads
    rss_warm, fds_warm, calls_warm = rss_kib(pid), fd_count(pid), sum(counts)
    time.sleep(seconds)
    rss_end, fds_end, calls_end = rss_kib(pid), fd_count(pid), sum(counts)
    stop.set()
    for t in threads:
        t.join(30)
    print(f"load: {calls_end - calls_warm} encrypt+decrypt pairs in {seconds:.0f}s "
          f"({(calls_end - calls_warm) / seconds:.0f}/s); RSS {rss_warm} -> {rss_end} KiB; "
          f"fds idle {fds_idle}, under load {fds_warm} -> {fds_end}")
    assert errors == []
    assert calls_end > calls_warm, "no progress after warm-up"
    assert rss_end - rss_warm < 20 * 1024, f"RSS grew {rss_end - rss_warm} KiB under steady load"
    assert abs(fds_end - fds_warm) <= 4, (fds_warm, fds_end)
    wait_for(lambda: fd_count(pid) <= fds_idle + 2, 10, f"fds back to idle ({fds_idle})")
    assert p.proc.poll() is None


def v2_pb2_grpc_stub(channel):
    from conftest import v2_grpc

    return v2_grpc.KeyManagementServiceStub(channel)


def varint(n):
    out = bytearray()
    while True:
        b, n = n & 0x7F, n >> 7
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


def random_size(rng):
    """0 to 4 MiB, mostly small: the server's message limit (64 KiB) sits in the middle."""
    return rng.choice([rng.randrange(64), rng.randrange(2048), rng.randrange(70_000), rng.randrange(4 << 20)])


def random_field(rng):
    """One protobuf field: any number 1-5, any wire type, invalid UTF-8 where strings belong,
    lengths that lie."""
    number = rng.randrange(1, 6)
    kind = rng.choice(["bytes", "bad-utf8", "varint", "fixed64", "lying-length", "map-entry"])
    if kind == "varint":
        return varint(number << 3) + varint(rng.getrandbits(64))
    if kind == "fixed64":
        return varint(number << 3 | 1) + os.urandom(8)
    if kind == "lying-length":
        return varint(number << 3 | 2) + varint(rng.randrange(1 << 40)) + os.urandom(rng.randrange(8))
    if kind == "bad-utf8":
        payload = rng.choice([b"\xff\xfe", b"\xc3\x28", b"ok\xed\xa0\x80", b"\x80" * rng.randrange(1, 300)])
    elif kind == "map-entry":
        key = rng.choice([b"wrap-1.polykms.io", b"x.example.com", b"\xff\xff", os.urandom(rng.randrange(40))])
        value = os.urandom(rng.randrange(64)) * (random_size(rng) // 64 + 1)
        payload = b"\x0a" + varint(len(key)) + key + b"\x12" + varint(len(value)) + value
    else:
        size = random_size(rng)
        payload = (os.urandom(16) * (size // 16 + 1))[:size]
    return varint(number << 3 | 2) + varint(len(payload)) + payload


HOSTILE_METHODS = ["/v2.KeyManagementService/Status", "/v2.KeyManagementService/Encrypt",
                   "/v2.KeyManagementService/Decrypt", "/v1beta1.KeyManagementService/Version",
                   "/v1beta1.KeyManagementService/Encrypt", "/v1beta1.KeyManagementService/Decrypt"]
# Answers a hostile request may get: served, refused as invalid, refused by the size limit
# (tonic says OUT_OF_RANGE, grpcio RESOURCE_EXHAUSTED), or undecodable protobuf (INTERNAL, as
# tonic reports it). A dropped connection (UNAVAILABLE), UNKNOWN or a timeout are failures.
HOSTILE_CODES = {grpc.StatusCode.OK, grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.FAILED_PRECONDITION,
                 grpc.StatusCode.OUT_OF_RANGE, grpc.StatusCode.RESOURCE_EXHAUSTED, grpc.StatusCode.INTERNAL}


def test_hostile_requests_over_the_socket_get_error_statuses_and_the_process_survives(workdir, plugins):
    p = plugins(workdir, local_config([keygen(workdir / "k.key")], apis=("v2", "v1beta1")), name="hostile")
    seed = int(os.environ.get("POLYKMS_HOSTILE_SEED", time.time_ns()))
    rng = random.Random(seed)
    channel = p.channel("/var/run/kmsplugin/socket.sock")
    seen = {}
    for i in range(int(os.environ.get("POLYKMS_HOSTILE_CASES", "400"))):
        method = rng.choice(HOSTILE_METHODS)
        message = b"".join(random_field(rng) for _ in range(rng.randrange(6)))
        try:
            channel.unary_unary(method)(message, timeout=5)
            code = grpc.StatusCode.OK
        except grpc.RpcError as e:
            code = e.code()
        assert code in HOSTILE_CODES, f"seed {seed}, case {i}: {method} with {len(message)} bytes -> {code}"
        seen[code] = seen.get(code, 0) + 1
    print(f"hostile (seed {seed}): {seen}")
    # Structured requests with hostile annotations go through the stub's own encoding.
    stub = p.v2()
    enc = encrypt(stub, os.urandom(32))
    for _ in range(100):
        annotations = {rng.choice(["wrap-1.polykms.io", "x.polykms.io", "Bad_Key", "a" * 300, "é.example.com"]):
                       os.urandom(rng.randrange(64)) * rng.randrange(1, 600) for _ in range(rng.randrange(1, 4))}
        req = v2_pb2.DecryptRequest(ciphertext=enc.ciphertext, key_id=enc.key_id, uid="h", annotations=annotations)
        with pytest.raises(grpc.RpcError) as e:
            stub.Decrypt(req, timeout=5)
        assert e.value.code() in HOSTILE_CODES - {grpc.StatusCode.OK}
    assert p.proc.poll() is None
    assert decrypt(stub, enc).plaintext and healthz(p.v2()) == "ok"
    assert "panicked" not in p.logs()


def test_garbage_http2_on_the_socket_does_not_disturb_other_clients(workdir, plugins):
    p = plugins(workdir, local_config([keygen(workdir / "k.key")]), name="garbage")
    rng = random.Random(int(os.environ.get("POLYKMS_HOSTILE_SEED", time.time_ns())))
    stub = p.v2()
    preface = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
    for i in range(200):
        s = socket.socket(socket.AF_UNIX)
        s.settimeout(0.5)
        s.connect(p.socket)
        try:
            head = preface if i % 4 else b""
            frames = b""
            for _ in range(rng.randrange(1, 6)):
                # Frame header: 24-bit length (sometimes a lie), type (HEADERS/CONTINUATION/
                # SETTINGS/DATA or junk), flags, stream id; then HPACK-ish garbage.
                payload = os.urandom(rng.randrange(0, 300))
                length = len(payload) if rng.random() < 0.7 else rng.randrange(1 << 24)
                ftype = rng.choice([0x0, 0x1, 0x4, 0x9, rng.randrange(256)])
                frames += length.to_bytes(3, "big") + bytes([ftype, rng.randrange(256)])
                frames += rng.randrange(1 << 31).to_bytes(4, "big") + payload
            s.sendall(head + frames)
            s.recv(4096)
        except OSError:
            pass  # the server may close or reset the connection: that is the right answer
        finally:
            s.close()
        if i % 50 == 0:
            assert healthz(stub) == "ok"
    assert p.proc.poll() is None
    seed = os.urandom(32)
    assert decrypt(stub, encrypt(stub, seed)).plaintext == seed
    assert "panicked" not in p.logs()
