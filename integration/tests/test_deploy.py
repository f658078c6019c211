"""The operators' files under deploy/ and configs/, checked offline with real tools:
Kubernetes schemas (kubernetes-validate), the Helm chart rendered by Helm's own Go engine
(helm-python-sdk binds the official Helm SDK; no helm binary is packaged in apt, PyPI or npm),
PromQL parsed by promql-parser, the systemd unit by systemd-analyze, and every example config
loaded by the real polykms binary."""

import base64
import datetime
import json
import os
import re
import shutil
import signal
import subprocess
import time
import tomllib

import kubernetes_validate
import promql_parser
import pytest
import yaml

from conftest import BIN, ROOT, keygen, local_config, v2_pb2

DEPLOY = ROOT / "deploy"
CHART = DEPLOY / "helm" / "polykms"
CONFIGS = ROOT / "configs"
K8S_VERSIONS = ("1.29.0", "1.33.0")  # KMS v2 GA (Status version "v2"), and a recent release
SOCKET = "/var/run/kmsplugin/socket.sock"
EXIT_CONFIG, EXIT_UNAVAILABLE = 64, 69


def yaml_docs(text):
    return [d for d in yaml.safe_load_all(text) if d is not None]


def validate_k8s(doc, where):
    for version in K8S_VERSIONS:
        try:
            kubernetes_validate.validate(doc, version, strict=True)
        except kubernetes_validate.ValidationError as e:
            pytest.fail(f"{where}: {doc['kind']} invalid for Kubernetes {version}: {e.message} at {list(e.path)}")


# --- EncryptionConfiguration: not a served API, so no JSON schema exists; these are the rules
# of k8s.io/apiserver/pkg/apis/apiserver/validation (ValidateEncryptionConfiguration).
PROVIDER_KINDS = {"aesgcm", "aescbc", "secretbox", "identity", "kms"}
KMS_FIELDS = {"apiVersion", "name", "endpoint", "cachesize", "timeout"}


def duration_seconds(text):
    m = re.fullmatch(r"(\d+)(ms|s|m)", str(text))
    assert m, f"timeout {text!r} is not a duration"
    return int(m[1]) * {"ms": 0.001, "s": 1, "m": 60}[m[2]]


def check_encryption_config(doc, where):
    assert doc.get("apiVersion") == "apiserver.config.k8s.io/v1", where
    assert doc.get("kind") == "EncryptionConfiguration", where
    assert set(doc) == {"apiVersion", "kind", "resources"}, f"{where}: unknown fields {set(doc)}"
    kms_names = []
    assert doc["resources"], f"{where}: resources is empty"
    for rc in doc["resources"]:
        assert set(rc) == {"resources", "providers"}, f"{where}: {set(rc)}"
        assert rc["resources"] and all(isinstance(r, str) and r for r in rc["resources"]), where
        assert rc["providers"], f"{where}: no providers"
        for p in rc["providers"]:
            assert len(p) == 1 and set(p) <= PROVIDER_KINDS, f"{where}: a provider needs exactly one type: {p}"
            kind, body = next(iter(p.items()))
            if kind == "identity":
                assert body == {}, where
            elif kind == "kms":
                assert set(body) <= KMS_FIELDS, f"{where}: unknown kms fields {set(body) - KMS_FIELDS}"
                assert body.get("apiVersion") == "v2", f"{where}: polykms files use KMS v2"
                assert body.get("name") and ":" not in body["name"], f"{where}: kms v2 name must be set, without ':'"
                assert "cachesize" not in body, f"{where}: cachesize is not supported in kms v2"
                assert body.get("endpoint", "").startswith("unix:///"), f"{where}: endpoint must be unix://"
                assert duration_seconds(body.get("timeout", "3s")) > 0, where
                kms_names.append(body["name"])
            else:
                keys = body.get("keys") or []
                assert keys, f"{where}: {kind} needs keys"
                for k in keys:
                    assert k.get("name") and len(base64.b64decode(k["secret"], validate=True)) in (16, 24, 32), where
    assert len(kms_names) == len(set(kms_names)), f"{where}: kms provider names must be unique"
    return kms_names


def test_every_yaml_under_deploy_is_valid(tmp_path):
    seen = []
    for path in sorted(DEPLOY.rglob("*.yaml")):
        if CHART in path.parents:
            continue  # the chart is rendered and checked below
        rel = path.relative_to(ROOT)
        docs = yaml_docs(path.read_text())
        assert docs, rel
        for doc in docs:
            if doc.get("kind") == "EncryptionConfiguration":
                check_encryption_config(doc, rel)
                providers = doc["resources"][0]["providers"]
                assert providers[-1] == {"identity": {}}, f"{rel}: identity must be the last fallback"
                assert "kms" in providers[0], f"{rel}: a kms provider must encrypt"
            elif "groups" in doc:
                check_rule_file(doc, rel)
            else:
                validate_k8s(doc, rel)
            seen.append(f"{rel}:{doc.get('kind', 'rules')}")
    kinds = "\n".join(seen)
    for expected in ("static-pod.yaml:Pod", "alerts.yaml:rules", "aws.yaml:EncryptionConfiguration",
                     "migrate-from-aescbc.yaml:EncryptionConfiguration",
                     "rotate-kms-provider.yaml:EncryptionConfiguration"):
        assert expected in kinds, f"{expected} not checked; saw:\n{kinds}"


def test_encryption_configs_cover_every_backend_and_the_migration_orders():
    for backend in ("local", "aws", "vault", "gcp", "azure", "kmip"):
        doc = yaml.safe_load((DEPLOY / "encryption-config" / f"{backend}.yaml").read_text())
        kms = doc["resources"][0]["providers"][0]["kms"]
        assert kms["endpoint"] == f"unix://{SOCKET}", backend
        if backend != "local":
            socket = tomllib.loads((CONFIGS / f"{backend}.toml").read_text())["server"]["socket"]
            assert kms["endpoint"] == f"unix://{socket}", f"configs/{backend}.toml serves another socket"
    mig = yaml.safe_load((DEPLOY / "encryption-config" / "migrate-from-aescbc.yaml").read_text())
    assert [next(iter(p)) for p in mig["resources"][0]["providers"]] == ["kms", "aescbc", "identity"]
    rot = yaml.safe_load((DEPLOY / "encryption-config" / "rotate-kms-provider.yaml").read_text())
    rot_kms = [p["kms"] for p in rot["resources"][0]["providers"] if "kms" in p]
    assert [k["name"] for k in rot_kms] == ["polykms-next", "polykms"]
    assert rot_kms[0]["endpoint"] != rot_kms[1]["endpoint"]


def check_least_privilege(pod_spec, container, where):
    """The pod security settings issue 26 asks of every deploy file, wherever they are set (a
    container's securityContext wins over the pod's)."""
    pod_sc, sc = pod_spec.get("securityContext", {}), container.get("securityContext", {})

    def effective(key):
        return sc.get(key, pod_sc.get(key))

    assert effective("runAsNonRoot") is True, f"{where}: runAsNonRoot"
    assert effective("runAsUser") not in (None, 0), f"{where}: runAsUser"
    assert effective("seccompProfile") == {"type": "RuntimeDefault"}, f"{where}: seccompProfile"
    assert sc.get("allowPrivilegeEscalation") is False, f"{where}: allowPrivilegeEscalation"
    assert sc.get("readOnlyRootFilesystem") is True, f"{where}: readOnlyRootFilesystem"
    assert sc.get("capabilities", {}).get("drop") == ["ALL"], f"{where}: capabilities.drop"
    assert not sc.get("capabilities", {}).get("add"), f"{where}: capabilities.add"
    assert not sc.get("privileged"), f"{where}: privileged"
    assert not pod_spec.get("hostPID") and not pod_spec.get("hostIPC"), f"{where}: host namespaces"


def test_static_pod_wiring():
    pod = yaml.safe_load((DEPLOY / "static-pod.yaml").read_text())
    spec = pod["spec"]
    assert spec["hostNetwork"] and spec["priorityClassName"] == "system-node-critical"
    assert spec["securityContext"]["runAsNonRoot"] and spec["securityContext"]["runAsUser"] == 65532
    (c,) = spec["containers"]
    assert c["resources"]["requests"], "resource requests"
    assert c["livenessProbe"]["httpGet"]["path"] == "/livez"
    assert c["readinessProbe"]["httpGet"]["path"] == "/readyz"
    for probe in (c["livenessProbe"], c["readinessProbe"]):
        # hostNetwork + a 127.0.0.1 listener: probes must not go to the pod (node) IP.
        assert probe["httpGet"]["host"] == "127.0.0.1" and probe["httpGet"]["port"] == 8095
    mounts = {m["name"]: m for m in c["volumeMounts"]}
    vols = {v["name"]: v for v in spec["volumes"]}
    assert mounts["config"]["readOnly"] and not mounts["kmsplugin"].get("readOnly")
    assert vols["kmsplugin"]["hostPath"]["path"] == os.path.dirname(SOCKET)
    assert c["securityContext"]["readOnlyRootFilesystem"] and c["securityContext"]["capabilities"]["drop"] == ["ALL"]
    check_least_privilege(spec, c, "static-pod.yaml")
    # The image's layout: its CMD, its config path under the read-only mount, its user, and
    # the image pinned by digest.
    assert c["args"] == dockerfile_cmd()
    assert c["args"][c["args"].index("--config") + 1].startswith(mounts["config"]["mountPath"] + "/")
    assert (c["securityContext"]["runAsUser"], c["securityContext"]["runAsGroup"]) == (65532, 65532)
    assert re.fullmatch(r"[\w./-]+:[\w.-]+@sha256:[0-9a-f]{64}", c["image"]), c["image"]


def dockerfile_cmd():
    final = (DEPLOY / "Dockerfile").read_text().rsplit("\nFROM", 1)[1]
    return json.loads(re.search(r"^CMD (\[.*\])$", final, re.M).group(1))


# --- Helm chart ---------------------------------------------------------------------------

def render(values, name="polykms"):
    import helm_python

    with helm_python.Chart.load(str(CHART)) as chart:
        out = chart.render(values=values, name=name, namespace="kube-system")
    return {path: yaml_docs(text) for path, text in out.items() if path.endswith(".yaml")}


def check_service_monitor(doc):
    assert doc["apiVersion"] == "monitoring.coreos.com/v1"
    spec = doc["spec"]
    assert spec["selector"]["matchLabels"] and spec["endpoints"]
    for ep in spec["endpoints"]:
        assert ep["port"] == "metrics" and ep["path"] == "/metrics"
        assert re.fullmatch(r"\d+[smh]", ep["interval"])


def rendered_objects(values):
    objs = [d for docs in render(values).values() for d in docs]
    for doc in objs:
        if doc["kind"] == "ServiceMonitor":
            check_service_monitor(doc)  # a CRD: no schema in kubernetes-validate
        else:
            validate_k8s(doc, f"helm {doc['kind']}")
    return {d["kind"]: d for d in objs}


def test_chart_lints_clean():
    import helm_python

    report = helm_python.lint(str(CHART), values={"backends": {"local": {"enabled": True}}}, strict=True)
    problems = [m for m in report["messages"] if m["severity"] >= 2] + report["errors"]
    assert not problems, problems


def test_chart_renders_a_valid_daemonset_on_control_planes(tmp_path):
    objs = rendered_objects({"backends": {"local": {"enabled": True}}})
    assert set(objs) == {"ConfigMap", "DaemonSet", "ServiceAccount"}
    spec = objs["DaemonSet"]["spec"]["template"]["spec"]
    assert spec["hostNetwork"] and spec["priorityClassName"] == "system-node-critical"
    assert spec["nodeSelector"] == {"node-role.kubernetes.io/control-plane": ""}
    assert {"key": "node-role.kubernetes.io/control-plane", "operator": "Exists", "effect": "NoSchedule"} in spec["tolerations"]
    (c,) = spec["containers"]
    assert c["livenessProbe"]["httpGet"] == {"host": "127.0.0.1", "path": "/livez", "port": 8095}
    assert c["readinessProbe"]["httpGet"] == {"host": "127.0.0.1", "path": "/readyz", "port": 8095}
    socket_vol = next(v for v in spec["volumes"] if v["name"] == "kmsplugin")
    assert socket_vol["hostPath"]["path"] == os.path.dirname(SOCKET)
    # The image's user; the config is a read-only ConfigMap volume mounted as a directory (a
    # subPath mount would never see updates, and the plugin reloads on them).
    sc = spec["securityContext"]
    assert (sc["runAsUser"], sc["runAsGroup"], sc["runAsNonRoot"]) == (65532, 65532, True)
    assert c["securityContext"]["readOnlyRootFilesystem"]
    check_least_privilege(spec, c, "helm DaemonSet")
    config_mount = next(m for m in c["volumeMounts"] if m["name"] == "config")
    assert config_mount["readOnly"] and "subPath" not in config_mount
    assert c["args"][c["args"].index("--config") + 1] == config_mount["mountPath"] + "/config.toml"
    assert next(v for v in spec["volumes"] if v["name"] == "config")["configMap"]


def test_chart_pins_the_image_by_digest_when_given():
    digest = "sha256:" + "ab" * 32
    values = {"backends": {"local": {"enabled": True}}, "image": {"tag": "0.1.0", "digest": digest}}
    (c,) = rendered_objects(values)["DaemonSet"]["spec"]["template"]["spec"]["containers"]
    assert c["image"] == f"registry.example.com/polykms/polykms:0.1.0@{digest}"
    (c,) = rendered_objects({"backends": {"local": {"enabled": True}}})["DaemonSet"]["spec"]["template"]["spec"]["containers"]
    assert "@" not in c["image"]


def test_chart_service_monitor_needs_a_scrapeable_listener():
    import helm_python

    values = {"backends": {"local": {"enabled": True}}, "metrics": {"serviceMonitor": {"enabled": True}}}
    with pytest.raises(helm_python.HelmRenderError, match="listenOnPodIP"):
        render(values)
    values["metrics"]["listenOnPodIP"] = True
    objs = rendered_objects(values)
    assert {"Service", "ServiceMonitor"} <= set(objs)
    c = objs["DaemonSet"]["spec"]["template"]["spec"]["containers"][0]
    env = {e["name"]: e for e in c["env"]}
    assert env["POLYKMS_HTTP__LISTEN"]["value"] == "$(POD_IP):8095"
    assert "host" not in c["livenessProbe"]["httpGet"]


def test_chart_refuses_ambiguous_backend_choices():
    import helm_python

    bad = [
        ({}, "enable at least one backend"),
        ({"backends": {"local": {"enabled": True}, "aws": {"enabled": True, "key": "alias/k"}}}, "encrypt.with"),
        ({"backends": {"local": {"enabled": True}}, "encrypt": {"with": ["nope"]}}, "nope"),
    ]
    for values, message in bad:
        with pytest.raises(helm_python.HelmRenderError, match=re.escape(message)):
            render(values)


def chart_config(values):
    cm = rendered_objects(values)["ConfigMap"]
    return cm["data"]["config.toml"]


def run_check(config_path, env=None, timeout=90):
    return subprocess.run([str(BIN), "check", "--config", str(config_path)], capture_output=True,
                          text=True, timeout=timeout, env=env or offline_env())


def offline_env():
    # Static AWS test credentials and no instance-metadata lookups: nothing leaves the machine
    # but DNS queries for the example hostnames, which do not resolve here.
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "GOOGLE_", "AZURE_"))}
    env.update(AWS_ACCESS_KEY_ID="AKIAIOSFODNN7EXAMPLE", AWS_SECRET_ACCESS_KEY="example-not-a-secret",
               AWS_EC2_METADATA_DISABLED="true", NO_PROXY="*", no_proxy="*")
    for k in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy", "ALL_PROXY", "all_proxy"):
        env.pop(k, None)
    return env


def test_chart_config_enforces_the_sandbox_and_lets_it_read_the_pkcs11_host_paths():
    config = tomllib.loads(chart_config({"backends": {"local": {"enabled": True}}}))
    assert config["server"]["sandbox"] == "enforce" and "sandbox_read_paths" not in config["server"]
    values = {"backends": {"local": {"enabled": True}},
              "pkcs11": {"hostPaths": [{"path": "/opt/hsm/lib"}, {"path": "/var/lib/hsm", "readOnly": False}]},
              "config": {"sandboxReadPaths": ["/etc/hsm.conf"]}}
    config = tomllib.loads(chart_config(values))
    assert config["server"]["sandbox_read_paths"] == ["/opt/hsm/lib", "/var/lib/hsm", "/etc/hsm.conf"]
    off = tomllib.loads(chart_config({"backends": {"local": {"enabled": True}}, "config": {"sandbox": "off"}}))
    assert off["server"]["sandbox"] == "off"


def test_chart_local_config_round_trips_with_the_real_binary(workdir):
    key = keygen(workdir / "current.key")
    text = chart_config({"backends": {"local": {"enabled": True, "key_files": [str(key)]}},
                         "config": {"health": {"probe_timeout": "2s"}, "decrypt": {"cache_size": 64}}})
    cfg = workdir / "chart.toml"
    cfg.write_text(text)
    r = run_check(cfg)
    assert r.returncode == 0, text + r.stdout + r.stderr
    assert "all 1 backend(s) OK" in r.stdout


def test_chart_cloud_configs_load_in_the_real_binary(workdir):
    creds = make_credentials(workdir)
    cases = {
        "aws": {"key": "arn:aws:kms:eu-west-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab",
                "encryption_context": {"cluster": "prod-1"}},
        "vault": {"address": "https://vault.dc1.example.internal:8200", "ca_file": str(creds["ca"]),
                  "auth": {"method": "kubernetes", "role": "polykms", "token_file": str(creds["jwt"])}},
        "gcp": {"key": "projects/p/locations/europe-west1/keyRings/kube/cryptoKeys/secrets",
                "auth": {"method": "service_account", "credentials_file": str(creds["gcp"])}},
        "azure": {"vault_url": "https://kv-prod-kube.vault.azure.net",
                  "auth": {"method": "client_secret", "tenant_id": "t", "client_id": "c",
                           "client_secret_file": str(creds["azure"])}},
        "kmip": {"endpoint": "kmip.corp.example:5696", "ca_file": str(creds["ca"]),
                 "client_cert_file": str(creds["kmip_cert"]), "client_key_file": str(creds["kmip_key"])},
    }
    for backend, settings in cases.items():
        text = chart_config({"backends": {backend: {"enabled": True, **settings}}})
        assert "timeout_ms = 3000\n" in text, text  # integers stay integers through Helm
        cfg = workdir / f"chart-{backend}.toml"
        cfg.write_text(text)
        r = run_check(cfg)
        assert r.returncode == EXIT_UNAVAILABLE, f"{backend}: {r.returncode}\n{text}\n{r.stdout}{r.stderr}"


# --- configs/*.toml -------------------------------------------------------------------------

def make_credentials(d):
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec, rsa
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "test vault CA")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now)
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    # A KMIP client certificate issued by that CA, and its key (they must make a pair).
    client_key = ec.generate_private_key(ec.SECP256R1())
    client = (x509.CertificateBuilder()
              .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "polykms")]))
              .issuer_name(name).public_key(client_key.public_key())
              .serial_number(x509.random_serial_number()).not_valid_before(now)
              .not_valid_after(now + datetime.timedelta(days=1))
              .sign(key, hashes.SHA256()))
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = rsa_key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption()).decode()
    files = {
        "ca": ("ca.pem", cert.public_bytes(serialization.Encoding.PEM).decode()),
        "role_id": ("role-id", "7f2d9a1e-role\n"),
        "secret_id": ("secret-id", "0c3e-secret\n"),
        "jwt": ("sa-token", "eyJhbGciOiJSUzI1NiJ9.e30.c2ln\n"),
        "gcp": ("service-account.json", json.dumps({
            "type": "service_account", "project_id": "my-project", "private_key_id": "abc",
            "private_key": pem, "client_email": "polykms@my-project.iam.gserviceaccount.com",
            "client_id": "1", "token_uri": "https://oauth2.googleapis.com/token"})),
        "azure": ("client-secret", "not-a-real-secret\n"),
        "kmip_cert": ("kmip-client.pem", client.public_bytes(serialization.Encoding.PEM).decode()),
        "kmip_key": ("kmip-client.key", client_key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption()).decode()),
    }
    out = {}
    for k, (fname, content) in files.items():
        p = d / fname
        p.write_text(content)
        os.chmod(p, 0o600)
        out[k] = p
    return out


# Credential paths each example names, and which generated file stands in for it.
CONFIG_FILES = {
    "aws": {},
    "vault": {"/etc/polykms/vault/ca.pem": "ca", "/etc/polykms/vault/role-id": "role_id",
              "/etc/polykms/vault/secret-id": "secret_id"},
    "gcp": {"/etc/polykms/gcp/service-account.json": "gcp"},
    "azure": {"/etc/polykms/azure/client-secret": "azure"},
    "kmip": {"/etc/polykms/kmip/ca.pem": "ca", "/etc/polykms/kmip/client.pem": "kmip_cert",
             "/etc/polykms/kmip/client.key": "kmip_key",
             # commented-out examples in the file
             "/etc/polykms/kmip/username": "role_id", "/etc/polykms/kmip/password": "secret_id"},
    "hybrid": {"/etc/polykms/vault/ca.pem": "ca", "/etc/polykms/vault/role-id": "role_id",
               "/etc/polykms/vault/secret-id": "secret_id"},
}


@pytest.mark.parametrize("name", sorted(CONFIG_FILES))
def test_example_config_loads_and_fails_only_on_the_unreachable_key_store(name, workdir):
    creds = make_credentials(workdir)
    text = (CONFIGS / f"{name}.toml").read_text()
    named = set(re.findall(r'"(/etc/polykms/[^"]+)"', text))
    assert named == set(CONFIG_FILES[name]), f"configs/{name}.toml names {named}: update CONFIG_FILES"
    for original, stand_in in CONFIG_FILES[name].items():
        text = text.replace(f'"{original}"', f'"{creds[stand_in]}"')
    cfg = workdir / f"{name}.toml"
    cfg.write_text(text)
    r = run_check(cfg)
    assert r.returncode == EXIT_UNAVAILABLE, f"exit {r.returncode}\n{r.stdout}{r.stderr}"
    parsed = tomllib.loads(text)
    for b in parsed["backends"]:
        assert f"backend {b['name']} ({b['type']}" in r.stdout, r.stdout
    assert "FAILED" in r.stdout
    if CONFIG_FILES[name]:
        # Control: the same file with one credential file missing is a config error (64), so
        # the 69 above really means "parsed, built, and only the key store was unreachable".
        missing = next(iter(CONFIG_FILES[name].values()))
        os.unlink(creds[missing])
        r = run_check(cfg)
        assert r.returncode == EXIT_CONFIG, f"exit {r.returncode}\n{r.stdout}{r.stderr}"


# --- Prometheus rules and the Grafana dashboard against the real /metrics ----------------------

def check_rule_file(doc, where):
    assert set(doc) == {"groups"}, where
    for group in doc["groups"]:
        assert group["name"] and group["rules"], where
        for rule in group["rules"]:
            assert set(rule) <= {"alert", "expr", "for", "labels", "annotations"}, f"{where}: {rule}"
            assert re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", rule["alert"]), rule["alert"]
            promql_parser.parse(rule["expr"])
            if "for" in rule:
                promql_parser.parse_duration(rule["for"])
            assert rule["labels"]["severity"] in {"critical", "warning", "info"}, rule["alert"]
            assert rule["annotations"]["summary"] and rule["annotations"]["description"], rule["alert"]


def metric_names(expr):
    names = []

    def visit(node):
        if isinstance(node, promql_parser.VectorSelector):
            names.append(node.name or next(m.value for m in node.matchers.matchers if m.name == "__name__"))
        return True

    promql_parser.walk(promql_parser.parse(expr), visit)
    return names


def grafana_exprs():
    dash = json.loads((DEPLOY / "grafana" / "polykms.json").read_text())
    panels = [p for p in dash["panels"] if p["type"] != "row"]
    assert panels
    ds_vars = {v["name"] for v in dash["templating"]["list"]}
    exprs = []
    for p in panels:
        assert p["datasource"]["uid"].strip("${}") in ds_vars, p["title"]
        assert p["targets"], p["title"]
        for t in p["targets"]:
            expr = (t["expr"].replace("$__rate_interval", "5m").replace("$__range", "1h")
                    .replace("$instance", ".*"))
            assert "$" not in expr, f"unknown Grafana variable in {t['expr']}"
            exprs.append((p["title"], expr))
    return exprs


def exposed_sample_names(text):
    """Sample names a scrape can contain, from the exposition's TYPE lines (families without
    samples yet, like credential expiry on a local backend, still declare their type)."""
    suffixes = {"counter": ("_total",), "gauge": ("",), "histogram": ("_bucket", "_sum", "_count"),
                "info": ("_info",), "unknown": ("",), "summary": ("", "_sum", "_count")}
    names, families = set(), {}
    for line in text.splitlines():
        m = re.match(r"# TYPE (\S+) (\S+)$", line)
        if m:
            families[m[1]] = m[2]
            names.update(m[1] + s for s in suffixes[m[2]])
    samples = {re.match(r"[a-zA-Z_:][a-zA-Z0-9_:]*", line)[0] for line in text.splitlines()
               if line and not line.startswith("#")}
    assert samples <= names | {f + "_created" for f in families}, samples - names
    return names, families


def vault_approle_block():
    """A Vault backend logging in with AppRole on the OpenBao dev server: its token expires, so
    the plugin exposes credential expiry. Skipped (failed under run-tests.sh) without it."""
    names = ("POLYKMS_VAULT_ADDR", "POLYKMS_VAULT_KEY", "POLYKMS_VAULT_ROLE_ID_FILE", "POLYKMS_VAULT_SECRET_ID_FILE")
    missing = [n for n in names if not os.environ.get(n)]
    if missing:
        msg = f"OpenBao not started: {missing} unset (run integration/run-tests.sh)"
        if os.environ.get("POLYKMS_REQUIRE_INTEGRATION") == "1":
            pytest.fail(msg)
        pytest.skip(msg)
    env = {n: json.dumps(os.environ[n]) for n in names}
    return ('[[backends]]\nname = "vault"\ntype = "vault"\n'
            f'address = {env["POLYKMS_VAULT_ADDR"]}\nkey = {env["POLYKMS_VAULT_KEY"]}\ntimeout_ms = 2000\n'
            f'auth = {{ method = "approle", role_id_file = {env["POLYKMS_VAULT_ROLE_ID_FILE"]}, '
            f'secret_id_file = {env["POLYKMS_VAULT_SECRET_ID_FILE"]} }}\n')


def scrape_until(p, names, timeout=20):
    deadline = time.monotonic() + timeout
    while True:
        status, text = p.http("/metrics")
        assert status == 200
        exposed, families = exposed_sample_names(text)
        if names <= exposed or time.monotonic() > deadline:
            return exposed, families


def test_dashboard_and_alerts_use_only_metrics_polykms_exposes(workdir, plugins):
    """Scrapes a real plugin in which every metric family has data (families without samples
    are not in the exposition): KMS calls, a failed Decrypt, a SIGHUP reload, a Vault backend
    with an expiring AppRole token next to the local one, and a decrypt-only AWS backend whose
    key is scheduled for deletion (the deletion timestamp)."""
    import grpc

    from stores import AwsStore

    doomed = AwsStore()
    doomed.kms.schedule_key_deletion(KeyId=doomed.key_id, PendingWindowInDays=7)
    key = keygen(workdir / "k.key")
    config = local_config([key]).replace(
        "[encrypt]", vault_approle_block() + doomed.block("aws-doomed") + "[encrypt]")
    p = plugins(workdir, config)
    stub = p.v2()
    enc = stub.Encrypt(v2_pb2.EncryptRequest(plaintext=os.urandom(32), uid="u-deploy-1"), timeout=5)
    stub.Decrypt(v2_pb2.DecryptRequest(ciphertext=enc.ciphertext, uid="u-deploy-2", key_id=enc.key_id,
                                       annotations=enc.annotations), timeout=5)
    with pytest.raises(grpc.RpcError):
        stub.Decrypt(v2_pb2.DecryptRequest(ciphertext=b"junk", uid="u-deploy-3", key_id=enc.key_id), timeout=5)
    p.send_signal(signal.SIGHUP)
    exposed, families = scrape_until(p, {"polykms_config_reloads_total", "polykms_backend_credential_expiry_seconds",
                                         "polykms_key_deletion_timestamp_seconds"})

    referenced = {}
    for title, expr in grafana_exprs():
        for n in metric_names(expr):
            referenced.setdefault(n, set()).add(f"dashboard: {title}")
    rules = yaml.safe_load((DEPLOY / "prometheus" / "alerts.yaml").read_text())
    for rule in (r for g in rules["groups"] for r in g["rules"]):
        for n in metric_names(rule["expr"]):
            referenced.setdefault(n, set()).add(f"alert: {rule['alert']}")
    prometheus_own = {"up"}  # written by Prometheus for every target
    unknown = {n: w for n, w in referenced.items() if n not in exposed and n not in prometheus_own}
    assert not unknown, f"not exposed by polykms: {unknown}"

    # The dashboard shows every family the plugin exposes.
    on_dashboard = {n for n, w in referenced.items() if any(x.startswith("dashboard") for x in w)}
    for family, kind in families.items():
        suffix = {"counter": "_total", "histogram": "_bucket"}.get(kind, "")
        assert family + suffix in on_dashboard, f"{family} is not on the dashboard"
    # ... and docs/operations.md's metrics table lists every one.
    doc = (ROOT / "docs" / "operations.md").read_text()
    for family, kind in families.items():
        name = family + ("_total" if kind == "counter" else "")
        assert re.search(rf"^\| `{name}` \|", doc, re.M), f"{name} missing from the metrics table"


def test_operations_doc_has_a_section_for_every_alert():
    doc = (ROOT / "docs" / "operations.md").read_text()
    rules = yaml.safe_load((DEPLOY / "prometheus" / "alerts.yaml").read_text())
    for rule in (r for g in rules["groups"] for r in g["rules"]):
        assert re.search(rf"^#+ {rule['alert']}$", doc, re.M), f"no section for {rule['alert']}"
        assert rule["annotations"]["runbook"] == f"docs/operations.md#{rule['alert'].lower()}"


# --- systemd and the image --------------------------------------------------------------------

def systemd_analyze():
    tool = shutil.which("systemd-analyze")
    if not tool:
        pytest.skip("systemd-analyze is not installed")
    return tool


def test_systemd_unit_verifies_and_is_hardened(tmp_path):
    tool = systemd_analyze()
    unit = (DEPLOY / "systemd" / "polykms.service").read_text()
    for directive in ("RuntimeDirectory=kmsplugin", "NoNewPrivileges=yes", "ProtectSystem=strict",
                      "CapabilityBoundingSet=\n", "ExecReload=/bin/kill -HUP $MAINPID",
                      "RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6\n", "MemoryDenyWriteExecute=yes",
                      "AmbientCapabilities=\n"):
        assert directive in unit, directive
    assert len(re.findall(r"^RestrictAddressFamilies=", unit, re.M)) == 1
    copy = tmp_path / "polykms.service"
    copy.write_text(unit.replace("/usr/local/bin/polykms", str(BIN)))  # verify wants the binary
    r = subprocess.run([tool, "verify", str(copy)], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and not r.stderr.strip() and not r.stdout.strip(), r.stdout + r.stderr
    # Exposure score 0 (locked down) .. 10 (unprotected); 2.5 or less is systemd's "OK" band.
    r = subprocess.run([tool, "security", "--offline=yes", "--threshold=25", "--no-pager", str(copy)],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr
    # docs/security.md records the score and the items that still count: keep them current.
    score = re.search(r"Overall exposure level for \S+: (\d+\.\d+) (\w+)", r.stdout)
    assert score, r.stdout[-2000:]
    doc = (ROOT / "docs" / "security.md").read_text()
    assert f"**{score[1]} {score[2]}**" in doc, f"docs/security.md does not record the score {score[1]} {score[2]}"
    for line in r.stdout.splitlines():
        if line.startswith("✗"):
            setting = line.split()[1]
            assert setting in doc, f"docs/security.md does not list {setting}"


def test_tmpfiles_entry_creates_the_socket_dir_for_uid_65532(tmp_path):
    tool = shutil.which("systemd-tmpfiles")
    if not tool or os.geteuid() != 0:
        pytest.skip("needs systemd-tmpfiles and root (to chown)")
    root = tmp_path / "root"
    (root / "run").mkdir(parents=True)
    r = subprocess.run([tool, "--create", f"--root={root}", str(DEPLOY / "systemd" / "kmsplugin.tmpfiles.conf")],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    st = (root / "run" / "kmsplugin").stat()
    assert (st.st_uid, st.st_gid, st.st_mode & 0o777) == (65532, 65532, 0o750)


def test_dockerfile_is_multi_stage_and_runs_unprivileged():
    text = (DEPLOY / "Dockerfile").read_text()
    stages = re.findall(r"^FROM\s+(\S+)(?:\s+AS\s+(\S+))?", text, re.M)
    assert len(stages) >= 2, stages
    names = {alias for _, alias in stages if alias}
    for ref in re.findall(r"COPY\s+--from=(\S+)", text):
        assert ref in names, f"COPY --from={ref} names no stage"
    final = text[text.rfind("\nFROM"):]
    # No base image at run time: the same layout as deploy/image/build.sh, from the same script.
    assert stages[-1][0] == "scratch"
    assert "bash deploy/image/rootfs.sh /out/polykms /rootfs" in text
    assert re.search(r"^COPY --from=build /rootfs/ /$", final, re.M)
    assert re.search(r"^USER\s+65532(:65532)?$", final, re.M), "final stage must run as non-root"
    assert "cargo auditable build --release --locked -p polykms" in text
    ignore = (DEPLOY / "Dockerfile.dockerignore").read_text().split()
    assert "target" in ignore and ".git" in ignore


def test_dockerfile_and_the_daemonless_build_make_the_same_image_config():
    """deploy/Dockerfile and deploy/image/build.sh: same user, entrypoint, cmd, port, env and
    OCI label keys (test_image.py checks the archive build.sh writes against the Dockerfile)."""
    docker = (DEPLOY / "Dockerfile").read_text()
    script = (DEPLOY / "image" / "build.sh").read_text()
    final = docker[docker.rfind("\nFROM"):]
    entry = re.search(r"^ENTRYPOINT (\[.*\])$", final, re.M).group(1)
    cmd = re.search(r"^CMD (\[.*\])$", final, re.M).group(1)
    assert f"--entrypoint '{entry}'" in script
    assert f"--cmd '{json.dumps(json.loads(cmd))}'" in script
    assert "--user 65532:65532" in script and "--port 8095" in script and "EXPOSE 8095" in final
    docker_labels = set(re.findall(r"(org\.opencontainers\.image\.[a-z.]+)=", final))
    script_labels = set(re.findall(r"--label \"?(org\.opencontainers\.image\.[a-z.]+)=", script))
    assert {f"org.opencontainers.image.{k}" for k in ("version", "revision", "source", "licenses")} <= docker_labels
    assert docker_labels <= script_labels, docker_labels - script_labels
    for env in re.findall(r"(\w+=\S+)", re.search(r"^ENV (.*)$", final, re.M).group(1)):
        assert f"--env {env}" in script, env


def test_operations_doc_troubleshooting_is_keyed_by_apiserver_symptoms():
    doc = (ROOT / "docs" / "operations.md").read_text()
    trouble = doc.split("\n## Troubleshooting, from the apiserver side\n", 1)[1]
    entries = re.split(r"^### ", trouble, flags=re.M)[1:]
    titles = [e.splitlines()[0] for e in entries]
    for symptom in ("expected KMSv2 API version v2beta1, got v2", "failed to decrypt DEK", "kms-providers failed",
                    "`kubectl replace` does not rewrite"):
        assert any(symptom in t for t in titles), (symptom, titles)
    for e in entries:
        for part in ("**Seen**", "**Cause**", "**Fix**", "**Confirm**"):
            assert part in e, (e.splitlines()[0], part)
    probes = doc.split("\n## Probes: the apiserver's and polykms's own\n", 1)[1].split("\n## ", 1)[0]
    assert "/livez?exclude=kms-providers" in probes and "/readyz" in probes
