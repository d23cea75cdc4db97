"""``loom proxy config ID`` in readable form: what the server sends one proxy, summarised.

The server answers ``GET /v1/loom/proxies/ID/config`` with the listeners, clusters and
endpoints as the translator builds them (Envoy's JSON; ``-format=json`` prints it whole).
This module turns that into four tables a person can read: listeners (address, direction,
filters), their RBAC rules (action, policy, who), clusters (discovery type, endpoint count)
and endpoints. Principals are summarised from Envoy's matcher tree (``any``, ``not``,
``and``/``or``, the SPIFFE ID pattern after the trust domain). Pure: dicts in, text out.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from typing import Any

_RBAC = ("envoy.filters.network.rbac", "envoy.filters.http.rbac")


def _table(title: str, header: Sequence[str], rows: Sequence[tuple[str, ...]]) -> str:
    if not rows:
        return f"{title}: none\n"
    all_rows = [tuple(header), *rows]
    widths = [max(len(r[c]) for r in all_rows) for c in range(len(header))]
    lines = ["  ".join(f"{v:<{w}}" for v, w in zip(r, widths, strict=True)).rstrip() + "\n"
             for r in all_rows]  # fmt: skip
    return f"{title}\n" + "".join(lines)


def _short(name: str) -> str:
    return name.rsplit(".", 1)[-1]


def _address(node: Any) -> str:
    sock = (node or {}).get("socket_address") or {}
    if sock:
        return f"{sock.get('address', '?')}:{sock.get('port_value', '?')}"
    pipe = (node or {}).get("pipe") or {}
    return f"unix:{pipe.get('path', '?')}" if pipe else "?"


def _filters(listener: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for chain in listener.get("filter_chains") or []:
        for f in chain.get("filters") or []:
            yield f
            yield from (f.get("typed_config") or {}).get("http_filters") or []


def _addresses(assignment: dict[str, Any]) -> list[str]:
    """The endpoint addresses of a ClusterLoadAssignment."""
    return [
        _address((e.get("endpoint") or {}).get("address"))
        for group in assignment.get("endpoints") or []
        for e in group.get("lb_endpoints") or []
    ]


def principal(node: Any) -> str:
    """An RBAC principal (or permission) in a few words."""
    if not isinstance(node, dict):
        return str(node)
    if node.get("any"):
        return "any"
    if "not_id" in node:
        return f"not {principal(node['not_id'])}"
    for key, joiner in (("and_ids", " and "), ("or_ids", " or ")):
        if key in node:
            return "(" + joiner.join(principal(i) for i in node[key].get("ids") or []) + ")"
    name = (node.get("authenticated") or {}).get("principal_name")
    if isinstance(name, dict):
        pattern = (name.get("safe_regex") or {}).get("regex") or name.get("exact") or ""
        tail = pattern.split(".consul/", 1)[-1].rstrip("$")
        return tail.replace("dc/[^/]+/", "").replace("\\", "") or pattern
    return json.dumps(node, sort_keys=True, separators=(",", ":"))[:60]


def format_config(config: dict[str, Any]) -> str:
    """The four tables (see the module docstring), under a line naming the proxy."""
    listeners: list[tuple[str, ...]] = []
    rbac: list[tuple[str, ...]] = []
    for lst in config.get("Listeners") or []:
        filters = [_short(f.get("name", "?")) for f in _filters(lst)]
        listeners.append((lst.get("name", "?"), _address(lst.get("address")),
                          lst.get("traffic_direction", "-"), ", ".join(filters)))  # fmt: skip
        for f in _filters(lst):
            rules = (f.get("typed_config") or {}).get("rules")
            if f.get("name") not in _RBAC or not isinstance(rules, dict):
                continue
            for policy, body in sorted((rules.get("policies") or {}).items()):
                who = " or ".join(principal(p) for p in body.get("principals") or [])
                rbac.append((lst.get("name", "?"), rules.get("action", "ALLOW"), policy, who))
    counts = {c.get("cluster_name", "?"): _addresses(c) for c in config.get("Endpoints") or []}
    clusters: list[tuple[str, ...]] = []
    for c in config.get("Clusters") or []:
        kind = c.get("type") or ("EDS" if "eds_cluster_config" in c else "STATIC")
        inline = _addresses(c.get("load_assignment") or {})
        clusters.append((c.get("name", "?"), kind,
                         str(len(counts.get(c.get("name", ""), inline)))))  # fmt: skip
    endpoints = [(name, ", ".join(addrs) or "-") for name, addrs in sorted(counts.items())]
    head = f"proxy {config.get('ID', '?')} (service {config.get('Service') or '?'})\n\n"
    return head + "\n".join((
        _table("LISTENERS", ("NAME", "ADDRESS", "DIRECTION", "FILTERS"), listeners),
        _table("RBAC", ("LISTENER", "ACTION", "POLICY", "PRINCIPALS"), rbac),
        _table("CLUSTERS", ("NAME", "TYPE", "ENDPOINTS"), clusters),
        _table("ENDPOINTS", ("CLUSTER", "ADDRESSES"), endpoints),
    ))  # fmt: skip
