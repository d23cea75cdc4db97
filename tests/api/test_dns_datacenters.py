"""Other datacenters through the server's ``/v1/loom/dns-table`` to a watching DNS proxy.

The server's HTTP app (``build_app``) serves a real core on loopback with its remote-VIP
reconciler running, as ``loom server`` does; a ``DnsProxy`` follows the table with
``watch_table`` (the dataplane's loop) and is asked over UDP by dnspython. dc2's services arrive
as the WAN poller writes them (``Federation.write_state``).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import dns.asyncquery
import dns.message
import dns.rcode
import pytest
from aiohttp import web

from loom.control.state import ServerSettings, State
from loom.dns import DnsProxy, DnsSettings, watch_table
from loom.domain.federation import FederationState, RemoteService
from loom.domain.mesh import Endpoint
from loom.server.http import build_app
from loom.store import Store


def dc2(*names: str) -> FederationState:
    services = tuple(
        RemoteService(n, "ns1", True, ("10.2.0.1",), (8080,), (Endpoint("10.2.0.1", 21000),))
        for n in names
    )
    return FederationState("dc2", ("10.20.0.1:8500",), (), services, "2026-12-01T19:00:00Z")


@dataclass
class Mesh:
    state: State
    http: str
    proxy: DnsProxy


@pytest.fixture
async def mesh(tmp_path: Path) -> AsyncIterator[Mesh]:
    state = State(ServerSettings(), store=Store())
    await state.start()
    runner = web.AppRunner(build_app(state))
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    http = f"127.0.0.1:{runner.addresses[0][1]}"
    resolv = tmp_path / "resolv.conf"
    resolv.write_text("nameserver 192.0.2.53\n")
    proxy = DnsProxy(DnsSettings(listen_port=0, namespace="ns1", resolv_conf=str(resolv)))
    await proxy.start()
    stop = asyncio.Event()
    tasks = [
        asyncio.create_task(state.remote_vips.run()),
        asyncio.create_task(watch_table(http, proxy, stop)),
    ]
    try:
        yield Mesh(state, http, proxy)
    finally:
        stop.set()
        tasks[0].cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await proxy.stop()
        await runner.cleanup()
        await state.close()


async def eventually(check: Callable[[], bool], seconds: float = 5.0) -> None:
    async with asyncio.timeout(seconds):
        while not check():
            await asyncio.sleep(0.01)


def table_has(mesh: Mesh, name: str, addresses: list[str]) -> Callable[[], bool]:
    def check() -> bool:
        records = mesh.proxy.table.lookup(name)
        return (records.addresses() if records else []) == addresses

    return check


async def ask(mesh: Mesh, name: str) -> list[str]:
    reply = await dns.asyncquery.udp(
        dns.message.make_query(name, "A"), "127.0.0.1", port=mesh.proxy.port, timeout=2
    )
    assert reply.rcode() == dns.rcode.NOERROR
    return sorted(r.address for rrset in reply.answer for r in rrset if hasattr(r, "address"))


async def test_a_remote_service_reaches_the_proxy_with_its_local_vip(mesh: Mesh) -> None:
    await mesh.state.federation.write_state(dc2("api"))
    await eventually(table_has(mesh, "api.ns1.svc.cluster.local", ["240.241.0.1"]))
    assert await ask(mesh, "api") == ["240.241.0.1"]
    assert await ask(mesh, "api.virtual.dc2.consul") == ["240.241.0.1"]
    assert await ask(mesh, "api.service.dc2.consul") == ["10.2.0.1"]
    url = f"http://{mesh.http}/v1/loom/dns-table"
    async with aiohttp.ClientSession() as session, session.get(url) as resp:
        doc = json.loads(await resp.text())
    [entry] = [s for s in doc["Services"] if s["Datacenter"] == "dc2"]
    assert entry == {"Name": "api", "Namespace": "ns1", "Datacenter": "dc2",
                     "VirtualIPs": ["240.241.0.1"], "Instances": [{"Address": "10.2.0.1"}]}


async def test_a_local_service_of_the_same_name_takes_over_the_kubernetes_names(
    mesh: Mesh,
) -> None:
    await mesh.state.federation.write_state(dc2("api"))
    await eventually(table_has(mesh, "api.ns1.svc.cluster.local", ["240.241.0.1"]))
    await mesh.state.catalog.agent_register({"Name": "api", "Namespace": "ns1", "Port": 80})
    local = mesh.state.catalog.vip_of("ns1", "api")
    assert local is not None
    await eventually(table_has(mesh, "api.ns1.svc.cluster.local", [local]))
    assert await ask(mesh, "api") == [local]
    assert await ask(mesh, "api.virtual.dc2.consul") == ["240.241.0.1"]


async def test_a_service_leaving_its_datacenter_leaves_the_table(mesh: Mesh) -> None:
    await mesh.state.federation.write_state(dc2("api", "db"))
    await eventually(table_has(mesh, "db.virtual.ns1.ns.dc2.dc.consul", ["240.241.0.2"]))
    await mesh.state.federation.write_state(dc2("db"))
    await eventually(lambda: mesh.proxy.table.lookup("api.ns1.svc.cluster.local") is None)
    assert mesh.state.remote_vips.addresses() == {("dc2", "ns1", "db"): "240.241.0.2"}
