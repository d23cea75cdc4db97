"""``loom install``'s Loom server: a StatefulSet, its Services, and the DNS proxy beside it.

One replica storing its state in SQLite on a PersistentVolumeClaim (``server.storage``,
``server.storageClass``, as consul-k8s's), or, with ``server.etcdEndpoints``
(``--etcd-endpoints``), any number (three by default) sharing one etcd, with no volume. The
Services: ``<name>-server`` (HTTP 8500, gRPC 8502: what ``server.httpAddr``/``grpcAddr`` name by
default), the headless ``<name>-server-headless`` the StatefulSet's pods are named under, and
``<name>-dns`` (53 UDP/TCP, consul-k8s's ``dns`` Service) answered by ``loom dns-proxy``
running in each server pod against its own server. With ACLs managed the server starts with
``--acl-default-policy deny`` and the bootstrap Secret's token as its initial management
token (the acl-init Job then makes the rest). With TLS on (``install_tls.py``) the Services
and the server speak only HTTPS 8501 and TLS gRPC 8503 (``--no-http --no-grpc``) with the
certificate Secret, and the DNS proxy reaches it over https with the CA. Rendering is pure.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from loom.defaults import GRPC_PORT, HTTP_PORT
from loom.inject import ContainerResources, InjectSettings, SettingsError
from loom.inject.settings import TLS_GRPC_PORT, TLS_HTTP_PORT, ValuesReader
from loom.k8s.install_tls import SERVER_TLS_DIR, ca_file, mount_ca, server_cert_secret
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
    """The server's Services and StatefulSet (``bootstrap_secret``: ACLs managed; TLS when
    ``inject.server_ca`` is enabled)."""
    full = f"{name}-server"
    labels = {"app.kubernetes.io/name": name, COMPONENT_LABEL: SERVER_COMPONENT}

    def service(svc: str, ports: list[dict[str, Any]], **spec: Any) -> dict[str, Any]:
        return {"apiVersion": "v1", "kind": "Service",
                "metadata": {"name": svc, "namespace": namespace, "labels": dict(labels)},
                "spec": {"selector": dict(labels), "ports": ports, **spec}}  # fmt: skip

    api_ports = [
        {"name": port_name, "port": port, "targetPort": port}
        for port_name, port in _api_ports(inject)
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
    docs.append(_stateful_set(server, inject, name, namespace, labels, datacenter,
                              bootstrap_secret))  # fmt: skip
    return docs


def _api_ports(inject: InjectSettings) -> list[tuple[str, int]]:
    """The server's API ports: Consul's TLS ports with TLS on, else the plain ones."""
    if inject.server_ca.enabled:
        return [("https", TLS_HTTP_PORT), ("grpc-tls", TLS_GRPC_PORT)]
    return [("http", HTTP_PORT), ("grpc", GRPC_PORT)]


def _stateful_set(
    server: ServerSettings,
    inject: InjectSettings,
    name: str,
    namespace: str,
    labels: dict[str, str],
    datacenter: str,
    bootstrap_secret: str | None,
) -> dict[str, Any]:
    full = f"{name}-server"
    store = (
        [f"--etcd-endpoints={','.join(server.etcd_endpoints)}"]
        if server.etcd_endpoints
        else [f"--data-dir={DATA_DIR}"]
    )
    tls = inject.server_ca.enabled
    listen = (
        ["--no-http", "--no-grpc", f"--https-addr=0.0.0.0:{TLS_HTTP_PORT}",
         f"--grpc-tls-addr=0.0.0.0:{TLS_GRPC_PORT}", f"--tls-cert-file={SERVER_TLS_DIR}/tls.crt",
         f"--tls-key-file={SERVER_TLS_DIR}/tls.key"]
        if tls
        else [f"--http-addr=0.0.0.0:{HTTP_PORT}", f"--grpc-addr=0.0.0.0:{GRPC_PORT}"]
    )  # fmt: skip
    args = [*store, *listen, f"--datacenter={datacenter}", "--node-name=$(POD_NAME)"]
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
    ports = _api_ports(inject)
    get: dict[str, Any] = {"path": "/v1/status/leader", "port": ports[0][1]}
    if tls:
        get["scheme"] = "HTTPS"
    probe = {"httpGet": get, "periodSeconds": 5}
    container: dict[str, Any] = {
        "name": "server",
        "image": inject.images.loom,
        "command": ["loom", "server"],
        "args": args,
        "env": env,
        "ports": [{"name": port_name, "containerPort": port} for port_name, port in ports],
        "readinessProbe": probe,
        "livenessProbe": {**probe, "failureThreshold": 6},
        "securityContext": hardened,
    }
    resources = server.resources.to_k8s()
    if resources:
        container["resources"] = resources
    containers = [container]
    volumes: list[dict[str, Any]] = []
    if tls:
        container["volumeMounts"] = [
            {"name": "server-tls", "mountPath": SERVER_TLS_DIR, "readOnly": True}
        ]
        volumes.append({"name": "server-tls", "secret": {
            "secretName": server_cert_secret(name), "defaultMode": 0o440}})  # fmt: skip
    if server.dns:
        dns: dict[str, Any] = {
            "name": "dns-proxy",
            "image": inject.images.loom,
            "command": ["loom", "dns-proxy"],
            "args": [f"--server={'https://' if tls else ''}127.0.0.1:{ports[0][1]}",
                     f"--listen=0.0.0.0:{DNS_PORT}", f"--namespace={namespace}"],
            "ports": [{"name": "dns-udp", "containerPort": DNS_PORT, "protocol": "UDP"},
                      {"name": "dns-tcp", "containerPort": DNS_PORT, "protocol": "TCP"}],
            "securityContext": hardened,
        }  # fmt: skip
        if tls:
            dns["env"] = [{"name": "CONSUL_CACERT", "value": ca_file(inject.server_ca)}]
            mount_ca(dns, volumes, inject.server_ca)
        containers.append(dns)
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
                **({"volumes": volumes} if volumes else {}),
            },
        },
    }
    if not server.etcd_endpoints:
        container.setdefault("volumeMounts", []).append({"name": "data", "mountPath": DATA_DIR})
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
