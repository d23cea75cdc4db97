"""The injected init container: ``loom k8s connect-init``, one per service.

It waits until the pod's service instance and its sidecar are registered, writes the proxy ID
into the shared volume and, with transparent proxy, installs the traffic redirection (so it
runs as root with ``NET_ADMIN``; otherwise as an unprivileged user). When pods log in
(``settings.login``), it is given the auth method and where to leave the token for the
sidecar, and the token goes to the sidecar's user. The plan's
``RedirectConfig`` travels as its ``to_flags()`` after ``--``, which connect-init parses back
with ``RedirectConfig.from_flags``. Multi-port pods get one
per service, named ``loom-connect-init-<service>``. It is appended after the pod's own init
containers, which therefore run before redirection is in place.
"""

from __future__ import annotations

from typing import Any

from loom.inject.env import downward_env
from loom.inject.plan import ServicePlan, WorkloadPlan
from loom.inject.settings import INIT_UID, PROXY_UID, InjectSettings
from loom.inject.volumes import (
    DATA_DIR,
    acl_token_file,
    data_mount,
    server_ca_args,
    server_ca_env,
    server_ca_mounts,
)

INIT_CONTAINER = "loom-connect-init"
"""Name of the init container (``-<service>`` appended for multi-port pods)."""


def init_container(
    plan: WorkloadPlan, service: ServicePlan, settings: InjectSettings
) -> dict[str, Any]:
    """The init container of ``service``."""
    args = [f"--http-addr={settings.server.http_addr}", f"--output-dir={DATA_DIR}",
            *server_ca_args(settings.server_ca)]  # fmt: skip
    if plan.multi_port:
        args.append(f"--service-name={service.name}")
    if plan.consul_namespace is not None:
        args.append(f"--consul-namespace={plan.consul_namespace}")
    login = settings.login.auth_method
    if login is not None:
        args += [
            f"--acl-auth-method={login}",
            f"--acl-token-sink={DATA_DIR}/{acl_token_file(service.suffix)}",
            f"--acl-token-owner={PROXY_UID}",
        ]
    if plan.redirect is not None:
        args += ["--", *plan.redirect.to_flags()]
    container: dict[str, Any] = {
        "name": INIT_CONTAINER + service.suffix,
        "image": settings.images.loom,
        "command": ["loom", "k8s", "connect-init"],
        "args": args,
        "env": [*downward_env(), *server_ca_env(settings.server_ca)],
        "securityContext": _security_context(plan.redirect is not None, login is not None),
        "volumeMounts": [data_mount(), *server_ca_mounts(settings.server_ca)],
    }
    resources = settings.init_resources.to_k8s()
    if resources:
        container["resources"] = resources
    return container


def _security_context(redirects: bool, logs_in: bool) -> dict[str, Any]:
    if redirects:
        # iptables in the pod's network namespace: root with NET_ADMIN, nothing else.
        return {
            "runAsUser": 0,
            "runAsGroup": 0,
            "runAsNonRoot": False,
            "privileged": False,
            "capabilities": {"add": ["NET_ADMIN"], "drop": ["ALL"]},
        }
    # A login token is written 0600 for the sidecar: without root to give it away, the init
    # container runs as the sidecar's user.
    uid = PROXY_UID if logs_in else INIT_UID
    return {
        "runAsUser": uid,
        "runAsGroup": uid,
        "runAsNonRoot": True,
        "allowPrivilegeEscalation": False,
        "capabilities": {"drop": ["ALL"]},
    }
