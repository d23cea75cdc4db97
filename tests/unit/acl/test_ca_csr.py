"""CSRs: the dataplane's request for its own identity, and the server's check of it.

The user's case is a P-256 key and one URI SAN for the identity the token allows. The
attacker's: another service's identity, a second URI or a DNS name riding along, a path trick
in the URI, a broken signature, a weak or unexpected key, SHA-224, a request for a CA, two PEM
blocks, and garbage. Each is a ``CsrError`` saying what is wrong.
"""

from __future__ import annotations

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from loom.ca.csr import CsrError, build_csr, check_csr, key_pem, new_key
from loom.ca.leafder import _tlv
from loom.ca.spiffe import SpiffeError, SpiffeId

TD = "11111111-2222-3333-4444-555555555555.consul"
WEB = SpiffeId.of(TD, "default", "dc1", "web")
DB = SpiffeId.of(TD, "default", "dc1", "db")
KEY = new_key()


def raw_csr(
    key: object,
    sans: list[x509.GeneralName],
    *,
    algorithm: object = hashes.SHA256(),
    ca: bool = False,
) -> str:
    builder = x509.CertificateSigningRequestBuilder().subject_name(x509.Name([]))
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    if ca:
        builder = builder.add_extension(
            x509.BasicConstraints(ca=True, path_length=None), critical=True
        )
    csr = builder.sign(key, algorithm)  # type: ignore[arg-type]
    return csr.public_bytes(serialization.Encoding.PEM).decode()


def uri(text: str) -> x509.GeneralName:
    return x509.UniformResourceIdentifier(text)


def test_the_dataplanes_csr_passes_the_servers_check_and_carries_its_key() -> None:
    checked = check_csr(build_csr(WEB, KEY), WEB)
    assert checked.identity == WEB
    assert checked.public_key().public_numbers() == KEY.public_key().public_numbers()
    assert "PRIVATE KEY" in key_pem(KEY)


def test_rsa_keys_of_consuls_sizes_are_accepted() -> None:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    assert check_csr(build_csr(WEB, key), WEB).identity == WEB


def test_a_csr_for_another_services_identity_is_refused() -> None:
    with pytest.raises(CsrError, match=r"the caller may only have spiffe://.*/svc/db"):
        check_csr(build_csr(WEB, KEY), DB)


def test_building_a_csr_for_an_unchecked_identity_is_refused() -> None:
    with pytest.raises(SpiffeError):
        build_csr(SpiffeId(TD, "a/b", "dc1", "web"), KEY)


@pytest.mark.parametrize(
    ("sans", "message"),
    [
        ([uri(WEB.uri), uri(DB.uri)], "exactly one URI SAN"),
        ([uri(WEB.uri), x509.DNSName("db.service.consul")], "exactly one URI SAN"),
        ([x509.DNSName("web")], "exactly one URI SAN"),
        ([], "no subject alternative name"),
        ([uri(f"spiffe://{TD}/ns/default/dc/dc1/svc/web/../db")], "SPIFFE ID"),
        ([uri(f"spiffe://{TD}/ns/default/a/dc/dc1/svc/web")], "SPIFFE ID"),
        ([uri(f"spiffe://{TD}/ns/default/dc/dc1/svc/web%2Fx")], "percent-encoding"),
        ([uri("spiffe://evil.consul/ns/default/dc/dc1/svc/web")], "the caller may only have"),
    ],
)
def test_a_csr_whose_names_are_not_exactly_the_identity_is_refused(
    sans: list[x509.GeneralName], message: str
) -> None:
    with pytest.raises(CsrError, match=message):
        check_csr(raw_csr(KEY, sans), WEB)


def test_a_csr_with_a_broken_signature_is_refused() -> None:
    der = bytearray(
        x509.load_pem_x509_csr(build_csr(WEB, KEY).encode()).public_bytes(
            serialization.Encoding.DER
        )
    )
    der[-1] ^= 0x01
    pem = x509.load_der_x509_csr(bytes(der)).public_bytes(serialization.Encoding.PEM).decode()
    with pytest.raises(CsrError, match="signature is not valid"):
        check_csr(pem, WEB)


def _resigned(pem: str, key: ec.EllipticCurvePrivateKey, algorithm_der: bytes) -> str:
    """``pem``'s request info (its key included) signed by ``key``, labelled ``algorithm_der``."""
    csr = x509.load_pem_x509_csr(pem.encode())
    signature = key.sign(csr.tbs_certrequest_bytes, ec.ECDSA(hashes.SHA256()))
    body = csr.tbs_certrequest_bytes + algorithm_der + _tlv(0x03, b"\x00" + signature)
    return x509.load_der_x509_csr(_tlv(0x30, body)).public_bytes(
        serialization.Encoding.PEM
    ).decode()


ECDSA_SHA256 = bytes.fromhex("300a06082a8648ce3d040302")
RSA_SHA256 = bytes.fromhex("300d06092a864886f70d01010b0500")


def test_a_csr_signed_by_another_key_than_the_one_it_carries_is_refused() -> None:
    pem = _resigned(build_csr(WEB, KEY), new_key(), ECDSA_SHA256)
    with pytest.raises(CsrError, match="signature is not valid"):
        check_csr(pem, WEB)


def test_an_ecdsa_signature_labelled_as_rsa_is_refused() -> None:
    pem = _resigned(build_csr(WEB, KEY), KEY, RSA_SHA256)
    with pytest.raises(CsrError, match="signature is not valid"):
        check_csr(pem, WEB)


def test_a_csr_resigned_by_its_own_key_is_accepted() -> None:
    """The two cases above fail for the reason they name, not for how they were rebuilt."""
    assert check_csr(_resigned(build_csr(WEB, KEY), KEY, ECDSA_SHA256), WEB).identity == WEB


@pytest.mark.parametrize(
    ("key", "algorithm", "message"),
    [
        (
            rsa.generate_private_key(public_exponent=65537, key_size=1024),
            hashes.SHA256(),
            "1024 bits",
        ),
        (ec.generate_private_key(ec.SECP521R1()), hashes.SHA256(), "secp521r1"),
        (ed25519.Ed25519PrivateKey.generate(), None, "SHA-256 or stronger"),
        (ec.generate_private_key(ec.SECP256R1()), hashes.SHA224(), "SHA-256 or stronger"),
    ],
)
def test_a_weak_or_unexpected_key_or_hash_is_refused(
    key: object, algorithm: object, message: str
) -> None:
    with pytest.raises(CsrError, match=message):
        check_csr(raw_csr(key, [uri(WEB.uri)], algorithm=algorithm), WEB)


def test_a_csr_asking_for_a_ca_certificate_is_refused() -> None:
    with pytest.raises(CsrError, match="CA certificate"):
        check_csr(raw_csr(KEY, [uri(WEB.uri)], ca=True), WEB)


@pytest.mark.parametrize(
    "pem",
    [
        "",
        "garbage",
        build_csr(WEB, KEY) * 2,
        build_csr(WEB, KEY).replace("A", "B", 5),
        "-----BEGIN CERTIFICATE REQUEST-----\n-----END CERTIFICATE REQUEST-----\n",
        build_csr(WEB, KEY) + "-----BEGIN PRIVATE KEY-----\n",
    ],
)
def test_malformed_pem_is_refused(pem: str) -> None:
    with pytest.raises(CsrError):
        check_csr(pem, WEB)
