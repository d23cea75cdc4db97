"""``loom install``'s MutatingWebhookConfiguration: which pods go to the webhook, and how.

Pod CREATE only, ``failurePolicy`` from the values, ``sideEffects: None``, a
``namespaceSelector`` leaving out ``kube-system``, ``kube-public`` and the deny list (and,
when it is not ``*``, everything outside the allow list), and an ``objectSelector`` that keeps
the webhook from gating Loom's own pods. Three webhooks on the same endpoint: namespaces that
enforce a PodSecurity level (``baseline``, ``restricted``) go to a path naming it, since the
API server sends no namespace labels in a review. The endpoint is the webhook Service, or
``connectInject.webhookUrl``; the CA is the generated or given bundle, cert-manager's
annotation, or left to the webhook itself (which then patches it in).
"""

from __future__ import annotations

import base64
import copy
from typing import TYPE_CHECKING, Any

from loom.inject import InjectSettings
from loom.inject.decision import NEVER_INJECTED_NAMESPACES
from loom.inject.plan import POD_SECURITY_ENFORCE
from loom.k8s.admission import POD_SECURITY_PATH

if TYPE_CHECKING:
    from loom.k8s.install import InstallSettings, TlsMaterial

COMPONENT_LABEL = "app.kubernetes.io/component"
COMPONENT = "connect-injector"
CONTROLLER_COMPONENT = "endpoints-controller"
ACL_INIT_COMPONENT = "acl-init"
SERVER_COMPONENT = "server"
"""The ``app.kubernetes.io/component`` of each of Loom's own pods (never sent to the webhook)."""


def webhook_configuration(
    install: InstallSettings,
    inject: InjectSettings,
    labels: dict[str, str],
    tls: TlsMaterial | None,
) -> dict[str, Any]:
    """The MutatingWebhookConfiguration of the installation."""
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
                    "values": [
                        COMPONENT,
                        CONTROLLER_COMPONENT,
                        ACL_INIT_COMPONENT,
                        SERVER_COMPONENT,
                    ],
                }
            ]
        },
    }
