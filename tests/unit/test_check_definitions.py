"""Check definitions are read and refused as Consul's agent reads and refuses them."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from loom.domain.checks import (
    ALIAS,
    GRPC,
    H2PING,
    HTTP,
    SCRIPT,
    TCP,
    CheckDefinition,
    definition_doc,
    go_duration,
    parse_definition,
)
from loom.domain.fields import Fields, ValidationError
from loom.domain.records import Check
from loom.domain.services import agent_registration, catalog_registration
from loom.store.tables import CHECKS


def parse(body: dict[str, Any], scripts: bool = False) -> CheckDefinition | None:
    return parse_definition(Fields(body, "Check"), scripts)


@pytest.mark.parametrize(
    ("body", "kind"),
    [
        ({"HTTP": "http://127.0.0.1:8080/health", "Interval": "10s"}, HTTP),
        ({"TCP": "127.0.0.1:22", "Interval": "5s"}, TCP),
        ({"GRPC": "127.0.0.1:9000/my.Service", "Interval": "5s", "GRPCUseTLS": True}, GRPC),
        ({"H2PING": "127.0.0.1:443", "Interval": "5s"}, H2PING),
        ({"AliasService": "web"}, ALIAS),
        ({"Args": ["/bin/true"], "Interval": "5s"}, SCRIPT),
    ],
)
def test_each_check_type_is_read_with_consuls_defaults(body: dict[str, Any], kind: str) -> None:
    d = parse(body, scripts=True)
    assert d is not None and d.kind == kind
    if kind == SCRIPT:
        assert d.timeout_s == 30.0
    elif kind != ALIAS:
        assert d.timeout_s == 10.0
    else:
        assert d.interval_s == 0.0


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"HTTP": "http://x"}, "Check.Interval: Interval must be > 0 for Script, HTTP"),
        ({"TCP": "x:1"}, "Check.Interval: Interval must be > 0"),
        ({"TTL": "10s", "Interval": "10s"}, "Interval and TTL cannot both be specified"),
        ({"AliasService": "web", "Interval": "10s"}, "Interval cannot be set for Alias checks"),
        ({"AliasService": "web", "TTL": "10s"}, "TTL must be not be set for Alias checks"),
        ({"HTTP": "http://x", "TCP": "x:1", "Interval": "1s"}, "a check has one type"),
        ({"Args": ["true"], "Interval": "1s"}, "Check.Args: Scripts are disabled"),
        ({"HTTP": "http://x", "Interval": "soon"}, "Check.Interval: 'soon' is not a duration"),
        ({"DockerContainerID": "abc", "Interval": "1s"}, "DockerContainerID checks are not"),
        ({"TCP": "x:1", "Interval": "1s", "SuccessBeforePassing": -1}, "SuccessBeforePassing"),
    ],
)
def test_consuls_check_type_rules_refuse_naming_the_field(
    body: dict[str, Any], message: str
) -> None:
    with pytest.raises(ValidationError) as err:
        parse(body)
    assert message in str(err.value)


def test_an_interval_below_a_second_is_raised_to_consuls_minimum() -> None:
    d = parse({"TCP": "x:1", "Interval": "100ms"})
    assert d is not None and d.interval_s == 1.0


def test_an_interval_in_nanoseconds_is_read_as_consul_reads_it() -> None:
    d = parse({"TCP": "x:1", "Interval": 2_000_000_000})
    assert d is not None and d.interval_s == 2.0


def test_failures_before_warning_defaults_to_failures_before_critical() -> None:
    d = parse({"TCP": "x:1", "Interval": "1s", "FailuresBeforeCritical": 3})
    assert d is not None and (d.failures_before_warning, d.failures_before_critical) == (3, 3)


def test_a_service_check_of_an_agent_registration_is_run_by_loom() -> None:
    reg = agent_registration(
        {"Name": "web", "Check": {"HTTP": "http://127.0.0.1/", "Interval": "10s",
                                  "Status": "passing", "Notes": "n"}}, "n1", "dc1")  # fmt: skip
    (check,) = reg.checks
    assert (check.check_id, check.type, check.status, check.notes) == (
        "service:web", "http", "passing", "n")  # fmt: skip
    assert check.managed and check.definition is not None


def test_a_script_check_needs_the_servers_opt_in() -> None:
    body = {"Name": "web", "Check": {"Args": ["true"], "Interval": "10s"}}
    with pytest.raises(ValidationError, match=r"Check\.Args: Scripts are disabled"):
        agent_registration(body, "n1", "dc1")
    (check,) = agent_registration(body, "n1", "dc1", scripts=True).checks
    assert check.type == SCRIPT


def test_catalog_checks_keep_their_definition_but_are_never_run() -> None:
    _, reg = catalog_registration(
        {"Node": "n2", "Address": "10.0.0.2", "Service": {"Service": "db"},
         "Check": {"Name": "db", "Definition": {"TCP": "10.0.0.2:5432", "Interval": "5s"}}},
        "dc1",
    )  # fmt: skip
    (check,) = reg.checks
    assert check.type == TCP and check.definition is not None and not check.managed


def test_a_sidecar_without_checks_gets_consuls_listening_and_aliasing_checks() -> None:
    reg = agent_registration(
        {"Name": "web", "Port": 8080, "Connect": {"SidecarService": {"Port": 21000}}}, "n", "dc1"
    )
    side = [c for c in reg.checks if c.service_id == "web-sidecar-proxy"]
    assert [(c.check_id, c.name, c.status) for c in side] == [
        ("service:web-sidecar-proxy:1", "Connect Sidecar Listening", "critical"),
        ("service:web-sidecar-proxy:2", "Connect Sidecar Aliasing web", "critical"),
    ]
    listening, aliasing = (c.definition for c in side)
    assert listening is not None and listening.tcp == "127.0.0.1:21000"
    assert listening.interval_s == 10.0
    assert aliasing is not None and aliasing.alias_service == "web"


def test_a_sidecar_with_its_own_check_gets_no_default_checks() -> None:
    reg = agent_registration(
        {"Name": "web", "Connect": {"SidecarService": {"Check": {"TTL": "10s"}}}}, "n", "dc1"
    )
    assert [c.type for c in reg.checks if c.service_id == "web-sidecar-proxy"] == ["ttl"]


def test_a_ttl_check_is_stored_as_before_checks_ran() -> None:
    (check,) = agent_registration({"Name": "web", "Check": {"TTL": "10s"}}, "n", "dc1").checks
    assert "Definition" not in CHECKS.encode(check) and "Managed" not in CHECKS.encode(check)


definitions = st.builds(
    CheckDefinition,
    kind=st.sampled_from([HTTP, TCP, GRPC, H2PING, ALIAS, SCRIPT]),
    http=st.text(max_size=5),
    method=st.sampled_from(["", "GET", "POST"]),
    header=st.dictionaries(
        st.text(min_size=1, max_size=4),
        st.lists(st.text(max_size=4), min_size=1, max_size=2).map(tuple),
        max_size=2,
    ),
    body=st.text(max_size=5),
    tls_skip_verify=st.booleans(),
    tcp=st.text(min_size=1, max_size=5),
    grpc=st.text(min_size=1, max_size=5),
    grpc_use_tls=st.booleans(),
    h2ping=st.text(min_size=1, max_size=5),
    h2ping_use_tls=st.booleans(),
    alias_service=st.text(min_size=1, max_size=5),
    args=st.lists(st.text(max_size=4), min_size=1, max_size=3).map(tuple),
    interval_s=st.integers(1, 3600).map(float),
    timeout_s=st.integers(1, 60).map(float),
    success_before_passing=st.integers(0, 5),
    failures_before_critical=st.integers(0, 5),
    deregister_after_s=st.sampled_from([0.0, 60.0, 90.0]),
)


def _as_parsed(d: CheckDefinition) -> CheckDefinition:
    """What the kind keeps: the fields of other kinds are not part of a definition."""
    keep: dict[str, Any] = {"kind": d.kind, "success_before_passing": d.success_before_passing,
                            "failures_before_critical": d.failures_before_critical,
                            "failures_before_warning": d.failures_before_critical,
                            "deregister_after_s": d.deregister_after_s}  # fmt: skip
    if d.kind == ALIAS:
        keep.update(alias_service=d.alias_service)
    else:
        keep.update(interval_s=d.interval_s, timeout_s=d.timeout_s)
    if d.kind == HTTP:
        keep.update(http=d.http or "x", method=d.method, header=d.header, body=d.body,
                    tls_skip_verify=d.tls_skip_verify)  # fmt: skip
    keep.update({TCP: {"tcp": d.tcp}, GRPC: {"grpc": d.grpc, "grpc_use_tls": d.grpc_use_tls},
                 H2PING: {"h2ping": d.h2ping, "h2ping_use_tls": d.h2ping_use_tls},
                 SCRIPT: {"args": d.args}}.get(d.kind, {}))  # fmt: skip
    return CheckDefinition(**keep)


@given(definitions)
def test_a_definition_reads_back_from_the_json_it_is_shown_and_stored_as(
    d: CheckDefinition,
) -> None:
    d = _as_parsed(d)
    check = Check("n", "c", "c", "passing", type=d.kind, definition=d, managed=True)
    assert CHECKS.decode(CHECKS.encode(check)) == check
    shown = parse_definition(Fields(definition_doc(d), "Definition"), True, lenient=True)
    assert shown == d


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(10.0, "10s"), (90.0, "1m30s"), (3600.0, "1h0m0s"), (0.5, "500ms"), (0.0, "0s")],
)
def test_durations_are_shown_as_go_prints_them(seconds: float, text: str) -> None:
    assert go_duration(seconds) == text
