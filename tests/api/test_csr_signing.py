"""``PUT /v1/loom/connect/ca/sign`` against a real `loom server --acl-default-policy deny`.

The user's dataplane keeps its key and sends a CSR; the attacker sends CSRs for another
service, for another trust domain or datacenter, with two URI SANs, or with SPIFFE path
tricks in the namespace or service. Every refusal is a 403 or a 400 naming the problem, and
the server's log (debug) shows that nothing was signed for it.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization

from loom.ca.csr import build_csr, new_key
from loom.ca.spiffe import SpiffeId
from tests.support.mesh import wait_for
from tests.support.server import ServerProcess, acl_server

ROOT = str(uuid.uuid4())
MGMT = {"X-Consul-Token": ROOT}
SIGN = "/v1/loom/connect/ca/sign"
A_RULES = 'service "a" { policy = "write" }'


class Mesh:
    def __init__(self, server: ServerProcess) -> None:
        self.server = server
        status, _, _ = server.request(
            "PUT", "/v1/acl/policy", {"Name": "a", "Rules": A_RULES}, MGMT
        )
        assert status == 200
        status, token, _ = server.request(
            "PUT", "/v1/acl/token", {"Policies": [{"Name": "a"}]}, MGMT
        )
        assert status == 200
        self.a_secret, self.a_accessor = token["SecretID"], token["AccessorID"]
        self.trust_domain = server.get("/v1/connect/ca/roots")["TrustDomain"]

    def sign(self, csr: str, token: str | None) -> tuple[int, Any]:
        headers = {"X-Consul-Token": token} if token is not None else {}
        status, body, _ = self.server.request("PUT", SIGN, {"CSR": csr}, headers)
        return status, body

    def identity(self, service: str, ns: str = "default", dc: str = "dc1") -> SpiffeId:
        return SpiffeId.of(self.trust_domain, ns, dc, service)

    def signed_for(self, fragment: str) -> bool:
        """Whether the server's log says it signed a CSR whose URI contains ``fragment``."""
        return any(
            "signed a CSR for" in line and fragment in line
            for line in self.server.log_text().splitlines()
        )


@pytest.fixture(scope="module", params=["0", "2"], ids=["in-process", "2 sign workers"])
def mesh(request: pytest.FixtureRequest) -> Iterator[Mesh]:
    """Every test runs against a server that signs in-process and one with signing workers
    (``--ca-sign-workers 2``), once they have started (the server says so in its log)."""
    workers = request.param
    with acl_server(ROOT, "--log-level", "debug", "--ca-sign-workers", workers) as server:
        if workers != "0":
            wait_for(lambda: f"CA signing: {workers} worker" in server.log_text() or None,
                     what="the signing workers to start")  # fmt: skip
        yield Mesh(server)


def forged(pem: str) -> str:
    """The same CSR with one bit of its signature flipped."""
    der = bytearray(x509.load_pem_x509_csr(pem.encode()).public_bytes(serialization.Encoding.DER))
    der[-1] ^= 0x01
    return x509.load_der_x509_csr(bytes(der)).public_bytes(serialization.Encoding.PEM).decode()


def raw_csr(*uris: str, dns: tuple[str, ...] = ()) -> str:
    """A CSR with exactly these SANs, built without Loom's checks (as an attacker would)."""
    names: list[x509.GeneralName] = [x509.UniformResourceIdentifier(u) for u in uris]
    names += [x509.DNSName(d) for d in dns]
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([]))
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .sign(new_key(), hashes.SHA256())
    )
    return csr.public_bytes(serialization.Encoding.PEM).decode()


def test_a_token_for_a_gets_its_csr_signed_with_its_own_key_and_no_private_key(
    mesh: Mesh,
) -> None:
    key = new_key()
    status, cert = mesh.sign(build_csr(mesh.identity("a"), key), mesh.a_secret)
    assert status == 200, cert
    assert "PrivateKeyPEM" not in cert and "PRIVATE KEY" not in str(cert)
    assert cert["Service"] == "a" and cert["ServiceURI"] == mesh.identity("a").uri
    leaf = x509.load_pem_x509_certificate(cert["CertPEM"].encode())
    assert leaf.public_key() == key.public_key()
    san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.UniformResourceIdentifier) == [mesh.identity("a").uri]
    assert mesh.signed_for(mesh.identity("a").uri)


def test_a_csr_leaf_has_the_lifetime_and_extensions_of_a_server_made_leaf(mesh: Mesh) -> None:
    status, cert = mesh.sign(build_csr(mesh.identity("a"), new_key()), mesh.a_secret)
    assert status == 200
    status, made, _ = mesh.server.request(
        "GET", "/v1/agent/connect/ca/leaf/a", None, {"X-Consul-Token": mesh.a_secret}
    )
    assert status == 200 and "PRIVATE KEY" in made["PrivateKeyPEM"]  # Consul-compatible
    ours, theirs = (
        x509.load_pem_x509_certificate(c["CertPEM"].encode()) for c in (cert, made)
    )  # fmt: skip

    def life(c: x509.Certificate) -> dt.timedelta:
        return c.not_valid_after_utc - c.not_valid_before_utc

    assert life(ours) == life(theirs)
    assert [e.value for e in ours.extensions] == [e.value for e in theirs.extensions]
    assert ours.issuer == theirs.issuer and ours.subject == theirs.subject


def test_a_token_for_a_signing_a_csr_for_b_is_refused_and_nothing_is_signed(
    mesh: Mesh,
) -> None:
    status, text = mesh.sign(build_csr(mesh.identity("b"), new_key()), mesh.a_secret)
    denied = (
        f"Permission denied: token with AccessorID '{mesh.a_accessor}' lacks permission "
        "'service:write' on \"b\"\n"
    )
    assert (status, text) == (403, denied)
    assert not mesh.signed_for("/svc/b")


@pytest.mark.parametrize("token", [None, "garbage"])
def test_no_token_or_a_garbage_token_signs_nothing(mesh: Mesh, token: str | None) -> None:
    status, _ = mesh.sign(build_csr(mesh.identity("c"), new_key()), token and str(uuid.uuid4()))
    assert status == 403
    assert not mesh.signed_for("/svc/c")


def test_a_csr_with_two_uri_sans_is_refused(mesh: Mesh) -> None:
    a = mesh.identity("a").uri
    status, text = mesh.sign(raw_csr(a, a.replace("/svc/a", "/svc/b")), mesh.a_secret)
    assert status == 400
    assert "expected exactly one URI SAN and no other SAN, found 2" in text


def test_a_csr_with_a_dns_san_besides_its_uri_is_refused(mesh: Mesh) -> None:
    status, text = mesh.sign(raw_csr(mesh.identity("a").uri, dns=("a.example",)), mesh.a_secret)
    assert status == 400 and "exactly one URI SAN" in text


def test_a_csr_for_another_trust_domain_is_refused(mesh: Mesh) -> None:
    other = SpiffeId.of("evil.example", "default", "dc1", "a")
    status, text = mesh.sign(build_csr(other, new_key()), mesh.a_secret)
    assert status == 400
    assert "trust domain 'evil.example' is not this CA's" in text
    assert not mesh.signed_for("evil.example")


def test_a_csr_for_another_datacenter_is_refused(mesh: Mesh) -> None:
    status, text = mesh.sign(build_csr(mesh.identity("a", dc="dc2"), new_key()), mesh.a_secret)
    assert status == 400 and "datacenter 'dc2' is not this server's" in text
    assert not mesh.signed_for("/dc/dc2/")


@pytest.mark.parametrize(
    ("path", "problem"),
    [
        ("/ns/a/b/dc/dc1/svc/a", "path is not /ns/<namespace>/dc/<datacenter>/svc/<service>"),
        ("/ns/a%2Fb/dc/dc1/svc/a", "percent-encoding is not allowed"),
        ("/ns/default/dc/dc1/svc/../svc/a", "path is not"),
        ("/ns/default/dc/dc1/svc/A", "service 'A' has an invalid name"),
        ("/ns/Default/dc/dc1/svc/a", "namespace 'Default' is not a lowercase DNS label"),
        ("/ns/default/dc/dc1/svc/a?x=1", "a query is not allowed"),
        ("/ns//dc/dc1/svc/a", "namespace is empty"),
    ],
)
def test_spiffe_path_tricks_in_a_csr_are_refused(mesh: Mesh, path: str, problem: str) -> None:
    status, text = mesh.sign(raw_csr(f"spiffe://{mesh.trust_domain}{path}"), mesh.a_secret)
    assert status == 400, text
    assert problem in text


@pytest.mark.parametrize(
    ("body", "problem"),
    [
        ({"CSR": "not a csr"}, "expected exactly one PEM CERTIFICATE REQUEST block"),
        ({}, "CSR"),
        ({"CSR": 7}, "CSR"),
    ],
)
def test_a_body_without_a_readable_csr_is_a_400(
    mesh: Mesh, body: dict[str, Any], problem: str
) -> None:
    status, text, _ = mesh.server.request("PUT", SIGN, body, {"X-Consul-Token": mesh.a_secret})
    assert status == 400 and problem in text, text


def test_a_csr_for_a_with_a_forged_signature_is_refused_and_nothing_is_signed(
    mesh: Mesh,
) -> None:
    """The token may have ``a``; the CSR names ``a`` but its key did not sign it (a copied
    CSR with a key the caller does not hold): no proof of possession, no certificate."""
    status, text = mesh.sign(forged(build_csr(mesh.identity("a"), new_key())), mesh.a_secret)
    assert status == 400 and "signature is not valid" in text, text
