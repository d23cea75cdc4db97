"""Settings of one local mesh (one datacenter of ``loom local``) and the paths they imply.

Kept apart from ``mesh.py`` (the runtime) so the server, gateway and Prometheus modules can
take a ``LocalSettings`` without importing the runtime. A datacenter other than the default
one gets its names from ``datacenters.py``; ``primary_datacenter``, ``join_wan`` and ``wan``
make its server federated and give its mesh gateway a WAN address.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

from loom.defaults import GRPC_ADDR, HTTP_ADDR
from loom.inject import InjectSettings
from loom.local import datacenters, uids
from loom.local.datacenters import DEFAULT_DATACENTER, BaseLayout, WanLayout
from loom.local.netns import LocalNetSettings


@dataclass(frozen=True)
class LocalSettings:
    """One datacenter of the local mesh: its network, server and pods."""

    net: LocalNetSettings = field(default_factory=LocalNetSettings)
    """Namespaces, bridge, subnet and state directory (``/run/loom/local``)."""
    http_addr: str = HTTP_ADDR
    """The local server's HTTP API on loopback, for the CLI on this machine."""
    grpc_addr: str = GRPC_ADDR
    """Its xDS endpoint on loopback (sidecars use the unix socket)."""
    data_dir: Path | None = Path("/var/lib/loom/local")
    """The local server's durable store; None for an in-memory one."""
    acl_default_policy: str | None = "deny"
    """The ACL default policy (``allow`` or ``deny``); None turns ACLs off."""
    default_policy: str | None = None
    """Intention default policy; None follows the ACL default (``allow`` with ACLs off)."""
    inject: InjectSettings = field(default_factory=InjectSettings)
    """Injection settings: the same defaults as the Kubernetes injector."""
    ready_timeout_s: float = 60.0
    """How long a sidecar may take to become ready."""
    envoy_concurrency: int = 2
    """Envoy worker threads per sidecar (the dataplane's ``--envoy-concurrency``); 2 as the
    dataplane's default: with 1, added p99 pod to pod was +1.35-1.91 ms, with 2 +0.64-0.90."""
    prometheus: bool = False
    """``up`` runs a Prometheus scraping every pod's sidecar (``prometheus.py``)."""
    prometheus_addr: str = "127.0.0.1:9090"
    """Where that Prometheus answers on the host's loopback."""
    sidecar_uids: uids.UidRange = field(default_factory=uids.UidRange)
    """The UIDs the pods' sidecars run as, one per pod (``uids.py``)."""
    datacenter: str = DEFAULT_DATACENTER
    """The datacenter this mesh is (its server's ``--datacenter``)."""
    primary_datacenter: str = ""
    """The federation's primary datacenter; empty: this one (a mesh of its own)."""
    join_wan: tuple[str, ...] = ()
    """HTTP API addresses (HOST:PORT) of other datacenters' servers this server joins."""
    management_token_source: Path | None = None
    """A secondary's management token is the primary's (ACLs are federated): copied from this
    file at its first ``up``, and also its server's replication token. None: a token of its
    own."""
    wan: WanLayout | None = None
    """The WAN its mesh gateway sits on; None: this mesh has no gateway (one datacenter)."""
    wan_index: int = 0
    """Its place on the WAN (``datacenters.index_of``): the gateway's WAN address."""

    @property
    def federated(self) -> bool:
        """Whether this mesh is one datacenter of several (its server joins a WAN)."""
        return bool(self.join_wan) or self.primary_datacenter not in ("", self.datacenter)

    @property
    def http_socket(self) -> Path:
        return self.net.state_dir / "http.sock"

    @property
    def grpc_socket(self) -> Path:
        return self.net.state_dir / "grpc.sock"

    @property
    def token_file(self) -> Path:
        """The management token (0600), made at the first ``up`` with ACLs on."""
        return self.net.state_dir / "management.token"

    @property
    def signing_key_file(self) -> Path:
        """The key the pods' JWTs are signed with (0600)."""
        return self.net.state_dir / "jwt-signing.key"

    @property
    def pods_dir(self) -> Path:
        return self.net.state_dir / "pods"

    @property
    def apply_file(self) -> Path:
        """The desired state of ``loom local apply`` (objects applied, pods they made)."""
        return self.net.state_dir / "apply.json"

    @property
    def server_file(self) -> Path:
        return self.net.state_dir / "server.json"

    @property
    def dns_file(self) -> Path:
        return self.net.state_dir / "node-dns.json"

    @property
    def hosts_file(self) -> Path:
        """Extra names the node's DNS server answers (``LocalMesh.add_host``)."""
        return self.net.state_dir / "hosts"


def for_datacenter(
    base: BaseLayout, datacenter: str = DEFAULT_DATACENTER, **fields: object
) -> LocalSettings:
    """The settings of ``datacenter``'s mesh beside the default one's ``base`` (laid out by
    ``datacenters.layout``, on ``base``'s WAN), with ``fields`` replaced."""
    where = datacenters.layout(base, datacenter)
    settings = LocalSettings(
        net=LocalNetSettings(prefix=where.prefix, subnet=where.subnet, state_dir=where.state_dir),
        http_addr=where.http_addr,
        grpc_addr=where.grpc_addr,
        data_dir=where.data_dir,
        datacenter=where.datacenter,
        wan=datacenters.wan_layout(base),
        wan_index=where.index,
        sidecar_uids=uids.UidRange(first=where.first_uid),
    )
    return dataclasses.replace(settings, **fields)  # type: ignore[arg-type]
