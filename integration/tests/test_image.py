"""The container image, proven from its OCI archive alone (deploy/image/build.sh OUT.tar).

Runs when POLYKMS_IMAGE names an archive (.ci/run builds one after the test suite); skipped
otherwise. The archive's config and layers are read with nothing but the OCI layout; the
layers are extracted into a root filesystem that then runs, as a container runtime would set
it up: its own mount and pid namespaces, the root filesystem read-only, the config directory
mounted read-only, a writable directory mounted for the socket, and `chroot --userspec
65532:65532` (no container daemon runs on these machines; see README "Container image")."""

import hashlib
import io
import json
import os
import re
import shutil
import signal
import subprocess
import tarfile
import tempfile
import time
import urllib.request
from pathlib import Path

import grpc
import pytest

from conftest import free_port, v2_pb2, v2_grpc

IMAGE = os.environ.get("POLYKMS_IMAGE")
pytestmark = pytest.mark.skipif(not IMAGE, reason="POLYKMS_IMAGE (an archive from deploy/image/build.sh) not set")
UID = 65532


class Archive:
    """An OCI image archive: index.json -> manifest -> config and layers, by digest."""

    def __init__(self, path):
        self.tar = tarfile.open(path)
        self.members = {os.path.normpath(m.name): m for m in self.tar.getmembers()}

    def read(self, name):
        return self.tar.extractfile(self.members[name]).read()

    def blob(self, digest):
        algo, hexa = digest.split(":")
        data = self.read(f"blobs/{algo}/{hexa}")
        assert hashlib.new(algo, data).hexdigest() == hexa, f"blob {digest} does not match its digest"
        return data

    def json(self, name):
        return json.loads(self.read(name))

    @property
    def manifest(self):
        index = self.json("index.json")
        assert len(index["manifests"]) == 1, index
        return json.loads(self.blob(index["manifests"][0]["digest"]))

    @property
    def config(self):
        return json.loads(self.blob(self.manifest["config"]["digest"]))

    def extract(self, dest):
        """Applies the layers in order, with OCI whiteouts (`.wh.name`, `.wh..wh..opq`)."""
        for layer in self.manifest["layers"]:
            with tarfile.open(fileobj=io.BytesIO(self.blob(layer["digest"]))) as t:
                for m in t.getmembers():
                    p = Path(m.name)
                    if os.path.normpath(m.name) == ".":
                        # The image's root directory: its mode, not the temporary directory's.
                        os.chmod(dest, m.mode)
                        os.chown(dest, m.uid, m.gid)
                        continue
                    if p.name == ".wh..wh..opq":
                        d = dest / p.parent
                        for child in d.iterdir() if d.exists() else []:
                            shutil.rmtree(child) if child.is_dir() and not child.is_symlink() else child.unlink()
                        continue
                    if p.name.startswith(".wh."):
                        victim = dest / p.parent / p.name[4:]
                        if victim.is_dir() and not victim.is_symlink():
                            shutil.rmtree(victim)
                        elif victim.exists() or victim.is_symlink():
                            victim.unlink()
                        continue
                    t.extract(m, dest, numeric_owner=True, filter="fully_trusted")


@pytest.fixture(scope="module")
def archive():
    return Archive(IMAGE)


@pytest.fixture(scope="module")
def rootfs(archive):
    d = Path(tempfile.mkdtemp(prefix="pk-rootfs-", dir="/tmp"))
    # A runtime's root directory is 0755 unless a layer says otherwise (mkdtemp's is 0700).
    os.chmod(d, 0o755)
    archive.extract(d)
    yield d
    shutil.rmtree(d, ignore_errors=True)


def test_config_runs_as_65532_with_the_dockerfiles_entrypoint_and_labels(archive):
    cfg = archive.config
    c = cfg["config"]
    assert c["User"] == f"{UID}:{UID}"
    dockerfile = (Path(__file__).resolve().parents[2] / "deploy" / "Dockerfile").read_text()
    entry = json.loads(re.search(r"^ENTRYPOINT (\[.*\])$", dockerfile, re.M).group(1))
    cmd = json.loads(re.search(r"^CMD (\[.*\])$", dockerfile, re.M).group(1))
    assert c["Entrypoint"] == entry and c["Cmd"] == cmd
    labels = c["Labels"]
    for k in ("version", "revision", "source", "licenses"):
        assert labels.get(f"org.opencontainers.image.{k}"), (k, labels)
    assert labels["org.opencontainers.image.licenses"] == "Apache-2.0"
    assert re.fullmatch(r"[0-9a-f]{40}|unknown", labels["org.opencontainers.image.revision"])
    # FROM scratch: one layer, the one build.sh wrote; no base image's history.
    assert len(archive.manifest["layers"]) == 1 and len(cfg["rootfs"]["diff_ids"]) == 1


def test_the_root_filesystem_holds_only_what_the_binary_needs(rootfs):
    files = sorted(str(p.relative_to(rootfs)) for p in rootfs.rglob("*") if p.is_file() or p.is_symlink())
    allowed = re.compile(r"^(usr/local/bin/polykms|etc/(passwd|group|nsswitch\.conf)|etc/ssl/certs/ca-certificates\.crt"
                         r"|usr/share/doc/polykms/sbom\.cdx\.json|lib|lib64|(usr/)?lib(64)?/.*\.so(\.[0-9]+)*)$")
    assert [f for f in files if not allowed.match(f)] == [], files
    assert f"nonroot:x:{UID}:{UID}:" in (rootfs / "etc/passwd").read_text()
    assert f"nonroot:x:{UID}:" in (rootfs / "etc/group").read_text()
    assert (rootfs / "tmp").stat().st_mode & 0o7777 == 0o1777
    assert "BEGIN CERTIFICATE" in (rootfs / "etc/ssl/certs/ca-certificates.crt").read_text()
    # The loader in the image resolves every library the binary names, inside the image.
    r = subprocess.run(["chroot", str(rootfs), "/usr/local/bin/polykms", "version"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr


def test_the_sbom_lists_the_crates_compiled_in(archive, rootfs):
    bom = json.loads((rootfs / "usr/share/doc/polykms/sbom.cdx.json").read_text())
    assert bom["bomFormat"] == "CycloneDX" and bom["metadata"]["component"]["name"] == "polykms"
    names = {c["name"] for c in bom["components"] if c["scope"] == "required"}
    assert {"tonic", "prost", "tokio", "notify", "aws-lc-rs", "aws-sdk-kms", "vaultrs"} <= names, names
    # The list is cargo metadata's workspace resolve (cargo-auditable), a superset of what is
    # linked: it names ring (an optional dependency nothing enables) in every build. What the
    # FIPS binary links is checked on its symbols by integration/fips-check.sh.
    fips = archive.config["config"]["Labels"].get("io.polykms.fips") == "true"
    assert ("aws-lc-fips-sys" in names) == fips, names
    beside = Path(IMAGE[: -len(".tar")] + ".sbom.cdx.json") if IMAGE.endswith(".tar") else None
    if beside and beside.exists():
        assert json.loads(beside.read_text()) == bom


def test_version_inside_names_the_labelled_version_revision_and_module(archive, rootfs):
    labels = archive.config["config"]["Labels"]
    r = subprocess.run(["chroot", f"--userspec={UID}:{UID}", str(rootfs), "/usr/local/bin/polykms", "version"],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stderr
    first, module = r.stdout.splitlines()
    assert first == (f"polykms {labels['org.opencontainers.image.version']} "
                     f"(git revision {labels['org.opencontainers.image.revision']})")
    # build.sh --fips labels the FIPS image; its binary runs the AWS-LC FIPS module in FIPS mode
    # inside the image too (the module's integrity check and self tests run at start).
    if labels["io.polykms.fips"] == "true":
        assert re.fullmatch(r"cryptographic module: AWS-LC FIPS \S+ \(FIPS mode\) \(FIPS build.*\)", module), module
    else:
        assert labels["io.polykms.fips"] == "false"
        assert re.fullmatch(r"cryptographic module: AWS-LC \S+ \(not a FIPS build\)", module), module


# A container runtime's setup, then the image's entrypoint: private mounts, /proc and /dev,
# the root filesystem bound read-only, config read-only and the socket directory read-write.
RUN = r"""
set -eu
r="$1"; shift
mount --make-rprivate /
mount --bind "$r" "$r"
mount --bind "$CONFIG_DIR" "$r/etc/polykms"
mount -o remount,bind,ro "$r/etc/polykms"
mount --bind "$SOCKET_DIR" "$r/var/run/kmsplugin"
mount -t proc proc "$r/proc"
mount --rbind /dev "$r/dev"
mount -o remount,bind,ro "$r"
if touch "$r/.rw-probe" 2>/dev/null; then echo "the root filesystem is writable" >&2; exit 1; fi
exec chroot --userspec=65532:65532 "$r" "$@"
"""


@pytest.fixture
def container(archive, rootfs, tmp_path):
    """Starts the image's entrypoint and cmd (the config path from the image) in the rootfs."""
    for mount_point in ("var/run/kmsplugin", "proc", "dev"):
        (rootfs / mount_point).mkdir(parents=True, exist_ok=True)
    base = Path(tempfile.mkdtemp(prefix="pk-img-", dir="/tmp"))
    config_dir, socket_dir = base / "config", base / "run"
    config_dir.mkdir()
    socket_dir.mkdir()
    os.chown(socket_dir, UID, UID)
    key = config_dir / "k.key"
    subprocess.run(["chroot", str(rootfs), "/usr/local/bin/polykms", "keygen", "--out", "/tmp/k.key"], check=True,
                   capture_output=True)
    # keygen in the image writes into the image's /tmp; the key is then handed over like a
    # mounted Secret: owned by the container user, mode 0600.
    shutil.move(rootfs / "tmp" / "k.key", key)
    os.chown(key, UID, UID)
    os.chmod(key, 0o600)
    port = free_port()
    (config_dir / "config.toml").write_text(f"""
[server]
socket = "/var/run/kmsplugin/socket.sock"
[http]
listen = "127.0.0.1:{port}"
[health]
probe_interval = "1s"
[[backends]]
name = "local"
type = "local"
key_files = ["k.key"]
[encrypt]
with = ["local"]
""")
    c = archive.config["config"]
    log = open(base / "log", "wb")
    # The image's environment, and what the setup script needs (host tools on the host's PATH).
    env = dict(e.split("=", 1) for e in c.get("Env", []))
    setup = [shutil.which("env"), "PATH=/usr/sbin:/usr/bin:/sbin:/bin", f"CONFIG_DIR={config_dir}", f"SOCKET_DIR={socket_dir}"]
    proc = subprocess.Popen([shutil.which("unshare"), "--mount", "--pid", "--fork", "--kill-child=SIGTERM", *setup,
                             "sh", "-c", RUN, "run", str(rootfs), *c["Entrypoint"], *c["Cmd"]],
                            stdout=log, stderr=subprocess.STDOUT, env=env)
    socket = socket_dir / "socket.sock"

    def logs():
        return (base / "log").read_text(errors="replace")

    deadline = time.monotonic() + 30
    while not socket.exists():
        assert proc.poll() is None, f"the image exited with {proc.returncode}:\n{logs()}"
        assert time.monotonic() < deadline, f"no socket in 30s:\n{logs()}"
        time.sleep(0.05)
    info = {"socket": socket, "port": port, "proc": proc, "logs": logs, "config_dir": config_dir}
    yield info
    # What a runtime does to stop a container: SIGTERM to its first process.
    if proc.poll() is None:
        os.kill(int(served_pid(proc.pid).name), signal.SIGTERM)
    try:
        info["exit"] = proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    log.close()
    shutil.rmtree(base, ignore_errors=True)


def served_pid(unshare_pid):
    """The container's process: unshare's child (sh exec'd chroot, which exec'd the entrypoint)."""
    children = Path(f"/proc/{unshare_pid}/task/{unshare_pid}/children").read_text().split()
    assert len(children) == 1, children
    pid = Path("/proc") / children[0]
    assert (pid / "comm").read_text().strip() == "polykms"
    return pid


def test_the_image_alone_serves_kms_v2_as_65532_on_a_read_only_root(container, rootfs):
    stub = v2_grpc.KeyManagementServiceStub(grpc.insecure_channel(f"unix://{container['socket']}"))
    deadline = time.monotonic() + 20
    while True:
        try:
            status = stub.Status(v2_pb2.StatusRequest(), timeout=2)
            break
        except grpc.RpcError:
            assert time.monotonic() < deadline, container["logs"]()
            time.sleep(0.1)
    assert status.healthz == "ok" and status.version == "v2" and status.key_id
    seed = os.urandom(32)
    enc = stub.Encrypt(v2_pb2.EncryptRequest(plaintext=seed, uid="image-1"), timeout=5)
    dec = stub.Decrypt(v2_pb2.DecryptRequest(ciphertext=enc.ciphertext, key_id=enc.key_id, uid="image-2",
                                             annotations=enc.annotations), timeout=5)
    assert dec.plaintext == seed and enc.key_id == status.key_id
    with urllib.request.urlopen(f"http://127.0.0.1:{container['port']}/readyz", timeout=5) as r:
        assert r.status == 200
    # The socket was created by the container user, and the server runs as 65532:65532.
    assert container["socket"].stat().st_uid == UID
    pid = served_pid(container["proc"].pid)
    status_lines = (pid / "status").read_text().splitlines()
    ids = {line.split(":")[0]: line.split()[1:] for line in status_lines if line.startswith(("Uid:", "Gid:"))}
    assert ids == {"Uid": [str(UID)] * 4, "Gid": [str(UID)] * 4}, ids
    # Its root is the image, read-only.
    mounts = (pid / "mountinfo").read_text().splitlines()
    root = next(line.split() for line in mounts if line.split()[4] == "/")
    assert "ro" in root[5].split(","), root
    logs = container["logs"]()
    assert "polykms started" in logs, logs
    # A clean stop on SIGTERM, as from a runtime: exit 0, the socket removed.
    os.kill(int(pid.name), signal.SIGTERM)
    assert container["proc"].wait(timeout=15) == 0, container["logs"]()
    assert not container["socket"].exists()
