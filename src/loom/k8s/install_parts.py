"""``loom install``'s controller and ACL set-up: ServiceAccounts, RBAC, Deployment and Job.

The controller (endpoints and config-entry resources, ``loom k8s controller --crds``) gets
read access to pods, services and namespaces, read-write access to the consul.hashicorp.com
resources and their status, a Role on its leader-election Lease, and ``controller.replicas``
(two) replicas electing a leader. With ACLs managed: the token Secrets, the TokenReview
reviewer account and the ``loom k8s acl-init`` Job. With TLS on, both reach the server over
https and verify it with the CA Secret (``--ca-file``, ``install_tls.py``).
"""

from __future__ import annotations

import base64
from typing import TYPE_CHECKING, Any

from loom.domain.crds import CRD_KINDS, GROUP
from loom.inject import InjectSettings
from loom.inject.settings import DEFAULT_AUTH_METHOD
from loom.k8s.install_common import account, meta, system_deployment
from loom.k8s.install_tls import ca_file, mount_ca
from loom.k8s.install_webhook import ACL_INIT_COMPONENT, COMPONENT_LABEL, CONTROLLER_COMPONENT

if TYPE_CHECKING:
    from loom.k8s.install import AclTokens, InstallSettings

VALUES_DIR = "/etc/loom/values"
ACL_TOKEN_DIR = "/etc/loom/acl"
BOOTSTRAP_DIR = "/etc/loom/bootstrap"
REVIEWER_DIR = "/etc/loom/auth-method"


def controller(install: InstallSettings, inject: InjectSettings) -> list[dict[str, Any]]:
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
    _verify_server(container, volumes, inject)
    deployment = system_deployment(
        install, name, labels, install.controller_replicas, container, volumes
    )
    docs = account(name, ns, labels, ["pods", "services", "namespaces"])
    docs[1]["rules"] += [
        {"apiGroups": [GROUP], "resources": [k.plural for k in CRD_KINDS.values()],
         "verbs": ["get", "list", "watch", "update", "patch"]},
        {"apiGroups": [GROUP], "resources": [f"{k.plural}/status" for k in CRD_KINDS.values()],
         "verbs": ["get", "update", "patch"]},
    ]  # fmt: skip
    rbac = "rbac.authorization.k8s.io/v1"
    lease_role = {
        **meta(rbac, "Role", f"{name}-leader-election", ns, labels),
        "rules": [{"apiGroups": ["coordination.k8s.io"], "resources": ["leases"],
                   "verbs": ["get", "list", "watch", "create", "update", "patch"]}],
    }  # fmt: skip
    lease_binding = {
        **meta(rbac, "RoleBinding", f"{name}-leader-election", ns, labels),
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role",
                    "name": f"{name}-leader-election"},
        "subjects": [{"kind": "ServiceAccount", "name": name, "namespace": ns}],
    }  # fmt: skip
    return [*docs, lease_role, lease_binding, deployment]


def acls(
    install: InstallSettings, inject: InjectSettings, tokens: AclTokens
) -> list[dict[str, Any]]:
    """The token Secrets, the reviewer account (TokenReviews) and the acl-init Job."""
    ns, reviewer = install.namespace, install.reviewer_name
    labels = {"app.kubernetes.io/name": install.name, COMPONENT_LABEL: ACL_INIT_COMPONENT}
    rbac = "rbac.authorization.k8s.io/v1"

    def secret(name: str, token: str) -> dict[str, Any]:
        return {**meta("v1", "Secret", name, ns, labels), "type": "Opaque",
                "data": {"token": base64.b64encode(token.encode()).decode()}}  # fmt: skip

    def binding(name: str, role: str) -> dict[str, Any]:
        return {
            **meta(rbac, "ClusterRoleBinding", name, None, labels),
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "ClusterRole",
                "name": role,
            },
            "subjects": [{"kind": "ServiceAccount", "name": reviewer, "namespace": ns}],
        }

    reviewer_token = {
        **meta("v1", "Secret", reviewer, ns, labels),
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
    _verify_server(container, volumes, inject)
    pod = system_deployment(install, reviewer, labels, 1, container, volumes)["spec"]["template"]
    pod["spec"].update(restartPolicy="OnFailure", automountServiceAccountToken=False)
    job = {
        **meta("batch/v1", "Job", f"{install.name}-acl-init", ns, labels),
        "spec": {"backoffLimit": 6, "template": pod},
    }
    return [
        secret(install.bootstrap_secret, tokens.management),
        secret(install.controller_secret, tokens.controller),
        meta("v1", "ServiceAccount", reviewer, ns, labels),
        reviewer_token,
        {
            **meta(rbac, "ClusterRole", reviewer, None, labels),
            "rules": [{"apiGroups": [""], "resources": ["serviceaccounts"], "verbs": ["get"]}],
        },
        binding(reviewer, reviewer),
        binding(f"{reviewer}-auth-delegator", "system:auth-delegator"),
        job,
    ]


def _verify_server(
    container: dict[str, Any], volumes: list[dict[str, Any]], inject: InjectSettings
) -> None:
    """With TLS on: ``--ca-file`` of the CA Secret, mounted read-only."""
    if inject.server_ca.enabled:
        container["args"].insert(1, f"--ca-file={ca_file(inject.server_ca)}")
        mount_ca(container, volumes, inject.server_ca)
