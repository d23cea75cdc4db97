"""Leaf certificates encoded from a template and signed with the CA key directly.

Every leaf a CA issues differs from the next only in its serial, validity, common name,
public key and SPIFFE URI: the issuer, the signature algorithm and four of the five
extensions are the same bytes each time. ``cryptography``'s ``CertificateBuilder`` re-checks
and re-encodes all of it per leaf, which costs about twice the ECDSA signature itself; at the
CSR signing rates the server aims for (issue 10: >= 2,000/s on two cores) that is the largest
cost after the CSR's signature check. ``LeafTemplate`` encodes the fixed parts once (from the
CA certificate and ``cryptography``'s own encoding of each fixed extension), writes the few
variable fields in DER per leaf, and signs the ``TBSCertificate`` with the CA key. Its output
is byte for byte what the builder makes for the same fields (``tests/unit/acl/test_leaf_der``
compares the two), so every verifier (OpenSSL, Envoy's BoringSSL, Go) reads the same
certificate as before.

Pure: no I/O, no clock (times are arguments).
"""

from __future__ import annotations

import base64
import datetime as dt

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec

from loom.ca.errors import CAError

_ECDSA_SHA256 = bytes.fromhex("300a06082a8648ce3d040302")
"""AlgorithmIdentifier ecdsa-with-SHA256 (no parameters), as RFC 5758 encodes it."""
_ECDSA = ec.ECDSA(hashes.SHA256())
_VERSION_3 = bytes.fromhex("a003020102")
_OID_CN = bytes.fromhex("0603550403")
_OID_SAN = bytes.fromhex("0603551d11")
_CRITICAL = bytes.fromhex("0101ff")
_MAX_CN = 64  # ub-common-name (RFC 5280); ``x509.NameAttribute`` refuses longer ones too


def _len(n: int) -> bytes:
    if n < 0x80:
        return bytes((n,))
    raw = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes((0x80 | len(raw),)) + raw


def _tlv(tag: int, value: bytes) -> bytes:
    return bytes((tag,)) + _len(len(value)) + value


def _time(when: dt.datetime) -> bytes:
    """RFC 5280's Time: UTCTime through 2049, GeneralizedTime from 2050, in whole seconds
    (formatted by hand: ``strftime`` costs several times as much, twice per leaf)."""
    if when.tzinfo is not dt.UTC:
        when = when.astimezone(dt.UTC)
    y = when.year
    rest = f"{when.month:02d}{when.day:02d}{when.hour:02d}{when.minute:02d}{when.second:02d}Z"
    if 1950 <= y < 2050:
        return b"\x17\x0d" + f"{y % 100:02d}{rest}".encode()
    return b"\x18\x0f" + f"{y:04d}{rest}".encode()


def _extension(oid_der: bytes, critical: bool, value: bytes) -> bytes:
    return _tlv(0x30, oid_der + (_CRITICAL if critical else b"") + _tlv(0x04, value))


def _oid(oid: x509.ObjectIdentifier) -> bytes:
    """The DER of an OID (only for the fixed extensions, once per template)."""
    arcs = [int(a) for a in oid.dotted_string.split(".")]
    body = bytearray((40 * arcs[0] + arcs[1],))
    for arc in arcs[2:]:
        chunk = [arc & 0x7F]
        arc >>= 7
        while arc:
            chunk.append(0x80 | (arc & 0x7F))
            arc >>= 7
        body += bytes(reversed(chunk))
    return _tlv(0x06, bytes(body))


def integer(n: int) -> bytes:
    """A non-negative INTEGER (a serial number), minimally encoded."""
    return _tlv(0x02, n.to_bytes(n.bit_length() // 8 + 1, "big"))


def spki_of_csr(csr: x509.CertificateSigningRequest) -> bytes:
    """The CSR's SubjectPublicKeyInfo, the exact bytes its self-signature covers (the third
    element of ``CertificationRequestInfo``: version, subject, then the key)."""
    info = csr.tbs_certrequest_bytes
    pos = _inside(info, 0)
    pos = _skip(info, pos)  # version
    pos = _skip(info, pos)  # subject
    end = _skip(info, pos)
    if info[pos] != 0x30:
        raise CAError("CSR: the public key is not a SubjectPublicKeyInfo")
    return info[pos:end]


def _header(buf: bytes, pos: int) -> tuple[int, int]:
    """Where the value of the TLV at ``pos`` starts, and its length."""
    if pos + 2 > len(buf):
        raise CAError("truncated DER")
    first = buf[pos + 1]
    if first < 0x80:
        return pos + 2, first
    count = first & 0x7F
    if not 1 <= count <= 4 or pos + 2 + count > len(buf):
        raise CAError("bad DER length")
    return pos + 2 + count, int.from_bytes(buf[pos + 2 : pos + 2 + count], "big")


def _inside(buf: bytes, pos: int) -> int:
    return _header(buf, pos)[0]


def _skip(buf: bytes, pos: int) -> int:
    start, size = _header(buf, pos)
    if start + size > len(buf):
        raise CAError("truncated DER")
    return start + size


def pem(der: bytes) -> str:
    """A certificate's PEM: base64 in lines of 64, as OpenSSL and ``cryptography`` write it."""
    text = base64.b64encode(der).decode()
    lines = [text[i : i + 64] for i in range(0, len(text), 64)]
    return "-----BEGIN CERTIFICATE-----\n" + "\n".join(lines) + "\n-----END CERTIFICATE-----\n"


class LeafTemplate:
    """The fixed parts of a CA's leaves, encoded once; ``certificate`` makes one leaf.

    ``before`` are the extensions written ahead of the SAN and ``after`` those after it, in
    that order, as (extension, critical) pairs: the builder keeps the order it was given."""

    def __init__(
        self,
        ca_cert: x509.Certificate,
        key: ec.EllipticCurvePrivateKey,
        before: list[tuple[x509.ExtensionType, bool]],
        after: list[tuple[x509.ExtensionType, bool]],
    ) -> None:
        self._key = key
        self._issuer = ca_cert.subject.public_bytes()
        self._before = b"".join(_extension(_oid(e.oid), c, e.public_bytes()) for e, c in before)
        self._after = b"".join(_extension(_oid(e.oid), c, e.public_bytes()) for e, c in after)

    def tbs(self, serial: int, not_before: dt.datetime, not_after: dt.datetime,
            common_name: str, spki: bytes, uri: str) -> bytes:  # fmt: skip
        """The ``TBSCertificate`` of one leaf (times are cut to whole seconds)."""
        cn = common_name.encode()
        if not 1 <= len(common_name) <= _MAX_CN:
            raise CAError(f"common name of {len(common_name)} characters (1-{_MAX_CN})")
        subject = _tlv(0x30, _tlv(0x31, _tlv(0x30, _OID_CN + _tlv(0x0C, cn))))
        # SubjectAltName: GeneralNames holding one uniformResourceIdentifier ([6] IA5String).
        san = _extension(_OID_SAN, False, _tlv(0x30, _tlv(0x86, uri.encode("ascii"))))
        extensions = _tlv(0xA3, _tlv(0x30, self._before + san + self._after))
        validity = _tlv(0x30, _time(not_before) + _time(not_after))
        return _tlv(
            0x30,
            _VERSION_3 + integer(serial) + _ECDSA_SHA256 + self._issuer + validity + subject
            + spki + extensions,
        )  # fmt: skip

    def certificate(self, tbs: bytes) -> bytes:
        """The DER certificate: ``tbs`` signed with the CA key (ECDSA with SHA-256)."""
        return assemble(tbs, sign_tbs(self._key, tbs))


def sign_tbs(key: ec.EllipticCurvePrivateKey, tbs: bytes) -> bytes:
    """The CA's signature of a leaf's ``TBSCertificate`` (ECDSA with SHA-256, DER): what a
    signing worker computes for the server, which wrote ``tbs`` with its own template."""
    return key.sign(tbs, _ECDSA)


def assemble(tbs: bytes, signature: bytes) -> bytes:
    """The DER certificate of ``tbs`` and its signature (``sign_tbs``)."""
    return _tlv(0x30, tbs + _ECDSA_SHA256 + _tlv(0x03, b"\x00" + signature))
