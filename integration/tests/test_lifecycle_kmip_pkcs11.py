"""Key lifecycle warnings end to end for KMIP (a real PyKMIP server, integration/servers/kmip.sh)
and PKCS#11 (SoftHSM2 tokens, integration/servers/softhsm.sh): the real binary over the unix
socket, the key store changed from outside the way an operator would, and what polykms says
about it in Status, /metrics, its log and `polykms check`.

PyKMIP keeps no Deactivation Date (it refuses to set one), so the KMIP `expiring` case is covered
by the crate's in-process fake server (crates/kmip/src/tests/lifecycle.rs), not here.
CKA_END_DATE is set with C_SetAttributeValue through ctypes (pkcs11-tool cannot set dates)."""

import ctypes
import datetime
import os
import subprocess

import pytest

from conftest import BIN
from stores import KmipStore, plugin_config
from lifecycle import lifecycle_metrics, on, settle, warn_records
from test_backends import decrypt, encrypt, status, wait
from test_pkcs11 import NO_CACHE, Token, env as pkcs11_env

# ---------------------------------------------------------------------------------------------
# What the plugin says










# ---------------------------------------------------------------------------------------------
# KMIP


def kmip_admin(store, fn, *args):
    """Runs a kmip_admin.py function (PyKMIP's own client) on one of the store's keys."""
    c = store.admin.connect()
    try:
        return fn(c, *args)
    finally:
        c.close()


def kmip_plugin(workdir, plugins, store):
    return plugins(workdir, plugin_config([store.block("kmip")], ["kmip"], extra=NO_CACHE), name="kmip")


def test_kmip_revoked_key_is_unhealthy_saying_why_and_what_restores_wraps(workdir, plugins):
    store = KmipStore()
    p = kmip_plugin(workdir, plugins, store)
    wait(lambda: on(p, "kmip") == {"ok"}, what="lifecycle ok for an Active key")
    encrypt(p, os.urandom(32))
    uid = store.uids[0]
    store.disable()
    wait(lambda: "disabled" in on(p, "kmip"), what="lifecycle disabled after Revoke")
    wait(lambda: f"key {uid} is disabled" in status(p).healthz, what="the finding in Status")
    health = status(p).healthz
    assert "Deactivated" in health and f'make a new Active key named "{store.key}"' in health, health
    assert p.http("/readyz")[0] == 503
    settle(probes=4)
    # One WARN for the change, not one per probe.
    assert len(warn_records(p, f"key {uid} is disabled")) == 1, p.logs()


def test_kmip_older_key_revoked_then_destroyed_warns_and_status_stays_healthy(workdir, plugins):
    store = KmipStore()
    p = kmip_plugin(workdir, plugins, store)
    seed = os.urandom(32)
    old = encrypt(p, seed)
    before = status(p).key_id
    store.rotate()
    wait(lambda: status(p).key_id != before, what="new key_id after a newer Active key")
    # A Decrypt under the older key: the plugin now needs it, so its lifecycle is watched.
    assert decrypt(p, old) == seed
    first = store.uids[0]
    kmip_admin(store, store.admin.revoke, first)
    wait(lambda: "disabled" in on(p, "kmip"), what="warning for the revoked older key")
    st = status(p)
    assert st.healthz == "ok", st.healthz
    assert p.http("/readyz")[0] == 200
    assert len(warn_records(p, f"key {first} is disabled")) == 1, p.logs()
    # PyKMIP deletes a destroyed object: Decrypts under it can never work again.
    kmip_admin(store, store.admin.destroy, first)
    wait(lambda: on(p, "kmip") == {"version_retired"}, what="version_retired after Destroy")
    assert status(p).healthz == "ok"
    assert warn_records(p, f"key {first} can no longer decrypt"), p.logs()


# ---------------------------------------------------------------------------------------------
# PKCS#11


class _Attribute(ctypes.Structure):
    _fields_ = [("type", ctypes.c_ulong), ("value", ctypes.c_void_p), ("len", ctypes.c_ulong)]


CKA_CLASS, CKA_LABEL, CKA_ID, CKA_END_DATE = 0x0, 0x3, 0x102, 0x111
CKO_SECRET_KEY, CKU_USER, CKF_RW_SERIAL = 0x4, 1, 0x2 | 0x4
CKR_OK, CKR_ALREADY_INITIALIZED = 0, 0x191


def set_end_date(token, key_id, end):
    """C_SetAttributeValue(CKA_END_DATE = `end`, YYYYMMDD) on key object `key_id` (hex) of the
    token, in this process: SoftHSM2 keeps objects in files that the plugin reads afresh."""
    lib = ctypes.CDLL(token.module)
    ulong = ctypes.c_ulong

    def ck(rv, what, ok=(CKR_OK,)):
        assert rv in ok, f"{what}: CKR {rv:#x}"

    ck(lib.C_Initialize(None), "C_Initialize", (CKR_OK, CKR_ALREADY_INITIALIZED))
    try:
        count = ulong(0)
        ck(lib.C_GetSlotList(ctypes.c_ubyte(1), None, ctypes.byref(count)), "C_GetSlotList")
        slots = (ulong * count.value)()
        ck(lib.C_GetSlotList(ctypes.c_ubyte(1), slots, ctypes.byref(count)), "C_GetSlotList")
        info = ctypes.create_string_buffer(1024)  # CK_TOKEN_INFO starts with its 32-byte label
        slot = next(s for s in slots if lib.C_GetTokenInfo(ulong(s), info) == CKR_OK
                    and info.raw[:32].decode().rstrip() == token.label)
        session = ulong(0)
        ck(lib.C_OpenSession(ulong(slot), ulong(CKF_RW_SERIAL), None, None, ctypes.byref(session)),
           "C_OpenSession")
        pin = token.pin.encode()
        ck(lib.C_Login(session, ulong(CKU_USER), pin, ulong(len(pin))), "C_Login")
        klass, label, ident = ulong(CKO_SECRET_KEY), token.key_label.encode(), bytes.fromhex(key_id)
        template = (_Attribute * 3)(
            _Attribute(CKA_CLASS, ctypes.cast(ctypes.byref(klass), ctypes.c_void_p), ctypes.sizeof(klass)),
            _Attribute(CKA_LABEL, ctypes.cast(ctypes.c_char_p(label), ctypes.c_void_p), len(label)),
            _Attribute(CKA_ID, ctypes.cast(ctypes.c_char_p(ident), ctypes.c_void_p), len(ident)),
        )
        ck(lib.C_FindObjectsInit(session, template, ulong(3)), "C_FindObjectsInit")
        handle, found = ulong(0), ulong(0)
        ck(lib.C_FindObjects(session, ctypes.byref(handle), ulong(1), ctypes.byref(found)), "C_FindObjects")
        ck(lib.C_FindObjectsFinal(session), "C_FindObjectsFinal")
        assert found.value == 1, f"key object {token.key_label}:{key_id} not found"
        date = ctypes.create_string_buffer(end.encode(), 8)
        value = (_Attribute * 1)(_Attribute(CKA_END_DATE, ctypes.cast(date, ctypes.c_void_p), 8))
        ck(lib.C_SetAttributeValue(session, handle, value, ulong(1)), "C_SetAttributeValue")
        lib.C_Logout(session)
        lib.C_CloseSession(session)
    finally:
        lib.C_Finalize(None)


def utc_day(days_from_today):
    return datetime.datetime.now(datetime.timezone.utc).date() + datetime.timedelta(days=days_from_today)


def expiry_epoch(day):
    """The end date is the last day a key may be used: it expires at 00:00 UTC the day after."""
    after = datetime.datetime.combine(day + datetime.timedelta(days=1), datetime.time(),
                                      tzinfo=datetime.timezone.utc)
    return after.timestamp()


@pytest.fixture
def token(workdir):
    pkcs11_env()
    t = Token(workdir)
    t.keygen("01")
    yield t
    subprocess.run(["softhsm2-util", "--delete-token", "--token", t.label], capture_output=True)


def test_pkcs11_end_date_ahead_warns_and_past_makes_the_backend_unhealthy(token, workdir, plugins):
    p = plugins(workdir, plugin_config([token.block()], ["hsm"], extra=NO_CACHE), name="hsm-end")
    wait(lambda: on(p, "hsm") == {"ok"}, what="lifecycle ok without an end date")
    version = f"{token.key_label}:01"
    soon = utc_day(10)
    set_end_date(token, "01", soon.strftime("%Y%m%d"))
    wait(lambda: on(p, "hsm") == {"expiring"}, what="expiring within end_date_warning (30d)")
    assert status(p).healthz == "ok"
    assert lifecycle_metrics(p, "hsm")[1] == expiry_epoch(soon)
    settle(probes=4)
    assert len(warn_records(p, f"key {version} expires")) == 1, p.logs()

    # `polykms check` prints it; --strict fails on a key going away.
    cfg = workdir / "hsm-end.toml"
    r = subprocess.run([str(BIN), "check", "--config", str(cfg)], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "expiring" in r.stdout and "CKA_END_DATE" in r.stdout, r.stdout
    r = subprocess.run([str(BIN), "check", "--strict", "--config", str(cfg)], capture_output=True, text=True,
                       timeout=60)
    assert r.returncode != 0, r.stdout + r.stderr

    yesterday = utc_day(-1)
    set_end_date(token, "01", yesterday.strftime("%Y%m%d"))
    wait(lambda: status(p).healthz != "ok", what="unhealthy past the end date")
    health = status(p).healthz
    assert f"key {version} has expired" in health and "greater CKA_ID" in health, health
    assert on(p, "hsm") == {"expired"}
    assert p.http("/readyz")[0] == 503
    # A new key object with a greater CKA_ID restores wraps.
    token.keygen("02")
    wait(lambda: status(p).healthz == "ok", what="healthy under the new key object")
    assert on(p, "hsm") == {"ok"}


def test_pkcs11_older_key_object_past_its_end_date_warns_and_stays_healthy(token, workdir, plugins):
    p = plugins(workdir, plugin_config([token.block()], ["hsm"], extra=NO_CACHE), name="hsm-old")
    seed = os.urandom(32)
    old = encrypt(p, seed)
    before = status(p).key_id
    token.keygen("02")
    wait(lambda: status(p).key_id != before, what="new key_id after CKA_ID 02")
    assert decrypt(p, old) == seed
    set_end_date(token, "01", "20200101")
    wait(lambda: on(p, "hsm") == {"expired"}, what="expired warning for the older key object")
    assert status(p).healthz == "ok"
    assert p.http("/readyz")[0] == 200
    # SoftHSM2 does not enforce end dates: what it wrapped still decrypts.
    assert decrypt(p, old) == seed
    assert len(warn_records(p, f"key {token.key_label}:01 has expired")) == 1, p.logs()
