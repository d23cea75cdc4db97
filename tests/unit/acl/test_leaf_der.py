"""Leaves encoded from a template (``loom.ca.leafder``) are the certificates the
``cryptography`` builder makes for the same fields, byte for byte up to the signature, and
verify with OpenSSL against the root: for P-256, P-384 and RSA keys, validity past 2049
(GeneralizedTime), and a CA ending before the leaf's lifetime would.
"""

from __future__ import annotations

import datetime as dt
import subprocess
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from loom.ca.authority import CLOCK_SKEW, END_ENTITY_KEY_USAGE, LEAF_TTL, Root, Signer, new_root
from loom.ca.csr import build_csr, read_csr
from loom.ca.errors import CAError
from loom.ca.leafder import integer, pem, spki_of_csr
from loom.ca.spiffe import SpiffeId

TD = "11111111-2222-3333-4444-555555555555.consul"
NOW = dt.datetime(2026, 12, 1, 22, 30, 15, 123456, tzinfo=dt.UTC)


def _builder_leaf(root: Root, leaf: x509.Certificate, public: object) -> x509.Certificate:
    """What ``CertificateBuilder`` makes with the same serial, times, names and key."""
    ca = x509.load_pem_x509_certificate(root.cert_pem.encode())
    key = serialization.load_pem_private_key(root.key_pem.encode(), password=None)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    uri = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    cn = leaf.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value
    return (
        x509.CertificateBuilder()
        .issuer_name(ca.subject)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(END_ENTITY_KEY_USAGE, critical=True)
        .add_extension(
            x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
            ),
            critical=False,
        )
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, str(cn))]))
        .public_key(public)  # type: ignore[arg-type]
        .serial_number(leaf.serial_number)
        .not_valid_before(leaf.not_valid_before_utc)
        .not_valid_after(leaf.not_valid_after_utc)
        .add_extension(uri, critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(key.public_key()), critical=False
        )
        .sign(key, hashes.SHA256())
    )


KEYS = {
    "p256": lambda: ec.generate_private_key(ec.SECP256R1()),
    "p384": lambda: ec.generate_private_key(ec.SECP384R1()),
    "rsa2048": lambda: rsa.generate_private_key(65537, 2048),
}


@pytest.mark.parametrize("kind", sorted(KEYS))
def test_a_template_leaf_is_the_builder_s_certificate_byte_for_byte(kind: str) -> None:
    root = new_root(TD, NOW - dt.timedelta(days=1))
    key = KEYS[kind]()
    identity = SpiffeId.of(TD, "default", "dc1", "web-frontend")
    checked = read_csr(build_csr(identity, key))
    leaf = Signer(root).sign(identity, checked.spki, NOW)
    cert = x509.load_pem_x509_certificate(leaf.cert_pem.encode())
    reference = _builder_leaf(root, cert, key.public_key())
    assert cert.tbs_certificate_bytes == reference.tbs_certificate_bytes
    assert cert.signature_algorithm_oid == reference.signature_algorithm_oid
    assert cert.public_key() == key.public_key()
    assert leaf.not_before == NOW.replace(microsecond=0) - CLOCK_SKEW == cert.not_valid_before_utc
    assert leaf.not_after == NOW.replace(microsecond=0) + LEAF_TTL == cert.not_valid_after_utc
    pairs = leaf.serial.split(":")
    assert all(len(p) == 2 for p in pairs) and pairs[0] != "00"
    assert int("".join(pairs), 16) == cert.serial_number


def test_a_template_leaf_signed_with_a_key_object_equals_one_signed_with_its_spki() -> None:
    root = new_root(TD, NOW)
    key = ec.generate_private_key(ec.SECP256R1())
    identity = SpiffeId.of(TD, "default", "dc1", "web")
    by_key = x509.load_pem_x509_certificate(
        Signer(root).sign(identity, key.public_key(), NOW).cert_pem.encode()
    )
    spki = key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    assert spki_of_csr(read_csr(build_csr(identity, key)).csr) == spki
    assert by_key.public_key() == key.public_key()


def test_a_leaf_past_2049_has_generalized_times_as_the_builder_writes_them() -> None:
    later = dt.datetime(2061, 3, 4, 5, 6, 7, tzinfo=dt.UTC)
    root = new_root(TD, later)
    key = ec.generate_private_key(ec.SECP256R1())
    identity = SpiffeId.of(TD, "default", "dc1", "web")
    cert = x509.load_pem_x509_certificate(
        Signer(root).sign(identity, key.public_key(), later).cert_pem.encode()
    )
    assert cert.not_valid_before_utc == later - CLOCK_SKEW
    reference = _builder_leaf(root, cert, key.public_key())
    assert cert.tbs_certificate_bytes == reference.tbs_certificate_bytes


def test_a_leaf_never_outlives_the_ca_that_signed_it() -> None:
    root = new_root(TD, NOW)
    end = root.not_after
    near_end = end - dt.timedelta(hours=1)
    key = ec.generate_private_key(ec.SECP256R1())
    identity = SpiffeId.of(TD, "default", "dc1", "web")
    leaf = Signer(root).sign(identity, key.public_key(), near_end)
    cert = x509.load_pem_x509_certificate(leaf.cert_pem.encode())
    assert leaf.not_after == end == cert.not_valid_after_utc
    assert (
        cert.tbs_certificate_bytes
        == _builder_leaf(root, cert, key.public_key()).tbs_certificate_bytes
    )


def test_openssl_verifies_a_template_leaf_against_the_root_for_tls_client_and_server(
    tmp_path: Path,
) -> None:
    now = dt.datetime.now(dt.UTC)
    root = new_root(TD, now)
    key = ec.generate_private_key(ec.SECP256R1())
    identity = SpiffeId.of(TD, "default", "dc1", "web")
    leaf = Signer(root).sign(identity, read_csr(build_csr(identity, key)).spki, now)
    (tmp_path / "root.pem").write_text(root.cert_pem)
    (tmp_path / "leaf.pem").write_text(leaf.cert_pem)
    for purpose in ("sslserver", "sslclient"):
        done = subprocess.run(
            ["openssl", "verify", "-x509_strict", "-purpose", purpose,
             "-CAfile", str(tmp_path / "root.pem"), str(tmp_path / "leaf.pem")],
            capture_output=True, text=True, check=False,
        )  # fmt: skip
        assert done.returncode == 0 and done.stdout.strip().endswith(": OK"), done


def test_a_common_name_longer_than_x509_allows_is_refused() -> None:
    root = new_root(TD, NOW)
    key = ec.generate_private_key(ec.SECP256R1())
    identity = SpiffeId(TD, "default", "dc1", "x" * 65)
    with pytest.raises(CAError, match="common name"):
        Signer(root).sign(identity, key.public_key(), NOW)


def test_der_integers_and_pem_lines_are_encoded_as_openssl_does() -> None:
    assert integer(0) == b"\x02\x01\x00"
    assert integer(0x7F) == b"\x02\x01\x7f"
    assert integer(0x80) == b"\x02\x02\x00\x80"
    assert integer(0x0100) == b"\x02\x02\x01\x00"
    der = bytes(range(256)) * 3
    text = pem(der)
    body = text.splitlines()[1:-1]
    assert all(len(line) == 64 for line in body[:-1]) and 0 < len(body[-1]) <= 64
    assert text.startswith("-----BEGIN CERTIFICATE-----\n")
    assert text.endswith("-----END CERTIFICATE-----\n")


def _compressed_csr(identity: SpiffeId, key: ec.EllipticCurvePrivateKey) -> str:
    """A CSR whose key is a compressed point (valid, signed by ``key``), which the builder
    never writes: the CA must still put the key in the leaf as the builder encodes it."""
    normal = read_csr(build_csr(identity, key)).csr
    info = normal.tbs_certrequest_bytes
    canonical = spki_of_csr(normal)
    point = key.public_key().public_bytes(
        serialization.Encoding.X962, serialization.PublicFormat.CompressedPoint
    )
    algorithm = canonical[2:23]  # SEQUENCE { id-ecPublicKey, prime256v1 }
    compressed = _der(0x30, algorithm + _der(0x03, b"\x00" + point))
    start = info.index(canonical)
    rest = info[start + len(canonical) :]
    new_info = _der(0x30, info[_header_end(info) : start] + compressed + rest)
    signature = key.sign(new_info, ec.ECDSA(hashes.SHA256()))
    algo = bytes.fromhex("300a06082a8648ce3d040302")
    der = _der(0x30, new_info + algo + _der(0x03, b"\x00" + signature))
    return x509.load_der_x509_csr(der).public_bytes(serialization.Encoding.PEM).decode()


def _der(tag: int, value: bytes) -> bytes:
    n = len(value)
    size = (
        bytes((n,))
        if n < 0x80
        else bytes((0x81, n))
        if n < 0x100
        else bytes((0x82,)) + n.to_bytes(2, "big")
    )
    return bytes((tag,)) + size + value


def _header_end(buf: bytes) -> int:
    return 2 if buf[1] < 0x80 else 2 + (buf[1] & 0x7F)


def test_a_csr_key_as_a_compressed_point_is_in_the_leaf_as_the_builder_encodes_it() -> None:
    root = new_root(TD, NOW)
    key = ec.generate_private_key(ec.SECP256R1())
    identity = SpiffeId.of(TD, "default", "dc1", "web")
    checked = read_csr(_compressed_csr(identity, key))
    assert len(spki_of_csr(checked.csr)) < 91  # the CSR really carries the short form
    leaf = Signer(root).sign(identity, checked.spki, NOW)
    cert = x509.load_pem_x509_certificate(leaf.cert_pem.encode())
    assert cert.public_key() == key.public_key()
    assert (
        cert.tbs_certificate_bytes
        == _builder_leaf(root, cert, key.public_key()).tbs_certificate_bytes
    )
