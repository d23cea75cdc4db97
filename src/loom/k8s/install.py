"""``loom install``: the Kubernetes manifests of the whole system, in apply order.

From the same Helm-style values as the injector (consul-k8s's names where the concept is the
same): the Namespace; consul-k8s's CustomResourceDefinitions (``crds.py``); the webhook's
ServiceAccount and RBAC, the values ConfigMap (the webhook and controller run with exactly
these settings), its TLS Secret when certificates are generated, Service and Deployment; with
ACLs managed (``global.acls.manageSystemACLs``, on unless the values say ``false``) the token
Secrets, the TokenReview reviewer account and the acl-init Job (``install_parts.py``); the Loom
server's StatefulSet and Services (``install_server.py``); the controller with its RBAC and
leader-election Lease Role (``install_parts.py``); and the MutatingWebhookConfiguration
(``install_webhook.py``).

TLS on the control plane (``global.tls.enabled``, on unless the values say ``false``): the CA
and server certificate Secrets, and every client of the server on https with the CA
(``install_tls.py``). The webhook's own TLS: ``--generate-certs`` (or
``connectInject.certs.caBundle`` + an existing Secret) puts the CA bundle in the webhook
configuration; ``connectInject.certs.certManager`` leaves it to cert-manager's
``inject-ca-from``; otherwise the webhook makes, installs and rotates its own
(``webhook_certs.py``). Rendering is pure: certificate material and tokens are arguments.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import yaml

from loom.defaults import WEBHOOK_PORT
from loom.inject import ContainerResources, InjectSettings, SettingsError
from loom.inject.settings import ValuesReader
from loom.k8s.crds import custom_resource_definitions
from loom.k8s.install_common import account, meta, system_deployment
from loom.k8s.install_parts import VALUES_DIR, acls, controller
from loom.k8s.install_server import ServerSettings, render_server
from loom.k8s.install_tls import (
    check_material,
    tls_secrets,
    with_ca_pem,
    with_tls_default,
)
from loom.k8s.install_webhook import (
    COMPONENT,
    COMPONENT_LABEL,
    CONTROLLER_COMPONENT,
    SERVER_COMPONENT,
    webhook_configuration,
)
from loom.k8s.values import INSTALL_KEYS

TLS_DIR = "/etc/loom/tls"
MANAGED_TLS_DIR = "/run/loom/tls"
MANAGE_ACLS_KEY = "global.acls.manageSystemACLs"
WEBHOOK_URL_KEY = "connectInject.webhookUrl"


@dataclass(frozen=True)
class InstallSettings:
    """Install-only values (besides the injector's ``InjectSettings``)."""

    name: str = "loom"
    """``global.name``: prefix of every resource name."""
    namespace: str = "loom"
    """``global.namespace``: namespace the injector runs in."""
    replicas: int = 1
    """``connectInject.replicas``: webhook Deployment replicas."""
    failure_policy: str = "Fail"
    """``connectInject.failurePolicy``: ``Fail`` (no un-injected pods slip through while the
    webhook is down) or ``Ignore``."""
    secret_name: str = ""
    """``connectInject.certs.secretName``: TLS Secret of the webhook (default
    ``<name>-connect-injector-tls``)."""
    ca_bundle: str = ""
    """``connectInject.certs.caBundle``: base64 PEM CA that signed the webhook certificate."""
    resources: ContainerResources = field(
        default_factory=lambda: ContainerResources("50m", "50m", "200Mi", "200Mi")
    )
    """``connectInject.resources``: of the webhook container (Consul's defaults)."""
    manage_acls: bool = True
    """``global.acls.manageSystemACLs``: ACL Secrets, reviewer account and acl-init Job
    rendered, and injected pods log in (on by default in ``loom install``)."""
    cert_manager: bool = False
    """``connectInject.certs.certManager``: without a certificate, let cert-manager inject the
    CA (``inject-ca-from`` annotation; create the Certificate) instead of the webhook making
    and rotating its own."""
    controller_replicas: int = 2
    """``controller.replicas``: controller Deployment replicas; above one they elect a leader
    on a Lease (``--leader-elect``)."""
    datacenter: str = "dc1"
    """``global.datacenter``: marked on the config entries made from resources."""
    crds: bool = True
    """``controller.crds.install``: render the consul.hashicorp.com CRDs (off when another
    installation, consul-k8s's own, already owns them)."""
    webhook_url: str = ""
    """``connectInject.webhookUrl`` (``--webhook-url``): ``https://HOST:PORT`` the API server
    reaches the webhook at, rendered as ``clientConfig.url`` (empty: the webhook Service);
    ``--generate-certs`` then adds HOST to the certificate (an IP SAN for an address)."""

    def manages_certs(self, tls: TlsMaterial | None) -> bool:
        """The webhook makes its own certificate: none generated, given, or cert-manager's."""
        return tls is None and not self.ca_bundle and not self.cert_manager

    @property
    def leader_lease(self) -> str:
        return f"{self.name}-controller-leader"

    @property
    def webhook_host(self) -> str:
        """The host of ``webhook_url`` (brackets of an IPv6 address removed); empty without."""
        if not self.webhook_url:
            return ""
        return urlsplit(self.webhook_url).hostname or ""

    @property
    def bootstrap_secret(self) -> str:
        return f"{self.name}-bootstrap-acl-token"

    @property
    def controller_secret(self) -> str:
        return f"{self.name}-controller-acl-token"

    @property
    def reviewer_name(self) -> str:
        return f"{self.name}-auth-method"

    @property
    def webhook_name(self) -> str:
        return f"{self.name}-connect-injector"

    @property
    def controller_name(self) -> str:
        return f"{self.name}-{CONTROLLER_COMPONENT}"

    @classmethod
    def from_values(cls, values: dict[str, Any]) -> InstallSettings:
        reader = ValuesReader(values, INSTALL_KEYS)
        default = cls()
        name = reader.get("global.name", str, default.name)
        policy = reader.get("connectInject.failurePolicy", str, default.failure_policy)
        if policy not in ("Fail", "Ignore"):
            raise SettingsError(f"connectInject.failurePolicy: {policy!r} is not Fail or Ignore")
        return cls(
            name=name,
            namespace=reader.get("global.namespace", str, default.namespace),
            replicas=reader.get("connectInject.replicas", int, default.replicas),
            failure_policy=policy,
            secret_name=reader.get(
                "connectInject.certs.secretName", str, f"{name}-connect-injector-tls"
            ),
            ca_bundle=reader.get("connectInject.certs.caBundle", str, ""),
            cert_manager=reader.get("connectInject.certs.certManager", bool, False),
            resources=reader.resources("connectInject.resources", default.resources),
            manage_acls=reader.get(MANAGE_ACLS_KEY, bool, default.manage_acls),
            webhook_url=_webhook_url(reader.get(WEBHOOK_URL_KEY, str, "")),
            controller_replicas=reader.get("controller.replicas", int, default.controller_replicas),
            datacenter=reader.get("global.datacenter", str, default.datacenter),
            crds=reader.get("controller.crds.install", bool, default.crds),
        )


def _webhook_url(url: str) -> str:
    if not url:
        return url
    parts = urlsplit(url)
    if parts.scheme != "https" or not parts.hostname or parts.query or parts.fragment:
        raise SettingsError(f"{WEBHOOK_URL_KEY}: {url!r} is not https://HOST[:PORT][/PATH]")
    return url


@dataclass(frozen=True)
class AclTokens:
    """SecretIDs of the installation's tokens (UUIDs the caller generates)."""

    management: str
    """The server's initial management token (acl-init's)."""
    controller: str
    """The endpoints controller's token (made by acl-init with this SecretID)."""


def with_acl_default(values: dict[str, Any]) -> dict[str, Any]:
    """``values`` with ``global.acls.manageSystemACLs: true`` unless it is set."""
    glob = values.get("global")
    glob = dict(glob) if isinstance(glob, dict) else {}
    acls = glob.get("acls")
    acls = dict(acls) if isinstance(acls, dict) else {}
    if "manageSystemACLs" in acls:
        return values
    acls["manageSystemACLs"] = True
    return {**values, "global": {**glob, "acls": acls}}


def with_install_defaults(values: dict[str, Any]) -> dict[str, Any]:
    """``values`` with ``loom install``'s secure defaults: ACLs managed, TLS on."""
    return with_tls_default(with_acl_default(values))


@dataclass(frozen=True)
class TlsMaterial:
    """A serving certificate (the webhook's or the server's), its key and the CA that
    signed it (PEM)."""

    cert_pem: bytes
    key_pem: bytes
    ca_pem: bytes


def render(
    values: dict[str, Any],
    inject: InjectSettings,
    install: InstallSettings,
    tls: TlsMaterial | None = None,
    tokens: AclTokens | None = None,
    server_tls: TlsMaterial | None = None,
) -> list[dict[str, Any]]:
    """Every manifest of the installation, in apply order (``tokens`` is needed when ACLs
    are managed, ``server_tls`` when ``inject`` has TLS on and the server is rendered).
    ``inject`` decides TLS: ``settings_from(with_install_defaults(values))`` has it on."""
    if install.manage_acls and tokens is None:
        raise SettingsError(f"{MANAGE_ACLS_KEY}: the installation's tokens are not given")
    server = ServerSettings.from_values(values)
    check_material(inject, server.enabled, server_tls)
    tls_on = inject.server_ca.enabled
    name, ns = install.webhook_name, install.namespace
    labels = {"app.kubernetes.io/name": install.name, COMPONENT_LABEL: COMPONENT}
    shown = (with_install_defaults if tls_on else with_acl_default)(values)
    if tls_on and server_tls is not None:
        shown = with_ca_pem(shown, server_tls)
    docs: list[dict[str, Any]] = [
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}},
        *(
            custom_resource_definitions({"app.kubernetes.io/name": install.name})
            if install.crds
            else []
        ),
        *_webhookaccount(install, labels, tls),
        {
            **meta("v1", "ConfigMap", f"{name}-values", ns, labels),
            "data": {"values.yaml": yaml.safe_dump(shown, sort_keys=True)},
        },
    ]  # fmt: skip
    if server_tls is not None:
        server_labels = {**labels, COMPONENT_LABEL: SERVER_COMPONENT}
        docs.extend(tls_secrets(install.name, ns, inject.server_ca, server_tls, server_labels,
                                server.enabled))  # fmt: skip
    if tls is not None:
        docs.append(
            {
                **meta("v1", "Secret", install.secret_name, ns, labels),
                "type": "kubernetes.io/tls",
                "data": {
                    "tls.crt": base64.b64encode(tls.cert_pem).decode(),
                    "tls.key": base64.b64encode(tls.key_pem).decode(),
                },
            }
        )
    docs.append(
        {
            **meta("v1", "Service", name, ns, labels),
            "spec": {
                "selector": labels,
                "ports": [{"name": "https", "port": 443, "targetPort": WEBHOOK_PORT}],
            },
        }
    )
    docs.append(_deployment(install, inject, labels, install.manages_certs(tls)))
    if tokens is not None and install.manage_acls:
        docs.extend(acls(install, inject, tokens))
    if server.enabled:
        bootstrap = install.bootstrap_secret if install.manage_acls else None
        docs.extend(render_server(server, inject, install.name, ns, install.datacenter, bootstrap))
    docs.extend(controller(install, inject))
    docs.append(webhook_configuration(install, inject, labels, tls))
    return docs


def _webhookaccount(
    install: InstallSettings, labels: dict[str, str], tls: TlsMaterial | None
) -> list[dict[str, Any]]:
    """The webhook's account: namespaces read, and its own webhook configuration updated
    when it manages its certificate (the CA bundle)."""
    docs = account(install.webhook_name, install.namespace, labels, ["namespaces"])
    if install.manages_certs(tls):
        docs[1]["rules"].append(
            {
                "apiGroups": ["admissionregistration.k8s.io"],
                "resources": ["mutatingwebhookconfigurations"],
                "resourceNames": [install.webhook_name],
                "verbs": ["get", "update"],
            }
        )
    return docs


def _deployment(
    install: InstallSettings, inject: InjectSettings, labels: dict[str, str], managed: bool
) -> dict[str, Any]:
    probe = {
        "httpGet": {"path": "/healthz", "port": WEBHOOK_PORT, "scheme": "HTTPS"},
        "periodSeconds": 5,
    }
    container: dict[str, Any] = {
        "name": "webhook",
        "image": inject.images.loom,
        "command": ["loom", "k8s", "webhook"],
        "args": [
            f"--tls-cert={TLS_DIR}/tls.crt",
            f"--tls-key={TLS_DIR}/tls.key",
            f"--listen=0.0.0.0:{WEBHOOK_PORT}",
            f"--values={VALUES_DIR}/values.yaml",
        ],
        "ports": [{"name": "https", "containerPort": WEBHOOK_PORT}],
        "readinessProbe": probe,
        "livenessProbe": {**probe, "failureThreshold": 3},
        "volumeMounts": [
            {"name": "tls", "mountPath": TLS_DIR, "readOnly": True},
            {"name": "values", "mountPath": VALUES_DIR, "readOnly": True},
        ],
    }
    volumes = [
        {"name": "tls", "secret": {"secretName": install.secret_name}},
        {"name": "values", "configMap": {"name": f"{install.webhook_name}-values"}},
    ]
    if managed:
        # The webhook makes, installs and rotates its own certificate (webhook_certs.py).
        container["args"][:2] = [
            f"--webhook-config={install.webhook_name}",
            f"--cert-dir={MANAGED_TLS_DIR}",
            f"--service={install.webhook_name}",
            f"--service-namespace={install.namespace}",
            *([f"--cert-host={install.webhook_host}"] if install.webhook_host else []),
        ]
        container["volumeMounts"][0] = {"name": "tls", "mountPath": MANAGED_TLS_DIR}
        volumes[0] = {"name": "tls", "emptyDir": {"medium": "Memory"}}
    return system_deployment(
        install, install.webhook_name, labels, install.replicas, container, volumes
    )
