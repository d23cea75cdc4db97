"""SPIFFE IDs: built and parsed strictly, so no name can pose as another's path.

The attacker's inputs come from issue 10 (``?ns=a/b`` minting ``/ns/a/b/...``) and the usual
URI tricks: ``..``, percent-encoding, a query, a fragment, userinfo, a port, uppercase,
non-ASCII, empty and over-long segments. The fuzz tests hold both directions: valid parts
round-trip exactly, and any text either parses to an ID that prints back to the same text or
raises ``SpiffeError``, nothing else.
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from loom.ca.authority import CAError
from loom.ca.spiffe import SpiffeError, SpiffeId, build_spiffe_id, parse_spiffe_id

TD = "11111111-2222-3333-4444-555555555555.consul"
GOOD = f"spiffe://{TD}/ns/default/dc/dc1/svc/web"


def test_a_service_identity_builds_and_parses_back() -> None:
    assert build_spiffe_id(TD, "default", "dc1", "web") == GOOD
    assert parse_spiffe_id(GOOD) == SpiffeId(TD, "default", "dc1", "web")
    assert (
        parse_spiffe_id("spiffe://td/ns/team-a/dc/dc_2/svc/web_v2-sidecar-proxy").service
        == "web_v2-sidecar-proxy"
    )


@pytest.mark.parametrize(
    ("parts", "message"),
    [
        ((TD, "a/b", "dc1", "probe"), "namespace 'a/b'"),  # issue 10's ?ns=a/b
        ((TD, "..", "dc1", "web"), "namespace '..'"),
        ((TD, "default", "dc1", "../db"), "service '../db'"),
        ((TD, "default", "dc1", "web/x"), "service 'web/x'"),
        ((TD, "default", "dc1", "a%2Fb"), "service 'a%2Fb'"),
        ((TD, "Default", "dc1", "web"), "namespace 'Default'"),
        ((TD, "default", "DC1", "web"), "datacenter 'DC1'"),
        ((TD, "default", "dc1", "Web"), "service 'Web'"),
        ((TD, "default", "dc1", "wéb"), "service 'wéb' is not ASCII"),
        ((TD, "", "dc1", "web"), "namespace is empty"),
        ((TD, "default", "dc1", ""), "service is empty"),
        ((TD, "n" * 64, "dc1", "web"), "namespace"),
        ((TD, "default", "d" * 65, "web"), "datacenter"),
        ((TD, "default", "dc1", "s" * 257), "service"),
        ((TD, "default", "dc1", "-web"), "service '-web'"),
        ((TD, "default", "dc1", "web?x=1"), "service"),
        (("Evil.Consul", "default", "dc1", "web"), "trust domain 'Evil.Consul'"),
        (("td/ns/x", "default", "dc1", "web"), "trust domain"),
        (("a..b", "default", "dc1", "web"), "trust domain"),
        (("t" * 64 + ".consul", "default", "dc1", "web"), "trust domain"),
    ],
)
def test_a_segment_that_could_change_the_path_is_refused_when_building(
    parts: tuple[str, str, str, str], message: str
) -> None:
    with pytest.raises(SpiffeError) as caught:
        build_spiffe_id(*parts)
    assert message in str(caught.value)


@pytest.mark.parametrize(
    "uri",
    [
        f"spiffe://{TD}/ns/a/b/dc/dc1/svc/probe",
        f"spiffe://{TD}/ns/a%2Fb/dc/dc1/svc/probe",
        f"spiffe://{TD}/ns/default/dc/dc1/svc/web/",
        f"spiffe://{TD}/ns/default/dc/dc1/svc/web?x=1",
        f"spiffe://{TD}/ns/default/dc/dc1/svc/web#frag",
        f"spiffe://user@{TD}/ns/default/dc/dc1/svc/web",
        f"spiffe://{TD}:8443/ns/default/dc/dc1/svc/web",
        f"spiffe://{TD}/ns/default/dc/dc1/svc/../svc/db",
        f"spiffe://{TD}//ns/default/dc/dc1/svc/web",
        f"spiffe://{TD}/ns/default/dc/dc1/svc/",
        f"spiffe://{TD}/ns/default/svc/web/dc/dc1",
        f"SPIFFE://{TD}/ns/default/dc/dc1/svc/web",
        f"spiffe://{TD.upper()}/ns/default/dc/dc1/svc/web",
        f"spiffe://{TD}/ns/default/dc/dc1/svc/w\u00e9b",
        f"spiffe://{TD}/ns/default/dc/dc1/svc/web\\..\\db",
        f"spiffe://{TD}",
        f"spiffe://{TD}/agent/client/dc/dc1/id/x",
        f"https://{TD}/ns/default/dc/dc1/svc/web",
        "spiffe:///ns/default/dc/dc1/svc/web",
        GOOD + "x" * 2048,
        "",
    ],
)
def test_a_uri_building_could_not_produce_is_refused_when_parsing(uri: str) -> None:
    with pytest.raises(SpiffeError):
        parse_spiffe_id(uri)


def test_spiffe_errors_belong_to_the_ca_package_tree() -> None:
    assert issubclass(SpiffeError, CAError)


labels = st.from_regex(r"\A[a-z0-9]([a-z0-9-]{0,20}[a-z0-9])?\Z")
trust_domains = st.lists(labels, min_size=1, max_size=4).map(".".join)
datacenters = st.from_regex(r"\A[a-z0-9_-]{1,20}\Z")
services = st.from_regex(r"\A[a-z0-9]([a-z0-9_-]{0,30}[a-z0-9])?\Z")
FUZZ = settings(max_examples=400, deadline=None, database=None)


@FUZZ
@given(trust_domains, labels, datacenters, services)
def test_valid_parts_round_trip_exactly(td: str, ns: str, dc: str, svc: str) -> None:
    uri = build_spiffe_id(td, ns, dc, svc)
    assert parse_spiffe_id(uri) == SpiffeId(td, ns, dc, svc)
    assert parse_spiffe_id(uri).uri == uri


def check_hostile(text: str) -> None:
    try:
        parsed = parse_spiffe_id(text)
    except SpiffeError:
        return
    assert parsed.uri == text  # whatever is accepted is exactly what building would produce


@FUZZ
@given(st.text(max_size=80))
def test_any_text_parses_to_itself_or_raises_a_spiffe_error(text: str) -> None:
    check_hostile(text)


@FUZZ
@given(
    st.integers(0, len(GOOD)),
    st.sampled_from(
        ["/", "..", "%2F", "%", "?", "#", "@", ":", "A", "é", "\x00", " ", "//", "\\", ".", "-"]
    ),
)
def test_a_valid_id_with_hostile_characters_spliced_in_never_slips_through(
    at: int, insert: str
) -> None:
    check_hostile(GOOD[:at] + insert + GOOD[at:])
