"""``loom install``'s Loom server: a StatefulSet, its Services, and the DNS proxy beside it.

One replica storing its state in SQLite on a PersistentVolumeClaim (``server.storage``,
``server.storageClass``, as consul-k8s's), or, with ``server.etcdEndpoints``
(``--etcd-endpoints``), any number (three by default) sharing one etcd, with no volume. The
Services: ``<name>-server`` (HTTP 8500, gRPC 8502: what ``server.httpAddr``/``grpcAddr`` name by
default), the headless ``<name>-server-headless`` the StatefulSet's pods are named under, and
``<name>-dns`` (53 UDP/TCP, consul-k8s's ``dns`` Service) answered by ``loom dns-proxy``
running in each server pod against its own server. With ACLs managed the server starts with
``--acl-default-policy deny`` and the bootstrap Secret's token as its initial management
token (the acl-init Job then makes the rest). Rendering is pure.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from loom.defaults import GRPC_PORT, HTTP_PORT
from loom.inject import ContainerResources, InjectSettings, SettingsError
from loom.inject.settings import ValuesReader
from loom.k8s.install_webhook import COMPONENT_LABEL, SERVER_COMPONENT
from loom.k8s.values import INSTALL_KEYS

DATA_DIR = "/var/lib/loom"
DNS_PORT = 8600
"""The DNS proxy's port in the server pod (Consul's DNS port), behind the Service's 53."""
NONROOT = 65532


@dataclass(frozen=True)
class ServerSettings:
    """``server.*`` values of ``loom install`` (consul-k8s's names where they exist)."""

    enabled: bool = True
    """``server.enabled``: render the Loom server (off: an existing one is used)."""
    replicas: int = 1
    """``server.replicas``: 1 with SQLite; with etcd, default 3."""
    storage: str = "10Gi"
    """``server.storage``: size of each replica's PersistentVolumeClaim (SQLite)."""
    storage_class: str = ""
    """``server.storageClass``: the claim's StorageClass (empty: the cluster's default)."""
    etcd_endpoints: tuple[str, ...] = ()
    """``server.etcdEndpoints``: store the state in etcd (IP:PORT each) instead of SQLite."""
    resources: ContainerResources = field(
        default_factory=lambda: ContainerResources("100m", "100m", "200Mi", "200Mi")
    )
    """``server.resources``: of the server container."""
    dns: bool = True
    """``dns.enabled``: the DNS proxy container and the ``<name>-dns`` Service."""

    @classmethod
    def from_values(cls, values: dict[str, Any]) -> ServerSettings:
        reader = ValuesReader(values, INSTALL_KEYS)
        default = cls()
        endpoints = reader.strings("server.etcdEndpoints", ())
        replicas = reader.get("server.replicas", int, 3 if endpoints else default.replicas)
        if replicas < 1:
            raise SettingsError(f"server.replicas: {replicas} is not a positive number")
        if replicas > 1 and not endpoints:
            raise SettingsError(
                f"server.replicas: {replicas} servers cannot share one SQLite file; "
                "give server.etcdEndpoints (--etcd-endpoints) for more than one"
            )
        return cls(
            enabled=reader.get("server.enabled", bool, default.enabled),
            replicas=replicas,
            storage=reader.get("server.storage", str, default.storage),
            storage_class=reader.get("server.storageClass", str, default.storage_class),
            etcd_endpoints=endpoints,
            resources=reader.resources("server.resources", default.resources),
            dns=reader.get("dns.enabled", bool, default.dns),
        )


def render_server(
    server: ServerSettings,
    inject: InjectSettings,
    name: str,
    namespace: str,
    datacenter: str,
    bootstrap_secret: str | None,
) -> list[dict[str, Any]]:
    """The server's Services and StatefulSet (``bootstrap_secret``: ACLs managed)."""
    full = f"{name}-server"
    labels = {"app.kubernetes.io/name": name, COMPONENT_LABEL: SERVER_COMPONENT}

    def service(svc: str, ports: list[dict[str, Any]], **spec: Any) -> dict[str, Any]:
        return {"apiVersion": "v1", "kind": "Service",
                "metadata": {"name": svc, "namespace": namespace, "labels": dict(labels)},
                "spec": {"selector": dict(labels), "ports": ports, **spec}}  # fmt: skip

    api_ports = [
        {"name": "http", "port": HTTP_PORT, "targetPort": HTTP_PORT},
        {"name": "grpc", "port": GRPC_PORT, "targetPort": GRPC_PORT},
    ]
    docs = [
        service(full, api_ports),
        service(f"{full}-headless", api_ports, clusterIP="None", publishNotReadyAddresses=True),
    ]
    if server.dns:
        docs.append(service(f"{name}-dns", [
            {"name": "dns-udp", "port": 53, "targetPort": DNS_PORT, "protocol": "UDP"},
            {"name": "dns-tcp", "port": 53, "targetPort": DNS_PORT, "protocol": "TCP"},
        ]))  # fmt: skip
    docs.append(_stateful_set(server, inject, full, namespace, labels, datacenter,
                              bootstrap_secret))  # fmt: skip
    return docs


def _stateful_set(
    server: ServerSettings,
    inject: InjectSettings,
    full: str,
    namespace: str,
    labels: dict[str, str],
    datacenter: str,
    bootstrap_secret: str | None,
) -> dict[str, Any]:
    store = (
        [f"--etcd-endpoints={','.join(server.etcd_endpoints)}"]
        if server.etcd_endpoints
        else [f"--data-dir={DATA_DIR}"]
    )
    args = [*store, f"--http-addr=0.0.0.0:{HTTP_PORT}", f"--grpc-addr=0.0.0.0:{GRPC_PORT}",
            f"--datacenter={datacenter}", "--node-name=$(POD_NAME)"]  # fmt: skip
    env: list[dict[str, Any]] = [
        {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}
    ]
    if bootstrap_secret is not None:
        env.append({"name": "LOOM_BOOTSTRAP_TOKEN", "valueFrom": {
            "secretKeyRef": {"name": bootstrap_secret, "key": "token"}}})  # fmt: skip
        args += ["--acl-default-policy=deny",
                 "--acl-initial-management-token=$(LOOM_BOOTSTRAP_TOKEN)"]  # fmt: skip
    hardened = {
        "runAsNonRoot": True,
        "runAsUser": NONROOT,
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "capabilities": {"drop": ["ALL"]},
    }
    probe = {"httpGet": {"path": "/v1/status/leader", "port": HTTP_PORT}, "periodSeconds": 5}
    container: dict[str, Any] = {
        "name": "server",
        "image": inject.images.loom,
        "command": ["loom", "server"],
        "args": args,
        "env": env,
        "ports": [
            {"name": "http", "containerPort": HTTP_PORT},
            {"name": "grpc", "containerPort": GRPC_PORT},
        ],
        "readinessProbe": probe,
        "livenessProbe": {**probe, "failureThreshold": 6},
        "securityContext": hardened,
    }
    resources = server.resources.to_k8s()
    if resources:
        container["resources"] = resources
    containers = [container]
    if server.dns:
        containers.append({
            "name": "dns-proxy",
            "image": inject.images.loom,
            "command": ["loom", "dns-proxy"],
            "args": [f"--server=127.0.0.1:{HTTP_PORT}", f"--listen=0.0.0.0:{DNS_PORT}",
                     f"--namespace={namespace}"],
            "ports": [{"name": "dns-udp", "containerPort": DNS_PORT, "protocol": "UDP"},
                      {"name": "dns-tcp", "containerPort": DNS_PORT, "protocol": "TCP"}],
            "securityContext": hardened,
        })  # fmt: skip
    spec: dict[str, Any] = {
        "serviceName": f"{full}-headless",
        "replicas": server.replicas,
        "podManagementPolicy": "Parallel",
        "selector": {"matchLabels": dict(labels)},
        "template": {
            "metadata": {
                "labels": dict(labels),
                "annotations": {"consul.hashicorp.com/connect-inject": "false"},
            },
            "spec": {
                "securityContext": {"fsGroup": NONROOT},
                "containers": containers,
            },
        },
    }
    if not server.etcd_endpoints:
        container["volumeMounts"] = [{"name": "data", "mountPath": DATA_DIR}]
        claim: dict[str, Any] = {
            "accessModes": ["ReadWriteOnce"],
            "resources": {"requests": {"storage": server.storage}},
        }
        if server.storage_class:
            claim["storageClassName"] = server.storage_class
        spec["volumeClaimTemplates"] = [{"metadata": {"name": "data"}, "spec": claim}]
    return {
        "apiVersion": "apps/v1",
        "kind": "StatefulSet",
        "metadata": {"name": full, "namespace": namespace, "labels": dict(labels)},
        "spec": spec,
    }
