"""A ``jwt`` method whose keys are fetched over HTTPS: ``JWKSURL`` + ``JWKSCACert`` and
``OIDCDiscoveryURL`` + ``OIDCDiscoveryCACert``, against a real HTTPS JWKS server on loopback
that the test runs (a thread, its certificate from a scratch CA), and a real `loom server`.

The user logs in with a token signed by the served key (fetched once, then cached), and
keeps logging in after the key is rotated at the source. The attacker brings a token signed
by another key (and floods them, which must not make the server hammer the provider), a
token of another issuer under OIDC discovery, a JWKS server the configured CA does not vouch
for, a discovery document naming another issuer, an oversized JWKS, and configs that point
at files or mix key sources: each is refused and no token is written.
"""

from __future__ import annotations

import http.server
import json
import ssl
import threading
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from loom.acl.jwt import JwtSigner
from tests.api.test_acl_login import AUDIENCE, _claims, _jwks, _signer
from tests.support.mesh import wait_for
from tests.support.pki import ScratchCA
from tests.support.server import ServerProcess, acl_server

ROOT = str(uuid.uuid4())


class KeyServer:
    """An HTTPS server for a JWKS and an OIDC discovery document; counts what it served."""

    def __init__(self, tmp: Path) -> None:
        self.ca = ScratchCA(tmp, "JWKS CA")
        issued = self.ca.issue("jwks-server")
        self.signer = _signer()
        self.jwks = _jwks(self.signer)
        self.hits: Counter[str] = Counter()
        self.issuer_override: str | None = None
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                outer.hits[self.path] += 1
                if self.path == "/jwks.json":
                    body = outer.jwks.encode()
                elif self.path == "/big.json":
                    body = b" " * (2 * 1024 * 1024)
                elif self.path == "/.well-known/openid-configuration":
                    body = json.dumps({"issuer": outer.issuer_override or outer.base,
                                       "jwks_uri": f"{outer.base}/jwks.json"}).encode()  # fmt: skip
                else:
                    self.send_error(404)
                    return
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(issued.cert, issued.key)
        self.httpd.socket = context.wrap_socket(self.httpd.socket, server_side=True)
        self.base = f"https://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def rotate(self) -> JwtSigner:
        old, self.signer = self.signer, _signer()
        self.jwks = _jwks(self.signer)
        return old

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join()


@pytest.fixture
def keys(tmp_path: Path) -> Iterator[KeyServer]:
    ks = KeyServer(tmp_path)
    try:
        yield ks
    finally:
        ks.close()


@pytest.fixture(scope="module")
def server() -> Iterator[ServerProcess]:
    with acl_server(ROOT, "--acl-login-rate", "0") as s:
        yield s


def _call(server: ServerProcess, method: str, path: str, body: Any = None,
          token: str = ROOT) -> tuple[int, Any]:  # fmt: skip
    status, answer, _ = server.request(method, path, body, {"X-Consul-Token": token} if token else {})
    return status, answer


def _method(server: ServerProcess, name: str, config: dict[str, Any]) -> tuple[int, Any]:
    body = {"Name": name, "Type": "jwt",
            "Config": {"BoundAudiences": [AUDIENCE], "ClaimMappings": {"svc": "name"}, **config}}
    status, answer = _call(server, "PUT", "/v1/acl/auth-method", body)
    if status == 200:
        rule = {"AuthMethod": name, "BindType": "service", "BindName": "${value.name}"}
        assert _call(server, "PUT", "/v1/acl/binding-rule", rule)[0] == 200
    return status, answer


def _login(server: ServerProcess, method: str, jwt: str) -> tuple[int, Any]:
    return _call(server, "POST", "/v1/acl/login", {"AuthMethod": method, "BearerToken": jwt}, "")


def _tokens(server: ServerProcess) -> int:
    return len(_call(server, "GET", "/v1/acl/tokens")[1])


def test_a_jwks_url_method_logs_in_with_the_served_key_and_refuses_any_other(
    server: ServerProcess, keys: KeyServer
) -> None:
    name = f"jwks-{uuid.uuid4().hex[:8]}"
    status, answer = _method(server, name, {"JWKSURL": f"{keys.base}/jwks.json",
                                            "JWKSCACert": keys.ca.cert_pem})  # fmt: skip
    assert status == 200, answer
    status, token = _login(server, name, keys.signer.sign(_claims("web")))
    assert status == 200, token
    assert token["ServiceIdentities"] == [{"ServiceName": "web"}]
    assert _login(server, name, keys.signer.sign(_claims("api")))[0] == 200
    assert keys.hits["/jwks.json"] == 1  # cached: one fetch for both logins
    status, answer = _login(server, name, _signer().sign(_claims("web")))
    assert status == 403 and "no known key" in answer


def test_keys_rotated_at_the_source_are_picked_up_and_forgeries_do_not_flood_it(
    server: ServerProcess, keys: KeyServer
) -> None:
    name = f"rot-{uuid.uuid4().hex[:8]}"
    assert _method(server, name, {"JWKSURL": f"{keys.base}/jwks.json",
                                  "JWKSCACert": keys.ca.cert_pem})[0] == 200  # fmt: skip
    assert _login(server, name, keys.signer.sign(_claims("web")))[0] == 200
    old = keys.rotate()
    fresh = keys.signer.sign(_claims("web"))
    wait_for(lambda: _login(server, name, fresh)[0] == 200 or None, timeout=20,
             what="a login with the rotated key")  # fmt: skip
    status, answer = _login(server, name, old.sign(_claims("web")))
    assert status == 403 and "no known key" in answer
    before = keys.hits["/jwks.json"]
    forged = _signer()
    for _ in range(20):
        assert _login(server, name, forged.sign(_claims("web")))[0] == 403
    assert keys.hits["/jwks.json"] - before <= 2  # at most one refetch per 2 s


def test_oidc_discovery_finds_the_keys_and_only_the_provider_s_tokens_log_in(
    server: ServerProcess, keys: KeyServer
) -> None:
    name = f"oidc-{uuid.uuid4().hex[:8]}"
    status, answer = _method(server, name, {"OIDCDiscoveryURL": keys.base,
                                            "OIDCDiscoveryCACert": keys.ca.cert_pem})  # fmt: skip
    assert status == 200, answer
    claims = {**_claims("web"), "iss": keys.base}
    status, token = _login(server, name, keys.signer.sign(claims))
    assert status == 200, token
    assert keys.hits["/.well-known/openid-configuration"] == 1
    status, answer = _login(server, name, keys.signer.sign({**claims, "iss": "https://evil"}))
    assert status == 403 and "different provider" in answer


def test_a_discovery_document_naming_another_issuer_is_refused(
    server: ServerProcess, keys: KeyServer
) -> None:
    keys.issuer_override = "https://accounts.example"
    name = f"oidcbad-{uuid.uuid4().hex[:8]}"
    assert _method(server, name, {"OIDCDiscoveryURL": keys.base,
                                  "OIDCDiscoveryCACert": keys.ca.cert_pem})[0] == 200  # fmt: skip
    before = _tokens(server)
    status, answer = _login(server, name, keys.signer.sign({**_claims("web"), "iss": keys.base}))
    assert status == 500 and "issuer did not match" in answer
    assert _tokens(server) == before


@pytest.mark.parametrize("trust", ["another CA", "the system's"])
def test_a_jwks_server_the_configured_ca_does_not_vouch_for_is_a_500_and_writes_nothing(
    server: ServerProcess, keys: KeyServer, tmp_path: Path, trust: str
) -> None:
    name = f"untrusted-{uuid.uuid4().hex[:8]}"
    config: dict[str, Any] = {"JWKSURL": f"{keys.base}/jwks.json"}
    if trust == "another CA":
        config["JWKSCACert"] = ScratchCA(tmp_path, "Other CA").cert_pem
    assert _method(server, name, config)[0] == 200
    before = _tokens(server)
    status, answer = _login(server, name, keys.signer.sign(_claims("web")))
    assert status == 500 and keys.base in answer and "certificate" in answer.lower(), answer
    assert _tokens(server) == before
    assert keys.hits["/jwks.json"] == 0


def test_an_oversized_jwks_is_refused(server: ServerProcess, keys: KeyServer) -> None:
    name = f"big-{uuid.uuid4().hex[:8]}"
    assert _method(server, name, {"JWKSURL": f"{keys.base}/big.json",
                                  "JWKSCACert": keys.ca.cert_pem})[0] == 200  # fmt: skip
    status, answer = _login(server, name, keys.signer.sign(_claims("web")))
    assert status == 500 and "larger than" in answer


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"JWKSURL": "file:///etc/passwd"}, "is not an http(s) URL"),
        ({"JWKSURL": "https://user:pw@127.0.0.1/jwks"}, "no credentials"),
        ({"JWKSCACert": "x"}, "'JWKSCACert' should not be set unless 'JWKSURL' is set"),
        ({"OIDCDiscoveryCACert": "x"}, "should not be set unless 'OIDCDiscoveryURL' is set"),
        ({"JWKSURL": "https://a/j", "OIDCDiscoveryURL": "https://a"}, "exactly one of"),
        ({"JWKSURL": "https://a/j", "JWKSCACert": "not a pem"}, "not PEM certificates"),
    ],
)
def test_hostile_remote_key_configs_are_refused_when_written(
    server: ServerProcess, config: dict[str, Any], message: str
) -> None:
    status, answer = _method(server, f"bad-{uuid.uuid4().hex[:8]}", config)
    assert status == 400 and message in answer, answer


def test_a_remote_source_beside_static_keys_is_refused(server: ServerProcess) -> None:
    config = {"JWKSURL": "https://a/j", "JWTValidationPubKeys": [_signer().public_pem()]}
    status, answer = _method(server, f"mixed-{uuid.uuid4().hex[:8]}", config)
    assert status == 400 and "exactly one of" in answer, answer
