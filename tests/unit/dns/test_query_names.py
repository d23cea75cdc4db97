"""``<query>.query.consul`` in the proxy: the table's ``Queries`` parsed (bad ones refused by
field), indexed by name and by the hash of an ID, and answered as A, AAAA and SRV with the
query's TTL, a ``Near`` query's order kept."""

from __future__ import annotations

import copy
import re
from typing import Any

import dns.message
import pytest

from loom.dns.cache import ResponseCache
from loom.dns.errors import TableError
from loom.dns.handler import PacketHandler
from loom.dns.metrics import Metrics
from loom.dns.resolve import View
from loom.dns.table import NameTable
from loom.domain.queries import dns_id_key
from tests.unit.dns.dnstest import MESH, answer_lines, query

QID = "0c7dbd0f-2e5d-4a4b-9b7e-1b1c1d1e1f10"
TABLE: dict[str, Any] = {
    **MESH,
    "Queries": [
        {"Name": "gq-pass", "Service": "gq", "TTL": 7, "Ordered": False,
         "Instances": [{"Address": "10.9.0.1", "Port": 7000}, {"Address": "fd00::9", "Port": 7001}]},
        {"IDHash": dns_id_key(QID), "Service": "gq", "TTL": 0, "Ordered": False,
         "Instances": [{"Address": "10.9.0.1", "Port": 7000}]},
        {"Name": "near", "Service": "gq", "TTL": 0, "Ordered": True,
         "Instances": [{"Address": "10.9.0.3", "Port": 1}, {"Address": "10.9.0.1", "Port": 1},
                       {"Address": "10.9.0.2", "Port": 1}]},
        {"Name": "plain", "Service": "gq", "TTL": 0, "Ordered": False,
         "Instances": [{"Address": "10.9.0.3", "Port": 1}, {"Address": "10.9.0.1", "Port": 1},
                       {"Address": "10.9.0.2", "Port": 1}]},
    ],
}  # fmt: skip


@pytest.fixture
def proxy() -> PacketHandler:
    return PacketHandler(NameTable.from_json(TABLE), View(), ResponseCache(100), Metrics())


def ask(proxy: PacketHandler, name: str, rdtype: str = "A") -> dns.message.Message:
    out = proxy.handle(query(name, rdtype), now=0.0)
    assert isinstance(out, bytes), f"{name} {rdtype} was not answered here"
    return dns.message.from_wire(out)


def test_a_query_answers_by_name_in_either_form_with_its_ttl(proxy: PacketHandler) -> None:
    for name in ("gq-pass.query.consul.", "GQ-PASS.query.dc1.consul."):
        assert answer_lines(proxy.handle(query(name), 0.0)) == [  # type: ignore[arg-type]
            f"{name} 7 IN A 10.9.0.1"]  # fmt: skip
    aaaa = ask(proxy, "gq-pass.query.consul.", "AAAA")
    assert [rr.to_text() for rr in aaaa.answer] == ["gq-pass.query.consul. 7 IN AAAA fd00::9"]


def test_a_query_answers_by_its_id_which_the_table_holds_only_hashed(
    proxy: PacketHandler,
) -> None:
    msg = ask(proxy, f"{QID.upper()}.query.consul.")
    assert [rr.to_text().split()[-1] for rr in msg.answer] == ["10.9.0.1"]
    assert msg.answer[0].ttl == 30  # no DNS.TTL: the proxy's default
    assert QID not in str(TABLE)
    other = "11111111-2222-3333-4444-555555555555.query.consul."
    assert not isinstance(proxy.handle(query(other), 0.0), bytes)  # unknown: forwarded


def test_srv_answers_name_consuls_address_targets_and_carry_their_addresses(
    proxy: PacketHandler,
) -> None:
    msg = ask(proxy, "gq-pass.query.consul.", "SRV")
    assert [rr.to_text() for rr in msg.answer] == [
        "gq-pass.query.consul. 7 IN SRV 1 1 7000 0a090001.addr.dc1.consul.\n"
        "gq-pass.query.consul. 7 IN SRV 1 1 7001 fd000000000000000000000000000009.addr.dc1.consul."
    ]
    assert sorted(rr.to_text() for rr in msg.additional) == [
        "0a090001.addr.dc1.consul. 7 IN A 10.9.0.1",
        "fd000000000000000000000000000009.addr.dc1.consul. 7 IN AAAA fd00::9",
    ]
    target = ask(proxy, "0a090001.addr.dc1.consul.")
    assert [rr.to_text().split()[-1] for rr in target.answer] == ["10.9.0.1"]
    edns = proxy.handle(query("gq-pass.query.consul.", "SRV", edns=True), 0.0)
    assert isinstance(edns, bytes) and dns.message.from_wire(edns).edns == 0  # OPT last
    # A service's own name has no SRV here: forwarded as before.
    assert not isinstance(proxy.handle(query("web.service.consul.", "SRV"), 0.0), bytes)


def first_addresses(proxy: PacketHandler, name: str) -> list[str]:
    return [str(ask(proxy, name).answer[0][0]) for _ in range(3)]


def test_a_near_query_keeps_its_order_where_others_rotate(proxy: PacketHandler) -> None:
    assert first_addresses(proxy, "near.query.consul.") == ["10.9.0.3"] * 3
    assert first_addresses(proxy, "plain.query.consul.") == ["10.9.0.3", "10.9.0.1", "10.9.0.2"]


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("TTL", -1, "Queries[0].TTL: expected an integer 0..2147483647"),
        ("TTL", True, "Queries[0].TTL"),
        ("Ordered", "yes", "Queries[0].Ordered: expected true or false"),
        ("Name", "a.b", "Queries[0].Name: expected a DNS label"),
        ("IDHash", "zz", "Queries[0].IDHash: expected 48 hex digits (and no Name)"),
        ("Instances", [{"Address": "10.0.0.1", "Port": 70000}], "Instances[0].Port"),
        ("Instances", [{"Address": "host.example", "Port": 1}], "Instances[0].Address"),
        ("Extra", 1, "Queries[0]: Extra: unknown field"),
    ],
)
def test_a_bad_query_entry_is_refused_naming_its_field(
    field: str, value: Any, message: str
) -> None:
    bad = copy.deepcopy(TABLE)
    bad["Queries"][0][field] = value
    with pytest.raises(TableError, match=re.escape(message)):
        NameTable.from_json(bad)
