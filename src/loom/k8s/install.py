"""``loom install``: the Kubernetes manifests that run the connect injector.

Renders, from the same Helm-style values as the injector: the Namespace, a ServiceAccount with
its ClusterRole/Binding (read access to namespaces, for the namespace-labels feed), a
ConfigMap holding the values (so the webhook runs with exactly these settings), the webhook
Deployment and Service, and the MutatingWebhookConfiguration for pod CREATE with
``failurePolicy`` from the values and a ``namespaceSelector`` that leaves out ``kube-system``,
``kube-public``, the deny list (and, when it is not ``*``, everything outside the allow list),
plus an ``objectSelector`` that keeps the injector from gating its own (and the controller's)
pods. The endpoints controller (``loom k8s controller``, which registers injected pods with
the server) gets its own ServiceAccount, a ClusterRole to get/list/watch pods, services and
namespaces, and a one-replica Deployment reading the same values ConfigMap.

ACLs (``global.acls.manageSystemACLs``, on unless the values say ``false``; the ConfigMap
carries the resulting value, so the webhook makes injected pods log in): Secrets with the
server's initial management token and the controller's token (UUIDs the caller generates,
like the certificates), a reviewer ServiceAccount bound to ``system:auth-delegator`` and to
``get`` on serviceaccounts with its long-lived token Secret, and the Job running ``loom k8s
acl-init`` (the auth method, binding rule, and the controller's least-privilege token; see
``acl_init.py``). The controller reads its token through ``LOOM_HTTP_TOKEN_FILE``; the webhook
needs none (it never calls the server). The server is not part of this installation: it runs
with ``--acl-default-policy deny --acl-initial-management-token`` from that Secret.

TLS: with ``--generate-certs`` (or ``connectInject.certs.caBundle`` + an existing Secret) the
CA bundle is in the webhook configuration; otherwise the configuration carries cert-manager's
``inject-ca-from`` annotation. Rendering is pure: the certificate material is an argument.
"""

from __future__ import annotations

import base64
import copy
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import yaml

from loom.defaults import WEBHOOK_PORT
from loom.domain.crds import CRD_KINDS, GROUP
from loom.inject import ContainerResources, InjectSettings, SettingsError
from loom.inject.decision import NEVER_INJECTED_NAMESPACES
from loom.inject.plan import POD_SECURITY_ENFORCE
from loom.inject.settings import DEFAULT_AUTH_METHOD, ValuesReader
from loom.k8s.admission import POD_SECURITY_PATH
from loom.k8s.crds import custom_resource_definitions
from loom.k8s.values import INSTALL_KEYS

TLS_DIR = "/etc/loom/tls"
MANAGED_TLS_DIR = "/run/loom/tls"
VALUES_DIR = "/etc/loom/values"
COMPONENT_LABEL = "app.kubernetes.io/component"
COMPONENT = "connect-injector"
CONTROLLER_COMPONENT = "endpoints-controller"
ACL_INIT_COMPONENT = "acl-init"
ACL_TOKEN_DIR = "/etc/loom/acl"
BOOTSTRAP_DIR = "/etc/loom/bootstrap"
REVIEWER_DIR = "/etc/loom/auth-method"
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


@dataclass(frozen=True)
class TlsMaterial:
    """A webhook serving certificate, its key and the CA that signed it (PEM)."""

    cert_pem: bytes
    key_pem: bytes
    ca_pem: bytes


def render(
    values: dict[str, Any],
    inject: InjectSettings,
    install: InstallSettings,
    tls: TlsMaterial | None = None,
    tokens: AclTokens | None = None,
) -> list[dict[str, Any]]:
    """Every manifest of the installation, in apply order (``tokens`` is needed when ACLs
    are managed)."""
    if install.manage_acls and tokens is None:
        raise SettingsError(f"{MANAGE_ACLS_KEY}: the installation's tokens are not given")
    name, ns = install.webhook_name, install.namespace
    labels = {"app.kubernetes.io/name": install.name, COMPONENT_LABEL: COMPONENT}
    docs: list[dict[str, Any]] = [
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}},
        *(
            custom_resource_definitions({"app.kubernetes.io/name": install.name})
            if install.crds
            else []
        ),
        *_webhook_account(install, labels, tls),
        {
            **_meta("v1", "ConfigMap", f"{name}-values", ns, labels),
            "data": {"values.yaml": yaml.safe_dump(with_acl_default(values), sort_keys=True)},
        },
    ]
    if tls is not None:
        docs.append(
            {
                **_meta("v1", "Secret", install.secret_name, ns, labels),
                "type": "kubernetes.io/tls",
                "data": {
                    "tls.crt": base64.b64encode(tls.cert_pem).decode(),
                    "tls.key": base64.b64encode(tls.key_pem).decode(),
                },
            }
        )
    docs.append(
        {
            **_meta("v1", "Service", name, ns, labels),
            "spec": {
                "selector": labels,
                "ports": [{"name": "https", "port": 443, "targetPort": WEBHOOK_PORT}],
            },
        }
    )
    docs.append(_deployment(install, inject, labels, install.manages_certs(tls)))
    if tokens is not None and install.manage_acls:
        docs.extend(_acls(install, inject, tokens))
    docs.extend(_controller(install, inject))
    docs.append(_webhook_configuration(install, inject, labels, tls))
    return docs


def _controller(install: InstallSettings, inject: InjectSettings) -> list[dict[str, Any]]:
    """The controller (endpoints and config-entry resources): its ServiceAccount, RBAC, the
    Role for its leader-election Lease, and the Deployment (``controller.replicas``, two by
    default, one leading)."""
    name, ns = install.controller_name, install.namespace
    labels = {"app.kubernetes.io/name": install.name, COMPONENT_LABEL: CONTROLLER_COMPONENT}
    args = [f"--http-addr={inject.server.http_addr}", f"--values={VALUES_DIR}/values.yaml",
            "--crds", f"--datacenter={install.datacenter}"]  # fmt: skip
    if install.controller_replicas > 1:
        args += ["--leader-elect", f"--leader-elect-resource-name={install.leader_lease}",
                 f"--leader-elect-resource-namespace={ns}"]  # fmt: skip
    container: dict[str, Any] = {
        "name": "controller",
        "image": inject.images.loom,
        "command": ["loom", "k8s", "controller"],
        "args": args,
        "env": [
            {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
            {
                "name": "POD_NAMESPACE",
                "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}},
            },
        ],
        "volumeMounts": [{"name": "values", "mountPath": VALUES_DIR, "readOnly": True}],
    }
    volumes = [{"name": "values", "configMap": {"name": f"{install.webhook_name}-values"}}]
    if install.manage_acls:
        container["env"].append({"name": "LOOM_HTTP_TOKEN_FILE", "value": f"{ACL_TOKEN_DIR}/token"})
        container["volumeMounts"].append(
            {"name": "acl-token", "mountPath": ACL_TOKEN_DIR, "readOnly": True}
        )
        volumes.append({"name": "acl-token", "secret": {"secretName": install.controller_secret}})
    deployment = _system_deployment(
        install, name, labels, install.controller_replicas, container, volumes
    )
    docs = _account(name, ns, labels, ["pods", "services", "namespaces"])
    docs[1]["rules"] += [
        {"apiGroups": [GROUP], "resources": [k.plural for k in CRD_KINDS.values()],
         "verbs": ["get", "list", "watch", "update", "patch"]},
        {"apiGroups": [GROUP], "resources": [f"{k.plural}/status" for k in CRD_KINDS.values()],
         "verbs": ["get", "update", "patch"]},
    ]  # fmt: skip
    rbac = "rbac.authorization.k8s.io/v1"
    lease_role = {
        **_meta(rbac, "Role", f"{name}-leader-election", ns, labels),
        "rules": [{"apiGroups": ["coordination.k8s.io"], "resources": ["leases"],
                   "verbs": ["get", "list", "watch", "create", "update", "patch"]}],
    }  # fmt: skip
    lease_binding = {
        **_meta(rbac, "RoleBinding", f"{name}-leader-election", ns, labels),
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role",
                    "name": f"{name}-leader-election"},
        "subjects": [{"kind": "ServiceAccount", "name": name, "namespace": ns}],
    }  # fmt: skip
    return [*docs, lease_role, lease_binding, deployment]


def _acls(
    install: InstallSettings, inject: InjectSettings, tokens: AclTokens
) -> list[dict[str, Any]]:
    """The token Secrets, the reviewer account (TokenReviews) and the acl-init Job."""
    ns, reviewer = install.namespace, install.reviewer_name
    labels = {"app.kubernetes.io/name": install.name, COMPONENT_LABEL: ACL_INIT_COMPONENT}
    rbac = "rbac.authorization.k8s.io/v1"

    def secret(name: str, token: str) -> dict[str, Any]:
        return {**_meta("v1", "Secret", name, ns, labels), "type": "Opaque",
                "data": {"token": base64.b64encode(token.encode()).decode()}}  # fmt: skip

    def binding(name: str, role: str) -> dict[str, Any]:
        return {
            **_meta(rbac, "ClusterRoleBinding", name, None, labels),
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "ClusterRole",
                "name": role,
            },
            "subjects": [{"kind": "ServiceAccount", "name": reviewer, "namespace": ns}],
        }

    reviewer_token = {
        **_meta("v1", "Secret", reviewer, ns, labels),
        "type": "kubernetes.io/service-account-token",
    }
    reviewer_token["metadata"]["annotations"] = {"kubernetes.io/service-account.name": reviewer}
    container: dict[str, Any] = {
        "name": "acl-init",
        "image": inject.images.loom,
        "command": ["loom", "k8s", "acl-init"],
        "args": [
            f"--http-addr={inject.server.http_addr}",
            f"--token-file={BOOTSTRAP_DIR}/token",
            "--kubernetes-host=https://kubernetes.default.svc",
            f"--kubernetes-ca-file={REVIEWER_DIR}/ca.crt",
            f"--reviewer-jwt-file={REVIEWER_DIR}/token",
            f"--controller-token-file={ACL_TOKEN_DIR}/token",
            f"--auth-method-name={inject.login.auth_method or DEFAULT_AUTH_METHOD}",
            f"--prefix={install.name}",
        ],
        "volumeMounts": [
            {"name": "bootstrap", "mountPath": BOOTSTRAP_DIR, "readOnly": True},
            {"name": "reviewer", "mountPath": REVIEWER_DIR, "readOnly": True},
            {"name": "controller", "mountPath": ACL_TOKEN_DIR, "readOnly": True},
        ],
    }
    volumes = [
        {"name": "bootstrap", "secret": {"secretName": install.bootstrap_secret}},
        {"name": "reviewer", "secret": {"secretName": reviewer}},
        {"name": "controller", "secret": {"secretName": install.controller_secret}},
    ]
    pod = _system_deployment(install, reviewer, labels, 1, container, volumes)["spec"]["template"]
    pod["spec"].update(restartPolicy="OnFailure", automountServiceAccountToken=False)
    job = {
        **_meta("batch/v1", "Job", f"{install.name}-acl-init", ns, labels),
        "spec": {"backoffLimit": 6, "template": pod},
    }
    return [
        secret(install.bootstrap_secret, tokens.management),
        secret(install.controller_secret, tokens.controller),
        _meta("v1", "ServiceAccount", reviewer, ns, labels),
        reviewer_token,
        {
            **_meta(rbac, "ClusterRole", reviewer, None, labels),
            "rules": [{"apiGroups": [""], "resources": ["serviceaccounts"], "verbs": ["get"]}],
        },
        binding(reviewer, reviewer),
        binding(f"{reviewer}-auth-delegator", "system:auth-delegator"),
        job,
    ]


def _webhook_account(
    install: InstallSettings, labels: dict[str, str], tls: TlsMaterial | None
) -> list[dict[str, Any]]:
    """The webhook's account: namespaces read, and its own webhook configuration updated
    when it manages its certificate (the CA bundle)."""
    docs = _account(install.webhook_name, install.namespace, labels, ["namespaces"])
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


def _account(
    name: str, namespace: str, labels: dict[str, str], readable: list[str]
) -> list[dict[str, Any]]:
    """A ServiceAccount with a ClusterRole (and its Binding) to read ``readable``."""
    return [
        _meta("v1", "ServiceAccount", name, namespace, labels),
        {
            **_meta("rbac.authorization.k8s.io/v1", "ClusterRole", name, None, labels),
            "rules": [
                {"apiGroups": [""], "resources": readable, "verbs": ["get", "list", "watch"]}
            ],
        },
        {
            **_meta("rbac.authorization.k8s.io/v1", "ClusterRoleBinding", name, None, labels),
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "ClusterRole",
                "name": name,
            },
            "subjects": [{"kind": "ServiceAccount", "name": name, "namespace": namespace}],
        },
    ]


def _system_deployment(
    install: InstallSettings,
    name: str,
    labels: dict[str, str],
    replicas: int,
    container: dict[str, Any],
    volumes: list[dict[str, Any]],
) -> dict[str, Any]:
    """A Deployment of one Loom system container (hardened, with the install's resources)
    running as the ServiceAccount ``name``; its pods are never injected."""
    container["securityContext"] = {
        "runAsNonRoot": True,
        "runAsUser": 65532,
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "capabilities": {"drop": ["ALL"]},
    }
    resources = install.resources.to_k8s()
    if resources:
        container["resources"] = resources
    return {
        **_meta("apps/v1", "Deployment", name, install.namespace, labels),
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": dict(labels)},
            "template": {
                "metadata": {
                    "labels": dict(labels),
                    # Loom's own pods are never injected.
                    "annotations": {"consul.hashicorp.com/connect-inject": "false"},
                },
                "spec": {
                    "serviceAccountName": name,
                    "containers": [container],
                    "volumes": volumes,
                },
            },
        },
    }


def _meta(
    api: str, kind: str, name: str, namespace: str | None, labels: dict[str, str]
) -> dict[str, Any]:
    metadata: dict[str, Any] = {"name": name, "labels": dict(labels)}
    if namespace is not None:
        metadata["namespace"] = namespace
    return {"apiVersion": api, "kind": kind, "metadata": metadata}


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
    return _system_deployment(
        install, install.webhook_name, labels, install.replicas, container, volumes
    )


def _webhook_configuration(
    install: InstallSettings,
    inject: InjectSettings,
    labels: dict[str, str],
    tls: TlsMaterial | None,
) -> dict[str, Any]:
    excluded = list(dict.fromkeys([*NEVER_INJECTED_NAMESPACES, *inject.deny_namespaces]))
    expressions: list[dict[str, Any]] = [
        {"key": "kubernetes.io/metadata.name", "operator": "NotIn", "values": excluded}
    ]
    if "*" not in inject.allow_namespaces:
        expressions.append(
            {
                "key": "kubernetes.io/metadata.name",
                "operator": "In",
                "values": list(inject.allow_namespaces),
            }
        )
    metadata: dict[str, Any] = {"name": install.webhook_name, "labels": dict(labels)}
    ca_bundle = base64.b64encode(tls.ca_pem).decode() if tls is not None else install.ca_bundle
    if not ca_bundle and install.cert_manager:
        metadata["annotations"] = {
            "cert-manager.io/inject-ca-from": f"{install.namespace}/{install.webhook_name}"
        }
    # The API server sends no namespace labels in a review: namespaces enforcing a
    # PodSecurity level are routed to a path naming it, so the webhook can refuse
    # transparent proxy there with the reason (see loom.inject.plan._refuse_pod_security).
    levels = ["baseline", "restricted"]
    routes = [("", "/mutate", {"key": POD_SECURITY_ENFORCE, "operator": "NotIn", "values": levels})]
    routes += [
        (f"-{level}", f"{POD_SECURITY_PATH}{level}",
         {"key": POD_SECURITY_ENFORCE, "operator": "In", "values": [level]})
        for level in levels
    ]  # fmt: skip
    webhooks = [
        _webhook(
            install,
            [*copy.deepcopy(expressions), selector],
            _client(install, path, ca_bundle),
            suffix,
        )
        for suffix, path, selector in routes
    ]
    return {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "MutatingWebhookConfiguration",
        "metadata": metadata,
        "webhooks": webhooks,
    }


def _client(install: InstallSettings, path: str, ca_bundle: str) -> dict[str, Any]:
    """``clientConfig``: the webhook Service, or ``connectInject.webhookUrl`` when set."""
    client: dict[str, Any]
    if install.webhook_url:
        client = {"url": install.webhook_url.rstrip("/") + path}
    else:
        client = {
            "service": {
                "name": install.webhook_name,
                "namespace": install.namespace,
                "path": path,
                "port": 443,
            }
        }
    if ca_bundle:
        client["caBundle"] = ca_bundle
    return client


def _webhook(
    install: InstallSettings,
    expressions: list[dict[str, Any]],
    client: dict[str, Any],
    suffix: str,
) -> dict[str, Any]:
    return {
        "name": f"{install.webhook_name}{suffix}.{install.name}.mesh",
        "admissionReviewVersions": ["v1"],
        "clientConfig": client,
        "rules": [
            {
                "operations": ["CREATE"],
                "apiGroups": [""],
                "apiVersions": ["v1"],
                "resources": ["pods"],
                "scope": "Namespaced",
            }
        ],
        "failurePolicy": install.failure_policy,
        "sideEffects": "None",
        "timeoutSeconds": 10,
        "reinvocationPolicy": "Never",
        "namespaceSelector": {"matchExpressions": expressions},
        "objectSelector": {
            "matchExpressions": [
                {
                    "key": COMPONENT_LABEL,
                    "operator": "NotIn",
                    "values": [COMPONENT, CONTROLLER_COMPONENT, ACL_INIT_COMPONENT],
                }
            ]
        },
    }
