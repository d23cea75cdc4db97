"""The federated CA's pure parts: a secondary's CA request, the primary's strict reading and
signing of it, the secondary's check of the answer, and leaves of the intermediate that verify
against the primary's root by ``cryptography``'s path building."""

from __future__ import annotations

import datetime as dt

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.verification import PolicyBuilder, Store, VerificationError

from loom.ca.authority import Root, Signer, new_root
from loom.ca.csr import CsrError, build_ca_csr, build_csr, key_pem, new_key, read_ca_csr, read_csr
from loom.ca.errors import CAError
from loom.ca.intermediate import (
    check_intermediate,
    due_for_renewal,
    issued_by,
    sign_intermediate,
)
from loom.ca.spiffe import SpiffeId

NOW = dt.datetime.now(dt.UTC)
TD = "11111111-2222-3333-4444-555555555555.consul"


def _csr(
    uris: list[str],
    ca: bool | None = True,
    path_length: int | None = 0,
    key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey | None = None,
    algorithm: hashes.HashAlgorithm | None = None,
) -> str:
    builder = x509.CertificateSigningRequestBuilder().subject_name(x509.Name([]))
    if ca is not None:
        builder = builder.add_extension(
            x509.BasicConstraints(ca=ca, path_length=path_length if ca else None), critical=True
        )
    if uris:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.UniformResourceIdentifier(u) for u in uris]),
            critical=False,
        )
    signed = builder.sign(key or new_key(), algorithm or hashes.SHA256())
    return signed.public_bytes(serialization.Encoding.PEM).decode()


def _intermediate(root: Root) -> Root:
    key = new_key()
    pem = sign_intermediate(root, read_ca_csr(build_ca_csr(TD, key), TD), NOW)
    return check_intermediate(pem, key_pem(key), root.cert_pem, TD, NOW)


def _verify(chain_pem: str, *trusted_pem: str) -> list[x509.Certificate]:
    certs = x509.load_pem_x509_certificates(chain_pem.encode())
    roots = [x509.load_pem_x509_certificate(p.encode()) for p in trusted_pem]
    verifier = PolicyBuilder().store(Store(roots)).time(NOW).build_client_verifier()
    return list(verifier.verify(certs[0], certs[1:]).chain)


def test_a_leaf_of_the_intermediate_verifies_against_the_primary_root_alone() -> None:
    root = new_root(TD, NOW)
    intermediate = _intermediate(root)
    leaf = Signer(intermediate, intermediate.cert_pem).leaf("default", "dc2", "web", NOW)
    chain = _verify(leaf.cert_pem, root.cert_pem)
    assert [c.subject for c in chain[1:]] == [
        x509.load_pem_x509_certificate(intermediate.cert_pem.encode()).subject,
        x509.load_pem_x509_certificate(root.cert_pem.encode()).subject,
    ]
    uri = chain[0].extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert uri.get_values_for_type(x509.UniformResourceIdentifier) == [
        f"spiffe://{TD}/ns/default/dc/dc2/svc/web"
    ]


def test_the_leaf_alone_without_its_intermediate_does_not_verify() -> None:
    root = new_root(TD, NOW)
    intermediate = _intermediate(root)
    leaf = Signer(intermediate, "").leaf("default", "dc2", "web", NOW)
    with pytest.raises(VerificationError):
        _verify(leaf.cert_pem, root.cert_pem)


def test_the_intermediate_may_sign_leaves_only_and_lives_no_longer_than_its_root() -> None:
    root = new_root(TD, NOW)
    cert = x509.load_pem_x509_certificate(_intermediate(root).cert_pem.encode())
    constraints = cert.extensions.get_extension_for_class(x509.BasicConstraints).value
    assert (constraints.ca, constraints.path_length) == (True, 0)
    assert cert.not_valid_after_utc <= root.not_after
    short = sign_intermediate(
        root, read_ca_csr(build_ca_csr(TD, new_key()), TD), NOW, dt.timedelta(hours=2)
    )
    assert x509.load_pem_x509_certificate(short.encode()).not_valid_after_utc <= NOW + dt.timedelta(
        hours=2
    )


def test_a_ca_made_below_the_intermediate_does_not_verify_path_length_zero() -> None:
    root = new_root(TD, NOW)
    intermediate = _intermediate(root)
    with pytest.raises(CAError, match="cannot sign a CA"):  # Loom will not make one
        sign_intermediate(intermediate, read_ca_csr(build_ca_csr(TD, new_key()), TD), NOW)
    # Someone holding the intermediate's key makes a CA below it and signs a leaf with it.
    signer_key = serialization.load_pem_private_key(intermediate.key_pem.encode(), None)
    assert isinstance(signer_key, ec.EllipticCurvePrivateKey)
    rogue_key = new_key()
    issuer = x509.load_pem_x509_certificate(intermediate.cert_pem.encode()).subject
    rogue_cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(x509.oid.NameOID.COMMON_NAME, "rogue")]))
        .issuer_name(issuer)
        .public_key(rogue_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW - dt.timedelta(minutes=1))
        .not_valid_after(NOW + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(True, False, False, False, False, True, True, False, False), True
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(rogue_key.public_key()), False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(signer_key.public_key()), False
        )
        .sign(signer_key, hashes.SHA256())
        .public_bytes(serialization.Encoding.PEM)
        .decode()
    )
    rogue = Root("rogue", rogue_cert, key_pem(rogue_key), TD, NOW, NOW + dt.timedelta(days=1))
    leaf = Signer(rogue, rogue_cert + intermediate.cert_pem).leaf("default", "dc2", "w", NOW)
    with pytest.raises(VerificationError):
        _verify(leaf.cert_pem, root.cert_pem)


@pytest.mark.parametrize(
    ("pem", "message"),
    [
        (lambda: _csr([f"spiffe://{TD}"], ca=None), "not a CA request"),
        (lambda: _csr([f"spiffe://{TD}"], ca=False), "not a CA request"),
        (lambda: _csr([f"spiffe://{TD}"], path_length=1), "path length 1"),
        (lambda: _csr([f"spiffe://{TD}"], path_length=None), "path length no limit"),
        (lambda: _csr(["spiffe://other.consul"]), "trust domain 'other.consul'"),
        (lambda: _csr([f"spiffe://{TD}/ns/default/dc/dc2/svc/web"]), "spiffe://<trust-domain>"),
        (lambda: _csr([f"spiffe://{TD}", "spiffe://other.consul"]), "exactly one URI SAN"),
        (lambda: _csr([]), "no subject alternative name"),
        (lambda: _csr([f"spiffe://{TD.upper()}"]), "spiffe://<trust-domain>"),
        (lambda: _csr([f"spiffe://{TD}"], key=ec.generate_private_key(ec.SECP521R1())), "curve"),
        (
            lambda: _csr([f"spiffe://{TD}"], key=rsa.generate_private_key(65537, 1024)),
            "RSA key of 1024 bits",
        ),
        (lambda: _csr([f"spiffe://{TD}"], algorithm=hashes.SHA224()), "SHA-256 or stronger"),
        (lambda: "not a pem", "exactly one PEM"),
        (lambda: _csr([f"spiffe://{TD}"]) * 2, "exactly one PEM"),
    ],
)
def test_the_primary_refuses_a_ca_request_it_should_not_sign(pem: object, message: str) -> None:
    assert callable(pem)
    with pytest.raises(CsrError, match=message):
        read_ca_csr(pem(), TD)


def test_a_leaf_csr_reader_refuses_a_ca_request_and_a_ca_reader_refuses_a_leaf_request() -> None:
    with pytest.raises(CsrError, match="asks for a CA"):
        read_csr(build_ca_csr(TD, new_key()))
    leaf_request = build_csr(SpiffeId.of(TD, "default", "dc2", "web"), new_key())
    with pytest.raises(CsrError, match="not a CA request"):
        read_ca_csr(leaf_request, TD)


def test_the_secondary_refuses_an_answer_for_another_key_or_from_another_root() -> None:
    root, other = new_root(TD, NOW), new_root(TD, NOW)
    key = new_key()
    pem = sign_intermediate(root, read_ca_csr(build_ca_csr(TD, key), TD), NOW)
    with pytest.raises(CAError, match="does not carry this datacenter's key"):
        check_intermediate(pem, key_pem(new_key()), root.cert_pem, TD, NOW)
    with pytest.raises(CAError, match="not signed by the active root"):
        check_intermediate(pem, key_pem(key), other.cert_pem, TD, NOW)
    with pytest.raises(CAError, match=r"does not name spiffe://x\.consul"):
        check_intermediate(pem, key_pem(key), root.cert_pem, "x.consul", NOW)
    with pytest.raises(CAError, match="expected one intermediate"):
        check_intermediate(pem + root.cert_pem, key_pem(key), root.cert_pem, TD, NOW)
    assert issued_by(pem, root.cert_pem) and not issued_by(pem, other.cert_pem)


def test_a_root_without_room_for_a_ca_below_does_not_sign_an_intermediate() -> None:
    root = new_root(TD, NOW)
    keyless = Root(root.id, root.cert_pem, "", TD, root.not_before, root.not_after)
    with pytest.raises(CAError, match="cannot sign a CA"):
        sign_intermediate(keyless, read_ca_csr(build_ca_csr(TD, new_key()), TD), NOW)


def test_an_intermediate_is_due_for_renewal_at_half_its_life() -> None:
    root = new_root(TD, NOW)
    intermediate = _intermediate(root)
    life = intermediate.not_after - intermediate.not_before
    assert not due_for_renewal(intermediate, intermediate.not_before + life * 0.49)
    assert due_for_renewal(intermediate, intermediate.not_before + life * 0.51)


def _roots_doc(*roots: Root, active: str = "", ids: list[str] | None = None) -> dict[str, object]:
    return {
        "TrustDomain": TD,
        "ActiveRootID": active or roots[0].id,
        "Roots": [
            {"ID": (ids or [r.id for r in roots])[n], "RootCert": r.cert_pem}
            for n, r in enumerate(roots)
        ],
    }


def test_the_primary_roots_are_read_strictly_with_the_active_one_first() -> None:
    from loom.control.fedca import FederatedCaError, PrimaryRoots

    one, two = new_root(TD, NOW), new_root(TD, NOW)
    read = PrimaryRoots.from_json(_roots_doc(one, two, active=two.id))
    assert [r.id for r in read.roots] == [two.id, one.id] and read.cross_pem == ""
    with pytest.raises(FederatedCaError, match="is not its certificate's"):
        PrimaryRoots.from_json(_roots_doc(one, ids=[two.id]))
    with pytest.raises(FederatedCaError, match="is not listed"):
        PrimaryRoots.from_json(_roots_doc(one, active=two.id))
    with pytest.raises(FederatedCaError, match="malformed"):
        PrimaryRoots.from_json({"TrustDomain": TD})
    with pytest.raises(FederatedCaError, match="unusable"):
        PrimaryRoots.from_json({**_roots_doc(one), "TrustDomain": "Not A Domain"})


def test_only_a_cross_signed_certificate_of_the_active_root_is_kept_from_the_primary() -> None:
    from loom.ca.authority import cross_sign
    from loom.control.fedca import PrimaryRoots

    old, new = new_root(TD, NOW), new_root(TD, NOW)
    cross = cross_sign(new, old, NOW)
    doc = _roots_doc(new, old)
    roots = doc["Roots"]
    assert isinstance(roots, list)
    roots[0]["IntermediateCerts"] = [cross, old.cert_pem]  # a stray certificate is dropped
    assert PrimaryRoots.from_json(doc).cross_pem == cross
    stranger = new_root(TD, NOW)
    roots[0]["IntermediateCerts"] = [cross_sign(new, stranger, NOW)]  # not by a listed root
    assert PrimaryRoots.from_json(doc).cross_pem == ""


def test_a_leaf_never_outlives_the_intermediate_that_signed_it() -> None:
    root = new_root(TD, NOW)
    key = new_key()
    short = sign_intermediate(
        root, read_ca_csr(build_ca_csr(TD, key), TD), NOW, dt.timedelta(hours=2)
    )
    intermediate = check_intermediate(short, key_pem(key), root.cert_pem, TD, NOW)
    leaf = Signer(intermediate, short).leaf("default", "dc2", "web", NOW, dt.timedelta(days=3))
    assert leaf.not_after == intermediate.not_after
