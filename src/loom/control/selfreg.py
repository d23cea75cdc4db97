"""The server in its own catalog: its node, and the ``consul`` service on it.

Consul's servers register themselves (the node, and a ``consul`` service on the server RPC
port 8300), and clients and dashboards look for them there: ``/v1/catalog/service/consul``,
``/v1/health/service/consul``, the server's node in ``/v1/catalog/nodes``. Loom does the same
at start (a no-op when the records are already as they should be, so a restart moves no
index), with port 8300 as ``/v1/status/leader`` and ``/v1/agent/members`` name it.

The ``consul`` service is a catalog record, not part of the mesh:

- no virtual IP: it is written here, past the catalog's VIP allocation, and no sidecar
  fronts it, so a VIP would route nowhere;
- no xDS endpoints and no DNS table entry (``loom.control.snapshot`` leaves it out): Consul's
  DNS would answer ``consul.service.consul`` with the servers' addresses, but the DNS proxy
  answers inside workload network namespaces, where Loom's default node address 127.0.0.1
  is the workload itself, so such an answer would be wrong; clients reach the server at the
  address they are configured with;
- not an agent service (``/v1/agent/services`` and ``/v1/agent/service/consul`` leave it
  out, as a Consul agent does: the servers keep it, not an agent's local state).
"""

from __future__ import annotations

import loom
from loom.control.catalog import CatalogSettings
from loom.domain.records import Instance, Node, unindexed
from loom.domain.services import DEFAULT_NAMESPACE, instance_key
from loom.store import Op, Store, put, tables

SERVICE = "consul"
"""The name and ID of the server's own service, as in Consul."""
SERVER_RPC_PORT = 8300


def server_node(settings: CatalogSettings, existing: Node | None) -> Node:
    """The server's node: as registered (its meta and tagged addresses kept), else new."""
    if existing is not None:
        return existing
    return Node(settings.node, settings.node_address, settings.datacenter)


def server_service(settings: CatalogSettings) -> Instance:
    return Instance(
        node=settings.node,
        datacenter=settings.datacenter,
        id=SERVICE,
        service=SERVICE,
        port=SERVER_RPC_PORT,
        meta={"version": loom.__version__},
    )


def is_server_service(inst: Instance) -> bool:
    """A server's own ``consul`` service (this server's or, sharing etcd, another's): its
    name and ID are ``consul`` and it is no proxy."""
    return inst.id == SERVICE and inst.service == SERVICE and not inst.kind


def registration_ops(store: Store, settings: CatalogSettings) -> list[Op]:
    """What to write so the catalog holds the server's node and service; none when it does."""
    ops: list[Op] = []
    node = store.record(tables.NODES, settings.node)
    if node is None:
        ops.append(put(tables.NODES, settings.node, server_node(settings, None)))
    key = instance_key(settings.node, DEFAULT_NAMESPACE, SERVICE)
    wanted = server_service(settings)
    held = store.record(tables.SERVICES, key)
    if held is None or unindexed(held) != wanted:
        ops.append(put(tables.SERVICES, key, wanted))
    return ops


__all__ = [
    "SERVER_RPC_PORT",
    "SERVICE",
    "is_server_service",
    "registration_ops",
    "server_node",
    "server_service",
]
