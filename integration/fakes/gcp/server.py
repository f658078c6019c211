"""A fake Cloud KMS REST v1 server for polykms' tests (127.0.0.1 only).

It speaks the wire protocol `google-cloud-kms-v1` uses, following the public reference
https://cloud.google.com/kms/docs/reference/rest rather than any one client:
- paths `/v1/{name}:encrypt`, `:decrypt`, `GET /v1/{cryptoKey}` and the admin calls below
  (gRPC transcoding, https://cloud.google.com/apis/design/standard_methods);
- JSON bodies in lowerCamelCase (snake_case accepted too), bytes as base64, int64 and the
  Int64Value CRC32C fields as decimal strings, false/empty fields omitted (proto3 JSON,
  https://protobuf.dev/programming-guides/json/); enums as names, or as numbers when the client
  sends `$alt=json;enum-encoding=int` (https://cloud.google.com/apis/docs/system-parameters);
- errors as `{"error": {"code", "message", "status"}}` with the HTTP code of each canonical
  code (https://cloud.google.com/apis/design/errors#http_mapping);
- CRC32C checks as in https://cloud.google.com/kms/docs/data-integrity-guidelines.

Admin calls (real API paths): keyRings.create, cryptoKeys.create (with an optional
`destroyScheduledDuration`), cryptoKeys.get, cryptoKeys.updatePrimaryVersion,
cryptoKeyVersions.create/get/patch(state)/destroy/restore. Versions carry `destroyTime` while
DESTROY_SCHEDULED and `destroyEventTime` once DESTROYED (see state.py).

Auth: a request without Authorization is served (emulator mode) unless --require-auth. A Bearer
token must be a self-signed service-account JWT (https://google.aip.dev/auth/4111) signed by a
key given with --trust-sa-file, else 401 UNAUTHENTICATED.

Test control API, under /__control/ (never a real API path), JSON bodies:
  GET  /__control/health                        -> 200 when ready
  POST /__control/rotate     {"key"}            -> new version, made primary
  POST /__control/destroy-now {"version"}       -> DESTROYED at once (skips the schedule)
  POST /__control/fail-next  {"code", "count"=1, "method"="any", "message"?}
        method: encrypt|decrypt|get|admin|any; code: a canonical code name (UNAVAILABLE, ...)
        Every fault takes an optional "key" (a CryptoKey name): it then hits only calls on
        that key or its versions, so tests running in parallel do not steal each other's.
  POST /__control/corrupt-next {"field", "count"=1, "method"="any"}
        field: a response field to falsify: ciphertextCrc32c, plaintextCrc32c,
        verifiedPlaintextCrc32c, verifiedAdditionalAuthenticatedDataCrc32c, name, ciphertext
  POST /__control/delay-next {"ms", "count"=1, "method"="any"}
  POST /__control/reset                          -> drops pending faults
  GET  /__control/requests                       -> last 200 API calls: method, path, which
        integrity fields were sent (no payloads)
"""

import argparse
import base64
import json
import re
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, unquote, urlsplit

from crc32c import crc32c
from state import (ALGORITHMS, DEFAULT_DESTROY_SCHEDULED_SECONDS, PROTECTION_LEVELS, PURPOSES, STATES,
                   MAX_DATA, ApiError, Store, enum_name, parse_duration)
import auth

HTTP_CODES = {"INVALID_ARGUMENT": 400, "FAILED_PRECONDITION": 400, "OUT_OF_RANGE": 400,
              "UNAUTHENTICATED": 401, "PERMISSION_DENIED": 403, "NOT_FOUND": 404,
              "ABORTED": 409, "ALREADY_EXISTS": 409, "RESOURCE_EXHAUSTED": 429,
              "CANCELLED": 499, "UNKNOWN": 500, "INTERNAL": 500, "DATA_LOSS": 500,
              "UNIMPLEMENTED": 501, "UNAVAILABLE": 503, "DEADLINE_EXCEEDED": 504}
ENUM_FIELDS = {"purpose": PURPOSES, "state": STATES, "algorithm": ALGORITHMS,
               "protectionLevel": PROTECTION_LEVELS}

SEG = r"[^/:]+"
KEY = rf"projects/{SEG}/locations/{SEG}/keyRings/{SEG}/cryptoKeys/{SEG}"
VERSION = rf"{KEY}/cryptoKeyVersions/{SEG}"
RING = rf"projects/{SEG}/locations/{SEG}/keyRings/{SEG}"
LOCATION = rf"projects/{SEG}/locations/{SEG}"


class Faults:
    """Pending test faults, consumed in order by matching API calls."""

    def __init__(self):
        self.lock = threading.Lock()
        self.pending = []  # dicts: kind, method, count, ...
        self.requests = []

    def take(self, kind, method, path):
        with self.lock:
            for f in self.pending:
                key = f.get("key")
                on_key = key is None or path == key or path.startswith((key + ":", key + "/"))
                if f["kind"] == kind and f["method"] in ("any", method) and on_key:
                    f["count"] -= 1
                    if f["count"] <= 0:
                        self.pending.remove(f)
                    return f
        return None

    def record(self, entry):
        with self.lock:
            self.requests.append(entry)
            del self.requests[:-200]


def field(body, camel):
    snake = re.sub(r"([A-Z])", lambda m: "_" + m.group(1).lower(), camel)
    return body.get(camel, body.get(snake))


def b64(body, camel):
    value = field(body, camel) or ""
    try:
        return base64.b64decode(value, validate=True)
    except ValueError:
        raise ApiError("INVALID_ARGUMENT", f"Invalid value at '{camel}': not base64.") from None


def crc_field(body, camel):
    value = field(body, camel)
    if value is None:
        return None
    try:
        return int(value)
    except (TypeError, ValueError):
        raise ApiError("INVALID_ARGUMENT", f"Invalid value at '{camel}': {value!r}.") from None


def check_crc(data, given, name, data_field):
    if given is None:
        return False
    if given != crc32c(data):
        raise ApiError("INVALID_ARGUMENT",
                       f"The checksum in field {name} did not match the data in field {data_field}.")
    return True


def encode_enums(obj, as_int):
    if isinstance(obj, dict):
        return {k: (ENUM_FIELDS[k][v] if as_int and k in ENUM_FIELDS else encode_enums(v, as_int))
                for k, v in obj.items()}
    return obj


class Handler(BaseHTTPRequestHandler):
    server_version = "fake-cloudkms/1"
    protocol_version = "HTTP/1.1"

    def log_message(self, fmt, *args):  # quiet: one line per request on stderr is enough
        sys.stderr.write("fake-gcp-kms: " + (fmt % args) + "\n")

    # --- plumbing --------------------------------------------------------------------------

    def reply(self, code, obj):
        body = json.dumps(obj).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json; charset=UTF-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def error(self, status, message):
        code = HTTP_CODES.get(status, 500)
        self.reply(code, {"error": {"code": code, "message": message, "status": status}})

    def body(self):
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        if not raw:
            return {}
        try:
            obj = json.loads(raw)
        except ValueError:
            raise ApiError("INVALID_ARGUMENT", "Invalid JSON payload received.") from None
        if not isinstance(obj, dict):
            raise ApiError("INVALID_ARGUMENT", "Invalid JSON payload received.")
        return obj

    def do_GET(self):
        self.dispatch("GET")

    def do_POST(self):
        self.dispatch("POST")

    def do_PATCH(self):
        self.dispatch("PATCH")

    def dispatch(self, verb):
        url = urlsplit(self.path)
        query = parse_qs(url.query)
        path = unquote(url.path)
        try:
            if path.startswith("/__control/"):
                self.reply(200, self.server.control(verb, path[len("/__control/"):], self.body()))
                return
            if not path.startswith("/v1/"):
                raise ApiError("NOT_FOUND", f"The requested URL {path} was not found on this server.")
            auth.check(self.headers.get("Authorization"), self.server.trusted, self.server.require_auth)
            as_int = "enum-encoding=int" in ",".join(query.get("$alt", []))
            result = self.server.api(verb, path[len("/v1/"):], query, self.body())
            self.reply(200, encode_enums(result, as_int))
        except ApiError as e:
            self.error(e.status, e.message)
        except (KeyError, TypeError, ValueError) as e:
            # Malformed control or admin bodies: answer instead of dropping the connection.
            self.error("INVALID_ARGUMENT", f"bad request: {e!r}")


class FakeKms(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, addr, trusted, require_auth):
        super().__init__(addr, Handler)
        self.store = Store()
        self.faults = Faults()
        self.trusted = trusted
        self.require_auth = require_auth

    # --- the API ---------------------------------------------------------------------------

    def api(self, verb, path, query, body):
        routes = [
            ("POST", rf"({KEY}|{VERSION}):encrypt", "encrypt", self.encrypt),
            ("POST", rf"({KEY}):decrypt", "decrypt", self.decrypt),
            ("GET", rf"({KEY})", "get", lambda n, q, b: self.store.key(n).resource()),
            ("GET", rf"({VERSION})", "get", lambda n, q, b: self.store.version(n)[1].resource()),
            ("POST", rf"({LOCATION})/keyRings", "admin", self.create_key_ring),
            ("POST", rf"({RING})/cryptoKeys", "admin", self.create_crypto_key),
            ("POST", rf"({KEY}):updatePrimaryVersion", "admin",
             lambda n, q, b: self.store.update_primary(n, field(b, "cryptoKeyVersionId")).resource()),
            ("POST", rf"({KEY})/cryptoKeyVersions", "admin",
             lambda n, q, b: self.store.key(n).add_version().resource()),
            ("PATCH", rf"({VERSION})", "admin", self.patch_version),
            ("POST", rf"({VERSION}):destroy", "admin", lambda n, q, b: self.store.destroy(n).resource()),
            ("POST", rf"({VERSION}):restore", "admin", lambda n, q, b: self.store.restore(n).resource()),
        ]
        for route_verb, pattern, method, handler in routes:
            m = re.fullmatch(pattern, path)
            if m and route_verb == verb:
                return self.call(method, path, handler, m.group(1), query, body)
        raise ApiError("NOT_FOUND", f"The requested URL /v1/{path} was not found on this server.")

    def call(self, method, path, handler, name, query, body):
        self.faults.record({"method": method, "path": path, "time": time.time(),
                            "fields": sorted(k for k in body if "rc32c" in k or k == "additionalAuthenticatedData")})
        delay = self.faults.take("delay", method, path)
        if delay:
            time.sleep(delay["ms"] / 1000)
        fail = self.faults.take("fail", method, path)
        if fail:
            raise ApiError(fail["code"], fail.get("message") or f"injected {fail['code']}")
        with self.store.lock:
            result = handler(name, query, body)
        corrupt = self.faults.take("corrupt", method, path)
        if corrupt:
            result = falsify(result, corrupt["field"])
        return result

    def encrypt(self, name, _query, body):
        plaintext, aad = b64(body, "plaintext"), b64(body, "additionalAuthenticatedData")
        if len(plaintext) > MAX_DATA or len(aad) > MAX_DATA:
            raise ApiError("INVALID_ARGUMENT", "The plaintext and additional_authenticated_data must each be at most 65536 bytes.")
        pt_ok = check_crc(plaintext, crc_field(body, "plaintextCrc32c"), "plaintext_crc32c", "plaintext")
        aad_ok = check_crc(aad, crc_field(body, "additionalAuthenticatedDataCrc32c"),
                           "additional_authenticated_data_crc32c", "additional_authenticated_data")
        version, ciphertext = self.store.encrypt(name, plaintext, aad)
        out = {"name": version.name, "ciphertext": base64.b64encode(ciphertext).decode(),
               "ciphertextCrc32c": str(crc32c(ciphertext)), "protectionLevel": "SOFTWARE"}
        if pt_ok:
            out["verifiedPlaintextCrc32c"] = True
        if aad_ok:
            out["verifiedAdditionalAuthenticatedDataCrc32c"] = True
        return out

    def decrypt(self, name, _query, body):
        ciphertext, aad = b64(body, "ciphertext"), b64(body, "additionalAuthenticatedData")
        check_crc(ciphertext, crc_field(body, "ciphertextCrc32c"), "ciphertext_crc32c", "ciphertext")
        check_crc(aad, crc_field(body, "additionalAuthenticatedDataCrc32c"),
                  "additional_authenticated_data_crc32c", "additional_authenticated_data")
        _version, plaintext, used_primary = self.store.decrypt(name, ciphertext, aad)
        out = {"plaintext": base64.b64encode(plaintext).decode(),
               "plaintextCrc32c": str(crc32c(plaintext)), "protectionLevel": "SOFTWARE"}
        if used_primary:
            out["usedPrimary"] = True
        return out

    def create_key_ring(self, parent, query, _body):
        ring_id = (query.get("keyRingId") or [""])[0]
        if not re.fullmatch(r"[a-zA-Z0-9_-]{1,63}", ring_id):
            raise ApiError("INVALID_ARGUMENT", "keyRingId must match [a-zA-Z0-9_-]{1,63}.")
        return self.store.create_key_ring(parent, ring_id)

    def create_crypto_key(self, parent, query, body):
        key_id = (query.get("cryptoKeyId") or [""])[0]
        if not re.fullmatch(r"[a-zA-Z0-9_-]{1,63}", key_id):
            raise ApiError("INVALID_ARGUMENT", "cryptoKeyId must match [a-zA-Z0-9_-]{1,63}.")
        purpose = enum_name(PURPOSES, field(body, "purpose") or 0, "crypto_key.purpose")
        if purpose not in ("ENCRYPT_DECRYPT", "ASYMMETRIC_SIGN"):
            raise ApiError("INVALID_ARGUMENT", f"The fake supports purposes ENCRYPT_DECRYPT and ASYMMETRIC_SIGN, not {purpose}.")
        skip = (query.get("skipInitialVersionCreation") or ["false"])[0] == "true"
        duration = field(body, "destroyScheduledDuration")
        seconds = (DEFAULT_DESTROY_SCHEDULED_SECONDS if duration is None
                   else parse_duration(duration, "crypto_key.destroy_scheduled_duration"))
        return self.store.create_crypto_key(parent, key_id, purpose, skip, seconds).resource()

    def patch_version(self, name, query, body):
        mask = (query.get("updateMask") or [""])[0]
        if mask != "state":
            raise ApiError("INVALID_ARGUMENT", "The fake supports updateMask=state only.")
        return self.store.set_state(name, enum_name(STATES, field(body, "state"), "state")).resource()

    # --- test control ----------------------------------------------------------------------

    def control(self, verb, action, body):
        if verb == "GET" and action == "health":
            return {"ok": True}
        if verb == "GET" and action == "requests":
            with self.faults.lock:
                return {"requests": list(self.faults.requests)}
        if verb != "POST":
            raise ApiError("NOT_FOUND", f"no control action {verb} {action}")
        method, count = body.get("method", "any"), int(body.get("count", 1))
        with self.store.lock:
            if action == "rotate":
                return self.store.rotate(body["key"]).resource()
            if action == "destroy-now":
                return self.store.destroy(body["version"], immediately=True).resource()
        if action == "fail-next":
            if body.get("code") not in HTTP_CODES:
                raise ApiError("INVALID_ARGUMENT", f"unknown code {body.get('code')!r}")
            fault = {"kind": "fail", "code": body["code"], "message": body.get("message")}
        elif action == "corrupt-next":
            fault = {"kind": "corrupt", "field": body["field"]}
        elif action == "delay-next":
            fault = {"kind": "delay", "ms": int(body["ms"])}
        elif action == "reset":
            with self.faults.lock:
                self.faults.pending.clear()
            return {"ok": True}
        else:
            raise ApiError("NOT_FOUND", f"no control action {action}")
        fault.update(method=method, count=count, key=body.get("key"))
        with self.faults.lock:
            self.faults.pending.append(fault)
        return {"ok": True}


def falsify(result, name):
    """Makes one response field wrong the way a corrupting network path would."""
    out = dict(result)
    if name.endswith("Crc32c") and not name.startswith("verified"):
        out[name] = str((int(out.get(name, "0")) + 1) % 2**32)
    elif name.startswith("verified"):
        out.pop(name, None)
    elif name == "ciphertext":
        raw = bytearray(base64.b64decode(out["ciphertext"]))
        raw[-1] ^= 1
        out["ciphertext"] = base64.b64encode(bytes(raw)).decode()
    elif name == "name":
        out["name"] = "projects/other/locations/global/keyRings/r/cryptoKeys/k/cryptoKeyVersions/1"
    else:
        raise ApiError("INVALID_ARGUMENT", f"cannot corrupt field {name!r}")
    return out


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8281)
    p.add_argument("--seed-key", action="append", default=[], help="CryptoKey name to create at start")
    p.add_argument("--trust-sa-file", action="append", default=[], help="service account JSON key whose JWTs are accepted")
    p.add_argument("--require-auth", action="store_true")
    args = p.parse_args()
    if args.host not in ("127.0.0.1", "localhost", "::1"):
        p.error("the fake listens on loopback only")
    server = FakeKms((args.host, args.port), auth.load_trusted(args.trust_sa_file), args.require_auth)
    for name in args.seed_key:
        if not re.fullmatch(KEY, name):
            p.error(f"not a CryptoKey name: {name}")
        server.store.ensure_key(name)
    sys.stderr.write(f"fake-gcp-kms: listening on http://{args.host}:{args.port}\n")
    server.serve_forever()


if __name__ == "__main__":
    main()
