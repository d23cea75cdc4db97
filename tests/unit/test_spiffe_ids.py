"""SPIFFE IDs of services: made and parsed by the CA module, round trip."""

from __future__ import annotations

import pytest

from loom.ca.authority import ServiceIdentity, parse_spiffe_id, spiffe_id


def test_a_service_spiffe_id_parses_back_to_what_made_it() -> None:
    uri = spiffe_id("abc.consul", "ns1", "dc2", "web")
    assert parse_spiffe_id(uri, "abc.consul") == ServiceIdentity("abc.consul", "ns1", "dc2", "web")


@pytest.mark.parametrize(
    "uri",
    [
        "spiffe://other.consul/ns/default/dc/dc1/svc/web",  # another trust domain
        "spiffe://abc.consul/ns/default/dc/dc1/agent/web",  # not a service identity
        "spiffe://abc.consul/ns/default/dc/dc1/svc/web/extra",
        "spiffe://abc.consul/ns/default/svc/web",
        "https://abc.consul/ns/default/dc/dc1/svc/web",
    ],
)
def test_anything_but_a_service_identity_of_this_trust_domain_parses_to_none(uri: str) -> None:
    assert parse_spiffe_id(uri, "abc.consul") is None
