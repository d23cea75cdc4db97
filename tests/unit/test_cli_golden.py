"""The output of the commands that list or read, as tables and as ``-format=json``, against
golden files (``pytest --update-golden`` rewrites them). Driven through ``emit`` with the
parsed flags, as each command prints, from answers shaped as the server sends them."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

import pytest

from loom.cli import build_parser, parse
from loom.cli.api import format_entry, format_entry_names, format_services
from loom.cli.flags import emit
from loom.cli.intentions import format_intention, format_intentions, format_matches
from loom.cli.proxy import format_status
from loom.cli.query import format_execution, format_queries, format_read


def _intention(src: str, dst: str, action: str, precedence: int, **more: Any) -> dict[str, Any]:
    ns, _, name = src.rpartition("/")
    return {"ID": "", "Description": "", "SourceNS": ns or "default", "SourceName": name,
            "DestinationNS": "default", "DestinationName": dst, "SourceType": "consul",
            "Action": action, "Permissions": [], "Precedence": precedence, "Meta": {},
            "CreateIndex": 7, "ModifyIndex": 7, **more}  # fmt: skip


INTENTIONS = [
    _intention("web", "db", "deny", 9, Description="no direct access"),
    _intention("team-a/*", "db", "", 8, Permissions=[{"Action": "allow", "HTTP": {}}]),
]
ENTRY = {"Kind": "service-defaults", "Name": "web", "Namespace": "default", "Protocol": "http",
         "Meta": {}, "TransparentProxy": {"DialedDirectly": False, "OutboundListenerPort": 0},
         "CreateIndex": 3, "ModifyIndex": 3}  # fmt: skip

def _types(**nacks: str) -> dict[str, Any]:
    out = {t: {"Sent": "7", "Acked": "7", "Nack": ""} for t in ("Cluster", "Listener")}
    for t, message in nacks.items():
        out[t] = {"Sent": "9", "Acked": "7", "Nack": message}
    return out


QUERIES = [
    {"ID": "8f0c1d2e-0000-4000-8000-000000000001", "Name": "web-v1", "Session": "", "Token": "",
     "Service": {"Service": "web", "Namespace": "", "Tags": ["v1", "!canary"],
                 "OnlyPassing": True, "Near": "_agent",
                 "Failover": {"NearestN": 0, "Datacenters": ["dc2"], "Targets": None}},
     "DNS": {"TTL": "10s"}, "Template": {"Type": "", "Regexp": "", "RemoveEmptyTags": False},
     "CreateIndex": 7, "ModifyIndex": 9},
    {"ID": "8f0c1d2e-0000-4000-8000-000000000002", "Name": "", "Session": "", "Token": "",
     "Service": {"Service": "db", "Tags": None, "OnlyPassing": False, "Near": ""},
     "DNS": {"TTL": ""}, "Template": {"Type": "name_prefix_match", "Regexp": ""},
     "CreateIndex": 8, "ModifyIndex": 8},
]
EXECUTION = {"Service": "web", "Namespace": "default", "Datacenter": "dc1", "Failovers": 0,
             "DNS": {"TTL": "10s"}, "Nodes": [
    {"Node": {"Node": "n1", "Address": "10.0.0.1"},
     "Service": {"ID": "web-1", "Address": "", "Port": 8080},
     "Checks": [{"CheckID": "a", "Status": "passing"}]},
    {"Node": {"Node": "n2", "Address": "10.0.0.2"},
     "Service": {"ID": "web-2", "Address": "10.0.9.2", "Port": 8080},
     "Checks": [{"CheckID": "a", "Status": "passing"}, {"CheckID": "b", "Status": "warning"}]},
]}  # fmt: skip
PROXIES = [
    {"ID": "api-sidecar-proxy", "Stream": 3, "Protocol": "sotw", "Service": "api",
     "Namespace": "default", "Datacenter": "dc1", "Registered": True, "Synced": False,
     "Types": _types(Listener="duplicate listener name 'public_listener'")},
    {"ID": "web-sidecar-proxy", "Stream": 1, "Protocol": "delta", "Service": "web",
     "Namespace": "default", "Datacenter": "dc1", "Registered": True, "Synced": True,
     "Types": {**_types(), "ClusterLoadAssignment": {"Sent": "8", "Acked": "", "Nack": ""}}},
    {"ID": "gone-sidecar-proxy", "Stream": 2, "Protocol": "delta", "Service": "",
     "Namespace": "", "Datacenter": "", "Registered": False, "Synced": False, "Types": {}},
]

CASES: list[tuple[str, list[str], Any, Callable[[Any], str]]] = [
    ("catalog_services", ["catalog", "services"],
     {"web": ["v1", "v2"], "db": [], "web-sidecar-proxy": ["v1", "v2"]}, format_services),
    ("intention_list", ["intention", "list"], INTENTIONS, format_intentions),
    ("intention_get", ["intention", "get", "web", "db"], INTENTIONS[0], format_intention),
    ("intention_get_l7", ["intention", "get", "team-a/*", "db"], INTENTIONS[1],
     format_intention),
    ("intention_match", ["intention", "match", "db"], {"db": INTENTIONS}, format_matches),
    ("config_read", ["config", "read", "-kind=service-defaults", "-name=web", "-format=table"],
     ENTRY, format_entry),
    ("config_list", ["config", "list", "-kind", "service-defaults"],
     [ENTRY, {**ENTRY, "Name": "api"}], format_entry_names),
    ("proxy_status", ["proxy", "status"], PROXIES, format_status),
    ("query_list", ["query", "list"], QUERIES, format_queries),
    ("query_read", ["query", "read", QUERIES[0]["ID"]], QUERIES[:1], format_read),
    ("query_execute", ["query", "execute", "web-v1"], EXECUTION, format_execution),
]  # fmt: skip


@pytest.fixture(scope="module")
def parser() -> argparse.ArgumentParser:
    return build_parser()


@pytest.mark.parametrize(("name", "argv", "answer", "table"), CASES, ids=[c[0] for c in CASES])
def test_tables_and_json_of_every_listing_match_their_golden_files(
    golden, capsys, parser, name: str, argv: list[str], answer: Any, table: Callable[[Any], str]
) -> None:
    args = parse(parser, argv)
    emit(args, answer, table)
    shown = capsys.readouterr().out
    args = parse(parser, [*argv, "-format=json"])
    emit(args, answer, table)
    as_json = capsys.readouterr().out
    golden.check(f"cli/{name}.txt", shown)
    golden.check(f"cli/{name}.json", as_json)


def test_config_read_prints_json_unless_asked_for_a_table(capsys, parser) -> None:
    emit(parse(parser, ["config", "read", "-kind", "mesh", "-name", "mesh"]), ENTRY, format_entry)
    assert capsys.readouterr().out.startswith('{\n  "CreateIndex": 3,')
