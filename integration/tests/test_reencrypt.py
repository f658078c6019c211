"""`polykms reencrypt` against a fake Kubernetes API (`apiserver-emulator serve-api`) that stores
objects in a real etcd under kube-apiserver's KMS v2 envelope, so that `polykms audit` proves the
result. Needs etcd (integration/servers/etcd.sh, env POLYKMS_ETCD_ENDPOINTS) and the emulator
binary. Each test works under its own etcd root and deletes it afterwards."""

import base64
import json
import os
import signal
import subprocess
import textwrap
import uuid
from pathlib import Path

import pytest
import requests

from conftest import BIN, ROOT, keygen, local_config, v2_pb2

ETCD = os.environ.get("POLYKMS_ETCD_ENDPOINTS", "")
REQUIRED = os.environ.get("POLYKMS_REQUIRE_INTEGRATION") == "1"
EMULATOR = Path(os.environ.get(
    "POLYKMS_EMULATOR_BIN",
    Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "target")) / "debug" / "apiserver-emulator",
))
TOKEN = "reencrypt-test-token"


def _need(condition, why):
    if not condition:
        if REQUIRED:
            pytest.fail(why)
        pytest.skip(why)


def _b64(b):
    return base64.b64encode(b if isinstance(b, bytes) else b.encode()).decode()


def etcd_range(prefix):
    """{key: (value, mod_revision)} under prefix, through etcd's JSON gateway."""
    end = prefix[:-1] + chr(ord(prefix[-1]) + 1)
    r = requests.post(f"{ETCD.split(',')[0]}/v3/kv/range",
                      json={"key": _b64(prefix), "range_end": _b64(end)}, timeout=30)
    r.raise_for_status()
    return {base64.b64decode(kv["key"]).decode(): (kv["value"], kv["mod_revision"])
            for kv in r.json().get("kvs", [])}


@pytest.fixture
def root():
    _need(ETCD, "POLYKMS_ETCD_ENDPOINTS is unset (start integration/servers/etcd.sh)")
    _need(EMULATOR.exists(), f"{EMULATOR} missing: cargo build -p polykms-apiserver-emulator")
    r = f"/polykms-test/{uuid.uuid4().hex[:12]}/registry"
    yield r
    prefix = r + "/"
    end = prefix[:-1] + chr(ord(prefix[-1]) + 1)
    requests.post(f"{ETCD.split(',')[0]}/v3/kv/deleterange",
                  json={"key": _b64(prefix), "range_end": _b64(end)}, timeout=30)


def emulate(plugin, prefix, *args):
    cmd = [str(EMULATOR), "--socket", plugin.socket, "--etcd-endpoints", ETCD, "--prefix", prefix, *args]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, f"{cmd}: rc={r.returncode}\n{r.stdout}\n{r.stderr}"
    return json.loads(r.stdout)


class FakeApi:
    """A running `apiserver-emulator serve-api`."""

    def __init__(self, plugin, root, workdir, *faults):
        self.kubeconfig = workdir / f"kubeconfig-{uuid.uuid4().hex[:6]}"
        self.proc = subprocess.Popen(
            [str(EMULATOR), "--socket", plugin.socket, "--etcd-endpoints", ETCD, "serve-api",
             "--etcd-root", root, "--token", TOKEN, "--kubeconfig", str(self.kubeconfig), *faults],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        line = self.proc.stdout.readline()
        assert line, f"serve-api did not start: {self.proc.stderr.read()}"
        self.url = json.loads(line)["listening"]

    def get(self, path):
        return requests.get(self.url + path, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=10)

    def stop(self):
        self.proc.terminate()
        self.proc.wait(timeout=10)


@pytest.fixture
def fake_api():
    started = []

    def start(plugin, root, workdir, *faults):
        f = FakeApi(plugin, root, workdir, *faults)
        started.append(f)
        return f

    yield start
    for f in started:
        f.stop()


def key_id(plugin):
    return plugin.v2().Status(v2_pb2.StatusRequest(), timeout=5).key_id


def rotate(plugin, keys):
    """Rewrites the plugin's key list (first one encrypts) and restarts it."""
    text = local_config(keys).replace("@SOCKET@", plugin.socket).replace(
        "@HTTP@", f"127.0.0.1:{plugin.http_port}")
    plugin.config.write_text(textwrap.dedent(text))
    plugin.restart()
    return key_id(plugin)


def reencrypt(api, *args, timeout=300):
    cmd = [str(BIN), "reencrypt", "--kubeconfig", str(api.kubeconfig), "--qps", "0", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)


def reencrypt_json(api, *args):
    r = reencrypt(api, "--output", "json", *args)
    assert r.stdout.strip(), f"rc={r.returncode}\n{r.stderr}"
    return r.returncode, json.loads(r.stdout), r.stderr


def audit(prefix, expect_key_id):
    r = subprocess.run([str(BIN), "audit", "--etcd-endpoints", ETCD, "--prefix", prefix,
                        "--expect-key-id", expect_key_id, "--output", "json"],
                       capture_output=True, text=True, timeout=120)
    return r.returncode, json.loads(r.stdout)


def test_rotation_with_thousands_of_objects_under_two_key_ids_interrupted_and_resumed(
        root, fake_api, workdir, plugins):
    a, b = keygen(workdir / "a.key"), keygen(workdir / "b.key")
    p = plugins(workdir, local_config([a]))
    old_id = key_id(p)
    secrets = root + "/secrets/"
    emulate(p, secrets, "write", "--namespace", "app", "--count", "1500")
    emulate(p, root + "/configmaps/", "write", "--namespace", "app", "--count", "100")
    new_id = rotate(p, [b, a])
    assert new_id != old_id
    emulate(p, secrets, "write", "--namespace", "zeta", "--count", "1000")
    rc, out = audit(secrets, new_id)
    assert rc == 1 and out["report"]["kms_v2"] == {"polykms": {old_id: 1500, new_id: 1000}}

    api = fake_api(p, root, workdir)
    state = workdir / "reencrypt.state"
    cmd = [str(BIN), "reencrypt", "--kubeconfig", str(api.kubeconfig), "--qps", "0",
           "--resources", "secrets,configmaps", "--page-size", "200", "--state-file", str(state),
           "--output", "json"]
    first = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    # Not a terminal: progress comes as JSON lines on stderr. Interrupt once objects are done.
    for line in first.stderr:
        event = json.loads(line)
        if event.get("event") == "progress" and event["done"] > 0:
            first.send_signal(signal.SIGINT)
            break
    out, err = first.communicate(timeout=120)
    assert first.returncode == 130, err
    events = [json.loads(line) for line in err.splitlines() if line.startswith("{")]
    assert any(e["event"] == "note" and "stopping after the objects in flight" in e["message"]
               for e in events), err
    assert events[-1]["event"] == "stopped"
    summary = json.loads(out)
    assert summary["interrupted"] and not summary["passed"]
    saved = json.loads(state.read_text())
    done_before = saved["resources"]["secrets"]["position"]
    assert 0 < done_before < 2500 and not saved["resources"]["secrets"]["done"]
    assert saved["resources"]["secrets"]["last_key"]

    verify = ["--verify-etcd-endpoints", ETCD, "--etcd-prefix", root, "--expect-key-id", new_id]
    second = subprocess.run(cmd + verify, capture_output=True, text=True, timeout=300)
    assert second.returncode == 0, second.stderr
    summary = json.loads(second.stdout)
    assert summary["passed"] and not state.exists()
    # The same classification as `polykms audit`, over both resources' etcd prefixes.
    assert summary["verify"]["passed"]
    assert [(v["resource"], v["report"]["kms_v2"]) for v in summary["verify"]["resources"]] == [
        ("secrets", {"polykms": {new_id: 2500}}), ("configmaps", {"polykms": {new_id: 100}})]
    secrets_summary, configmaps_summary = summary["resources"]
    # Each object handled exactly once over the two runs: the stale ones rewritten, the others
    # found current (an object handled twice would show up as processed > 2500).
    assert secrets_summary["processed"] == 2500
    assert secrets_summary["rewritten"] == 1500 and secrets_summary["already_current"] == 1000
    assert configmaps_summary["rewritten"] == 100
    assert audit(secrets, new_id)[0] == 0
    assert audit(root + "/configmaps/", new_id)[0] == 0
    # The old key can go: everything reads under the new one.
    rotate(p, [b])
    read = emulate(p, secrets, "read-all")
    assert read["read"] == 2500 and read["failed"] == 0


def test_expired_continue_tokens_conflicts_deletes_and_throttling(root, fake_api, workdir, plugins):
    a, b = keygen(workdir / "a.key"), keygen(workdir / "b.key")
    p = plugins(workdir, local_config([a]))
    secrets = root + "/secrets/"
    emulate(p, secrets, "write", "--namespace", "ns", "--count", "600")
    new_id = rotate(p, [b, a])
    api = fake_api(p, root, workdir, "--expire-continue-every", "2", "--conflict-every", "11",
                   "--delete-every", "23", "--throttle-every", "151")
    rc, out, err = reencrypt_json(api, "--page-size", "100", "--concurrency", "4")
    assert rc == 0, err
    r = out["resources"][0]
    assert r["relists"] >= 2, out
    assert "continue token no longer valid (410)" in err
    remaining = len(etcd_range(secrets))
    assert r["skipped"] == 600 - remaining > 0
    assert r["processed"] == 600 and r["failed"] == 0
    assert r["rewritten"] + r["already_current"] + r["skipped"] == 600
    assert audit(secrets, new_id)[0] == 0


def test_forbidden_update_stops_cleanly_and_a_resumed_run_finishes(root, fake_api, workdir, plugins):
    a, b = keygen(workdir / "a.key"), keygen(workdir / "b.key")
    p = plugins(workdir, local_config([a]))
    secrets = root + "/secrets/"
    emulate(p, secrets, "write", "--namespace", "ns", "--count", "200")
    new_id = rotate(p, [b, a])
    state = workdir / "state.json"

    api = fake_api(p, root, workdir, "--forbid", "update", "--forbid-after", "50")
    r = reencrypt(api, "--state-file", str(state), "--page-size", "40")
    assert r.returncode == 77, r.stderr
    assert "refused to update secrets" in r.stderr and "RBAC" in r.stderr
    saved = json.loads(state.read_text())["resources"]["secrets"]
    assert 40 <= saved["position"] <= 50 and not saved["done"]
    rc, out = audit(secrets, new_id)
    assert rc == 1 and out["report"]["kms_v2"]["polykms"][new_id] == 50
    api.stop()

    listing_refused = fake_api(p, root, workdir, "--forbid", "list")
    r = reencrypt(listing_refused, "--state-file", str(state))
    assert r.returncode == 77 and "refused to list secrets" in r.stderr, r.stderr
    listing_refused.stop()

    api = fake_api(p, root, workdir)
    rc, out, err = reencrypt_json(api, "--state-file", str(state), "--page-size", "40")
    assert rc == 0, err
    s = out["resources"][0]
    assert s["processed"] == 200 and s["rewritten"] + s["already_current"] == 200
    assert not state.exists()
    assert audit(secrets, new_id)[0] == 0


def test_dry_run_changes_nothing(root, fake_api, workdir, plugins):
    a, b = keygen(workdir / "a.key"), keygen(workdir / "b.key")
    p = plugins(workdir, local_config([a]))
    secrets = root + "/secrets/"
    emulate(p, secrets, "write", "--namespace", "x", "--count", "120")
    new_id = rotate(p, [b, a])
    before = etcd_range(secrets)
    api = fake_api(p, root, workdir)
    state = workdir / "dry.state"
    # Through the old script's path, now a wrapper around the command.
    r = subprocess.run([str(ROOT / "deploy" / "scripts" / "reencrypt.sh"), "--kubeconfig",
                        str(api.kubeconfig), "--dry-run", "--page-size", "50", "--state-file", str(state)],
                       env=dict(os.environ, POLYKMS=str(BIN)), capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert "secrets: would rewrite 120" in r.stdout and "nothing written" in r.stdout
    assert etcd_range(secrets) == before and not state.exists()
    # The check after the run reports what is still under the old key, and fails.
    r = reencrypt(api, "--dry-run", "--namespace", "x", "--verify-etcd-endpoints", ETCD,
                  "--etcd-prefix", root, "--expect-key-id", new_id)
    assert r.returncode == 1, r.stderr
    assert f"verify secrets: 120 value(s) under {secrets}x/, 120 not KMS v2 under key_id {new_id}" in r.stdout
    assert etcd_range(secrets) == before


def test_force_rewrite_stores_current_objects_again_and_leaves_them_as_they_were(
        root, fake_api, workdir, plugins):
    p = plugins(workdir, local_config([keygen(workdir / "a.key")]))
    secrets = root + "/secrets/"
    emulate(p, secrets, "write", "--namespace", "x", "--count", "30")
    api = fake_api(p, root, workdir)
    before = etcd_range(secrets)
    original = api.get("/api/v1/namespaces/x/secrets/secret-00007").json()

    rc, out, err = reencrypt_json(api)
    assert rc == 0 and out["total"]["already_current"] == 30 and out["total"]["rewritten"] == 0, err
    assert etcd_range(secrets) == before

    rc, out, err = reencrypt_json(api, "--force-rewrite")
    assert rc == 0 and out["total"]["rewritten"] == 30, err
    after = etcd_range(secrets)
    assert all(after[k][1] != before[k][1] for k in before)
    now = api.get("/api/v1/namespaces/x/secrets/secret-00007").json()
    assert "annotations" not in now["metadata"]
    del now["metadata"]["resourceVersion"], original["metadata"]["resourceVersion"]
    assert now == original


def test_storage_version_migration_path(root, fake_api, workdir, plugins):
    a, b = keygen(workdir / "a.key"), keygen(workdir / "b.key")
    p = plugins(workdir, local_config([a]))
    secrets = root + "/secrets/"
    emulate(p, secrets, "write", "--namespace", "x", "--count", "300")
    new_id = rotate(p, [b, a])

    without = fake_api(p, root, workdir)
    r = reencrypt(without, "--use-storage-version-migration")
    assert r.returncode == 64 and "storagemigration.k8s.io" in r.stderr, r.stderr

    api = fake_api(p, root, workdir, "--storage-version-migration")
    rc, out, err = reencrypt_json(api, "--use-storage-version-migration")
    assert rc == 0, err
    migration = out["resources"][0]["migration"]
    assert migration["condition"] == "Succeeded"
    assert migration["name"].startswith("polykms-reencrypt-secrets-")
    assert audit(secrets, new_id)[0] == 0


def test_bad_flags_and_unreachable_api(tmp_path):
    for args, needle in [(["--concurrency", "0"], "--concurrency"),
                         (["--resources", "Secrets"], "--resources"),
                         (["--page-size", "0"], "--page-size"),
                         (["--verify-etcd-endpoints", "http://127.0.0.1:1"], "--expect-key-id"),
                         (["--verify-etcd-endpoints", "http://127.0.0.1:1", "--expect-key-id", "k",
                           "--etcd-cert", "c.pem"], "--etcd-cert and --etcd-key"),
                         (["--kubeconfig", str(tmp_path / "none")], "--kubeconfig")]:
        r = subprocess.run([str(BIN), "reencrypt", *args], capture_output=True, text=True, timeout=30)
        assert r.returncode == 64 and needle in r.stderr, (args, r.stderr)
    kubeconfig = tmp_path / "kc"
    kubeconfig.write_text("apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster:\n"
                          "    server: http://127.0.0.1:9\nusers:\n- name: u\n  user:\n    token: t\n"
                          "contexts:\n- name: x\n  context:\n    cluster: c\n    user: u\n"
                          "current-context: x\n")
    r = subprocess.run([str(BIN), "reencrypt", "--kubeconfig", str(kubeconfig)],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 69, r.stderr


def test_context_selects_the_cluster_and_bad_credentials_stop_with_77(root, fake_api, workdir, plugins):
    p = plugins(workdir, local_config([keygen(workdir / "a.key")]))
    emulate(p, root + "/secrets/", "write", "--namespace", "x", "--count", "5")
    api = fake_api(p, root, workdir)
    kubeconfig = workdir / "two-contexts"

    def write(token):
        kubeconfig.write_text(textwrap.dedent(f"""\
            apiVersion: v1
            kind: Config
            clusters:
            - {{name: dead, cluster: {{server: "http://127.0.0.1:9"}}}}
            - {{name: fake, cluster: {{server: "{api.url}"}}}}
            users:
            - {{name: u, user: {{token: "{token}"}}}}
            contexts:
            - {{name: dead, context: {{cluster: dead, user: u}}}}
            - {{name: fake, context: {{cluster: fake, user: u}}}}
            current-context: dead
            """))

    write(TOKEN)
    base = [str(BIN), "reencrypt", "--kubeconfig", str(kubeconfig), "--dry-run"]
    r = subprocess.run([*base, "--context", "fake"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and "would rewrite 5" in r.stdout, r.stderr
    r = subprocess.run(base, capture_output=True, text=True, timeout=60)
    assert r.returncode == 69, r.stderr
    r = subprocess.run([*base, "--context", "nope"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 64, r.stderr
    write("wrong-token")
    r = subprocess.run([*base, "--context", "fake"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 77 and "401" in r.stderr, r.stderr


def audit_with(prefix, *args):
    r = subprocess.run([str(BIN), "audit", "--etcd-endpoints", ETCD, "--prefix", prefix,
                        "--output", "json", *args], capture_output=True, text=True, timeout=120)
    return r.returncode, json.loads(r.stdout)


def test_verify_reads_the_storage_paths_of_services_and_custom_resources(root, fake_api, workdir, plugins):
    a, b = keygen(workdir / "a.key"), keygen(workdir / "b.key")
    p = plugins(workdir, local_config([a]))
    # Where kube-apiserver stores them: services under services/specs, a custom resource under
    # <group>/<plural> (not /registry/services/ nor /registry/widgets/).
    services, widgets = root + "/services/specs/", root + "/example.com/widgets/"
    emulate(p, services, "write", "--namespace", "x", "--count", "7")
    emulate(p, widgets, "write", "--namespace", "x", "--count", "12")
    new_id = rotate(p, [b, a])
    api = fake_api(p, root, workdir)
    verify = ["--verify-etcd-endpoints", ETCD, "--etcd-prefix", root, "--expect-key-id", new_id]
    rc, out, err = reencrypt_json(api, "--resources", "services,widgets.example.com", *verify)
    assert rc == 0, err
    assert [(v["resource"], v["prefix"], v["report"]["kms_v2"]) for v in out["verify"]["resources"]] == [
        ("services", services, {"polykms": {new_id: 7}}),
        ("widgets.example.com", widgets, {"polykms": {new_id: 12}})]
    # A wrong --etcd-prefix reads empty prefixes while the run saw objects: that fails.
    wrong = ["--verify-etcd-endpoints", ETCD, "--etcd-prefix", root + "-elsewhere", "--expect-key-id", new_id]
    r = reencrypt(api, "--resources", "services,widgets.example.com", *wrong)
    assert r.returncode == 1, r.stderr
    assert "holds no value while the run saw 12 widgets.example.com object(s)" in r.stderr
    assert "verification read nothing" in r.stdout


def test_objects_that_outlast_the_retries_are_kept_and_retried_first_on_resume(
        root, fake_api, workdir, plugins):
    a, b = keygen(workdir / "a.key"), keygen(workdir / "b.key")
    p = plugins(workdir, local_config([a]))
    secrets = root + "/secrets/"
    emulate(p, secrets, "write", "--namespace", "ns", "--count", "30")
    new_id = rotate(p, [b, a])
    state = workdir / "outage.state"
    args = ["--state-file", str(state), "--page-size", "10"]

    down = fake_api(p, root, workdir, "--fail-objects", "ns/secret-00003,ns/secret-00017")
    rc, out, err = reencrypt_json(down, *args)
    assert rc == 1, err
    assert sorted(f["object"] for f in out["failures"]) == ["ns/secret-00003", "ns/secret-00017"]
    assert out["total"]["failed"] == 2 and out["total"]["rewritten"] == 28
    assert out["state_file"] == str(state)
    saved = json.loads(state.read_text())["resources"]["secrets"]
    assert saved["done"] and sorted(saved["failed"]) == ["ns/secret-00003", "ns/secret-00017"]
    assert "not rewritten" in err
    down.stop()

    # Resumed while one is still down: it names exactly the object still not rewritten.
    half = fake_api(p, root, workdir, "--fail-objects", "ns/secret-00017")
    rc, out, err = reencrypt_json(half, *args)
    assert rc == 1, err
    assert [f["object"] for f in out["failures"]] == ["ns/secret-00017"]
    assert out["total"]["failed"] == 1 and out["total"]["rewritten"] == 29
    half.stop()
    rc, out = audit_with(secrets, "--expect-key-id", new_id)
    assert rc == 1 and [f["key"] for f in out["report"]["findings"]] == [secrets + "ns/secret-00017"]

    healthy = fake_api(p, root, workdir)
    rc, out, err = reencrypt_json(healthy, *args)
    assert rc == 0, err
    assert out["failures"] == [] and out["total"]["rewritten"] == 30 and out["total"]["failed"] == 0
    assert not state.exists()
    assert audit_with(secrets, "--expect-key-id", new_id)[0] == 0


def test_a_state_file_of_another_cluster_or_rotation_is_refused(root, fake_api, workdir, plugins):
    a, b = keygen(workdir / "a.key"), keygen(workdir / "b.key")
    p = plugins(workdir, local_config([a]))
    emulate(p, root + "/secrets/", "write", "--namespace", "ns", "--count", "10")
    new_id = rotate(p, [b, a])
    state = workdir / "bound.state"
    verify = ["--verify-etcd-endpoints", ETCD, "--etcd-prefix", root]
    # A run that leaves its state file behind (one object down), bound to this key_id.
    api = fake_api(p, root, workdir, "--fail-objects", "ns/secret-00004")
    r = reencrypt(api, "--state-file", str(state), *verify, "--expect-key-id", new_id)
    assert r.returncode == 1 and state.exists(), r.stderr
    target = json.loads(state.read_text())["target"]
    assert target["expect_key_id"] == new_id and target["cluster_uid"] and target["server"] == api.url + "/"

    other_rotation = reencrypt(api, "--state-file", str(state), *verify, "--expect-key-id", "pk1-other")
    assert other_rotation.returncode == 64, other_rotation.stderr
    assert "another rotation" in other_rotation.stderr and "--discard-state" in other_rotation.stderr

    other_root = root.replace("/registry", "/other/registry")
    other_cluster = fake_api(p, other_root, workdir)
    r = reencrypt(other_cluster, "--state-file", str(state))
    assert r.returncode == 64 and "another cluster" in r.stderr, r.stderr
    # --discard-state starts over (the other cluster holds nothing: the state goes away).
    r = reencrypt(other_cluster, "--state-file", str(state), "--discard-state")
    assert r.returncode == 0 and not state.exists(), r.stderr


def test_kms_v1_a_plain_run_says_it_rewrote_nothing_and_audit_reads_v1_key_ids(
        root, fake_api, workdir, plugins):
    a, b = keygen(workdir / "a.key"), keygen(workdir / "b.key")
    p = plugins(workdir, local_config([a]))
    old_id = key_id(p)
    secrets = root + "/secrets/"
    emulate(p, secrets, "write", "--namespace", "v1", "--count", "40")
    api = fake_api(p, root, workdir, "--kms-v1")
    # Stored again by a KMS v1 provider: every value becomes k8s:enc:kms:v1 under key a.
    rc, out, err = reencrypt_json(api, "--force-rewrite")
    assert rc == 0 and out["total"]["rewritten"] == 40, err
    rc, out = audit_with(secrets, "--expect-key-id", old_id)
    assert rc == 1 and out["report"]["classes"] == {"kms-v1": 40}
    assert "not KMS v2" in out["report"]["findings"][0]["reason"]
    rc, out = audit_with(secrets, "--expect-key-id", old_id, "--allow-kms-v1")
    assert rc == 0, out
    assert out["report"]["kms_v1"] == {"polykms": {old_id: 40}}

    new_id = rotate(p, [b, a])
    # A plain run: the apiserver has no staleness signal and stores nothing again.
    rc, out, err = reencrypt_json(api)
    assert rc == 0, err
    assert out["total"]["already_current"] == 40 and out["total"]["rewritten"] == 0
    assert out["nothing_rewritten"] and "--force-rewrite" in out["note"] and "KMS v1" in out["note"]
    r = reencrypt(api)
    assert "rewrote nothing" in r.stdout and "--force-rewrite" in r.stdout
    verify = ["--verify-etcd-endpoints", ETCD, "--etcd-prefix", root, "--expect-key-id", new_id]
    r = reencrypt(api, *verify)
    assert r.returncode == 1 and "KMS v1" in r.stderr and "--force-rewrite" in r.stderr, r.stderr
    assert audit_with(secrets, "--expect-key-id", new_id, "--allow-kms-v1")[0] == 1

    rc, out, err = reencrypt_json(api, "--force-rewrite", *verify, "--allow-kms-v1")
    assert rc == 0 and out["total"]["rewritten"] == 40 and out["verify"]["passed"], err
    rc, out = audit_with(secrets, "--expect-key-id", new_id, "--allow-kms-v1")
    assert rc == 0 and out["report"]["kms_v1"] == {"polykms": {new_id: 40}}


def test_storage_version_migration_retries_a_throttled_create_and_gives_up_at_the_timeout(
        root, fake_api, workdir, plugins):
    a, b = keygen(workdir / "a.key"), keygen(workdir / "b.key")
    p = plugins(workdir, local_config([a]))
    secrets = root + "/secrets/"
    emulate(p, secrets, "write", "--namespace", "x", "--count", "20")
    new_id = rotate(p, [b, a])

    throttled = fake_api(p, root, workdir, "--storage-version-migration", "--throttle-migration-creates", "2")
    rc, out, err = reencrypt_json(throttled, "--use-storage-version-migration")
    assert rc == 0, err
    assert out["resources"][0]["migration"]["condition"] == "Succeeded"
    assert audit_with(secrets, "--expect-key-id", new_id)[0] == 0

    stuck = fake_api(p, root, workdir, "--storage-version-migration", "--svm-never-completes")
    r = reencrypt(stuck, "--use-storage-version-migration", "--timeout", "3s", timeout=60)
    assert r.returncode == 69, r.stderr
    assert "did not finish within --timeout 3s" in r.stderr and "migration controller" in r.stderr
