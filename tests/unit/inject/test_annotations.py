from __future__ import annotations

import pytest

from loom.inject import InjectionRefused, UpstreamPlan
from loom.inject.annotations import (
    parse_bool,
    parse_ports,
    parse_quantity,
    parse_uids,
    service_meta,
)
from loom.inject.upstreams import parse_upstreams

KEY = "consul.hashicorp.com/x"


@pytest.mark.parametrize("text", ["true", "True", "TRUE", "1", "t"])
def test_go_parsebool_spellings_of_true_are_accepted(text) -> None:
    assert parse_bool(KEY, text) is True


@pytest.mark.parametrize("text", ["yes", "on", "", " true", "enabled"])
def test_anything_else_is_refused_with_the_annotation_and_value(text) -> None:
    with pytest.raises(InjectionRefused) as info:
        parse_bool(KEY, text)
    assert info.value.annotation == KEY and info.value.value == text
    assert str(info.value).startswith(f"{KEY}={text!r}: ")


def test_port_lists_tolerate_spaces_and_trailing_commas() -> None:
    assert parse_ports(KEY, " 80, 443 ,") == (80, 443)
    with pytest.raises(InjectionRefused, match="'0' is not a port"):
        parse_ports(KEY, "80,0")


def test_uid_lists_are_numbers_and_a_name_is_refused() -> None:
    assert parse_uids(KEY, "1001, 0,") == (1001, 0)
    with pytest.raises(InjectionRefused, match="'root' is not a numeric user ID"):
        parse_uids(KEY, "1001,root")


@pytest.mark.parametrize("text", ["100m", "0.5", "128Mi", "1G", "1e3", "2"])
def test_kubernetes_quantities_are_accepted(text) -> None:
    assert parse_quantity(KEY, text) == text


def test_service_meta_pairs_are_sorted_and_an_empty_key_is_refused() -> None:
    prefix = "consul.hashicorp.com/service-meta-"
    assert service_meta({prefix + "b": "2", prefix + "a": "1", "other": "x"}) == (
        ("a", "1"),
        ("b", "2"),
    )
    with pytest.raises(InjectionRefused, match="meta key"):
        service_meta({prefix: "x"})


def test_upstream_forms_of_the_seeds_parse() -> None:
    ups = parse_upstreams(
        "web:1234, web-admin:2234:dc2,billing.finance:3234:dc3,prepared_query:geo:4234",
        namespaces_enabled=True,
    )
    assert ups == (
        UpstreamPlan("web", None, None, 1234),
        UpstreamPlan("web-admin", None, "dc2", 2234),
        UpstreamPlan("billing", "finance", "dc3", 3234),
        UpstreamPlan("geo", None, None, 4234, prepared_query=True),
    )
    assert ups[1].env() == (
        ("WEB_ADMIN_CONNECT_SERVICE_HOST", "127.0.0.1"),
        ("WEB_ADMIN_CONNECT_SERVICE_PORT", "2234"),
    )
    assert ups[2].to_registration() == {
        "DestinationType": "service",
        "DestinationName": "billing",
        "DestinationNamespace": "finance",
        "Datacenter": "dc3",
        "LocalBindAddress": "127.0.0.1",
        "LocalBindPort": 3234,
    }


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("web", "expected SERVICE:PORT"),
        ("web:1:dc:x", "expected SERVICE:PORT"),
        ("prepared_query:q:1:dc", "prepared_query:NAME:PORT"),
        ("web:99999", "not a port number"),
        ("we b:80", "not a valid service name"),
        ("web:80:", "empty datacenter"),
        ("a-b:1,a_b:2", "would both set A_B_CONNECT_SERVICE_PORT"),
    ],
)
def test_malformed_upstreams_are_refused(text, why) -> None:
    with pytest.raises(InjectionRefused, match=why):
        parse_upstreams(text, namespaces_enabled=False)
