"""Built-in CA: an ECDSA P-256 root, and short-lived leaf certificates with SPIFFE IDs.

Pure with respect to time: every function that needs "now" takes it as an argument, so the
validity windows in tests are exact. Keys and certificates travel as PEM strings; the root is
persisted by the server in the store, leaves are made on demand and cached by the server.

SPIFFE IDs of services are built and parsed in ``loom.ca.spiffe``.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, replace

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

from loom.ca.errors import CAError
from loom.ca.leafder import LeafTemplate, assemble, pem, sign_tbs
from loom.ca.spiffe import SpiffeId

PublicKey = ec.EllipticCurvePublicKey | rsa.RSAPublicKey

ROOT_TTL = dt.timedelta(days=3650)
LEAF_TTL = dt.timedelta(hours=72)
CLOCK_SKEW = dt.timedelta(minutes=1)


def spiffe_id(trust_domain: str, namespace: str, datacenter: str, service: str) -> str:
    """The URI of a service identity whose names the domain layer already validated (the
    format is ``loom.ca.spiffe``'s; its ``build_spiffe_id`` is the checked builder)."""
    return SpiffeId(trust_domain, namespace, datacenter, service).uri


@dataclass(frozen=True)
class Root:
    id: str  # hex SHA-256 fingerprint (colon-free), stable for the root's life
    cert_pem: str
    key_pem: str
    trust_domain: str
    not_before: dt.datetime
    not_after: dt.datetime


@dataclass(frozen=True)
class Leaf:
    serial: str  # colon-separated hex, as Consul prints it
    cert_pem: str
    """The leaf, then any intermediate a peer needs to reach a root (Consul's ``CertPEM``)."""
    key_pem: str
    """The private key (PEM) when the CA made it; empty for a CSR's leaf (the key stays
    with whoever made the CSR)."""
    service: str
    uri: str
    not_before: dt.datetime
    not_after: dt.datetime


def _pem_key(key: ec.EllipticCurvePrivateKey) -> str:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()


def _serial_text(n: int) -> str:
    return n.to_bytes(max(1, (n.bit_length() + 7) // 8), "big").hex(":")


def new_root(trust_domain: str, now: dt.datetime) -> Root:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"Loom CA {trust_domain[:8]}")])
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - CLOCK_SKEW)
        .not_valid_after(now + ROOT_TTL)
        # Path length 2: room for two CAs below the root, a secondary datacenter's
        # intermediate (``loom.ca.intermediate``) and, after a rotation, the cross-signed
        # certificate of the root that replaced this one (``cross_sign``), so a secondary's
        # leaf verifies as leaf -> intermediate -> cross-signed -> this root.
        .add_extension(x509.BasicConstraints(ca=True, path_length=2), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.UniformResourceIdentifier(f"spiffe://{trust_domain}")]
            ),
            critical=False,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return Root(
        id=cert.fingerprint(hashes.SHA256()).hex(),
        cert_pem=cert.public_bytes(serialization.Encoding.PEM).decode(),
        key_pem=_pem_key(key),
        trust_domain=trust_domain,
        not_before=cert.not_valid_before_utc,
        not_after=cert.not_valid_after_utc,
    )


def load_root(cert_pem: str, key_pem: str, trust_domain: str) -> Root:
    try:
        cert = x509.load_pem_x509_certificate(cert_pem.encode())
        serialization.load_pem_private_key(key_pem.encode(), password=None)
    except ValueError as exc:
        raise CAError(f"stored CA root is unreadable: {exc}") from exc
    return Root(
        id=cert.fingerprint(hashes.SHA256()).hex(),
        cert_pem=cert_pem,
        key_pem=key_pem,
        trust_domain=trust_domain,
        not_before=cert.not_valid_before_utc,
        not_after=cert.not_valid_after_utc,
    )


def load_root_cert(cert_pem: str, trust_domain: str) -> Root:
    """A root known by its certificate only (a retired root kept for trust, its key dropped)."""
    try:
        cert = x509.load_pem_x509_certificate(cert_pem.encode())
    except ValueError as exc:
        raise CAError(f"stored CA root is unreadable: {exc}") from exc
    return Root(
        id=cert.fingerprint(hashes.SHA256()).hex(),
        cert_pem=cert_pem,
        key_pem="",
        trust_domain=trust_domain,
        not_before=cert.not_valid_before_utc,
        not_after=cert.not_valid_after_utc,
    )


def check_new_root(cert_pem: str, key_pem: str, trust_domain: str, now: dt.datetime) -> Root:
    """An operator's root (``PUT /v1/connect/ca/configuration``): a CA certificate valid
    now, with the EC private key that matches it; ``CAError`` saying what is wrong."""
    try:
        cert = x509.load_pem_x509_certificate(cert_pem.encode())
    except ValueError as exc:
        raise CAError(f"RootCert is not a PEM certificate: {exc}") from exc
    try:
        key = serialization.load_pem_private_key(key_pem.encode(), password=None)
    except (ValueError, TypeError) as exc:
        raise CAError(f"PrivateKey is not an unencrypted PEM private key: {exc}") from exc
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise CAError("PrivateKey: only EC keys are supported")
    pub = serialization.PublicFormat.SubjectPublicKeyInfo
    if key.public_key().public_bytes(
        serialization.Encoding.DER, pub
    ) != cert.public_key().public_bytes(serialization.Encoding.DER, pub):
        raise CAError("PrivateKey does not match RootCert")
    try:
        ca = cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    except x509.ExtensionNotFound:
        ca = False
    if not ca:
        raise CAError("RootCert is not a CA certificate (BasicConstraints CA:TRUE)")
    if not cert.not_valid_before_utc <= now + CLOCK_SKEW < cert.not_valid_after_utc:
        raise CAError("RootCert is not valid now")
    return load_root(cert_pem, key_pem, trust_domain)


def can_cross_sign(old: Root) -> bool:
    """Whether ``old`` (with its key) may sign a CA below it: its path length allows one.

    Roots made before Loom cross-signed have path length 0, so the first rotation away from
    such a root cannot cross-sign (the old root stays trusted as before); later ones can."""
    if not old.key_pem:
        return False
    cert = x509.load_pem_x509_certificate(old.cert_pem.encode())
    try:
        limit = cert.extensions.get_extension_for_class(x509.BasicConstraints).value.path_length
    except x509.ExtensionNotFound:
        return False
    return limit is None or limit >= 1


def cross_sign(new: Root, old: Root, now: dt.datetime) -> str:
    """The new root's certificate re-issued by the old root (Consul's cross-signing).

    Same subject, key and key identifier as ``new``, issuer and signature ``old``'s, valid no
    longer than either. Sent after each leaf of the new root, it lets a peer that still
    trusts only the old root verify that leaf (leaf -> cross-signed -> old root) while the
    new root reaches every proxy, so a rotation never breaks a connection."""
    if not can_cross_sign(old):
        raise CAError("the retiring root cannot sign a CA (no key, or path length 0)")
    new_cert = x509.load_pem_x509_certificate(new.cert_pem.encode())
    old_cert = x509.load_pem_x509_certificate(old.cert_pem.encode())
    old_key = serialization.load_pem_private_key(old.key_pem.encode(), password=None)
    if not isinstance(old_key, ec.EllipticCurvePrivateKey):
        raise CAError("the retiring root's key is not an EC key")
    public = new_cert.public_key()
    if not isinstance(public, ec.EllipticCurvePublicKey | rsa.RSAPublicKey):
        raise CAError("the new root's key is neither EC nor RSA")
    cert = (
        x509.CertificateBuilder()
        .subject_name(new_cert.subject)
        .issuer_name(old_cert.subject)
        .public_key(public)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - CLOCK_SKEW)
        .not_valid_after(min(new.not_after, old.not_after))
        # Path length 1: a secondary datacenter's intermediate may sit below it.
        .add_extension(x509.BasicConstraints(ca=True, path_length=1), critical=True)
        .add_extension(
            x509.KeyUsage(True, False, False, False, False, True, True, False, False),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(old_key.public_key()),
            critical=False,
        )
        .sign(old_key, hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.PEM).decode()


END_ENTITY_KEY_USAGE = x509.KeyUsage(
    digital_signature=True,
    content_commitment=False,
    key_encipherment=True,
    data_encipherment=False,
    key_agreement=True,
    key_cert_sign=False,
    crl_sign=False,
    encipher_only=False,
    decipher_only=False,
)
"""Key usage of every end-entity certificate the CA issues (leaves and the server's TLS)."""


class Signer:
    """Signs leaves with a root; parses the root once."""

    def __init__(self, root: Root, chain_pem: str = "") -> None:
        self.root = root
        self.chain_pem = chain_pem
        """Sent after every leaf: the root's cross-signed certificate after a rotation."""
        self._cert = x509.load_pem_x509_certificate(root.cert_pem.encode())
        key = serialization.load_pem_private_key(root.key_pem.encode(), password=None)
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            raise CAError("stored CA root key is not an EC key")
        self._key = key
        self._not_after = self._cert.not_valid_after_utc
        # What every leaf shares, encoded once (``loom.ca.leafder``); the SAN goes between.
        self._template = LeafTemplate(
            self._cert,
            key,
            before=[
                (x509.BasicConstraints(ca=False, path_length=None), True),
                (END_ENTITY_KEY_USAGE, True),
                (
                    x509.ExtendedKeyUsage(
                        [
                            x509.oid.ExtendedKeyUsageOID.SERVER_AUTH,
                            x509.oid.ExtendedKeyUsageOID.CLIENT_AUTH,
                        ]
                    ),
                    False,
                ),
            ],
            after=[(x509.AuthorityKeyIdentifier.from_issuer_public_key(key.public_key()), False)],
        )

    def leaf(
        self,
        namespace: str,
        datacenter: str,
        service: str,
        now: dt.datetime,
        ttl: dt.timedelta = LEAF_TTL,
    ) -> Leaf:
        """A leaf with a key made here (the Consul-compatible leaf endpoint's path)."""
        key = ec.generate_private_key(ec.SECP256R1())
        identity = SpiffeId(self.root.trust_domain, namespace, datacenter, service)
        return replace(self.sign(identity, key.public_key(), now, ttl), key_pem=_pem_key(key))

    def sign(
        self,
        identity: SpiffeId,
        public_key: PublicKey | bytes,
        now: dt.datetime,
        ttl: dt.timedelta = LEAF_TTL,
    ) -> Leaf:
        """A leaf for ``identity`` carrying ``public_key`` (a CSR's, already checked: as a key,
        or as the DER SubjectPublicKeyInfo the CSR holds): same lifetime and extensions as the
        leaves made here, and no private key (``key_pem`` is empty)."""
        draft = self.draft(identity, public_key, now, ttl)
        return self.finish(draft, self.signature(draft.tbs))

    def signature(self, tbs: bytes) -> bytes:
        """This signer's key's signature of a leaf's ``TBSCertificate`` (``draft``'s)."""
        return sign_tbs(self._key, tbs)

    def draft(
        self,
        identity: SpiffeId,
        public_key: PublicKey | bytes,
        now: dt.datetime,
        ttl: dt.timedelta = LEAF_TTL,
    ) -> LeafDraft:
        """``sign``'s leaf before its signature: the ``TBSCertificate`` whoever holds this
        signer's key signs (``sign_tbs``: a signing worker, or ``sign`` here)."""
        if not isinstance(public_key, bytes):
            public_key = public_key.public_bytes(
                serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
            )
        if now.tzinfo is None:  # naive: UTC, as ``CertificateBuilder`` took it
            now = now.replace(tzinfo=dt.UTC)
        serial = x509.random_serial_number()
        not_before = (now - CLOCK_SKEW).replace(microsecond=0)
        # Never past the signing CA: a secondary's intermediate may end before ``ttl``.
        not_after = min((now + ttl).replace(microsecond=0), self._not_after)
        tbs = self._template.tbs(
            serial, not_before, not_after, identity.service, public_key, identity.uri
        )
        return LeafDraft(identity, serial, not_before, not_after, tbs)

    def finish(self, draft: LeafDraft, signature: bytes) -> Leaf:
        """The leaf of ``draft`` signed with ``signature`` (this signer's key's, over
        ``draft.tbs``), followed by this signer's chain."""
        return Leaf(
            serial=_serial_text(draft.serial),
            cert_pem=pem(assemble(draft.tbs, signature)) + self.chain_pem,
            key_pem="",
            service=draft.identity.service,
            uri=draft.identity.uri,
            not_before=draft.not_before,
            not_after=draft.not_after,
        )


@dataclass(frozen=True)
class LeafDraft:
    """A leaf's fields and ``TBSCertificate``, waiting for the CA's signature."""

    identity: SpiffeId
    serial: int
    not_before: dt.datetime
    not_after: dt.datetime
    tbs: bytes
