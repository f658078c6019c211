"""Key lifecycle end to end for GCP Cloud KMS (integration/fakes/gcp) and Azure Key Vault
(integration/fakes/azure): the real binary over the unix socket, the key changed from outside
through the key stores' real REST calls (DestroyCryptoKeyVersion, RestoreCryptoKeyVersion,
UpdateCryptoKeyVersion; Key Vault Update Key), and what polykms says in Status, /metrics and its
log. A key that can no longer wrap turns Status unhealthy with the date and the undo; a key or
older version that still works but is set to go away only warns."""

import json
import os
import time

import requests

from stores import AzureStore, GcpStore, plugin_config
from lifecycle import PROBE_INTERVAL, lifecycle_metrics, on, warn_records
from test_backends import decrypt, encrypt, status, wait

# Decrypts must reach the backend so that the versions they use are noted.
NO_CACHE = "[decrypt]\ncache_size = 0\n"
DAY = 24 * 3600








def stays_healthy(p, probes=6):
    for _ in range(probes):
        assert status(p).healthz == "ok", status(p).healthz
        time.sleep(PROBE_INTERVAL)


def rfc3339(text):
    """Seconds since the epoch of a protobuf Timestamp in JSON (RFC 3339, "Z")."""
    from datetime import datetime

    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


# ---------------------------------------------------------------------------------------------
# GCP Cloud KMS


class Gcp:
    """The real Cloud KMS REST calls an operator's gcloud makes, on a GcpStore's key."""

    def __init__(self, store):
        self.store = store

    def call(self, method, path, **kw):
        r = requests.request(method, f"{self.store.endpoint}/v1/{path}", timeout=5, **kw)
        r.raise_for_status()
        return r.json()

    def destroy(self, version):
        return self.call("POST", f"{version}:destroy")

    def restore(self, version):
        return self.call("POST", f"{version}:restore")

    def set_state(self, version, state):
        return self.call("PATCH", version, params={"updateMask": "state"}, json={"state": state})


def gcp_plugin(workdir, plugins, store, name):
    p = plugins(workdir, plugin_config([store.block("gcp")], ["gcp"], extra=NO_CACHE), name=name)
    wait(lambda: on(p, "gcp") == {"ok"}, what="lifecycle ok for a fresh key")
    return p


def test_gcp_primary_scheduled_for_destruction_is_unhealthy_with_destroy_time_and_restore(workdir, plugins):
    store = GcpStore()
    gcp = Gcp(store)
    p = gcp_plugin(workdir, plugins, store, "gcp-lifecycle")
    seed = os.urandom(32)
    enc = encrypt(p, seed)
    primary = store.primary()

    destroy_time = rfc3339(gcp.destroy(primary)["destroyTime"])
    # Within a few probe intervals; no tighter timing assertion on a shared machine.
    wait(lambda: status(p).healthz != "ok", limit=5, what="unhealthy after DestroyCryptoKeyVersion")
    healthz = status(p).healthz
    assert primary in healthz and "scheduled for deletion" in healthz, healthz
    assert "RestoreCryptoKeyVersion, then UpdateCryptoKeyVersion state=ENABLED" in healthz, healthz

    states, at = lifecycle_metrics(p, "gcp")
    assert {s for s, v in states.items() if v == 1} == {"pending_deletion"}, states
    assert at is not None and abs(at - destroy_time) < 1, (at, destroy_time)
    time.sleep(PROBE_INTERVAL * 6)
    warned = warn_records(p, "RestoreCryptoKeyVersion")
    assert len(warned) == 1, f"one WARN over six probes: {warned}"
    assert "scheduled for deletion" in json.dumps(warned[0]), warned

    # Restore leaves the version DISABLED: still unhealthy, now saying to enable it.
    gcp.restore(primary)
    wait(lambda: on(p, "gcp") == {"disabled"}, limit=5, what="disabled after RestoreCryptoKeyVersion")
    assert "UpdateCryptoKeyVersion state=ENABLED" in status(p).healthz
    gcp.set_state(primary, "ENABLED")
    wait(lambda: status(p).healthz == "ok", limit=5, what="healthy after enabling the version")
    wait(lambda: on(p, "gcp") == {"ok"}, limit=5, what="lifecycle ok again")
    assert lifecycle_metrics(p, "gcp")[1] is None, "deletion timestamp cleared"
    assert decrypt(p, enc) == seed


def test_gcp_older_version_decrypts_use_scheduled_for_destruction_warns_and_status_stays_healthy(workdir, plugins):
    store = GcpStore()
    gcp = Gcp(store)
    p = gcp_plugin(workdir, plugins, store, "gcp-older")
    seed = os.urandom(32)
    old = encrypt(p, seed)
    assert decrypt(p, old) == seed  # the first version is now one Decrypts use
    v1 = store.primary()
    store.rotate()

    destroy_time = rfc3339(gcp.destroy(v1)["destroyTime"])
    wait(lambda: on(p, "gcp") == {"pending_deletion"}, limit=5, what="pending_deletion warning")
    stays_healthy(p)
    assert decrypt(p, encrypt(p, seed)) == seed, "the primary still wraps"
    at = lifecycle_metrics(p, "gcp")[1]
    assert at is not None and abs(at - destroy_time) < 1, (at, destroy_time)
    warned = warn_records(p, v1)
    assert len(warned) == 1 and warned[0].get("blocks_wrap") in (False, "false"), warned

    gcp.restore(v1)
    wait(lambda: on(p, "gcp") == {"disabled"}, limit=5, what="a restored (DISABLED) older version warns")
    assert status(p).healthz == "ok"
    gcp.set_state(v1, "ENABLED")
    wait(lambda: on(p, "gcp") == {"ok"}, limit=5, what="lifecycle ok after enabling it")
    assert decrypt(p, old) == seed


# ---------------------------------------------------------------------------------------------
# Azure Key Vault


class Azure:
    """Key Vault's Update Key (what `az keyvault key set-attributes` sends) on an AzureStore's key."""

    def __init__(self, store):
        self.store = store
        with open(store.token_file) as f:
            self.token = f.read().strip()

    def kid(self):
        r = requests.get(f"{self.store.url}/keys/{self.store.key}", params={"api-version": "7.6"},
                         headers={"Authorization": f"Bearer {self.token}"}, verify=self.store.ca, timeout=5)
        r.raise_for_status()
        return r.json()["key"]["kid"]

    def set_attributes(self, **attributes):
        version = self.kid().rsplit("/", 1)[1]
        r = requests.patch(f"{self.store.url}/keys/{self.store.key}/{version}", params={"api-version": "7.6"},
                           json={"attributes": attributes}, headers={"Authorization": f"Bearer {self.token}"},
                           verify=self.store.ca, timeout=5)
        r.raise_for_status()

    def recovery_level(self, level):
        self.store.control(f"keys/{self.store.key}/recovery-level", {"recovery_level": level})


def azure_plugin(workdir, plugins, store, name, extra_block=""):
    block = store.block("azure") + extra_block
    return plugins(workdir, plugin_config([block], ["azure"], extra=NO_CACHE), name=name)


def protected_azure_store():
    """A key in a vault with purge protection, so only what the test changes is reported."""
    store = AzureStore()
    Azure(store).recovery_level("Recoverable")
    return store


def test_azure_disabled_key_is_unhealthy_naming_set_attributes_and_recovers(workdir, plugins):
    store = protected_azure_store()
    az = Azure(store)
    p = azure_plugin(workdir, plugins, store, "azure-disabled")
    wait(lambda: on(p, "azure") == {"ok"}, what="lifecycle ok for an enabled key")

    az.set_attributes(enabled=False)
    wait(lambda: on(p, "azure") == {"disabled"}, limit=5, what="disabled lifecycle")
    healthz = status(p).healthz
    assert "is disabled" in healthz, healthz
    assert "az keyvault key set-attributes --enabled true" in healthz, healthz
    assert lifecycle_metrics(p, "azure")[1] is None, "no date for a disabled key"

    az.set_attributes(enabled=True)
    wait(lambda: status(p).healthz == "ok", limit=5, what="healthy after enabling the key")
    wait(lambda: on(p, "azure") == {"ok"}, limit=5, what="lifecycle ok again")


def test_azure_exp_within_the_window_warns_and_past_exp_is_unhealthy(workdir, plugins):
    store = protected_azure_store()
    az = Azure(store)
    # A configured window of 40 days: an exp 35 days ahead is inside it (the default is 30).
    p = azure_plugin(workdir, plugins, store, "azure-exp", extra_block='expiry_warning = "40d"\n')
    wait(lambda: on(p, "azure") == {"ok"}, what="lifecycle ok for a key without exp")

    exp = int(time.time()) + 35 * DAY
    az.set_attributes(exp=exp)
    wait(lambda: on(p, "azure") == {"expiring"}, limit=5, what="expiring warning")
    stays_healthy(p)
    assert lifecycle_metrics(p, "azure")[1] == exp
    warned = warn_records(p, "az keyvault key set-attributes --expires")
    assert len(warned) == 1 and warned[0].get("state") == "expiring", warned

    az.set_attributes(exp=int(time.time()) - 60)
    wait(lambda: status(p).healthz != "ok", limit=5, what="unhealthy past exp")
    healthz = status(p).healthz
    assert "has expired" in healthz and "--expires" in healthz, healthz
    assert on(p, "azure") == {"expired"}

    az.set_attributes(exp=int(time.time()) + 365 * DAY)
    wait(lambda: status(p).healthz == "ok", limit=5, what="healthy with a later exp")
    wait(lambda: on(p, "azure") == {"ok"}, limit=5, what="lifecycle ok with exp outside the window")


def test_azure_without_purge_protection_warns_and_status_stays_healthy(workdir, plugins):
    store = AzureStore()  # the fake's default, like a new vault: Recoverable+Purgeable
    p = azure_plugin(workdir, plugins, store, "azure-purgeable")
    wait(lambda: on(p, "azure") == {"deletion_allowed"}, what="deletion_allowed warning")
    stays_healthy(p)
    seed = os.urandom(32)
    assert decrypt(p, encrypt(p, seed)) == seed
    warned = warn_records(p, "enable purge protection on the vault")
    assert len(warned) == 1, warned
    assert lifecycle_metrics(p, "azure")[1] is None, "nothing is scheduled"

    Azure(store).recovery_level("Recoverable")
    wait(lambda: on(p, "azure") == {"ok"}, limit=5, what="lifecycle ok with purge protection")
