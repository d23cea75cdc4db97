"""A mesh write wakes exactly the xDS sessions whose inputs it can change (``loom.xds.deps``):
the proxy's own registration and ``service-defaults``, the intentions on its destination, the
endpoints of its upstreams and of their resolver targets, its prepared queries; what every
proxy reads wakes everyone, and a transparent proxy is woken by every write.

Each test runs real Delta sessions on a real hub over an in-memory store, makes a write, and
checks two things: every session whose inputs changed was woken (nothing is missed: each
session's ``refresh`` says whether it had something new), and the woken set is exactly the
sessions the write concerns (the rest were skipped)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable

import pytest
from envoy.config.core.v3 import base_pb2
from envoy.service.discovery.v3 import discovery_pb2

from loom.control.state import ServerSettings, State
from loom.domain.queries import parse_query
from loom.store import Store
from loom.xds.hub import Hub
from loom.xds.server import DeltaSession
from loom.xds.translate.names import ORDER

PROXIES = ("web", "api", "lone", "tp", "q", "late")
"""Sidecars of: ``web`` (upstream ``api``), ``api`` and ``lone`` (no upstreams), ``tp``
(transparent), ``q`` (a ``prepared_query`` upstream ``billing-q``); ``late`` has a stream
but registers only when a test says so."""


async def _no_requests() -> AsyncIterator[object]:
    return
    yield  # an async generator that ends at once


class Mesh:
    """A hub with one session per name of ``PROXIES``, and what each write woke."""

    def __init__(self, state: State, hub: Hub) -> None:
        self.state = state
        self.hub = hub
        self.sessions: dict[str, DeltaSession] = {}
        self.woken: set[str] = set()
        self.bumped = asyncio.Event()

    def open(self, name: str) -> None:
        session = DeltaSession(self.hub, _no_requests())
        node = base_pb2.Node(id=f"{name}-sidecar-proxy")
        for t in ORDER:
            session._on_request(discovery_pb2.DeltaDiscoveryRequest(node=node, type_url=t))
        self.sessions[name] = session
        self.hub.subscribe(session.id, lambda: self.woken.add(name), session.deps)

    async def write(self, *writes: Awaitable[object]) -> set[str]:
        """Make ``writes`` in turn; the sessions woken until the hub saw the last one, after
        checking that every session whose inputs changed is among them."""
        for session in self.sessions.values():  # start from what each proxy has now
            session.refresh()
        self.woken = set()
        for w in writes:
            await w
        while self.hub.view is not self.state.snapshot():
            self.bumped.clear()
            await asyncio.wait_for(self.bumped.wait(), 10)
        changed = {name for name, s in self.sessions.items() if s.refresh()}
        assert changed <= self.woken, (
            f"not woken though their inputs changed: {changed - self.woken}"
        )
        return self.woken


async def _sidecar(st: State, sid: str, name: str, port: int, **proxy: object) -> None:
    await st.catalog.agent_register(
        {"Name": name, "ID": sid, "Port": port,
         "Connect": {"SidecarService": {"Port": port + 100, "Proxy": proxy}}}
    )  # fmt: skip


async def _healthy(st: State, sid: str) -> None:
    """Pass a sidecar's default checks (critical until its Envoy listens, as in Consul)."""
    for n in (1, 2):
        await st.catalog.update_check(f"service:{sid}-sidecar-proxy:{n}", "passing", "")


def _upstream(name: str, port: int, kind: str = "service") -> dict[str, object]:
    return {"DestinationType": kind, "DestinationName": name, "LocalBindPort": port}


@pytest.fixture
async def mesh() -> AsyncIterator[Mesh]:
    st = State(ServerSettings(), store=Store())
    await st.start()
    hub = Hub(st)
    try:
        await _sidecar(st, "web", "web", 8000, Upstreams=[_upstream("api", 9000)])
        await _sidecar(st, "api", "api", 8001)
        await _sidecar(st, "lone", "lone", 8002)
        await _sidecar(st, "tp", "tp", 8003, Mode="transparent")
        await _sidecar(
            st, "q", "q", 8004, Upstreams=[_upstream("billing-q", 9001, "prepared_query")]
        )
        for sid in ("web", "api", "lone", "tp", "q"):
            await _healthy(st, sid)
        m = Mesh(st, hub)
        hub.subscribe(0, m.bumped.set)  # declares nothing: told of every bump
        hub.start()
        for name in PROXIES:
            m.open(name)
        await m.write()  # the hub has seen the registrations
        yield m
    finally:
        await hub.stop()
        await st.close()


async def test_a_new_healthy_instance_of_an_upstream_wakes_its_callers_and_transparent_proxies(
    mesh: Mesh,
) -> None:
    st = mesh.state
    woken = await mesh.write(_sidecar(st, "api-2", "api", 8101), _healthy(st, "api-2"))
    assert woken == {"web", "tp"}


async def test_an_intention_wakes_the_proxies_of_its_destination_only(mesh: Mesh) -> None:
    woken = await mesh.write(mesh.state.configs.upsert_exact("web", "api", {"Action": "deny"}))
    assert woken == {"api", "tp"}


async def test_a_wildcard_intention_wakes_every_registered_proxy(mesh: Mesh) -> None:
    woken = await mesh.write(mesh.state.configs.upsert_exact("*", "*", {"Action": "deny"}))
    assert woken == {"web", "api", "lone", "tp", "q"}  # not "late": it is not registered


async def test_service_defaults_wake_the_proxies_of_that_service_only(mesh: Mesh) -> None:
    entry = {"Kind": "service-defaults", "Name": "lone", "Protocol": "http"}
    woken = await mesh.write(mesh.state.configs.write(entry))
    assert woken == {"lone", "tp"}


async def test_a_changed_registration_wakes_that_proxy_only(mesh: Mesh) -> None:
    st = mesh.state
    woken = await mesh.write(_sidecar(st, "lone", "lone", 8002, Upstreams=[_upstream("api", 9)]))
    assert woken == {"lone", "tp"}
    # Its new upstream is now one of its dependencies.
    woken = await mesh.write(_sidecar(st, "api-2", "api", 8101), _healthy(st, "api-2"))
    assert woken == {"web", "lone", "tp"}


async def test_an_unregistered_proxy_is_woken_when_it_registers(mesh: Mesh) -> None:
    woken = await mesh.write(_sidecar(mesh.state, "late", "late", 8005))
    assert woken == {"late", "tp"}
    assert mesh.sessions["late"].registered


async def test_a_write_every_proxy_reads_wakes_every_session(mesh: Mesh) -> None:
    entry = {"Kind": "proxy-defaults", "Name": "global", "Config": {"protocol": "http"}}
    woken = await mesh.write(mesh.state.configs.write(entry))
    assert woken == set(PROXIES)


@pytest.mark.parametrize(
    "resolver",
    [
        {"Redirect": {"Service": "billing"}},
        {"Failover": {"*": {"Service": "billing"}}},
    ],
    ids=["redirect", "failover"],
)
async def test_the_endpoints_of_a_resolver_target_wake_the_callers_of_the_upstream(
    mesh: Mesh, resolver: dict[str, object]
) -> None:
    st = mesh.state
    entry = {"Kind": "service-resolver", "Name": "api", **resolver}
    assert await mesh.write(st.configs.write(entry)) == set(PROXIES)  # resolvers: everyone
    woken = await mesh.write(_sidecar(st, "billing", "billing", 8006), _healthy(st, "billing"))
    assert woken == {"web", "tp"}


async def test_a_prepared_query_and_what_it_keeps_wake_the_proxies_that_dial_it(
    mesh: Mesh,
) -> None:
    st = mesh.state
    query = parse_query({"Name": "billing-q", "Service": {"Service": "billing"}})
    assert await mesh.write(st.queries.create(query)) == {"q", "tp"}  # it names billing
    woken = await mesh.write(_sidecar(st, "billing", "billing", 8006), _healthy(st, "billing"))
    assert woken == {"q", "tp"}


async def test_an_acl_write_wakes_every_session(mesh: Mesh) -> None:
    """Streams re-check their token on a write to the ACL (or CA) tables."""
    policy = {"Name": "readers", "Rules": 'service_prefix "" { policy = "read" }'}
    woken = await mesh.write(mesh.state.acl.write_policy(policy))
    assert woken == set(PROXIES)


async def test_a_write_every_proxy_sees_reuses_each_sidecars_dependencies(mesh: Mesh) -> None:
    """Nothing a sidecar's dependencies come from changed: they are not resolved again."""
    before = {name: mesh.sessions[name].known for name in ("web", "api", "q")}
    woken = await mesh.write(mesh.state.configs.upsert_exact("*", "*", {"Action": "deny"}))
    assert {"web", "api", "q"} <= woken
    for name, known in before.items():
        assert known is not None and mesh.sessions[name].known is known


async def test_a_sidecar_made_transparent_by_its_service_defaults_is_woken_by_every_write(
    mesh: Mesh,
) -> None:
    st = mesh.state
    entry = {"Kind": "service-defaults", "Name": "lone", "Mode": "transparent"}
    assert await mesh.write(st.configs.write(entry)) == {"lone", "tp"}
    assert mesh.sessions["lone"].deps is None
    woken = await mesh.write(_sidecar(st, "api-2", "api", 8101), _healthy(st, "api-2"))
    assert woken == {"web", "lone", "tp"}


async def test_a_sidecars_dependencies_are_kept_as_a_sorted_tuple_of_distinct_parts(
    mesh: Mesh,
) -> None:
    """A tuple per stream, not a frozenset (a sixth of the memory): each part once, in an
    order that does not depend on how they were found."""
    deps = mesh.sessions["web"].deps
    assert isinstance(deps, tuple) and deps
    assert list(deps) == sorted(set(deps)) and ("proxy", "web-sidecar-proxy") in deps
