"""TLS of the control plane: its settings, and the server certificate the built-in CA issues.

The HTTPS API (Consul's ``ports.https``, 8501) and the TLS xDS listener (``ports.grpc_tls``,
8503) present either the operator's certificate (``--tls-cert-file``/``--tls-key-file``) or,
without one, a certificate the built-in CA issues at every start, so a client that trusts the
CA root (``GET /v1/connect/ca/roots``, or the ``ca.pem`` the server writes) can verify the
server with no further setup, as Consul's auto-encrypt does. Its names are those clients dial:
``localhost``, the loopback addresses, the node name, ``server.<dc>.<domain>`` (Consul's
``verify_server_hostname`` name) and any ``--tls-san``.

Pure: time is an argument, keys and certificates are PEM text; reading and writing files
and building SSL contexts is ``loom.server.tls``'s.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from loom.ca.authority import CLOCK_SKEW, END_ENTITY_KEY_USAGE, Root
from loom.ca.errors import CAError

SERVER_CERT_TTL = dt.timedelta(days=365)
"""Life of a built-in server certificate; a new one is issued at every start."""


@dataclass(frozen=True)
class ServerTls:
    """TLS of the server's listeners (Consul's ``tls.defaults``/``tls.https``/``tls.grpc``)."""

    cert_file: Path | None = None
    """PEM certificate (chain) the listeners present; None: one issued by the built-in CA."""
    key_file: Path | None = None
    """PEM private key of ``cert_file``; given together with it."""
    ca_file: Path | None = None
    """PEM bundle of CAs whose client certificates are accepted (``--tls-verify-incoming``)
    and that other datacenters' HTTPS servers are verified with (Consul's ``ca_file`` serves
    both); None: the built-in CA's roots."""
    verify_incoming: bool = False
    """Require a client certificate signed by ``ca_file`` on HTTPS and TLS gRPC (Consul's
    ``tls.defaults.verify_incoming``, off by default as Consul's)."""
    extra_sans: tuple[str, ...] = ()
    """Names (DNS names or IP addresses) added to the built-in server certificate."""
    domain: str = "consul"
    """DNS domain of ``server.<dc>.<domain>`` (Consul's ``domain``)."""

    @property
    def builtin(self) -> bool:
        """True when the built-in CA issues the server certificate."""
        return self.cert_file is None


@dataclass(frozen=True)
class ServerCert:
    cert_pem: str
    """The server certificate, PEM."""
    key_pem: str
    """Its private key, PEM (PKCS#8, unencrypted: it lives in memory and a 0600 file)."""
    names: tuple[str, ...]
    """The SANs it carries, DNS names then IP addresses, as given."""


def server_names(node: str, datacenter: str, tls: ServerTls) -> tuple[str, ...]:
    """The SANs of the built-in server certificate, without duplicates, in a fixed order."""
    names = ["localhost", "127.0.0.1", "::1", node, f"server.{datacenter}.{tls.domain}"]
    names += list(tls.extra_sans)
    out: list[str] = []
    for name in names:
        name = name.strip()
        if name and name not in out:
            out.append(name)
    return tuple(out)


def _general_names(names: Iterable[str]) -> list[x509.GeneralName]:
    out: list[x509.GeneralName] = []
    for name in names:
        try:
            out.append(x509.IPAddress(ipaddress.ip_address(name.strip("[]"))))
        except ValueError:
            if not name.isascii() or any(c in name for c in " /@:"):
                raise CAError(
                    f"--tls-san: {name!r} is neither a DNS name nor an IP address"
                ) from None
            out.append(x509.DNSName(name.lower()))
    return out


def issue_server_cert(
    root: Root, names: tuple[str, ...], now: dt.datetime, ttl: dt.timedelta = SERVER_CERT_TTL
) -> ServerCert:
    """A TLS server certificate for ``names``, signed by ``root`` (fresh P-256 key)."""
    if not names:
        raise CAError("a server certificate needs at least one name")
    try:
        ca_cert = x509.load_pem_x509_certificate(root.cert_pem.encode())
        ca_key = serialization.load_pem_private_key(root.key_pem.encode(), password=None)
    except ValueError as exc:
        raise CAError(f"the CA root is unreadable: {exc}") from exc
    if not isinstance(ca_key, ec.EllipticCurvePrivateKey):
        raise CAError("the CA root key is not an EC key")
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - CLOCK_SKEW)
        .not_valid_after(min(now + ttl, root.not_after))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            END_ENTITY_KEY_USAGE,
            critical=True,
        )
        .add_extension(
            # Client too: a server presents it to other datacenters' servers (the WAN).
            x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
            ),
            critical=False,
        )
        .add_extension(x509.SubjectAlternativeName(_general_names(names)), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()
    return ServerCert(cert.public_bytes(serialization.Encoding.PEM).decode(), key_pem, names)
