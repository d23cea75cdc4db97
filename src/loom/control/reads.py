"""Catalog and health reads by node, by check state and of a service's Connect endpoints.

These are the queries behind ``/v1/catalog/node/:node``, ``/v1/catalog/node-services/:node``,
``/v1/catalog/connect/:service``, ``/v1/health/node/:node`` and ``/v1/health/state/:state``.
They read the ``Catalog``'s store and indexes and do no I/O; a node is known when it was
registered or when an instance names it (the server's own node for agent registrations), as
``Catalog.nodes`` lists it. ``?node-meta=`` and repeated ``?tag=`` are applied here too, so
every endpoint that takes them means the same: every pair and every tag must match.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

from loom.control.catalog import Catalog
from loom.domain.records import Check, Instance, Node
from loom.store import tables

CHECK_STATES = ("any", "passing", "warning", "critical")
"""The states ``/v1/health/state/:state`` documents; ``any`` matches every check."""


def in_namespace(namespace: str, wanted: str) -> bool:
    """``wanted`` names one namespace, or all of them as ``*``."""
    return wanted == "*" or namespace == wanted


def meta_matches(node: Node, wanted: Mapping[str, str]) -> bool:
    """Every ``?node-meta=key:value`` pair is in the node's meta."""
    return all(node.meta.get(k) == v for k, v in wanted.items())


def tags_match(inst: Instance, wanted: Sequence[str]) -> bool:
    """Every ``?tag=`` is one of the instance's tags (no tag given: any instance)."""
    return all(tag in inst.tags for tag in wanted)


def find_node(cat: Catalog, name: str) -> Node | None:
    """The node ``name``: registered, or named by one of its instances; None if neither."""
    node = cat.store.record(tables.NODES, name)
    if node is not None:
        return node
    on = cat.instances_on(name)
    return cat.node_of(on[0]) if on else None


def node_instances(cat: Catalog, name: str, namespace: str) -> list[Instance]:
    """The instances on node ``name`` in ``namespace`` (``*``: all), by ID."""
    found = [d for d in cat.instances_on(name) if in_namespace(d.namespace, namespace)]
    return sorted(found, key=lambda d: (d.id, d.namespace))


def node_checks(cat: Catalog, name: str, namespace: str) -> list[Check]:
    """Every check of node ``name``: its node-wide ones and its instances', by check ID."""
    found = [c for c in cat.checks_on(name) if in_namespace(c.namespace, namespace)]
    return sorted(found, key=lambda c: (c.check_id, c.namespace))


def checks_in_state(
    cat: Catalog, state: str, namespace: str, node_meta: Mapping[str, str]
) -> list[Check]:
    """The checks whose status is ``state`` (``any``: all), of nodes with ``node_meta``.

    A state that is none of ``CHECK_STATES`` matches no check (Consul looks the status up in
    its index and finds nothing, with a 200)."""
    out = []
    nodes: dict[str, bool] = {}
    for c in cat.store.records(tables.CHECKS):
        if not in_namespace(c.namespace, namespace):
            continue
        if state != "any" and c.status != state:
            continue
        if node_meta:
            if c.node not in nodes:
                node = find_node(cat, c.node)
                nodes[c.node] = node is not None and meta_matches(node, node_meta)
            if not nodes[c.node]:
                continue
        out.append(c)
    return sorted(out, key=lambda c: (c.node, c.check_id, c.namespace))


def connect_instances(cat: Catalog, namespace: str, service: str) -> list[Instance]:
    """What a client dials to reach ``service`` over Connect: its sidecars and its
    Connect-native instances (``/v1/catalog/connect/:service``), in store key order."""
    return [
        d
        for d in cat.instances()
        if in_namespace(d.namespace, namespace)
        and (
            (d.proxy is not None and d.proxy.destination_service_name == service)
            or (not d.is_proxy and d.service == service and d.connect_native)
        )
    ]


def select(
    cat: Catalog, found: Iterable[Instance], tags: Sequence[str], node_meta: Mapping[str, str]
) -> list[Instance]:
    """The instances with every tag in ``tags`` on a node with every pair of ``node_meta``."""
    return [
        d
        for d in found
        if tags_match(d, tags) and (not node_meta or meta_matches(cat.node_of(d), node_meta))
    ]


__all__ = [
    "CHECK_STATES",
    "checks_in_state",
    "connect_instances",
    "find_node",
    "in_namespace",
    "meta_matches",
    "node_checks",
    "node_instances",
    "select",
    "tags_match",
]
