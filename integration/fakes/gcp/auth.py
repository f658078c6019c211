"""Bearer-token checks of the fake: self-signed service-account JWTs.

A service account key's holder may call Google APIs with a JWT it signs itself, no token
endpoint involved (https://google.aip.dev/auth/4111, and
https://developers.google.com/identity/protocols/oauth2/service-account#jwt-auth). The fake
accepts such a JWT when its `kid` is the `private_key_id` of a key given with --trust-sa-file,
its RS256 signature verifies with that key, its `iss` is the key's `client_email`, and it has
not expired. Anything else is 401 UNAUTHENTICATED, as Google answers for a bad token.
"""

import base64
import json
import time

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding

from state import ApiError


def load_trusted(paths):
    """kid -> (client_email, public key) for each service account key file."""
    trusted = {}
    for path in paths:
        with open(path, encoding="utf-8") as f:
            sa = json.load(f)
        private = serialization.load_pem_private_key(sa["private_key"].encode(), password=None)
        trusted[sa["private_key_id"]] = (sa["client_email"], private.public_key())
    return trusted


def _b64url(part):
    return base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))


def check(header, trusted, require_auth):
    unauthenticated = ApiError(
        "UNAUTHENTICATED",
        "Request had invalid authentication credentials. Expected OAuth 2 access token, "
        "login cookie or other valid authentication credential.")
    if not header:
        if require_auth:
            raise unauthenticated
        return
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or token.count(".") != 2:
        raise unauthenticated
    head_b64, claims_b64, sig_b64 = token.split(".")
    try:
        head, claims = json.loads(_b64url(head_b64)), json.loads(_b64url(claims_b64))
        signature = _b64url(sig_b64)
    except ValueError:
        raise unauthenticated from None
    entry = trusted.get(head.get("kid"))
    if head.get("alg") != "RS256" or entry is None:
        raise unauthenticated
    email, public = entry
    try:
        public.verify(signature, f"{head_b64}.{claims_b64}".encode(), padding.PKCS1v15(), hashes.SHA256())
    except InvalidSignature:
        raise unauthenticated from None
    if claims.get("iss") != email or float(claims.get("exp", 0)) < time.time():
        raise unauthenticated
