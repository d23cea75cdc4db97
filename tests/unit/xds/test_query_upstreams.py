"""A sidecar's ``prepared_query`` upstream (the seeds' ``prepared_query:NAME:PORT``) in the
proxy's translator inputs: it dials the service the query names, at the sidecars of the
instances the query's execution keeps; it follows the query and the catalog as they change,
and a query that does not exist (yet) leaves the upstream without endpoints."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from loom.control.state import ServerSettings, State
from loom.domain.queries import parse_query
from loom.store import Store
from loom.xds.inputs import Upstream
from loom.xds.view import collect_inputs


async def _sidecars_up(st: State, *ids: str) -> None:
    """Pass a sidecar's default checks (critical until its Envoy listens, as in Consul)."""
    for sid in ids:
        for n in (1, 2):
            await st.catalog.update_check(f"service:{sid}-sidecar-proxy:{n}", "passing", "")


@pytest.fixture
async def state() -> AsyncIterator[State]:
    st = State(ServerSettings(), store=Store())
    await st.start()
    try:
        for sid, port, tags in (("db-1", 5001, ["primary"]), ("db-2", 5002, ["replica"])):
            await st.catalog.agent_register(
                {"Name": "db", "ID": sid, "Port": port, "Tags": tags,
                 "Connect": {"SidecarService": {"Port": port + 100}}}
            )  # fmt: skip
        await _sidecars_up(st, "db-1", "db-2")
        upstream = {"DestinationType": "prepared_query", "DestinationName": "db-primary",
                    "LocalBindPort": 9191}  # fmt: skip
        await st.catalog.agent_register(
            {"Name": "web", "Port": 8080,
             "Connect": {"SidecarService": {"Proxy": {"Upstreams": [upstream]}}}}
        )  # fmt: skip
        yield st
    finally:
        await st.close()


def _query_upstream(state: State) -> Upstream:
    found = collect_inputs(state.snapshot(), "web-sidecar-proxy")
    assert found is not None
    [up] = [u for u in found.upstreams if u.bind_port == 9191]
    return up


async def test_an_unknown_query_gives_the_upstream_no_endpoints(state: State) -> None:
    up = _query_upstream(state)
    assert (up.service, up.endpoints) == ("db-primary", ())


async def test_the_upstream_dials_the_sidecars_of_what_the_query_keeps(state: State) -> None:
    await state.queries.create(
        parse_query({"Name": "db-primary", "Service": {"Service": "db", "Tags": ["primary"]}})
    )
    up = _query_upstream(state)
    assert up.service == "db" and up.sni.startswith("db.default.dc1.internal.")
    assert up.spiffe_id.endswith("/ns/default/dc/dc1/svc/db")
    assert [(e.address, e.port) for e in up.endpoints] == [("127.0.0.1", 5101)]


async def test_the_upstream_follows_an_update_of_the_query_and_the_health_of_instances(
    state: State,
) -> None:
    q = await state.queries.create(
        parse_query({"Name": "db-primary", "Service": {"Service": "db", "Tags": ["primary"]}})
    )
    await state.queries.update(
        parse_query({"Name": "db-primary", "Service": {"Service": "db"}}, q.id)
    )
    assert sorted(e.port for e in _query_upstream(state).endpoints) == [5101, 5102]
    await state.catalog.agent_register(
        {"Name": "db", "ID": "db-2", "Port": 5002, "Tags": ["replica"],
         "Check": {"CheckID": "db-2-down", "TTL": "30s", "Status": "critical"},
         "Connect": {"SidecarService": {"Port": 5102}}}
    )  # fmt: skip
    await _sidecars_up(state, "db-2")  # only db-2's own check is critical now
    assert [e.port for e in _query_upstream(state).endpoints] == [5101]


async def test_a_template_resolves_the_upstream_by_its_name(state: State) -> None:
    await state.queries.create(
        parse_query({"Name": "db-", "Template": {"Type": "name_prefix_match"},
                     "Service": {"Service": "db", "Tags": ["${name.suffix}"]}})
    )  # fmt: skip
    assert [e.port for e in _query_upstream(state).endpoints] == [5101]
