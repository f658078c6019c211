"""A protocol-faithful fake of the Azure Key Vault keys REST API, for polykms' tests.

It serves HTTPS (the Azure SDK refuses to send tokens over plain HTTP) and follows the public
REST reference, https://learn.microsoft.com/rest/api/keyvault/keys/ :

- GET  /keys/{name}[/{version}]?api-version=...            Get Key (get-key/get-key)
- PATCH /keys/{name}/{version}?api-version=...             Update Key (update-key/update-key):
  `attributes.enabled/exp/nbf` and `key_ops`
- POST /keys/{name}/{version}/wrapkey?api-version=...      Wrap Key (wrap-key/wrap-key)
- POST /keys/{name}/{version}/unwrapkey?api-version=...    Unwrap Key (unwrap-key/unwrap-key)

with the behaviours the SDK relies on:
- every call needs `api-version` (the REST reference lists it as a required query parameter);
- a request without a valid bearer token gets 401 with a `WWW-Authenticate: Bearer
  authorization="...", resource="..."` challenge, which the SDK parses to learn the token
  scope (https://learn.microsoft.com/azure/key-vault/general/authentication-requests-and-responses);
- errors are `{"error": {"code", "message", "innererror": {"code"}}}` (KeyVaultError);
- `value` fields are base64url without padding (Base64UrlEncoded in the reference);
- wrapKey on a versionless key uses the current version and answers the `kid` it used;
- key versions are 32 hex characters; keys carry `attributes.enabled/exp/nbf` (NumericDate:
  seconds since the epoch) and `key_ops`;
- `attributes.recoveryLevel` and `recoverableDays` reflect the vault's soft-delete retention and
  purge protection (KeyAttributes in the get-key reference; values as DeletionRecoveryLevel,
  https://learn.microsoft.com/azure/key-vault/general/soft-delete-overview): a new vault has
  soft delete without purge protection, "Recoverable+Purgeable" with 90 days. Here it is held
  per key (set through the control API) so that parallel tests do not change each other's.

Crypto is real: RSA-OAEP-256 / RSA-OAEP with generated RSA keys, AES key wrap (RFC 3394 and
RFC 5649) with generated oct-HSM keys (as Managed HSM offers).

Test control lives under /__control/ (never a Key Vault path, no auth): create/rotate keys,
disable/enable a version, throttle a key (429 or 5xx with Retry-After), accept new tokens,
change the challenge resource. See `Control` below.
"""

import argparse
import base64
import json
import os
import re
import ssl
import sys
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.keywrap import (
    InvalidUnwrap,
    aes_key_unwrap,
    aes_key_unwrap_with_padding,
    aes_key_wrap,
    aes_key_wrap_with_padding,
)

TENANT = "72f988bf-86f1-41af-91ab-2d7cd011db47"
ALL_OPS = ["encrypt", "decrypt", "sign", "verify", "wrapKey", "unwrapKey"]
B64URL = re.compile(r"^[A-Za-z0-9_-]*={0,2}$")


def b64u(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def unb64u(text):
    if not isinstance(text, str) or not B64URL.match(text):
        raise ValueError("not base64url")
    text = text.rstrip("=")
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class ApiError(Exception):
    def __init__(self, status, code, message, inner=None, headers=None):
        super().__init__(message)
        self.status, self.code, self.message, self.inner = status, code, message, inner
        self.headers = headers or {}

    def body(self):
        err = {"code": self.code, "message": self.message}
        if self.inner:
            err["innererror"] = {"code": self.inner}
        return {"error": err}


# DeletionRecoveryLevel values and the recoverableDays that go with them: 90 for the
# Recoverable levels, 7-89 for the Customized ones, none without soft delete.
RECOVERY_LEVELS = {"Purgeable": None, "Recoverable+Purgeable": 90, "Recoverable": 90,
                   "Recoverable+ProtectedSubscription": 90, "CustomizedRecoverable+Purgeable": 7,
                   "CustomizedRecoverable": 7, "CustomizedRecoverable+ProtectedSubscription": 7}
DEFAULT_RECOVERY_LEVEL = "Recoverable+Purgeable"


def numeric_date(value, field):
    """NumericDate attributes (exp, nbf): integer seconds since the epoch, or null."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise ApiError(400, "BadParameter", f"Property '{field}' must be a NumericDate (integer seconds).")
    return value


class KeyVersion:
    def __init__(self, kty, size, ops, exp=None, nbf=None):
        self.version = uuid.uuid4().hex
        self.kty, self.ops, self.exp, self.nbf = kty, list(ops), exp, nbf
        self.recovery_level = DEFAULT_RECOVERY_LEVEL
        self.enabled = True
        self.created = self.updated = int(time.time())
        if kty.startswith("RSA"):
            self.material = rsa.generate_private_key(public_exponent=65537, key_size=size)
        else:
            self.material = os.urandom(size // 8)
            self.size = size

    def bundle(self, base, name):
        jwk = {"kid": f"{base}/keys/{name}/{self.version}", "kty": self.kty, "key_ops": self.ops}
        if self.kty.startswith("RSA"):
            pub = self.material.public_key().public_numbers()
            jwk["n"] = b64u(pub.n.to_bytes((pub.n.bit_length() + 7) // 8, "big"))
            jwk["e"] = b64u(pub.e.to_bytes(3, "big"))
        attrs = {"enabled": self.enabled, "created": self.created, "updated": self.updated,
                 "recoveryLevel": self.recovery_level}
        if RECOVERY_LEVELS[self.recovery_level] is not None:
            attrs["recoverableDays"] = RECOVERY_LEVELS[self.recovery_level]
        if self.exp is not None:
            attrs["exp"] = self.exp
        if self.nbf is not None:
            attrs["nbf"] = self.nbf
        return {"key": jwk, "attributes": attrs}

    def check_usable(self, op):
        # Disabled / expired / not-yet-valid keys refuse crypto with 403 + an innererror code.
        if not self.enabled:
            raise ApiError(403, "Forbidden", f"Operation {op} is not allowed on a disabled key.", "KeyDisabled")
        now = time.time()
        if self.exp is not None and now >= self.exp:
            raise ApiError(403, "Forbidden", f"Operation {op} is not allowed on an expired key.", "KeyExpired")
        if self.nbf is not None and now < self.nbf:
            raise ApiError(403, "Forbidden", f"Operation {op} is not allowed on a key that is not yet valid.", "KeyNotYetValid")
        if op not in self.ops:
            raise ApiError(403, "Forbidden", f"Operation {op} is not permitted on this key.", "KeyOperationForbidden")

    def _rsa_padding(self, alg):
        if not self.kty.startswith("RSA"):
            return None
        if alg == "RSA-OAEP-256":
            return padding.OAEP(mgf=padding.MGF1(hashes.SHA256()), algorithm=hashes.SHA256(), label=None)
        if alg == "RSA-OAEP":
            return padding.OAEP(mgf=padding.MGF1(hashes.SHA1()), algorithm=hashes.SHA1(), label=None)
        return None

    def _aes_ok(self, alg):
        if not self.kty.startswith("oct"):
            return False
        if alg in ("A128KW", "A192KW", "A256KW"):
            return int(alg[1:4]) == self.size
        return alg in ("CKM_AES_KEY_WRAP", "CKM_AES_KEY_WRAP_PAD")

    def wrap(self, alg, value):
        pad = self._rsa_padding(alg)
        try:
            if pad is not None:
                return self.material.public_key().encrypt(value, pad)
            if self._aes_ok(alg):
                if alg == "CKM_AES_KEY_WRAP_PAD":
                    return aes_key_wrap_with_padding(self.material, value)
                return aes_key_wrap(self.material, value)
        except ValueError as e:
            raise ApiError(400, "BadParameter", f"Invalid value for wrapKey: {e}")
        raise ApiError(400, "BadParameter", f"Algorithm {alg} is not supported for key type {self.kty}.")

    def unwrap(self, alg, value):
        pad = self._rsa_padding(alg)
        try:
            if pad is not None:
                return self.material.decrypt(value, pad)
            if self._aes_ok(alg):
                if alg == "CKM_AES_KEY_WRAP_PAD":
                    return aes_key_unwrap_with_padding(self.material, value)
                return aes_key_unwrap(self.material, value)
        except (ValueError, InvalidUnwrap):
            raise ApiError(400, "BadParameter", "Unwrap failed: the value was not wrapped by this key version.")
        raise ApiError(400, "BadParameter", f"Algorithm {alg} is not supported for key type {self.kty}.")


class Vault:
    def __init__(self, tokens, resource):
        self.lock = threading.Lock()
        self.keys = {}  # lower-case name -> {"name", "versions": [KeyVersion], "faults": [...], "stats"}
        self.tokens = set(tokens)
        self.resource = resource

    def entry(self, name):
        e = self.keys.get(name.lower())
        if e is None:
            raise ApiError(404, "KeyNotFound", f"A key with (name/id) {name} was not found in this key vault. "
                           "If you recently deleted this key you may be able to recover it.")
        return e

    def version(self, name, version):
        e = self.entry(name)
        if not version:
            return e["versions"][-1]
        for v in e["versions"]:
            if v.version == version.lower():
                return v
        raise ApiError(404, "KeyNotFound", f"A key with (name/id) {name}/{version} was not found in this key vault.")


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "fake-keyvault/1"
    vault = None  # set in main()

    def log_message(self, fmt, *args):
        sys.stderr.write("%s %s\n" % (self.log_date_time_string(), fmt % args))

    def _reply(self, status, body, headers=None):
        data = json.dumps(body).encode() if body is not None else b""
        self.send_response(status)
        self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(data)

    def _body(self):
        n = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(n) if n else b""
        if not raw:
            return {}
        try:
            body = json.loads(raw)
        except ValueError:
            raise ApiError(400, "BadParameter", "The request body is not valid JSON.")
        if not isinstance(body, dict):
            raise ApiError(400, "BadParameter", "The request body must be a JSON object.")
        return body

    def do_GET(self):
        self._dispatch("GET")

    def do_POST(self):
        self._dispatch("POST")

    def do_PATCH(self):
        self._dispatch("PATCH")

    def _dispatch(self, method):
        url = urlsplit(self.path)
        segs = [s for s in url.path.split("/") if s]
        try:
            # Always consume the body so keep-alive connections stay in step.
            body = self._body()
            if segs and segs[0] == "__control":
                return Control(self, self.vault).handle(method, segs[1:], body)
            self._api(method, segs, parse_qs(url.query), body)
        except ApiError as e:
            self._reply(e.status, e.body(), e.headers)

    def _challenge(self):
        # https://learn.microsoft.com/azure/key-vault/general/authentication-requests-and-responses
        return {"WWW-Authenticate": f'Bearer authorization="https://login.microsoftonline.com/{TENANT}", '
                                    f'resource="{self.vault.resource}"'}

    def _api(self, method, segs, query, body):
        if not query.get("api-version"):
            raise ApiError(400, "BadParameter", "The 'api-version' query parameter is required.")
        auth = self.headers.get("Authorization", "")
        if not auth.startswith("Bearer "):
            raise ApiError(401, "Unauthorized", "AKV10000: Request is missing a Bearer or PoP token.",
                           headers=self._challenge())
        with self.vault.lock:
            if auth[len("Bearer "):].strip() not in self.vault.tokens:
                raise ApiError(401, "Unauthorized", "AKV10032: Invalid issuer or token.", headers=self._challenge())
        if len(segs) < 2 or segs[0] != "keys":
            raise ApiError(404, "NotFound", "The requested resource was not found.")
        name, rest = segs[1], segs[2:]
        base = f"https://{self.headers.get('Host', '127.0.0.1')}"
        with self.vault.lock:
            entry = self.vault.entry(name)
            entry["stats"]["requests"] += 1
            if entry["faults"]:
                fault = entry["faults"].pop(0)
                entry["stats"]["faulted"] += 1
                code = "Throttled" if fault["status"] == 429 else "ServiceUnavailable"
                raise ApiError(fault["status"], code, "Request was not processed because too many requests "
                               "were received. Reason: VaultRequestTypeLimitReached",
                               headers={"Retry-After": str(fault["retry_after"])})
            if method == "GET" and len(rest) <= 1:
                v = self.vault.version(name, rest[0] if rest else None)
                return self._reply(200, v.bundle(base, entry["name"]))
            if method == "PATCH" and len(rest) <= 1:
                v = self.vault.version(name, rest[0] if rest else None)
                update_key(v, body)
                return self._reply(200, v.bundle(base, entry["name"]))
            if method == "POST" and rest and rest[-1] in ("wrapkey", "unwrapkey") and len(rest) <= 2:
                op = "wrapKey" if rest[-1] == "wrapkey" else "unwrapKey"
                v = self.vault.version(name, rest[0] if len(rest) == 2 else None)
                alg, raw = body.get("alg"), body.get("value")
                if not alg or raw is None:
                    raise ApiError(400, "BadParameter", "Parameters 'alg' and 'value' are required.")
                try:
                    value = unb64u(raw)
                except (ValueError, TypeError):
                    raise ApiError(400, "BadParameter", "Property 'value' is not base64url encoded.")
                v.check_usable(op)
                out = v.wrap(alg, value) if op == "wrapKey" else v.unwrap(alg, value)
                kid = f"{base}/keys/{entry['name']}/{v.version}"
                return self._reply(200, {"kid": kid, "value": b64u(out)})
        raise ApiError(405 if method == "GET" else 404, "NotFound", "Operation not supported by the fake.")


def update_key(v, body):
    """Update Key: the editable attributes and key_ops; absent fields stay as they are."""
    attrs = body.get("attributes") or {}
    if not isinstance(attrs, dict):
        raise ApiError(400, "BadParameter", "Property 'attributes' must be an object.")
    if "enabled" in attrs:
        if not isinstance(attrs["enabled"], bool):
            raise ApiError(400, "BadParameter", "Property 'enabled' must be a boolean.")
        v.enabled = attrs["enabled"]
    if "exp" in attrs:
        v.exp = numeric_date(attrs["exp"], "exp")
    if "nbf" in attrs:
        v.nbf = numeric_date(attrs["nbf"], "nbf")
    if body.get("key_ops") is not None:
        v.ops = [str(op) for op in body["key_ops"]]
    v.updated = int(time.time())


class Control:
    """Test control, off the Key Vault API paths:

    POST /__control/keys/{name}            {"kty","size","key_ops","exp","nbf","recovery_level"}
                                           create a version
    POST /__control/keys/{name}/recovery-level {"recovery_level"} the vault's recoveryLevel as
                                           this key's versions report it
    POST /__control/keys/{name}/rotate     new version like the current one
    POST /__control/keys/{name}/disable    {"version"?} disable (default: current version)
    POST /__control/keys/{name}/enable     {"version"?}
    POST /__control/keys/{name}/fault      {"count","status"=429,"retry_after"=1} fail next calls
    GET  /__control/keys/{name}/stats      {"requests","faulted"}
    POST /__control/tokens                 {"token"} accept another bearer token
    POST /__control/challenge              {"resource"} resource named in 401 challenges
    GET  /__control/health
    """

    def __init__(self, handler, vault):
        self.h, self.v = handler, vault

    def handle(self, method, segs, body):
        base = f"https://{self.h.headers.get('Host', '127.0.0.1')}"
        with self.v.lock:
            if segs == ["health"]:
                return self.h._reply(200, {"ok": True})
            if segs == ["tokens"] and method == "POST":
                self.v.tokens.add(str(body["token"]))
                return self.h._reply(200, {"ok": True})
            if segs == ["challenge"] and method == "POST":
                self.v.resource = str(body["resource"])
                return self.h._reply(200, {"ok": True})
            if len(segs) >= 2 and segs[0] == "keys":
                return self._key(method, segs[1], segs[2:], body, base)
        raise ApiError(404, "NotFound", "unknown control path")

    def _key(self, method, name, rest, body, base):
        if not rest and method == "POST":
            kty = body.get("kty", "RSA")
            size = int(body.get("size", 2048 if kty.startswith("RSA") else 256))
            v = KeyVersion(kty, size, body.get("key_ops", ALL_OPS), body.get("exp"), body.get("nbf"))
            e = self.v.keys.setdefault(name.lower(), {"name": name, "versions": [], "faults": [],
                                                       "stats": {"requests": 0, "faulted": 0}})
            level = body.get("recovery_level") or (e["versions"][-1].recovery_level if e["versions"]
                                                   else DEFAULT_RECOVERY_LEVEL)
            if level not in RECOVERY_LEVELS:
                raise ApiError(400, "BadParameter", f"unknown recovery level {level!r}")
            v.recovery_level = level
            e["versions"].append(v)
            return self.h._reply(200, v.bundle(base, e["name"]))
        e = self.v.entry(name)
        if rest == ["rotate"] and method == "POST":
            cur = e["versions"][-1]
            size = cur.material.key_size if cur.kty.startswith("RSA") else cur.size
            v = KeyVersion(cur.kty, size, cur.ops, cur.exp, cur.nbf)
            v.recovery_level = cur.recovery_level
            e["versions"].append(v)
            return self.h._reply(200, v.bundle(base, e["name"]))
        if rest in (["disable"], ["enable"]) and method == "POST":
            v = self.v.version(name, body.get("version"))
            v.enabled = rest == ["enable"]
            v.updated = int(time.time())
            return self.h._reply(200, v.bundle(base, e["name"]))
        if rest == ["recovery-level"] and method == "POST":
            level = body.get("recovery_level")
            if level not in RECOVERY_LEVELS:
                raise ApiError(400, "BadParameter", f"unknown recovery level {level!r}")
            for v in e["versions"]:
                v.recovery_level = level
            return self.h._reply(200, {"ok": True})
        if rest == ["fault"] and method == "POST":
            fault = {"status": int(body.get("status", 429)), "retry_after": int(body.get("retry_after", 1))}
            e["faults"].extend([fault] * int(body.get("count", 1)))
            return self.h._reply(200, {"ok": True})
        if rest == ["stats"]:
            return self.h._reply(200, e["stats"])
        raise ApiError(404, "NotFound", "unknown control path")


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8443)
    p.add_argument("--cert", required=True)
    p.add_argument("--key", required=True)
    p.add_argument("--token-file", required=True, help="file with the bearer token to accept")
    p.add_argument("--resource", default="https://vault.azure.net")
    args = p.parse_args()
    with open(args.token_file) as f:
        token = f.read().strip()
    Handler.vault = Vault([token], args.resource)
    server = ThreadingHTTPServer((args.host, args.port), Handler)
    server.daemon_threads = True
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(args.cert, args.key)
    # Handshake in the handler thread, so one stalled client cannot block accept().
    server.socket = ctx.wrap_socket(server.socket, server_side=True, do_handshake_on_connect=False)
    print(f"fake Key Vault on https://{args.host}:{args.port}", file=sys.stderr, flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
