"""Self-signed TLS material for the webhook, for ``loom install --generate-certs``.

An ECDSA P-256 CA and a serving certificate for the webhook Service's DNS names
(``svc``, ``svc.ns``, ``svc.ns.svc``, ``svc.ns.svc.cluster.local``), plus the host of
``connectInject.webhookUrl`` (an IP SAN for an address) when the API server reaches the
webhook by URL. Random keys and the
clock are inputs of this module only, never of the renderer. Rotation: write a new Secret;
the webhook reloads the files when they change (the CA bundle must then be updated too).
"""

from __future__ import annotations

import datetime
import ipaddress

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from loom.k8s.install import TlsMaterial

VALIDITY = datetime.timedelta(days=5 * 365)


def webhook_dns_names(service: str, namespace: str) -> list[str]:
    """The names the API server may use for the webhook Service."""
    return [
        service,
        f"{service}.{namespace}",
        f"{service}.{namespace}.svc",
        f"{service}.{namespace}.svc.cluster.local",
    ]


def subject_names(
    service: str, namespace: str, hosts: tuple[str, ...] = ()
) -> list[x509.GeneralName]:
    """The Service's DNS names, then each of ``hosts`` (the host of a webhook URL): an IP SAN
    for an address (the API server verifies an IP URL only against one), else a DNS name."""
    names: list[x509.GeneralName] = [x509.DNSName(n) for n in webhook_dns_names(service, namespace)]
    for host in hosts:
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            names.append(x509.DNSName(host))
    return names


def generate_tls(
    service: str,
    namespace: str,
    now: datetime.datetime,
    hosts: tuple[str, ...] = (),
    validity: datetime.timedelta = VALIDITY,
) -> TlsMaterial:
    """A new CA and a serving certificate signed by it, valid from ``now``, for the Service's
    names and ``hosts``."""
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"{service} CA")])
    start, end = now - datetime.timedelta(minutes=5), now + validity
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False),
            critical=True,
        )
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    names = webhook_dns_names(service, namespace)
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[2])]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.SubjectAlternativeName(subject_names(service, namespace, hosts)), False)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), False)
        .sign(ca_key, hashes.SHA256())
    )
    return TlsMaterial(
        cert_pem=cert.public_bytes(serialization.Encoding.PEM),
        key_pem=key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ),
        ca_pem=ca.public_bytes(serialization.Encoding.PEM),
    )
