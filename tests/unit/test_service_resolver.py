"""``service-resolver`` entries: strict decoding with Consul's messages, the stored and API
form, the graph check every write runs (loops and missing subsets refused, nothing written)
and how an upstream resolves through redirects, default subsets and failover."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from loom.control.state import ServerSettings, State
from loom.domain.config_entries import validate_entry
from loom.domain.entries import (
    FailoverTarget,
    ResolverFailover,
    ResolverRedirect,
    ResolverSubset,
    ServiceResolver,
)
from loom.domain.fields import ValidationError
from loom.domain.resolver import Chain, ResolverGraphError, Target, check_graph, resolve
from loom.server import views
from loom.store import Store
from loom.store.entry_codec import decode, encode

R = "service-resolver"


def _r(name: str, **body: Any) -> ServiceResolver:
    entry = validate_entry({"Kind": R, "Name": name, **body})
    assert isinstance(entry, ServiceResolver)
    return entry


def test_a_resolver_decodes_every_consul_field_into_its_record() -> None:
    entry = _r(
        "web",
        DefaultSubset="v1",
        Subsets={"v1": {"Filter": "Service.Meta.version == v1"},
                 "v2": {"Filter": "Service.Meta.version == v2", "OnlyPassing": True}},
        Failover={"v2": {"Service": "backup", "ServiceSubset": "blue"},
                  "*": {"Datacenters": ["dc2", "dc3"]}},
        ConnectTimeout="2500ms",
        RequestTimeout="10s",
    )  # fmt: skip
    assert entry == ServiceResolver(
        name="web",
        default_subset="v1",
        subsets={"v1": ResolverSubset("Service.Meta.version == v1"),
                 "v2": ResolverSubset("Service.Meta.version == v2", True)},
        failover={"v2": ResolverFailover(service="backup", service_subset="blue"),
                  "*": ResolverFailover(datacenters=("dc2", "dc3"))},
        connect_timeout="2500ms",
        request_timeout="10s",
    )  # fmt: skip
    redirect = _r("old", Redirect={"Service": "new", "Namespace": "team", "Datacenter": "dc2"})
    assert redirect.redirect == ResolverRedirect(service="new", namespace="team", datacenter="dc2")


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"Subsets": {"V1": {}}}, "Subset defined with invalid name 'V1'"),
        ({"Subsets": {"v1": {"Filter": "Service.Metaz.version == v1"}}},
         "Filter for subset 'v1' is not a valid expression"),
        ({"Subsets": {"v1": {"Filter": "Service.Meta.version =="}}},
         "Filter for subset 'v1' is not a valid expression"),
        ({"Subsets": {"v1": {"Filtr": "x"}}}, "Filtr: unknown field"),
        ({"DefaultSubset": "v3"}, "DefaultSubset 'v3' is not a valid subset"),
        ({"Redirect": {}}, "Redirect is empty"),
        ({"Redirect": {"Service": "web"}}, "detected circular resolver redirect"),
        ({"Redirect": {"ServiceSubset": "v1"}},
         "Redirect.ServiceSubset defined without Redirect.Service"),
        ({"Redirect": {"Namespace": "team"}}, "Redirect.Namespace defined without Redirect.Service"),
        ({"Redirect": {"Service": "api"}, "Subsets": {"v1": {}}},
         "Redirect and Subsets cannot both be set"),
        ({"Redirect": {"Service": "api"}, "Failover": {"*": {"Service": "b"}}},
         "Redirect and Failover cannot both be set"),
        ({"Failover": {"v9": {"Service": "x"}}}, "Bad Failover['v9']: not a valid subset"),
        ({"Failover": {"*": {}}}, "Bad Failover['*']: one of Service, ServiceSubset"),
        ({"Failover": {"*": {"Datacenters": ["dc2", ""]}}},
         "Bad Failover['*'].Datacenters: found empty datacenter"),
        ({"Failover": {"*": {"Service": "b", "Targets": [{"Service": "c"}]}}},
         "Targets cannot be set with Service"),
        ({"Failover": {"*": {"ServiceSubset": "v7"}}},
         "Bad Failover['*'].ServiceSubset 'v7' is not a valid subset of 'web'"),
        ({"ConnectTimeout": "soon"}, "Bad ConnectTimeout 'soon'"),
        ({"RequestTimeout": "-1s"}, "Bad RequestTimeout '-1s'"),
        ({"LoadBalancer": {"Policy": "maglev"}}, "LoadBalancer: unknown field"),
        ({"Redirect": {"Service": "api", "Peer": "p1"}}, "Redirect.Peer: is not supported"),
    ],
)
def test_a_bad_resolver_is_refused_with_consuls_message(body: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=re.escape(message)):
        validate_entry({"Kind": R, "Name": "web", **body})


names = st.sampled_from(["a", "b", "c", "d"])
subset_names = st.sampled_from(["v1", "v2", "blue"])
dcs = st.sampled_from(["", "dc2", "dc3"])


@st.composite
def resolvers(draw: st.DrawFn) -> ServiceResolver:
    subsets = draw(st.dictionaries(subset_names, st.sampled_from(["", "Service.Tags contains x"])))
    body: dict[str, Any] = {
        "Subsets": {n: {"Filter": f, "OnlyPassing": draw(st.booleans())} for n, f in subsets.items()}
    }
    if subsets and draw(st.booleans()):
        body["DefaultSubset"] = draw(st.sampled_from(sorted(subsets)))
    if draw(st.booleans()):
        keys = draw(st.lists(st.sampled_from(["*", *sorted(subsets)]), unique=True, max_size=2))
        body["Failover"] = {
            k: draw(st.sampled_from([{"Service": "zz"}, {"Datacenters": ["dc2", "dc3"]},
                                     {"Targets": [{"Service": "zz", "Datacenter": "dc2"}]}]))
            for k in keys
        }  # fmt: skip
    if draw(st.booleans()):
        body["ConnectTimeout"] = draw(st.sampled_from(["1s", "250ms", "1m30s"]))
    return _r(draw(names), **body)


@settings(max_examples=60, deadline=None)
@given(resolvers())
def test_a_resolver_round_trips_through_the_store_and_the_api(entry: ServiceResolver) -> None:
    assert decode(encode(entry)) == entry
    shown = views.config_entry(entry)
    shown.pop("CreateIndex")
    shown.pop("ModifyIndex")
    assert validate_entry(shown) == entry


@settings(max_examples=150, deadline=None)
@given(st.dictionaries(names, names, max_size=4), names)
def test_a_redirect_graph_is_refused_exactly_when_it_has_a_cycle(
    edges: dict[str, str], start: str
) -> None:
    """Each service in ``edges`` redirects to its value (self-redirects are refused when
    decoding already); ``check_graph`` refuses exactly the graphs with a cycle."""
    edges = {a: b for a, b in edges.items() if a != b}
    graph = {("default", a): _r(a, Redirect={"Service": b}) for a, b in edges.items()}
    cyclic = False
    for a in edges:
        seen, node = set(), a
        while node in edges and node not in seen:
            seen.add(node)
            node = edges[node]
        cyclic = cyclic or node in seen
    if cyclic:
        with pytest.raises(ResolverGraphError, match="detected circular resolver redirect"):
            check_graph(graph)
    else:
        check_graph(graph)
        node = start
        while node in edges:
            node = edges[node]
        assert resolve(graph, start, "default", "dc1") == Chain(Target(node, "default", "dc1"))


def test_resolution_follows_redirects_then_the_default_subset_then_failover() -> None:
    graph = {
        ("default", "old"): _r("old", Redirect={"Service": "web"}),
        ("default", "web"): _r(
            "web",
            DefaultSubset="v2",
            ConnectTimeout="1500ms",
            Subsets={"v1": {}, "v2": {"Filter": "Service.Meta.version == v2"}},
            Failover={"v2": {"Targets": [{"Datacenter": "dc2"}, {"Service": "backup"}]}},
        ),
        ("default", "backup"): _r("backup", ConnectTimeout="3s"),
    }
    chain = resolve(graph, "old", "default", "dc1")
    assert chain.primary == Target("web", "default", "dc1", "v2", 1500)
    assert chain.failover == (
        Target("web", "default", "dc2", "v2", 1500),  # same service: the subset carries over
        Target("backup", "default", "dc1", "", 3000),  # another service: its default subset
    )
    # An explicit subset other than the default has no failover of its own.
    assert resolve(graph, "web", "default", "dc1", "v1") == Chain(
        Target("web", "default", "dc1", "v1", 1500)
    )


def test_failover_datacenters_become_targets_in_order_without_the_primary() -> None:
    graph = {("default", "db"): _r("db", Failover={"*": {"Datacenters": ["dc1", "dc3", "dc2"]}})}
    chain = resolve(graph, "db", "default", "dc1")
    assert [t.datacenter for t in chain.failover] == ["dc3", "dc2"]


@pytest.fixture
async def state() -> AsyncIterator[State]:
    st_ = State(ServerSettings(), store=Store())
    await st_.start()
    try:
        yield st_
    finally:
        await st_.close()


async def test_a_write_closing_a_redirect_loop_is_refused_and_nothing_is_written(
    state: State,
) -> None:
    await state.configs.write({"Kind": R, "Name": "a", "Redirect": {"Service": "b"}})
    index = state.store.index
    loop = r"circular resolver redirect: \[default/a -> default/b -> default/a\]"
    with pytest.raises(ValidationError, match=loop):
        await state.configs.write({"Kind": R, "Name": "b", "Redirect": {"Service": "a"}})
    assert state.store.index == index
    assert state.configs.get(R, "b") is None


async def test_a_reference_to_another_services_missing_subset_is_refused(state: State) -> None:
    await state.configs.write({"Kind": R, "Name": "api", "Subsets": {"v1": {}}})
    with pytest.raises(ValidationError, match="does not have a subset named 'v2'"):
        await state.configs.write(
            {"Kind": R, "Name": "web", "Redirect": {"Service": "api", "ServiceSubset": "v2"}}
        )
    with pytest.raises(ValidationError, match="does not have a subset named 'v9'"):
        await state.configs.write(
            {"Kind": R, "Name": "web",
             "Failover": {"*": {"Targets": [{"Service": "api", "ServiceSubset": "v9"}]}}}
        )  # fmt: skip
    assert state.configs.get(R, "web") is None
    await state.configs.write(
        {"Kind": R, "Name": "web", "Redirect": {"Service": "api", "ServiceSubset": "v1"}}
    )
    # Removing the subset (or the resolver) that another one names is refused too.
    with pytest.raises(ValidationError, match="does not have a subset named 'v1'"):
        await state.configs.write({"Kind": R, "Name": "api"})
    with pytest.raises(ValidationError, match="does not have a subset named 'v1'"):
        await state.configs.delete(R, "api")
    assert isinstance(state.configs.get(R, "api"), ServiceResolver)


def test_failover_targets_keep_what_they_leave_empty() -> None:
    entry = _r("web", Failover={"*": {"Targets": [{"Namespace": "team"}, {"Datacenter": "dc2"}]}})
    assert entry.failover["*"].targets == (FailoverTarget(namespace="team"), FailoverTarget(datacenter="dc2"))
    chain = resolve({("default", "web"): entry}, "web", "default", "dc1")
    assert chain.failover == (Target("web", "team", "dc1"), Target("web", "default", "dc2"))
