"""The federated CA: a secondary datacenter signs with an intermediate the primary's root signed.

One trust domain spans the federation (the primary's). A secondary makes its own key, sends
only a CA request for it (``loom.ca.csr.build_ca_csr``) to the primary, and signs its leaves
with the certificate that comes back, so a leaf of dc2 (sent with that certificate after it,
Consul's ``CertPEM``) verifies against the roots every datacenter's proxies hold.

Both sides are here, pure and with "now" an argument:

- ``sign_intermediate`` (the primary): a CA certificate for the request's key, path length 0
  (it may sign leaves, never another CA), the trust domain's URI SAN, valid no longer than the
  root that signs it; every name and extension is the primary's choice, none is copied from the
  request but the key;
- ``check_intermediate`` (the secondary): what came back carries its own key, is a CA of this
  trust domain, and was signed by the active root it asked under.
"""

from __future__ import annotations

import datetime as dt

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from loom.ca.authority import CLOCK_SKEW, Root, can_cross_sign, load_root
from loom.ca.csr import CheckedCaCsr, signing_uri
from loom.ca.errors import CAError

INTERMEDIATE_TTL = dt.timedelta(days=365)
"""Consul's default ``IntermediateCertTTL`` (8760h)."""
RENEW_AT = 0.5
"""A secondary asks for a new intermediate once this share of its life has passed."""

_CA_USAGE = x509.KeyUsage(True, False, False, False, False, True, True, False, False)
"""digitalSignature, keyCertSign, cRLSign: what a CA that signs leaves needs."""


def sign_intermediate(
    root: Root, request: CheckedCaCsr, now: dt.datetime, ttl: dt.timedelta = INTERMEDIATE_TTL
) -> str:
    """The PEM certificate of a secondary's intermediate CA, signed by ``root`` (with its key)."""
    if request.trust_domain != root.trust_domain:
        raise CAError(f"the request is for {request.trust_domain!r}, not {root.trust_domain!r}")
    if not can_cross_sign(root):  # the same test: the root has its key and room for a CA
        raise CAError("the active root cannot sign a CA (no key, or path length 0)")
    root_cert = x509.load_pem_x509_certificate(root.cert_pem.encode())
    root_key = serialization.load_pem_private_key(root.key_pem.encode(), password=None)
    if not isinstance(root_key, ec.EllipticCurvePrivateKey):
        raise CAError("the active root's key is not an EC key")
    public = request.public_key()
    ski = x509.SubjectKeyIdentifier.from_public_key(public)
    name = f"Loom Intermediate CA {ski.digest.hex()[:16]}"
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
        .issuer_name(root_cert.subject)
        .public_key(public)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - CLOCK_SKEW)
        .not_valid_after(min(now + ttl, root.not_after))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_CA_USAGE, critical=True)
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.UniformResourceIdentifier(signing_uri(root.trust_domain))]
            ),
            critical=False,
        )
        .add_extension(ski, critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(root_key.public_key()),
            critical=False,
        )
        .sign(root_key, hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.PEM).decode()


def check_intermediate(
    cert_pem: str, key_pem: str, root_pem: str, trust_domain: str, now: dt.datetime
) -> Root:
    """The secondary's signing CA (a ``Root`` with its key, so ``Signer`` takes it) once the
    primary's answer is checked: one certificate, for ``key_pem``'s key, a CA of path length 0
    naming ``trust_domain``, valid now, signed by ``root_pem``; ``CAError`` otherwise."""
    try:
        certs = x509.load_pem_x509_certificates(cert_pem.encode())
        root = x509.load_pem_x509_certificate(root_pem.encode())
        key = serialization.load_pem_private_key(key_pem.encode(), password=None)
    except ValueError as exc:
        raise CAError(f"the intermediate certificate is unreadable: {exc}") from exc
    if len(certs) != 1:
        raise CAError(f"expected one intermediate certificate, found {len(certs)}")
    cert = certs[0]
    spki = serialization.PublicFormat.SubjectPublicKeyInfo
    der = serialization.Encoding.DER
    if cert.public_key().public_bytes(der, spki) != key.public_key().public_bytes(der, spki):
        raise CAError("the intermediate certificate does not carry this datacenter's key")
    try:
        constraints = cert.extensions.get_extension_for_class(x509.BasicConstraints).value
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound as exc:
        raise CAError(f"the intermediate certificate lacks an extension: {exc}") from exc
    if not constraints.ca or constraints.path_length != 0:
        raise CAError("the intermediate certificate is not a CA of path length 0")
    if san.get_values_for_type(x509.UniformResourceIdentifier) != [signing_uri(trust_domain)]:
        raise CAError(f"the intermediate certificate does not name {signing_uri(trust_domain)}")
    try:
        cert.verify_directly_issued_by(root)
    except (ValueError, TypeError, InvalidSignature) as exc:
        raise CAError("the intermediate certificate is not signed by the active root") from exc
    if not cert.not_valid_before_utc <= now + CLOCK_SKEW < cert.not_valid_after_utc:
        raise CAError("the intermediate certificate is not valid now")
    return load_root(cert_pem, key_pem, trust_domain)


def due_for_renewal(intermediate: Root, now: dt.datetime) -> bool:
    """Whether a secondary should ask for a new intermediate (half its life has passed)."""
    life = intermediate.not_after - intermediate.not_before
    return now >= intermediate.not_before + life * RENEW_AT


def issued_by(cert_pem: str, root_pem: str) -> bool:
    """Whether the first certificate of ``cert_pem`` was signed by ``root_pem``'s key."""
    try:
        cert = x509.load_pem_x509_certificate(cert_pem.encode())
        cert.verify_directly_issued_by(x509.load_pem_x509_certificate(root_pem.encode()))
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True
