"""Webhook certificates managed by Loom (consul-k8s's webhook-cert-manager, in the webhook).

With ``loom k8s webhook --webhook-config NAME --cert-dir DIR`` the webhook needs no mounted
certificate: at start (when DIR holds none, or one close to expiry) it makes a self-signed CA
and a serving certificate for the webhook Service's names and the host of
``connectInject.webhookUrl``, and keeps them current:

1. the new CA is added to ``caBundle`` of every webhook of the MutatingWebhookConfiguration
   NAME (a compare-and-swap on its ``resourceVersion``, retried on conflict), keeping the CAs
   already there that are still valid (the previous one, other replicas' own) and dropping
   expired ones;
2. only then are the certificate files replaced (atomically), and the running webhook's file
   watch installs them in the live TLS context.

So the API server trusts both the old and the new certificate while the switch happens, and
no admission fails because of a rotation. Rotation happens ``renew_before`` ahead of expiry,
checked every ``check_interval`` seconds. Each replica keeps its own CA in the bundle (the
bundle holds at most ``MAX_BUNDLE`` certificates, newest first).
"""

from __future__ import annotations

import asyncio
import base64
import datetime
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from lightkube import AsyncClient
from lightkube.core.exceptions import ApiError
from lightkube.generic_resource import create_global_resource

from loom.k8s.certs import generate_tls
from loom.k8s.errors import K8sError

log = logging.getLogger("loom.k8s.webhook")

MutatingWebhookConfiguration = create_global_resource(
    "admissionregistration.k8s.io", "v1", "MutatingWebhookConfiguration",
    "mutatingwebhookconfigurations",
)  # fmt: skip
MAX_BUNDLE = 8
"""CA certificates kept in a caBundle at most (newest first)."""


@dataclass(frozen=True)
class CertManagerConfig:
    """Which webhook configuration to patch, where the files go, and the lifetimes."""

    webhook_config: str
    """Name of the MutatingWebhookConfiguration whose ``caBundle`` is kept."""
    cert_dir: Path
    """Writable directory of ``ca.crt``, ``tls.crt`` and ``tls.key``."""
    service: str
    """The webhook Service (its DNS names go in the certificate)."""
    namespace: str
    """The webhook's namespace."""
    hosts: tuple[str, ...] = ()
    """Extra names: the host of a webhook URL (an IP SAN for an address)."""
    validity: float = 365 * 86400.0
    """Seconds a generated CA and certificate are valid."""
    renew_before: float = 30 * 86400.0
    """Rotate this many seconds before expiry."""
    check_interval: float = 60.0
    """Seconds between expiry checks."""
    kubeconfig: str | None = None
    """Kubeconfig file; None: in-cluster, else ``~/.kube/config``."""


def merge_bundle(existing: str, new_ca: bytes, now: datetime.datetime) -> str:
    """``caBundle`` (base64 PEM) holding ``new_ca`` first, then the still-valid CAs of
    ``existing`` (a base64 PEM bundle; empty or unreadable: none), ``MAX_BUNDLE`` at most."""
    keep: list[x509.Certificate] = [x509.load_pem_x509_certificate(new_ca)]
    try:
        old = x509.load_pem_x509_certificates(base64.b64decode(existing)) if existing else []
    except ValueError:
        old = []
    for cert in old:
        if cert.not_valid_after_utc > now and cert not in keep:
            keep.append(cert)
    pem = b"".join(c.public_bytes(Encoding.PEM) for c in keep[:MAX_BUNDLE])
    return base64.b64encode(pem).decode()


class WebhookCertManager:
    """Makes, installs and rotates the webhook's certificate (see the module docstring)."""

    def __init__(self, config: CertManagerConfig, client: AsyncClient) -> None:
        self.config, self.client = config, client
        self.cert_file = config.cert_dir / "tls.crt"
        self.key_file = config.cert_dir / "tls.key"
        self.ca_file = config.cert_dir / "ca.crt"

    def expires(self) -> datetime.datetime | None:
        """When the current certificate expires; None when there is none (or unreadable)."""
        try:
            cert = x509.load_pem_x509_certificate(self.cert_file.read_bytes())
        except (OSError, ValueError):
            return None
        return cert.not_valid_after_utc

    def due(self, now: datetime.datetime) -> bool:
        expires = self.expires()
        renew = datetime.timedelta(seconds=self.config.renew_before)
        return expires is None or expires - renew <= now

    async def ensure(self) -> bool:
        """Make and install a certificate when there is none or it is due; True if it did."""
        now = datetime.datetime.now(datetime.UTC)
        if not self.due(now):
            return False
        cfg = self.config
        tls = generate_tls(cfg.service, cfg.namespace, now, cfg.hosts,
                           datetime.timedelta(seconds=cfg.validity))  # fmt: skip
        await self._add_to_bundle(tls.ca_pem, now)
        cfg.cert_dir.mkdir(parents=True, exist_ok=True)
        _replace(self.ca_file, tls.ca_pem)
        _replace(self.key_file, tls.key_pem, 0o600)
        _replace(self.cert_file, tls.cert_pem)
        log.info("installed a new webhook certificate (expires %s); caBundle of %s updated",
                 self.expires(), cfg.webhook_config)  # fmt: skip
        return True

    async def run(self) -> None:
        """Rotate before expiry, forever (failures are logged and retried)."""
        while True:
            await asyncio.sleep(self.config.check_interval)
            try:
                await self.ensure()
            except K8sError as exc:
                log.error("webhook certificate rotation failed: %s; retrying", exc)

    async def _add_to_bundle(self, ca_pem: bytes, now: datetime.datetime) -> None:
        name = self.config.webhook_config
        for _ in range(10):
            try:
                found: Any = await self.client.get(MutatingWebhookConfiguration, name)
                doc: dict[str, Any] = found.to_dict()
                for hook in doc.get("webhooks") or []:
                    client = hook.setdefault("clientConfig", {})
                    client["caBundle"] = merge_bundle(client.get("caBundle", ""), ca_pem, now)
                await self.client.replace(MutatingWebhookConfiguration.from_dict(doc))
                return
            except ApiError as exc:
                if exc.status.code == 409:
                    continue  # changed meanwhile (another replica): read it again
                raise K8sError(
                    f"mutatingwebhookconfiguration {name}: {exc.status.message}"
                ) from exc
            except Exception as exc:  # unreachable API server, bad kubeconfig
                raise K8sError(f"mutatingwebhookconfiguration {name}: {exc}") from exc
        raise K8sError(f"mutatingwebhookconfiguration {name}: kept changing; not updated")


def _replace(path: Path, data: bytes, mode: int = 0o644) -> None:
    tmp = path.with_name(f".{path.name}.new")
    tmp.write_bytes(data)
    os.chmod(tmp, mode)
    os.replace(tmp, path)
