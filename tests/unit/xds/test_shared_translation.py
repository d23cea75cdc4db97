"""Alike proxies share one translation (issue 17, xDS at 5,000 proxies): who a proxy is never
changes its resources, the hub translates a set of inputs once, the builders hand alike
proxies the very same documents and the converter recognises them without re-serialising;
anything that differs is still translated on its own, and equal content gets equal versions."""

from __future__ import annotations

import copy
from collections.abc import AsyncIterator
from dataclasses import replace

import pytest

from loom.control.state import ServerSettings, State
from loom.store import Store
from loom.xds.hub import Hub
from loom.xds.inputs import AccessRule, Principal
from loom.xds.resources import Converter
from loom.xds.translate import build_resources, translation_key
from loom.xds.translate.names import TYPE_CLUSTER, TYPE_LISTENER
from tests.unit.xds.test_gateway_translate import GATEWAY
from tests.unit.xds.test_translate import CASES


@pytest.mark.parametrize("case", sorted(CASES))
def test_who_the_proxy_is_never_changes_its_resources(case: str) -> None:
    inp = CASES[case]
    other = replace(inp, proxy_id="other-sidecar-proxy", service="other", namespace="team-b",
                    datacenter="dc9")  # fmt: skip
    assert translation_key(inp) == translation_key(other)
    assert build_resources(other) == build_resources(inp)


@pytest.mark.parametrize("case", [*sorted(CASES), "gateway"])
def test_the_translation_key_is_the_inputs_less_who_the_proxy_is(case: str) -> None:
    inp = GATEWAY if case == "gateway" else CASES[case]
    key = translation_key(inp)
    less = replace(inp, proxy_id="", service="", namespace="", datacenter="")
    assert type(key) is type(inp) and key == less and hash(key) == hash(less)
    assert inp.proxy_id and inp.service  # the original is left as it was
    with pytest.raises(AttributeError):
        key.service = "x"  # type: ignore[misc]  # still frozen


@pytest.mark.parametrize("case", sorted(CASES))
def test_the_resources_of_a_case_are_the_same_fresh_or_memoised(case: str) -> None:
    first = copy.deepcopy(build_resources(CASES[case]))
    assert build_resources(CASES[case]) == first
    assert Converter().serve(build_resources(CASES[case])).keys() == first.keys()


@pytest.fixture
async def hub() -> AsyncIterator[Hub]:
    state = State(ServerSettings(), store=Store())
    await state.start()
    try:
        yield Hub(state)
    finally:
        await state.close()


async def test_the_hub_translates_alike_proxies_once_and_different_ones_apart(hub: Hub) -> None:
    base = CASES["explicit_upstream"]
    a = hub.served(replace(base, proxy_id="a-sidecar-proxy", service="a"))
    b = hub.served(replace(base, proxy_id="b-sidecar-proxy", service="b"))
    assert a is b and hub.translated == 1
    other_port = hub.served(replace(base, local_app_port=base.local_app_port + 1))
    denied = hub.served(replace(base, rules=(AccessRule(Principal("*", "*"), False),)))
    assert hub.translated == 3
    assert other_port[TYPE_CLUSTER]["local_app"].version != a[TYPE_CLUSTER]["local_app"].version
    assert other_port[TYPE_LISTENER] == a[TYPE_LISTENER]  # the same listeners, shared
    public = next(n for n in a[TYPE_LISTENER] if n.startswith("public_listener"))
    assert denied[TYPE_LISTENER][public].version != a[TYPE_LISTENER][public].version


async def test_the_hub_keeps_only_its_last_translations(hub: Hub) -> None:
    hub.translations = 2
    base = CASES["explicit_upstream"]
    for port in (1, 2, 1, 3, 2):
        hub.served(replace(base, local_app_port=port))
    # 1, 2 translated; 1 kept; 3 translated, drops 2; 2 translated again.
    assert hub.translated == 4


def test_the_converter_parses_equal_content_once_whatever_the_object() -> None:
    conv = Converter()
    doc = build_resources(CASES["explicit_upstream"])[TYPE_CLUSTER]["local_app"]
    first = conv.convert(TYPE_CLUSTER, doc)
    assert conv.convert(TYPE_CLUSTER, doc) == first
    assert conv.convert(TYPE_CLUSTER, copy.deepcopy(doc)) == first
    assert conv.parsed == 1
    changed = copy.deepcopy(doc)
    changed["connect_timeout"] = "7s"
    assert conv.convert(TYPE_CLUSTER, changed)[0] != first[0]
    assert conv.parsed == 2


def test_translations_whose_resources_of_a_type_are_unchanged_share_that_types_dict() -> None:
    """Streams know an unchanged type by identity (nothing to diff); any change, or fewer
    resources, gives a dict of its own, and the values are shared either way."""
    conv = Converter()
    base = CASES["explicit_upstream"]
    first = conv.serve(build_resources(base))
    denied = conv.serve(build_resources(replace(base, rules=(AccessRule(Principal("*", "*"), False),))))
    assert denied[TYPE_CLUSTER] is first[TYPE_CLUSTER]  # rules change listeners only
    assert denied[TYPE_LISTENER] is not first[TYPE_LISTENER]
    assert denied[TYPE_LISTENER] != first[TYPE_LISTENER]
    moved = conv.serve(build_resources(replace(base, local_app_port=base.local_app_port + 1)))
    assert moved[TYPE_CLUSTER] is not first[TYPE_CLUSTER]
    kept = [n for n in first[TYPE_CLUSTER] if n != "local_app"]
    assert kept and all(moved[TYPE_CLUSTER][n] is first[TYPE_CLUSTER][n] for n in kept)
    fewer = conv.serve({TYPE_CLUSTER: {n: build_resources(base)[TYPE_CLUSTER][n] for n in kept}})
    assert fewer[TYPE_CLUSTER] is not first[TYPE_CLUSTER] and fewer[TYPE_CLUSTER].keys() == set(kept)
