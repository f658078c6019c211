"""Key rings, CryptoKeys and CryptoKeyVersions of the fake Cloud KMS, with real AES-256-GCM.

Resource model and state machine follow the public references:
- Resources and names: https://cloud.google.com/kms/docs/resource-hierarchy
- Version states and the primary version:
  https://cloud.google.com/kms/docs/key-states
- Scheduled destruction: cryptoKeyVersions.destroy sets state DESTROY_SCHEDULED and
  `destroyTime` to now + the key's `destroyScheduledDuration` (default 30 days); at that time
  the version becomes DESTROYED with `destroyEventTime`; restore returns it to DISABLED
  https://cloud.google.com/kms/docs/reference/rest/v1/projects.locations.keyRings.cryptoKeys.cryptoKeyVersions/destroy
  https://cloud.google.com/kms/docs/reference/rest/v1/projects.locations.keyRings.cryptoKeys.cryptoKeyVersions#CryptoKeyVersion
- Encrypt/Decrypt rules and limits:
  https://cloud.google.com/kms/docs/reference/rest/v1/projects.locations.keyRings.cryptoKeys/encrypt
  https://cloud.google.com/kms/docs/reference/rest/v1/projects.locations.keyRings.cryptoKeys/decrypt

The ciphertext layout is the fake's own (real Cloud KMS ciphertext is opaque too, and also
carries the version that made it): b"FKMS" | version id (u32 BE) | nonce (12) | AES-GCM(ct+tag).
"""

import datetime
import os
import struct
import threading

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

MAGIC = b"FKMS"
MAX_DATA = 64 * 1024  # SOFTWARE keys: plaintext and AAD at most 64 KiB each (encrypt reference)

# Enum numbers from google/cloud/kms/v1/resources.proto (the REST JSON uses their names, or
# the numbers when the client asks for `$alt=json;enum-encoding=int`).
PURPOSES = {"CRYPTO_KEY_PURPOSE_UNSPECIFIED": 0, "ENCRYPT_DECRYPT": 1, "ASYMMETRIC_SIGN": 5,
            "ASYMMETRIC_DECRYPT": 6, "RAW_ENCRYPT_DECRYPT": 7, "MAC": 9}
STATES = {"CRYPTO_KEY_VERSION_STATE_UNSPECIFIED": 0, "ENABLED": 1, "DISABLED": 2,
          "DESTROYED": 3, "DESTROY_SCHEDULED": 4, "PENDING_GENERATION": 5}
ALGORITHMS = {"GOOGLE_SYMMETRIC_ENCRYPTION": 1, "RSA_SIGN_PSS_2048_SHA256": 2}
PROTECTION_LEVELS = {"SOFTWARE": 1, "HSM": 2}


class ApiError(Exception):
    """A google.rpc.Status to send back: canonical code name and message."""

    def __init__(self, status, message):
        super().__init__(message)
        self.status = status
        self.message = message


# CryptoKey.destroyScheduledDuration when create does not set one (cryptoKeys reference).
DEFAULT_DESTROY_SCHEDULED_SECONDS = 30 * 24 * 3600


def timestamp(when):
    """A google.protobuf.Timestamp in its JSON form (RFC 3339, UTC, "Z")."""
    return when.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def utcnow():
    return datetime.datetime.now(datetime.timezone.utc)


def now():
    return timestamp(utcnow())


def duration(seconds):
    """A google.protobuf.Duration in its JSON form, e.g. "86400s" or "1.5s"."""
    return f"{seconds:.9f}".rstrip("0").rstrip(".") + "s"


def parse_duration(value, field):
    """A google.protobuf.Duration in its JSON form: seconds with an "s" suffix."""
    text = str(value)
    try:
        if not text.endswith("s"):
            raise ValueError(text)
        seconds = float(text[:-1])
    except ValueError:
        raise ApiError("INVALID_ARGUMENT", f"Invalid value at '{field}': {value!r}") from None
    if seconds < 0:
        raise ApiError("INVALID_ARGUMENT", f"Invalid value at '{field}': {value!r}")
    return seconds


def enum_name(table, value, field):
    """Request enums arrive as names or numbers (proto3 JSON accepts both)."""
    if isinstance(value, int):
        for name, number in table.items():
            if number == value:
                return name
    elif value in table:
        return value
    raise ApiError("INVALID_ARGUMENT", f"Invalid value at '{field}': {value!r}")


class Version:
    def __init__(self, key_name, number, algorithm):
        self.name = f"{key_name}/cryptoKeyVersions/{number}"
        self.number = number
        self.state = "ENABLED"
        self.algorithm = algorithm
        self.material = os.urandom(32)
        self.create_time = now()
        self.destroy_at = None  # datetime while DESTROY_SCHEDULED
        self.destroy_event_time = None

    def settle(self):
        """Destroys the material once the scheduled destroyTime has passed, as KMS does."""
        if self.state == "DESTROY_SCHEDULED" and utcnow() >= self.destroy_at:
            self.state, self.material = "DESTROYED", None
            self.destroy_event_time = timestamp(self.destroy_at)
            self.destroy_at = None

    def resource(self):
        self.settle()
        r = {"name": self.name, "state": self.state, "protectionLevel": "SOFTWARE",
             "algorithm": self.algorithm, "createTime": self.create_time,
             "generateTime": self.create_time}
        # destroyTime: only while DESTROY_SCHEDULED; destroyEventTime: once DESTROYED.
        if self.destroy_at is not None:
            r["destroyTime"] = timestamp(self.destroy_at)
        if self.destroy_event_time:
            r["destroyEventTime"] = self.destroy_event_time
        return r


class CryptoKey:
    def __init__(self, name, purpose, destroy_scheduled_seconds=DEFAULT_DESTROY_SCHEDULED_SECONDS):
        self.name = name
        self.purpose = purpose
        self.destroy_scheduled_seconds = destroy_scheduled_seconds
        self.algorithm = ("GOOGLE_SYMMETRIC_ENCRYPTION" if purpose == "ENCRYPT_DECRYPT"
                          else "RSA_SIGN_PSS_2048_SHA256")
        self.versions = {}
        self.primary = None
        self.create_time = now()

    def add_version(self):
        number = len(self.versions) + 1
        v = Version(self.name, number, self.algorithm)
        self.versions[number] = v
        return v

    def resource(self):
        r = {"name": self.name, "purpose": self.purpose, "createTime": self.create_time,
             "versionTemplate": {"protectionLevel": "SOFTWARE", "algorithm": self.algorithm},
             "destroyScheduledDuration": duration(self.destroy_scheduled_seconds)}
        # Only ENCRYPT_DECRYPT keys have a primary version (CryptoKey.primary reference).
        if self.primary is not None:
            r["primary"] = self.versions[self.primary].resource()
        return r


class Store:
    """All resources, behind one lock (the server is threaded)."""

    def __init__(self):
        self.lock = threading.Lock()
        self.key_rings = {}
        self.keys = {}

    # --- resources -------------------------------------------------------------------------

    def create_key_ring(self, parent, ring_id):
        name = f"{parent}/keyRings/{ring_id}"
        if name in self.key_rings:
            raise ApiError("ALREADY_EXISTS", f"KeyRing {name} already exists.")
        self.key_rings[name] = {"name": name, "createTime": now()}
        return self.key_rings[name]

    def create_crypto_key(self, parent, key_id, purpose, skip_initial_version=False,
                          destroy_scheduled_seconds=DEFAULT_DESTROY_SCHEDULED_SECONDS):
        if parent not in self.key_rings:
            raise ApiError("NOT_FOUND", f"KeyRing {parent} not found.")
        name = f"{parent}/cryptoKeys/{key_id}"
        if name in self.keys:
            raise ApiError("ALREADY_EXISTS", f"CryptoKey {name} already exists.")
        key = CryptoKey(name, purpose, destroy_scheduled_seconds)
        self.keys[name] = key
        if not skip_initial_version:
            v = key.add_version()
            if purpose == "ENCRYPT_DECRYPT":
                key.primary = v.number
        return key

    def ensure_key(self, name, purpose="ENCRYPT_DECRYPT"):
        """Seeding helper: creates the key ring and key if missing."""
        ring, _, key_id = name.rpartition("/cryptoKeys/")
        parent, _, ring_id = ring.rpartition("/keyRings/")
        if ring not in self.key_rings:
            self.create_key_ring(parent, ring_id)
        if name not in self.keys:
            self.create_crypto_key(ring, key_id, purpose)
        return self.keys[name]

    def key(self, name):
        key = self.keys.get(name)
        if key is None:
            raise ApiError("NOT_FOUND", f"CryptoKey {name} not found.")
        return key

    def version(self, name):
        key_name, _, number = name.rpartition("/cryptoKeyVersions/")
        key = self.key(key_name)
        v = key.versions.get(int(number)) if number.isdigit() else None
        if v is None:
            raise ApiError("NOT_FOUND", f"CryptoKeyVersion {name} not found.")
        v.settle()
        return key, v

    # --- version lifecycle (UpdateCryptoKeyVersion, Destroy, Restore, UpdatePrimaryVersion) --

    def set_state(self, name, state):
        _, v = self.version(name)
        if state not in ("ENABLED", "DISABLED"):
            raise ApiError("INVALID_ARGUMENT", "state may only be updated to ENABLED or DISABLED.")
        if v.state not in ("ENABLED", "DISABLED"):
            raise ApiError("FAILED_PRECONDITION", f"CryptoKeyVersion {name} is {v.state}.")
        v.state = state
        return v

    def destroy(self, name, immediately=False):
        key, v = self.version(name)
        if v.state not in ("ENABLED", "DISABLED"):
            raise ApiError("FAILED_PRECONDITION", f"CryptoKeyVersion {name} is {v.state}.")
        # Real KMS schedules destruction destroyScheduledDuration ahead; the control API can
        # skip the wait and destroy at once.
        v.state = "DESTROY_SCHEDULED"
        v.destroy_at = utcnow() + datetime.timedelta(seconds=key.destroy_scheduled_seconds)
        if immediately:
            v.destroy_at = utcnow()
            v.settle()
        return v

    def restore(self, name):
        _, v = self.version(name)
        if v.state != "DESTROY_SCHEDULED":
            raise ApiError("FAILED_PRECONDITION", f"CryptoKeyVersion {name} is {v.state}.")
        v.state, v.destroy_at = "DISABLED", None
        return v

    def update_primary(self, key_name, version_id):
        key = self.key(key_name)
        if key.purpose != "ENCRYPT_DECRYPT":
            raise ApiError("FAILED_PRECONDITION", f"CryptoKey {key_name} has no primary version.")
        v = key.versions.get(int(version_id)) if str(version_id).isdigit() else None
        if v is None:
            raise ApiError("NOT_FOUND", f"CryptoKeyVersion {key_name}/cryptoKeyVersions/{version_id} not found.")
        if v.state != "ENABLED":
            raise ApiError("FAILED_PRECONDITION", f"CryptoKeyVersion {v.name} is not enabled.")
        key.primary = v.number
        return key

    def rotate(self, key_name):
        key = self.key(key_name)
        v = key.add_version()
        self.update_primary(key_name, v.number)
        return v

    # --- crypto ----------------------------------------------------------------------------

    def encrypt(self, name, plaintext, aad):
        if "/cryptoKeyVersions/" in name:
            key, v = self.version(name)
        else:
            key = self.key(name)
            v = key.versions[key.primary] if key.primary is not None else None
            if v is not None:
                v.settle()
        if key.purpose != "ENCRYPT_DECRYPT":
            raise ApiError("FAILED_PRECONDITION", f"CryptoKey {key.name} purpose is {key.purpose}, not ENCRYPT_DECRYPT.")
        if v is None or v.state != "ENABLED":
            what = v.name if v else f"primary of {key.name}"
            raise ApiError("FAILED_PRECONDITION", f"{what} is not enabled.")
        nonce = os.urandom(12)
        sealed = AESGCM(v.material).encrypt(nonce, plaintext, aad)
        return v, MAGIC + struct.pack(">I", v.number) + nonce + sealed

    def decrypt(self, name, ciphertext, aad):
        key = self.key(name)
        if key.purpose != "ENCRYPT_DECRYPT":
            raise ApiError("FAILED_PRECONDITION", f"CryptoKey {key.name} purpose is {key.purpose}, not ENCRYPT_DECRYPT.")
        invalid = ApiError("INVALID_ARGUMENT", "Decryption failed: the ciphertext is invalid.")
        if len(ciphertext) < 4 + 4 + 12 + 16 or not ciphertext.startswith(MAGIC):
            raise invalid
        (number,) = struct.unpack(">I", ciphertext[4:8])
        v = key.versions.get(number)
        if v is None:
            raise invalid
        v.settle()
        if v.state != "ENABLED":
            raise ApiError("FAILED_PRECONDITION", f"{v.name} is not enabled, current state is: {v.state}.")
        try:
            plaintext = AESGCM(v.material).decrypt(ciphertext[8:20], ciphertext[20:], aad)
        except InvalidTag:
            raise invalid from None
        return v, plaintext, v.number == key.primary
