"""A stand-in for the Kubernetes API server's TokenReview endpoint, over real HTTPS.

No kube-apiserver runs in CI, so the ``kubernetes`` auth method is tested against this: a
threaded HTTPS server on loopback with its own CA (the method's ``CACert``), answering
``POST /apis/authentication.k8s.io/v1/tokenreviews`` with answers shaped as a v1.24
kube-apiserver's (``201``, the review echoed with a ``status``), chosen by the token reviewed,
and ``GET /api/v1/namespaces/{ns}/serviceaccounts/{name}`` (every account exists, with the
annotations a test gives it).
It records what it was asked (the ``Authorization`` header and the body) so tests can check
Loom presented its reviewer credential and the pod's token. Tests that can reach a real API
server use ``KUBEBUILDER_ASSETS`` instead.
"""

from __future__ import annotations

import datetime as dt
import json
import ssl
import tempfile
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from ipaddress import IPv4Address
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

REVIEW_PATH = "/apis/authentication.k8s.io/v1/tokenreviews"


def make_ca_and_cert() -> tuple[str, bytes, bytes]:
    """A CA PEM, and a serving certificate and key for 127.0.0.1 signed by it."""
    now = dt.datetime.now(dt.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "stand-in kube CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "kube-apiserver")]))
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(IPv4Address("127.0.0.1"))]), False
        )
        .sign(ca_key, hashes.SHA256())
    )
    pem = serialization.Encoding.PEM
    key_pem = key.private_bytes(
        pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return ca.public_bytes(pem).decode(), cert.public_bytes(pem), key_pem


def authenticated(namespace: str, name: str, uid: str = "") -> dict[str, Any]:
    """The ``status`` of a review of a service account's token, as the API server writes it."""
    return {
        "authenticated": True,
        "user": {
            "username": f"system:serviceaccount:{namespace}:{name}",
            "uid": uid or f"uid-{namespace}-{name}",
            "groups": [
                "system:serviceaccounts",
                f"system:serviceaccounts:{namespace}",
                "system:authenticated",
            ],
        },
        "audiences": ["https://kubernetes.default.svc.cluster.local"],
    }


UNAUTHENTICATED = {
    "user": {},
    "error": "[invalid bearer token, square/go-jose: error in cryptographic primitive]",
}


class KubeStandIn:
    def __init__(self, reviewer_jwt: str) -> None:
        self.reviewer_jwt = reviewer_jwt
        self.answers: dict[str, dict[str, Any]] = {}
        """Reviewed token -> ``status``; any other token is ``UNAUTHENTICATED``."""
        self.seen: list[tuple[str, Any]] = []
        """(Authorization header, parsed body) of every review asked."""
        self.annotations: dict[tuple[str, str], dict[str, str]] = {}
        """(namespace, name) -> a ServiceAccount's annotations (every account exists)."""
        self.lookups: list[tuple[str, str]] = []
        """(Authorization header, path) of every ServiceAccount read."""
        self.ca_pem, cert, key = make_ca_and_cert()
        self._dir = tempfile.TemporaryDirectory(prefix="kube-standin-")
        cert_file, key_file = Path(self._dir.name, "tls.crt"), Path(self._dir.name, "tls.key")
        cert_file.write_bytes(cert)
        key_file.write_bytes(key)
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(cert_file, key_file)
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.httpd.socket = context.wrap_socket(self.httpd.socket, server_side=True)
        self.host = f"https://127.0.0.1:{self.httpd.server_address[1]}"
        self._thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self._thread.start()

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                auth = self.headers.get("Authorization", "")
                outer.lookups.append((auth, self.path))
                parts = self.path.strip("/").split("/")
                if len(parts) != 6 or parts[:3] != ["api", "v1", "namespaces"]:
                    return self._send(404, {"kind": "Status", "code": 404})
                if parts[4] != "serviceaccounts":
                    return self._send(404, {"kind": "Status", "code": 404})
                if auth != f"Bearer {outer.reviewer_jwt}":
                    return self._send(401, {"kind": "Status", "code": 401})
                namespace, name = parts[3], parts[5]
                account = {
                    "kind": "ServiceAccount",
                    "apiVersion": "v1",
                    "metadata": {
                        "name": name,
                        "namespace": namespace,
                        "annotations": outer.annotations.get((namespace, name), {}),
                    },
                }
                return self._send(200, account)

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = json.loads(self.rfile.read(length) or b"null")
                auth = self.headers.get("Authorization", "")
                outer.seen.append((auth, body))
                if self.path != REVIEW_PATH:
                    return self._send(404, {"kind": "Status", "code": 404})
                if auth != f"Bearer {outer.reviewer_jwt}":
                    return self._send(401, {"kind": "Status", "code": 401})
                token = (body.get("spec") or {}).get("token", "")
                status = outer.answers.get(token, UNAUTHENTICATED)
                review = {
                    "kind": "TokenReview",
                    "apiVersion": "authentication.k8s.io/v1",
                    "metadata": {"creationTimestamp": None},
                    "spec": body.get("spec"),
                    "status": status,
                }
                return self._send(201, review)

            def _send(self, code: int, doc: Any) -> None:
                raw = json.dumps(doc).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(raw)))
                self.end_headers()
                self.wfile.write(raw)

        return Handler

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self._thread.join(5)
        self._dir.cleanup()
