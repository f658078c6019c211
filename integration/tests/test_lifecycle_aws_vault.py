"""Key lifecycle end to end for AWS KMS (moto_server, integration/servers/moto.sh) and Vault
Transit (an OpenBao dev server, integration/servers/openbao.sh): the real binary over the unix
socket, the key changed from outside the way an operator would, and what polykms says about it
in Status, /metrics and its log.

The issue owner's check, as written: "AWS emulator: ScheduleKeyDeletion -> unhealthy within the
probe interval, the lifecycle metric and the deletion timestamp set, one WARN naming
CancelKeyDeletion; cancelled -> healthy again. OpenBao with deletion_allowed = true -> warning
metric, Status healthy." KMS leaves a cancelled key Disabled, so "cancelled" here is the whole
remedy polykms names: CancelKeyDeletion, then EnableKey."""

import json
import os
import subprocess
import time

import requests

from conftest import BIN
from stores import AwsStore, VaultStore, plugin_config
from lifecycle import PROBE_INTERVAL, lifecycle_metrics, on, settle, warn_records
from test_backends import decrypt, encrypt, status, wait










# ---------------------------------------------------------------------------------------------
# AWS KMS


def test_aws_scheduled_deletion_is_unhealthy_at_once_with_date_and_undo_and_recovers(workdir, plugins):
    store = AwsStore()
    p = plugins(workdir, plugin_config([store.block("aws")], ["aws"]), name="aws-lifecycle")
    wait(lambda: on(p, "aws") == {"ok"}, what="lifecycle ok for an enabled key")
    seed = os.urandom(32)
    enc = encrypt(p, seed)
    assert decrypt(p, enc) == seed

    deletion = store.kms.schedule_key_deletion(KeyId=store.key_id, PendingWindowInDays=7)["DeletionDate"]
    # Within a few probe intervals (the probe runs every PROBE_INTERVAL); no tighter timing
    # assertion on a shared machine.
    wait(lambda: status(p).healthz != "ok", limit=5, what="unhealthy after ScheduleKeyDeletion")
    healthz = status(p).healthz
    assert "scheduled for deletion" in healthz and "CancelKeyDeletion, then EnableKey" in healthz, healthz
    assert store.arn in healthz, healthz

    states, at = lifecycle_metrics(p, "aws")
    assert {s for s, v in states.items() if v == 1} == {"pending_deletion"}, states
    assert at is not None and abs(at - deletion.timestamp()) < 1, (at, deletion)

    # Over several probes: one WARN, the turn to unhealthy, whose reason is the finding (key,
    # date, undo); no repeats per probe.
    settle(probes=6)
    warned = warn_records(p, "CancelKeyDeletion")
    assert len(warned) == 1, warned
    assert warned[0]["message"] == "backend unhealthy", warned
    assert store.arn in warned[0]["reason"] and "scheduled for deletion" in warned[0]["reason"], warned

    store.kms.cancel_key_deletion(KeyId=store.key_id)
    store.kms.enable_key(KeyId=store.key_id)
    wait(lambda: status(p).healthz == "ok", limit=5, what="healthy after CancelKeyDeletion, then EnableKey")
    wait(lambda: on(p, "aws") == {"ok"}, limit=5, what="lifecycle ok again")
    assert lifecycle_metrics(p, "aws")[1] is None, "deletion timestamp cleared"
    assert decrypt(p, enc) == seed
    assert len(warn_records(p, "CancelKeyDeletion")) == 1


def test_aws_scheduled_deletion_logs_exactly_one_warn_naming_cancel_key_deletion(workdir, plugins):
    store = AwsStore()
    p = plugins(workdir, plugin_config([store.block("aws")], ["aws"]), name="aws-one-warn")
    wait(lambda: on(p, "aws") == {"ok"}, what="lifecycle ok for an enabled key")
    store.kms.schedule_key_deletion(KeyId=store.key_id, PendingWindowInDays=7)
    wait(lambda: status(p).healthz != "ok", limit=5, what="unhealthy after ScheduleKeyDeletion")
    settle(probes=6)
    warned = warn_records(p, "CancelKeyDeletion")
    assert len(warned) == 1, f"WARN records naming CancelKeyDeletion over 6 probes: {warned}"


def test_aws_disabled_key_names_enable_key(workdir, plugins):
    store = AwsStore()
    p = plugins(workdir, plugin_config([store.block("aws")], ["aws"]), name="aws-disabled")
    wait(lambda: on(p, "aws") == {"ok"}, what="lifecycle ok for an enabled key")
    store.disable()
    wait(lambda: on(p, "aws") == {"disabled"}, limit=5, what="disabled lifecycle")
    healthz = status(p).healthz
    assert "is disabled" in healthz and "to undo: EnableKey" in healthz, healthz
    assert lifecycle_metrics(p, "aws")[1] is None, "no deletion date for a disabled key"
    store.enable()
    wait(lambda: status(p).healthz == "ok", limit=5, what="healthy after EnableKey")


# ---------------------------------------------------------------------------------------------
# Vault / OpenBao Transit


def vault_config(store, key_config):
    r = requests.post(f"{store.addr}/v1/transit/keys/{store.key}/config", json=key_config,
                      headers={"X-Vault-Token": store.token}, timeout=5)
    r.raise_for_status()


def test_openbao_deletion_allowed_warns_and_status_stays_healthy(workdir, plugins):
    store = VaultStore()
    p = plugins(workdir, plugin_config([store.block("vault")], ["vault"]), name="vault-lifecycle")
    wait(lambda: on(p, "vault") == {"ok"}, what="lifecycle ok for a fresh key")

    vault_config(store, {"deletion_allowed": True})
    wait(lambda: on(p, "vault") == {"deletion_allowed"}, limit=5, what="deletion_allowed metric")
    for _ in range(6):
        assert status(p).healthz == "ok"
        time.sleep(PROBE_INTERVAL)
    seed = os.urandom(32)
    assert decrypt(p, encrypt(p, seed)) == seed
    undo = f"vault write transit/keys/{store.key}/config deletion_allowed=false"
    warned = warn_records(p, undo)
    assert len(warned) == 1, warned
    assert lifecycle_metrics(p, "vault")[1] is None, "no deletion date: nothing is scheduled"
    # `polykms check` prints the state; --strict makes it an exit code.
    check = subprocess.run([str(BIN), "check", "--config", str(p.config)], capture_output=True,
                           text=True, timeout=60)
    assert check.returncode == 0, check.stdout + check.stderr
    assert "WARNING (deletion_allowed)" in check.stdout and undo in check.stdout, check.stdout
    strict = subprocess.run([str(BIN), "check", "--strict", "--config", str(p.config)],
                            capture_output=True, text=True, timeout=60)
    assert strict.returncode == 1 and "--strict" in strict.stderr, strict.stdout + strict.stderr

    vault_config(store, {"deletion_allowed": False})
    wait(lambda: on(p, "vault") == {"ok"}, limit=5, what="lifecycle ok after deletion_allowed=false")
    assert status(p).healthz == "ok"
    strict = subprocess.run([str(BIN), "check", "--strict", "--config", str(p.config)],
                            capture_output=True, text=True, timeout=60)
    assert strict.returncode == 0 and "lifecycle:   ok" in strict.stdout, strict.stdout + strict.stderr


def test_openbao_retired_version_that_decrypts_used_warns_naming_it(workdir, plugins):
    store = VaultStore()
    p = plugins(workdir, plugin_config([store.block("vault")], ["vault"]), name="vault-retired")
    seed = os.urandom(32)
    old = encrypt(p, seed)
    assert decrypt(p, old) == seed  # version 1 is now one Decrypts use
    store.rotate()
    vault_config(store, {"min_decryption_version": 2})
    wait(lambda: on(p, "vault") == {"version_retired"}, limit=5, what="version_retired metric")
    assert status(p).healthz == "ok", "the current version still wraps"
    warned = warn_records(p, f"vault write transit/keys/{store.key}/config min_decryption_version=1")
    assert len(warned) == 1, warned
    assert f"transit/{store.key}:v1" in json.dumps(warned[0])

    vault_config(store, {"min_decryption_version": 1})
    wait(lambda: on(p, "vault") == {"ok"}, limit=5, what="lifecycle ok after lowering it")
    assert decrypt(p, old) == seed
