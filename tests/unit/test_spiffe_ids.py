"""SPIFFE IDs of services: the CA builds them and the authorize query reads them back with
one parser (``loom.ca.spiffe``), round trip."""

from __future__ import annotations

import pytest

from loom.ca.authority import spiffe_id
from loom.ca.spiffe import SpiffeId, service_identity_in


def test_a_service_spiffe_id_parses_back_to_what_made_it() -> None:
    uri = spiffe_id("abc.consul", "ns1", "dc2", "web")
    assert service_identity_in(uri, "abc.consul") == SpiffeId("abc.consul", "ns1", "dc2", "web")


@pytest.mark.parametrize(
    "uri",
    [
        "spiffe://other.consul/ns/default/dc/dc1/svc/web",  # another trust domain
        "spiffe://abc.consul/ns/default/dc/dc1/agent/web",  # not a service identity
        "spiffe://abc.consul/ns/default/dc/dc1/svc/web/extra",
        "spiffe://abc.consul/ns/default/svc/web",
        "https://abc.consul/ns/default/dc/dc1/svc/web",
        "spiffe://abc.consul/ns/a/b/dc/dc1/svc/web",  # a namespace posing with a slash
        "spiffe://abc.consul/ns/default/dc/dc1/svc/we%62",  # no escapes
    ],
)
def test_anything_but_a_service_identity_of_this_trust_domain_parses_to_none(uri: str) -> None:
    assert service_identity_in(uri, "abc.consul") is None
