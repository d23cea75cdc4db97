"""Self-signed TLS material for ``loom install``: the webhook's and the Loom server's.

For the webhook (``--generate-certs``): an ECDSA P-256 CA and a serving certificate for the
webhook Service's DNS names (``svc``, ``svc.ns``, ``svc.ns.svc``, ``svc.ns.svc.cluster.local``),
plus the host of ``connectInject.webhookUrl`` (an IP SAN for an address) when the API server
reaches the webhook by URL. For the server (TLS on the control plane, ``global.tls.enabled``,
on by default): a CA of its own and a certificate for the server Service's names, each
StatefulSet pod's name under the headless Service, Consul's ``server.<dc>.consul``, and
``localhost``/``127.0.0.1`` (the DNS proxy beside it). The CA's key is not kept: a new
certificate comes with a new ``loom install``. Random keys and the clock are inputs of this
module only, never of the renderer. Rotation: write a new Secret; the webhook reloads the
files when they change (the CA bundle must then be updated too).
"""

from __future__ import annotations

import datetime
import ipaddress
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from loom.inject import SettingsError
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
    names = webhook_dns_names(service, namespace)
    return _issue(f"{service} CA", names[2], subject_names(service, namespace, hosts), now,
                  validity)  # fmt: skip


def server_subject_names(name: str, namespace: str, datacenter: str) -> list[x509.GeneralName]:
    """What clients may call the Loom server of installation ``name``: its Service, each
    StatefulSet pod under the headless Service, Consul's ``server.<dc>.consul``, and the
    loopback names the DNS proxy in the same pod uses."""
    full = f"{name}-server"
    dns = [
        *webhook_dns_names(full, namespace),
        f"*.{full}-headless.{namespace}.svc",
        f"*.{full}-headless.{namespace}.svc.cluster.local",
        f"server.{datacenter}.consul",
        "localhost",
    ]
    return [*(x509.DNSName(n) for n in dns), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]


def generate_server_tls(
    name: str,
    namespace: str,
    datacenter: str,
    now: datetime.datetime,
    validity: datetime.timedelta = VALIDITY,
) -> TlsMaterial:
    """A new CA and the Loom server's certificate (HTTPS 8501, TLS gRPC 8503) signed by it."""
    names = server_subject_names(name, namespace, datacenter)
    return _issue(f"{name} server CA", f"{name}-server.{namespace}.svc", names, now, validity)


def _issue(
    ca_common_name: str,
    common_name: str,
    names: list[x509.GeneralName],
    now: datetime.datetime,
    validity: datetime.timedelta,
) -> TlsMaterial:
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, ca_common_name)])
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
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.SubjectAlternativeName(names), False)
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


def load_server_tls(cert_file: Path, key_file: Path, ca_file: Path) -> TlsMaterial:
    """The operator's server certificate, key and CA (``loom install --tls-cert-file``...),
    checked here rather than by a server that would not start: the key is the
    certificate's, and the CA signed it."""
    material = TlsMaterial(
        cert_pem=_read(cert_file, "--tls-cert-file"),
        key_pem=_read(key_file, "--tls-key-file"),
        ca_pem=_read(ca_file, "--tls-ca-file"),
    )
    try:
        cert = x509.load_pem_x509_certificate(material.cert_pem)
        key = serialization.load_pem_private_key(material.key_pem, password=None)
        ca = x509.load_pem_x509_certificate(material.ca_pem)
    except ValueError as exc:
        raise SettingsError(f"{cert_file}, {key_file}, {ca_file}: not PEM: {exc}") from exc
    same = serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    if key.public_key().public_bytes(*same) != cert.public_key().public_bytes(*same):
        raise SettingsError(f"{key_file}: not the key of {cert_file}")
    try:
        cert.verify_directly_issued_by(ca)
    except (ValueError, TypeError, InvalidSignature) as exc:
        raise SettingsError(f"{cert_file}: not signed by the CA in {ca_file}") from exc
    return material


def _read(path: Path, flag: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise SettingsError(f"{flag} {path}: {exc.strerror or exc}") from exc
