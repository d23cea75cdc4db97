"""The injected sidecar: ``loom dataplane`` (which runs Envoy), one per service.

It runs as the proxy UID (excluded from redirection), reads its proxy ID from the file
connect-init wrote, connects to the server's HTTP and gRPC (xDS) addresses, and passes the
extra Envoy arguments after ``--``; when pods log in, its ACL token from the file connect-init
left (``--token-file``). Readiness is its public listener accepting connections.
Multi-port pods get one per service, named ``loom-dataplane-<service>``, each on its own
public port (20000, 20001, ...).
"""

from __future__ import annotations

from typing import Any

from loom.inject.env import downward_env
from loom.inject.metrics import dataplane_args
from loom.inject.plan import ServicePlan, WorkloadPlan
from loom.inject.settings import PROXY_UID, InjectSettings
from loom.inject.volumes import (
    DATA_DIR,
    acl_token_file,
    data_mount,
    proxy_id_file,
    server_ca_args,
    server_ca_env,
    server_ca_mounts,
)

SIDECAR_CONTAINER = "loom-dataplane"
"""Name of the sidecar container (``-<service>`` appended for multi-port pods)."""


def sidecar_container(
    plan: WorkloadPlan, service: ServicePlan, settings: InjectSettings
) -> dict[str, Any]:
    """The sidecar of ``service``."""
    args = [
        f"--proxy-id-file={DATA_DIR}/{proxy_id_file(service.suffix)}",
        f"--http-addr={settings.server.http_addr}",
        f"--grpc-addr={settings.server.grpc_addr}",
        *server_ca_args(settings.server_ca),
    ]
    if settings.login.auth_method is not None:
        args.append(f"--token-file={DATA_DIR}/{acl_token_file(service.suffix)}")
    if plan.redirect is not None and plan.redirect.dns_port is not None:
        args.append(f"--dns-port={plan.redirect.dns_port}")
    if plan.metrics is not None and service is plan.services[0]:
        args += dataplane_args(plan.metrics)
    if plan.envoy_extra_args:
        args += ["--", *plan.envoy_extra_args]
    container: dict[str, Any] = {
        "name": SIDECAR_CONTAINER + service.suffix,
        "image": settings.images.dataplane,
        "command": ["loom", "dataplane"],
        "args": args,
        "env": [*downward_env(), *server_ca_env(settings.server_ca)],
        "readinessProbe": {
            "tcpSocket": {"port": service.proxy_port},
            "initialDelaySeconds": 1,
            "periodSeconds": 5,
        },
        "securityContext": {
            "runAsUser": PROXY_UID,
            "runAsGroup": PROXY_UID,
            "runAsNonRoot": True,
            "allowPrivilegeEscalation": False,
            "capabilities": {"drop": ["ALL"]},
        },
        "volumeMounts": [data_mount(), *server_ca_mounts(settings.server_ca)],
    }
    resources = plan.sidecar_resources.to_k8s()
    if resources:
        container["resources"] = resources
    return container
