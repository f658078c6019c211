"""A fake Kubernetes TokenReview API over HTTPS, for OpenBao's kubernetes auth method.

Usage: tokenreview.py STATE_DIR PORT
Writes STATE_DIR/ca.pem (self-signed cert for 127.0.0.1, give it to OpenBao as
kubernetes_ca_cert) and STATE_DIR/sa-token (a service-account JWT it accepts), then serves
POST /apis/authentication.k8s.io/v1/tokenreviews on 127.0.0.1:PORT. Only that JWT is
authenticated; any other token gets authenticated=false. Signatures are not checked: OpenBao
delegates verification to TokenReview, which is exactly what this fake stands in for.
"""
import base64
import datetime
import http.server
import ipaddress
import json
import os
import ssl
import sys

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

NAMESPACE = "kube-system"
SERVICE_ACCOUNT = "polykms"
UID = "5b0f2d4e-6f1a-4c7e-9d55-polykms00001"


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def make_jwt() -> str:
    header = {"alg": "RS256", "typ": "JWT"}
    now = int(datetime.datetime.now(datetime.timezone.utc).timestamp())
    claims = {
        "iss": "kubernetes/serviceaccount",
        "sub": f"system:serviceaccount:{NAMESPACE}:{SERVICE_ACCOUNT}",
        "iat": now,
        "kubernetes.io/serviceaccount/namespace": NAMESPACE,
        "kubernetes.io/serviceaccount/service-account.name": SERVICE_ACCOUNT,
        "kubernetes.io/serviceaccount/service-account.uid": UID,
        "kubernetes.io/serviceaccount/secret.name": f"{SERVICE_ACCOUNT}-token",
    }
    body = b64url(json.dumps(header).encode()) + "." + b64url(json.dumps(claims).encode())
    return body + "." + b64url(os.urandom(64))


def make_cert(state: str) -> tuple[str, str]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "fake-kube-apiserver")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = os.path.join(state, "ca.pem"), os.path.join(state, "tls.key")
    with open(cert_path, "wb") as f:
        f.write(cert.public_bytes(serialization.Encoding.PEM))
    with open(os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "wb") as f:
        f.write(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                  serialization.NoEncryption()))
    return cert_path, key_path


class Handler(http.server.BaseHTTPRequestHandler):
    accepted = ""

    def do_POST(self):
        if self.path.rstrip("/") != "/apis/authentication.k8s.io/v1/tokenreviews":
            self.send_error(404)
            return
        length = int(self.headers.get("Content-Length", "0"))
        review = json.loads(self.rfile.read(length) or b"{}")
        token = review.get("spec", {}).get("token", "")
        status = {"authenticated": False}
        if token == Handler.accepted:
            status = {
                "authenticated": True,
                "user": {
                    "username": f"system:serviceaccount:{NAMESPACE}:{SERVICE_ACCOUNT}",
                    "uid": UID,
                    "groups": ["system:serviceaccounts", f"system:serviceaccounts:{NAMESPACE}"],
                },
            }
        answer = json.dumps({"apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview",
                             "status": status}).encode()
        self.send_response(201)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)

    def log_message(self, fmt, *args):  # quiet; tokens must not reach logs anyway
        pass


def main():
    state, port = sys.argv[1], int(sys.argv[2])
    cert, key = make_cert(state)
    Handler.accepted = make_jwt()
    token_path = os.path.join(state, "sa-token")
    with open(os.open(token_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w") as f:
        f.write(Handler.accepted)
    server = http.server.ThreadingHTTPServer(("127.0.0.1", port), Handler)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, key)
    server.socket = ctx.wrap_socket(server.socket, server_side=True)
    with open(os.path.join(state, "tokenreview.ready"), "w") as f:
        f.write("ok\n")
    server.serve_forever()


if __name__ == "__main__":
    main()
