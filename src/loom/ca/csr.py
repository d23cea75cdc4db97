"""Certificate signing requests for SPIFFE identities: made by the dataplane, checked by the server.

The workload's private key never leaves it: the dataplane agent makes a key and a CSR naming
its SPIFFE ID (``build_csr``), and the server, before its CA signs anything, checks the CSR
(``check_csr``): one PEM CSR and nothing else, a valid self-signature with SHA-256 or
stronger, an acceptable key (ECDSA P-256/P-384 or RSA 2048-4096 bits, the leaf key types
Consul's CA supports), exactly one subject alternative name, a URI that parses as a SPIFFE
service ID strictly (``loom.ca.spiffe``), equal to the identity the caller's token was
allowed, and no request for a CA certificate. ``read_csr`` does every check but the last,
so the server can learn whom a CSR names (to ask the ACLs) before comparing; the CA then
signs the CSR's public key (``Signer.sign``), never a key of its own. ``read_csr(pem,
verify=False)`` skips the key and self-signature checks (the latter the costliest, an ECDSA
or RSA verify):
the server's front end learns the identity that way, and whoever signs (a signing worker, or
``Certs`` in-process) verifies the signature before signing (``CheckedCsr.verified``).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from loom.ca.errors import CAError
from loom.ca.leafder import spki_of_csr
from loom.ca.spiffe import SpiffeError, SpiffeId, check_trust_domain, parse_spiffe_id

MAX_CSR_PEM = 16 * 1024
_CURVES = ("secp256r1", "secp384r1")
_RSA_BITS = (2048, 3072, 4096)
_HASHES = ("sha256", "sha384", "sha512")
_PEM_HEAD = "-----BEGIN CERTIFICATE REQUEST-----"
_ECDSA_OIDS = frozenset({
    x509.oid.SignatureAlgorithmOID.ECDSA_WITH_SHA256,
    x509.oid.SignatureAlgorithmOID.ECDSA_WITH_SHA384,
    x509.oid.SignatureAlgorithmOID.ECDSA_WITH_SHA512,
})  # fmt: skip
_BAD_SIGNATURE = "CSR: signature is not valid (not signed by the key it carries)"
_CANONICAL_EC = (
    (bytes.fromhex("3059301306072a8648ce3d020106082a8648ce3d03010703420004"), 91),  # P-256
    (bytes.fromhex("3076301006072a8648ce3d020106052b8104002203620004"), 120),  # P-384
)
"""How the builder encodes an EC key (id-ecPublicKey, the named curve, an uncompressed
point), as a fixed head and the total length."""


class CsrError(CAError):
    """A CSR is malformed or asks for something the server will not sign."""


def new_key() -> ec.EllipticCurvePrivateKey:
    """A fresh P-256 key, Consul's default leaf key type."""
    return ec.generate_private_key(ec.SECP256R1())


def key_pem(key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey) -> str:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()


def build_csr(identity: SpiffeId, key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey) -> str:
    """A PEM CSR for ``identity`` signed by ``key`` (the dataplane keeps the key)."""
    checked = parse_spiffe_id(identity.uri)  # refuse an unchecked SpiffeId(...) here too
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([]))
        .add_extension(
            x509.SubjectAlternativeName([x509.UniformResourceIdentifier(checked.uri)]),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    return csr.public_bytes(serialization.Encoding.PEM).decode()


@dataclass(frozen=True)
class CheckedCsr:
    identity: SpiffeId
    csr: x509.CertificateSigningRequest
    pem: str
    """The CSR as received (what a signing worker re-reads and checks in full)."""
    verified: bool = True
    """Whether the key and self-signature were checked; False after ``read_csr(pem,
    verify=False)``, and then nothing may sign the CSR before ``verify_signature``."""

    def verify_signature(self) -> CheckedCsr:
        """This CSR with its self-signature and key checked (``CsrError`` if either fails)."""
        if self.verified:
            return self
        _check_signature(self.csr)  # and the key
        return CheckedCsr(self.identity, self.csr, self.pem, True)

    @functools.cached_property
    def _raw_spki(self) -> bytes:
        """The CSR's SubjectPublicKeyInfo as it carries it (``spki`` and ``proof`` both
        need it: read once); ``CAError`` if its DER cannot be walked."""
        return spki_of_csr(self.csr)

    @property
    def spki(self) -> bytes:
        """The CSR's public key as a DER SubjectPublicKeyInfo, encoded as the certificate
        builder would: the CSR's own bytes when they are that already (a P-256 or P-384 key
        as an uncompressed point, the usual case: no parse and re-encode of the key), else
        the parsed key re-encoded (a compressed point, RSA); ``CsrError`` if it cannot be
        read."""
        try:
            raw = self._raw_spki
            if any(raw.startswith(head) and len(raw) == size for head, size in _CANONICAL_EC):
                return raw
            key = self.public_key()
        except (CAError, ValueError, UnsupportedAlgorithm) as exc:
            raise CsrError("CSR: the public key cannot be read") from exc
        return key.public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )

    def public_key(self) -> ec.EllipticCurvePublicKey | rsa.RSAPublicKey:
        key = self.csr.public_key()
        assert isinstance(key, ec.EllipticCurvePublicKey | rsa.RSAPublicKey)
        return key

    @property
    def proof(self) -> Proof | None:
        """The CSR's proof of possession as bytes (``check_proof`` checks it anywhere: a
        signing worker gets these, not the CSR), or None when the CSR is not signed with
        ECDSA and SHA-256 or stronger (then only ``verify_signature`` checks it)."""
        csr = self.csr
        if csr.signature_algorithm_oid not in _ECDSA_OIDS:
            return None
        try:
            algorithm = csr.signature_hash_algorithm
            spki = self._raw_spki
        except (UnsupportedAlgorithm, CAError):
            return None
        if algorithm is None or algorithm.name not in _HASHES:
            return None
        return Proof(algorithm.name, spki, csr.tbs_certrequest_bytes, csr.signature)


@dataclass(frozen=True)
class Proof:
    """What shows that a CSR's maker holds its private key: the ECDSA self-signature, the
    bytes it signs (the ``CertificationRequestInfo``), the public key as the CSR carries it
    (a DER SubjectPublicKeyInfo inside those bytes) and the hash's name."""

    hash_name: str
    spki: bytes
    tbs: bytes
    signature: bytes


_HASH_OF: dict[str, hashes.HashAlgorithm] = {
    "sha256": hashes.SHA256(), "sha384": hashes.SHA384(), "sha512": hashes.SHA512(),
}  # fmt: skip


def check_proof(proof: Proof) -> None:
    """``CsrError`` unless ``proof``'s signature is valid for its bytes under its key, the
    key an ECDSA key on an accepted curve and the hash SHA-256 or stronger."""
    algorithm = _HASH_OF.get(proof.hash_name)
    if algorithm is None:
        raise CsrError("CSR: signature must use SHA-256 or stronger")
    try:
        key = serialization.load_der_public_key(proof.spki)
    except (ValueError, UnsupportedAlgorithm) as exc:
        raise CsrError("CSR: the public key cannot be read") from exc
    if not isinstance(key, ec.EllipticCurvePublicKey):
        raise CsrError(_BAD_SIGNATURE)  # an ECDSA signature, a key of another kind
    try:
        key.verify(proof.signature, proof.tbs, ec.ECDSA(algorithm))
    except InvalidSignature:
        raise CsrError(_BAD_SIGNATURE) from None
    if key.curve.name not in _CURVES:
        raise CsrError(f"CSR: EC curve {key.curve.name} is not accepted (P-256 or P-384)")


def _load(pem: str) -> x509.CertificateSigningRequest:
    if not isinstance(pem, str) or len(pem) > MAX_CSR_PEM:
        raise CsrError("CSR: not a PEM text of reasonable size")
    if pem.count(_PEM_HEAD) != 1 or "-----BEGIN" in pem.replace(_PEM_HEAD, "", 1):
        raise CsrError("CSR: expected exactly one PEM CERTIFICATE REQUEST block")
    try:
        return x509.load_pem_x509_csr(pem.encode())
    except (ValueError, UnsupportedAlgorithm) as exc:
        raise CsrError("CSR: not a valid PEM certificate request") from exc


def _check_key(csr: x509.CertificateSigningRequest) -> None:
    try:
        key = csr.public_key()
    except (ValueError, UnsupportedAlgorithm) as exc:
        raise CsrError("CSR: the public key cannot be read") from exc
    if isinstance(key, ec.EllipticCurvePublicKey):
        if key.curve.name not in _CURVES:
            raise CsrError(f"CSR: EC curve {key.curve.name} is not accepted (P-256 or P-384)")
    elif isinstance(key, rsa.RSAPublicKey):
        if key.key_size not in _RSA_BITS:
            raise CsrError(f"CSR: RSA key of {key.key_size} bits is not accepted (2048-4096)")
    else:
        raise CsrError(f"CSR: key type {type(key).__name__} is not accepted (ECDSA or RSA)")


def _check_signature(csr: x509.CertificateSigningRequest) -> None:
    """The self-signature, then the key (``_check_key``'s rules). An ECDSA signature is
    checked as a ``Proof`` (``check_proof``, the key loaded once for both checks:
    ``is_signature_valid`` then ``_check_key`` would each load it); any other goes through
    both."""
    try:
        algorithm = csr.signature_hash_algorithm
    except UnsupportedAlgorithm as exc:
        raise CsrError("CSR: signature algorithm is not supported") from exc
    if algorithm is None or algorithm.name not in _HASHES:
        raise CsrError("CSR: signature must use SHA-256 or stronger")
    if csr.signature_algorithm_oid not in _ECDSA_OIDS:
        if not csr.is_signature_valid:
            raise CsrError(_BAD_SIGNATURE)
        _check_key(csr)
        return
    try:
        spki = spki_of_csr(csr)
    except CAError as exc:
        raise CsrError("CSR: the public key cannot be read") from exc
    check_proof(Proof(algorithm.name, spki, csr.tbs_certrequest_bytes, csr.signature))


def _uri(csr: x509.CertificateSigningRequest) -> str:
    try:
        extensions = csr.extensions
    except (ValueError, x509.DuplicateExtension, x509.UnsupportedGeneralNameType) as exc:
        raise CsrError("CSR: extensions cannot be read") from exc
    for ext in extensions:
        if isinstance(ext.value, x509.BasicConstraints) and ext.value.ca:
            raise CsrError("CSR: asks for a CA certificate")
    try:
        san = extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound as exc:
        raise CsrError("CSR: no subject alternative name") from exc
    names = list(san)
    uris = san.get_values_for_type(x509.UniformResourceIdentifier)
    if len(uris) != 1 or len(names) != 1:
        raise CsrError(f"CSR: expected exactly one URI SAN and no other SAN, found {len(names)}")
    return uris[0]


def read_csr(pem: str, verify: bool = True) -> CheckedCsr:
    """The parsed CSR and the identity it names, every check but "the caller may have it"
    done (PEM, signature, key, one strictly parsed SPIFFE URI, not a CA); ``CsrError``.
    ``verify=False``: all but the signature and the key (see ``CheckedCsr.verified``)."""
    csr = _load(pem)
    if verify:
        _check_signature(csr)  # and the key
    try:
        identity = parse_spiffe_id(_uri(csr))
    except SpiffeError as exc:
        raise CsrError(f"CSR: {exc}") from exc
    return CheckedCsr(identity, csr, pem, verify)


def check_csr(pem: str, expected: SpiffeId) -> CheckedCsr:
    """The parsed CSR when it may be signed for ``expected``; ``CsrError`` saying why not."""
    checked = read_csr(pem)
    identity = checked.identity
    if identity != expected:
        raise CsrError(f"CSR: asks for {identity.uri}, the caller may only have {expected.uri}")
    return checked


# -- a secondary datacenter's intermediate CA ----------------------------------------------------


def signing_uri(trust_domain: str) -> str:
    """The URI SAN of a CA of ``trust_domain`` (Consul's ``SpiffeIDSigning``): no path."""
    return f"spiffe://{check_trust_domain(trust_domain)}"


def build_ca_csr(trust_domain: str, key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey) -> str:
    """A PEM CSR for an intermediate CA of ``trust_domain`` that may sign leaves only (path
    length 0), signed by ``key`` (the secondary keeps the key)."""
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([]))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.UniformResourceIdentifier(signing_uri(trust_domain))]
            ),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    return csr.public_bytes(serialization.Encoding.PEM).decode()


@dataclass(frozen=True)
class CheckedCaCsr:
    trust_domain: str
    csr: x509.CertificateSigningRequest

    def public_key(self) -> ec.EllipticCurvePublicKey | rsa.RSAPublicKey:
        key = self.csr.public_key()
        assert isinstance(key, ec.EllipticCurvePublicKey | rsa.RSAPublicKey)
        return key


def _ca_request(csr: x509.CertificateSigningRequest) -> str:
    """The trust domain a CA request names, after checking it asks for a CA of path
    length 0 and names exactly ``spiffe://<trust-domain>`` (no path, no other name)."""
    try:
        extensions = csr.extensions
    except (ValueError, x509.DuplicateExtension, x509.UnsupportedGeneralNameType) as exc:
        raise CsrError("CSR: extensions cannot be read") from exc
    try:
        constraints = extensions.get_extension_for_class(x509.BasicConstraints).value
    except x509.ExtensionNotFound as exc:
        raise CsrError("CSR: not a CA request (no BasicConstraints CA:TRUE)") from exc
    if not constraints.ca:
        raise CsrError("CSR: not a CA request (BasicConstraints CA:FALSE)")
    if constraints.path_length != 0:
        asked = "no limit" if constraints.path_length is None else constraints.path_length
        raise CsrError(f"CSR: asks for path length {asked}; an intermediate signs leaves only (0)")
    try:
        san = extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound as exc:
        raise CsrError("CSR: no subject alternative name") from exc
    uris = san.get_values_for_type(x509.UniformResourceIdentifier)
    if len(uris) != 1 or len(list(san)) != 1:
        raise CsrError("CSR: expected exactly one URI SAN (spiffe://<trust-domain>)")
    uri, scheme = uris[0], "spiffe://"
    domain = uri[len(scheme) :] if uri.startswith(scheme) else ""
    try:
        check_trust_domain(domain)
    except SpiffeError as exc:
        raise CsrError(f"CSR: {uri[:80]!r} is not spiffe://<trust-domain> ({exc})") from exc
    return domain


def read_ca_csr(pem: str, trust_domain: str) -> CheckedCaCsr:
    """A secondary's intermediate CSR when the primary may sign it for ``trust_domain``:
    one PEM request, a valid SHA-256+ self-signature, a key a leaf could have, a CA of path
    length 0, exactly ``spiffe://<trust_domain>``; ``CsrError`` saying what is wrong."""
    csr = _load(pem)
    _check_signature(csr)  # and the key
    domain = _ca_request(csr)
    if domain != trust_domain:
        raise CsrError(f"CSR: trust domain {domain!r} is not this CA's ({trust_domain!r})")
    return CheckedCaCsr(domain, csr)
