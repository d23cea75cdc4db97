"""The DNS name table over real catalogs (the core on an in-memory store), against golden files.

Each catalog is written through the application core exactly as the HTTP API would; the table
is the JSON ``GET /v1/loom/dns-table`` serves (format in docs/dns.md).
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from loom.control.nametable import build_name_table
from loom.control.state import ServerSettings, State
from loom.domain.federation import FederationState, RemoteService
from loom.store import Store

Build = Callable[[State], Awaitable[None]]


def node(name: str, address: str, service: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"Node": name, "Address": address, "Service": service, **extra}


async def plain(state: State) -> None:
    cat = state.catalog
    await cat.agent_register({"Name": "web", "Port": 8080, "Connect": {"SidecarService": {}}})
    await cat.agent_register({"Name": "api", "ID": "api-1", "Port": 9090, "Address": "10.0.0.7"})
    await cat.agent_register({"Name": "api", "ID": "api-2", "Port": 9090, "Address": "10.0.0.8"})
    await cat.catalog_register(node("n2", "10.1.0.2", {"Service": "web", "Port": 8080}))


async def headless(state: State) -> None:
    """As the Kubernetes controller registers pods: a ClusterIP service carries its ClusterIP
    as the ``virtual`` address; a headless one carries none (and pod names as hostnames)."""
    cat = state.catalog
    for i in range(2):
        await cat.catalog_register(node(f"k8s-{i}", f"10.2.0.{i}", {
            "Service": "db", "ID": f"db-{i}", "Port": 5432, "Address": f"10.244.1.{i}",
            "Meta": {"pod-name": f"db-{i}"},
        }))  # fmt: skip
    await cat.catalog_register(node("k8s-0", "10.2.0.0", {
        "Service": "frontend", "ID": "frontend-abc", "Port": 80, "Address": "10.244.1.9",
        "TaggedAddresses": {"virtual": {"Address": "10.96.0.20", "Port": 80}},
        "Meta": {"pod-name": "frontend-abc"},
    }))  # fmt: skip


async def unhealthy(state: State) -> None:
    cat = state.catalog
    for sid in ("web-1", "web-2", "web-3"):
        await cat.agent_register({"Name": "web", "ID": sid, "Port": 80, "Check": {"TTL": "30s"}})
    await cat.update_check("service:web-1", "passing", "")
    await cat.update_check("service:web-2", "warning", "slow")  # warning still gets traffic
    await cat.catalog_register(
        node("n3", "10.3.0.3", {"Service": "web", "ID": "web-4", "Port": 80},
             Check={"Name": "node down", "Status": "critical"})
    )  # fmt: skip


async def externals(state: State) -> None:
    await state.catalog.agent_register({"Name": "app", "Port": 80})
    await state.configs.write({
        "Kind": "external-service", "Name": "db1", "Namespace": "ns1",
        "Hosts": ["mysql.example.com", "*.rds.example.com", "aurora.example.com"],
        "Ports": [{"Number": 3306}],
    })  # fmt: skip
    await state.configs.write({
        "Kind": "external-service", "Name": "search", "Hosts": ["es.example.org"],
        "Ports": [{"Number": 443, "Protocol": "tcp"}],
    })  # fmt: skip


async def namespaces(state: State) -> None:
    cat = state.catalog
    for ns in ("default", "ns2", "ns1"):
        await cat.catalog_register(node(f"node-{ns}", f"10.4.0.{len(ns)}", {
            "Service": "web", "ID": f"web-{ns}", "Port": 80, "Namespace": ns,
        }))  # fmt: skip
    await cat.catalog_register(node("node-ns1", "10.4.0.3", {
        "Service": "db", "ID": "db", "Port": 5432, "Namespace": "ns1",
    }))  # fmt: skip


async def federated(state: State) -> None:
    """Two other datacenters, as the WAN poller writes their states; the remote-VIP
    reconciler gives their meshed services local VIPs (240.241.0.0/16)."""
    await state.catalog.agent_register({"Name": "web", "Port": 80, "Namespace": "ns1"})

    def svc(name: str, ns: str, meshed: bool, *addresses: str) -> RemoteService:
        return RemoteService(name, ns, meshed, addresses, (8080,), ())

    await state.federation.write_state(FederationState("dc3", (), (), (
        svc("api", "ns1", True, "10.3.0.1"),
    ), ""))  # fmt: skip
    await state.federation.write_state(FederationState("dc2", (), (), (
        svc("web", "ns1", True, "10.2.0.9"),
        svc("api", "ns1", True, "10.2.0.1", "10.2.0.2", "api.dc2.example"),
        svc("legacy", "default", False, "10.2.0.7"),
        svc("bad name", "default", True, "10.2.0.8"),
    ), ""))  # fmt: skip
    await state.remote_vips.reconcile()


CATALOGS: dict[str, Build] = {
    "plain": plain,
    "headless": headless,
    "unhealthy": unhealthy,
    "externals": externals,
    "namespaces": namespaces,
    "federated": federated,
}


async def table_of(build: Build) -> str:
    state = State(ServerSettings(), store=Store())
    await state.start()
    try:
        await build(state)
        return json.dumps(build_name_table(state.snapshot()), indent=2) + "\n"
    finally:
        await state.close()


@pytest.mark.parametrize("name", sorted(CATALOGS))
async def test_the_name_table_of_a_catalog_matches_its_golden_file(name: str, golden: Any) -> None:
    golden.check(f"nametable/{name}.json", await table_of(CATALOGS[name]))
