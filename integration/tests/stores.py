"""Key stores the end-to-end tests drive polykms against: each creates a fresh key per test in
its real server or fake (started by integration/servers/*.sh), renders a [[backends]] block,
and can rotate or disable that key from outside, the way an operator would."""

import json
import os
import uuid

import pytest
import requests

REQUIRE = os.environ.get("POLYKMS_REQUIRE_INTEGRATION") == "1"


def need(*names):
    missing = [n for n in names if not os.environ.get(n)]
    if missing:
        msg = f"servers not started: {missing} unset (run integration/run-tests.sh)"
        if REQUIRE:
            pytest.fail(msg)
        pytest.skip(msg)


def toml_str(s):
    return json.dumps(str(s))


class AwsStore:
    """moto_server: a real KMS API emulator."""

    kind = "aws"

    def __init__(self):
        need("POLYKMS_AWS_ENDPOINT", "AWS_ACCESS_KEY_ID")
        import boto3

        self.endpoint = os.environ["POLYKMS_AWS_ENDPOINT"]
        self.kms = boto3.client("kms", endpoint_url=self.endpoint, region_name="us-east-1")
        meta = self.kms.create_key(KeyUsage="ENCRYPT_DECRYPT", KeySpec="SYMMETRIC_DEFAULT")["KeyMetadata"]
        self.arn, self.key_id = meta["Arn"], meta["KeyId"]

    def block(self, name):
        return (f'[[backends]]\nname = "{name}"\ntype = "aws"\nkey = {toml_str(self.arn)}\n'
                f'region = "us-east-1"\nendpoint = {toml_str(self.endpoint)}\ntimeout_ms = 2000\n')

    def rotate(self):
        self.kms.rotate_key_on_demand(KeyId=self.key_id)

    def disable(self):
        self.kms.disable_key(KeyId=self.key_id)

    def enable(self):
        self.kms.enable_key(KeyId=self.key_id)


class VaultStore:
    """OpenBao dev server: a real Vault-compatible Transit engine."""

    kind = "vault"

    def __init__(self):
        need("POLYKMS_VAULT_ADDR", "POLYKMS_VAULT_ROOT_TOKEN_FILE")
        self.addr = os.environ["POLYKMS_VAULT_ADDR"]
        self.token_file = os.environ["POLYKMS_VAULT_ROOT_TOKEN_FILE"]
        self.token = open(self.token_file).read().strip()
        self.key = f"e2e-{uuid.uuid4().hex[:10]}"
        self._post(f"transit/keys/{self.key}", {"type": "aes256-gcm96"})

    def _post(self, path, body=None):
        r = requests.post(f"{self.addr}/v1/{path}", json=body or {}, headers={"X-Vault-Token": self.token}, timeout=5)
        r.raise_for_status()

    def block(self, name):
        return (f'[[backends]]\nname = "{name}"\ntype = "vault"\naddress = {toml_str(self.addr)}\n'
                f'key = "{self.key}"\ntimeout_ms = 2000\n'
                f'auth = {{ method = "token", token_file = {toml_str(self.token_file)} }}\n')

    def rotate(self):
        self._post(f"transit/keys/{self.key}/rotate")

    def disable(self):
        # Transit keys cannot be disabled; raising min_decryption_version past every version
        # is the closest: unwraps of old data fail. Health of the key stays; not used for health.
        raise NotImplementedError


class GcpStore:
    """Protocol-faithful Cloud KMS REST fake (integration/fakes/gcp)."""

    kind = "gcp"

    def __init__(self):
        need("POLYKMS_GCP_ENDPOINT", "POLYKMS_GCP_KEY")
        self.endpoint = os.environ["POLYKMS_GCP_ENDPOINT"]
        ring = os.environ["POLYKMS_GCP_KEY"].rsplit("/cryptoKeys/", 1)[0]
        key_id = f"e2e-{uuid.uuid4().hex[:10]}"
        r = requests.post(f"{self.endpoint}/v1/{ring}/cryptoKeys", params={"cryptoKeyId": key_id},
                          json={"purpose": "ENCRYPT_DECRYPT"}, timeout=5)
        r.raise_for_status()
        self.key = f"{ring}/cryptoKeys/{key_id}"

    def control(self, action, body):
        r = requests.post(f"{self.endpoint}/__control/{action}", json=body, timeout=5)
        r.raise_for_status()
        return r.json() if r.content else None

    def primary(self):
        r = requests.get(f"{self.endpoint}/v1/{self.key}", timeout=5)
        r.raise_for_status()
        return r.json()["primary"]["name"]

    def block(self, name):
        return (f'[[backends]]\nname = "{name}"\ntype = "gcp"\nkey = {toml_str(self.key)}\n'
                f'endpoint = {toml_str(self.endpoint)}\nauth = {{ method = "anonymous" }}\ntimeout_ms = 2000\n')

    def rotate(self):
        self.control("rotate", {"key": self.key})

    def _set_state(self, state):
        version = self.primary()
        r = requests.patch(f"{self.endpoint}/v1/{version}", params={"updateMask": "state"}, json={"state": state}, timeout=5)
        r.raise_for_status()

    def disable(self):
        self._set_state("DISABLED")

    def enable(self):
        self._set_state("ENABLED")


class AzureStore:
    """Protocol-faithful Key Vault HTTPS fake (integration/fakes/azure)."""

    kind = "azure"

    def __init__(self, size=2048):
        need("POLYKMS_AZURE_VAULT_URL", "POLYKMS_AZURE_CA_FILE", "POLYKMS_AZURE_TOKEN_FILE")
        self.url = os.environ["POLYKMS_AZURE_VAULT_URL"]
        self.ca = os.environ["POLYKMS_AZURE_CA_FILE"]
        self.token_file = os.environ["POLYKMS_AZURE_TOKEN_FILE"]
        self.key = f"e2e-{uuid.uuid4().hex[:10]}"
        self.control(f"keys/{self.key}", {"kty": "RSA", "size": size})

    def control(self, action, body=None):
        r = requests.post(f"{self.url}/__control/{action}", json=body or {}, verify=self.ca, timeout=5)
        r.raise_for_status()

    def block(self, name):
        return (f'[[backends]]\nname = "{name}"\ntype = "azure"\nvault_url = {toml_str(self.url)}\n'
                f'key_name = "{self.key}"\nca_file = {toml_str(self.ca)}\nverify_challenge_resource = false\n'
                f'max_retries = 0\ntimeout_ms = 3000\n'
                f'auth = {{ method = "token_file", token_file = {toml_str(self.token_file)} }}\n')

    def rotate(self):
        self.control(f"keys/{self.key}/rotate")

    def disable(self):
        self.control(f"keys/{self.key}/disable")

    def enable(self):
        self.control(f"keys/{self.key}/enable")

    def fault(self, count, status, retry_after):
        self.control(f"keys/{self.key}/fault", {"count": count, "status": status, "retry_after": retry_after})


class KmipStore:
    """PyKMIP: a real KMIP server over mutual TLS; keys made with PyKMIP's own client."""

    kind = "kmip"

    def __init__(self):
        need("POLYKMS_KMIP_ENDPOINT", "POLYKMS_KMIP_CA_FILE", "POLYKMS_KMIP_CLIENT_CERT_FILE")
        import sys
        from pathlib import Path

        sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "lib"))
        import kmip_admin

        self.admin = kmip_admin
        self.endpoint = os.environ["POLYKMS_KMIP_ENDPOINT"]
        self.ca = os.environ["POLYKMS_KMIP_CA_FILE"]
        self.cert = os.environ["POLYKMS_KMIP_CLIENT_CERT_FILE"]
        self.key_file = os.environ["POLYKMS_KMIP_CLIENT_KEY_FILE"]
        self.key = f"e2e-{uuid.uuid4().hex[:10]}"
        self.uids = [self._run(kmip_admin.create, self.key)]

    def _run(self, fn, *args):
        c = self.admin.connect()
        try:
            return fn(c, *args)
        finally:
            c.close()

    def block(self, name, cert=None, key=None):
        return (f'[[backends]]\nname = "{name}"\ntype = "kmip"\nendpoint = {toml_str(self.endpoint)}\n'
                f'ca_file = {toml_str(self.ca)}\nclient_cert_file = {toml_str(cert or self.cert)}\n'
                f'client_key_file = {toml_str(key or self.key_file)}\nkey_name = "{self.key}"\n'
                f'timeout_ms = 2000\n')

    def rotate(self):
        # A newer Active key under the same Name (what a server-side ReKey leaves behind).
        self.uids.append(self._run(self.admin.create, self.key))

    def disable(self):
        # KMIP has no way back from revocation: revoked keys stay Deactivated.
        for uid in self.uids:
            self._run(self.admin.revoke, uid)

    def destroy(self):
        for uid in self.uids:
            self._run(self.admin.destroy, uid)


STORES = {"aws": AwsStore, "vault": VaultStore, "gcp": GcpStore, "azure": AzureStore, "kmip": KmipStore}


def plugin_config(blocks, encrypt_with, provider="polykms", extra=""):
    with_list = ", ".join(f'"{n}"' for n in encrypt_with)
    return ('[server]\nsocket = "@SOCKET@"\nprovider_name = "' + provider + '"\n'
            '[http]\nlisten = "@HTTP@"\n'
            '[health]\nprobe_interval = "500ms"\nunhealthy_probe_interval = "200ms"\nprobe_timeout = "2s"\n'
            + extra + "\n" + "\n".join(blocks) + f"\n[encrypt]\nwith = [{with_list}]\n")
