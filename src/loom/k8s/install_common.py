"""Pieces every part of ``loom install`` builds with: object metadata, a ServiceAccount with
read RBAC, and the hardened Deployment of one Loom system container."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from loom.k8s.install import InstallSettings


def account(
    name: str, namespace: str, labels: dict[str, str], readable: list[str]
) -> list[dict[str, Any]]:
    """A ServiceAccount with a ClusterRole (and its Binding) to read ``readable``."""
    return [
        meta("v1", "ServiceAccount", name, namespace, labels),
        {
            **meta("rbac.authorization.k8s.io/v1", "ClusterRole", name, None, labels),
            "rules": [
                {"apiGroups": [""], "resources": readable, "verbs": ["get", "list", "watch"]}
            ],
        },
        {
            **meta("rbac.authorization.k8s.io/v1", "ClusterRoleBinding", name, None, labels),
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "ClusterRole",
                "name": name,
            },
            "subjects": [{"kind": "ServiceAccount", "name": name, "namespace": namespace}],
        },
    ]


def system_deployment(
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
        **meta("apps/v1", "Deployment", name, install.namespace, labels),
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


def meta(
    api: str, kind: str, name: str, namespace: str | None, labels: dict[str, str]
) -> dict[str, Any]:
    metadata: dict[str, Any] = {"name": name, "labels": dict(labels)}
    if namespace is not None:
        metadata["namespace"] = namespace
    return {"apiVersion": api, "kind": kind, "metadata": metadata}
