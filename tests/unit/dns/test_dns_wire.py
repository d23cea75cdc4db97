"""Packets in, packets out: the handler's answers read back with dnspython, and bad input."""

from __future__ import annotations

import struct

import dns.edns
import dns.flags
import dns.message
import dns.rcode
import dns.rdatatype
import dns.rrset
import pytest

from loom.dns.cache import ResponseCache
from loom.dns.handler import PacketHandler, Pending
from loom.dns.metrics import Metrics
from loom.dns.resolve import View
from loom.dns.table import NameTable
from loom.dns.wire import WireError, encode_name, walk_response
from tests.unit.dns.dnstest import answer_lines, query


def respond(handler: PacketHandler, wire: bytes, tcp: bool = False) -> dns.message.Message:
    out = handler.handle(wire, 0.0, tcp=tcp)
    assert isinstance(out, bytes), out
    return dns.message.from_wire(out)


def test_a_short_name_gets_the_virtual_ip_authoritatively_with_ttl_30(
    handler: PacketHandler,
) -> None:
    msg = respond(handler, query("productpage", qid=777))
    assert msg.id == 777
    assert msg.rcode() == dns.rcode.NOERROR
    assert msg.flags & dns.flags.QR and msg.flags & dns.flags.AA and msg.flags & dns.flags.RA
    assert msg.flags & dns.flags.RD  # echoed from the query
    assert answer_lines(msg.to_wire()) == ["productpage. 30 IN A 240.0.0.1"]
    assert handler.metrics.local_answers == 1


def test_the_answer_echoes_the_case_of_the_question(handler: PacketHandler) -> None:
    msg = respond(handler, query("ProductPage.NS1.svc.cluster.LOCAL"))
    assert str(msg.question[0].name) == "ProductPage.NS1.svc.cluster.LOCAL."
    assert answer_lines(msg.to_wire()) == ["ProductPage.NS1.svc.cluster.LOCAL. 30 IN A 240.0.0.1"]


def test_a_headless_service_answers_every_healthy_instance(handler: PacketHandler) -> None:
    lines = answer_lines(respond(handler, query("db.ns2.svc.cluster.local")).to_wire())
    assert lines == ["db.ns2.svc.cluster.local. 30 IN A 10.0.1.1",
                     "db.ns2.svc.cluster.local. 30 IN A 10.0.1.2"]
    lines = answer_lines(respond(handler, query("db.ns2.svc.cluster.local", "AAAA")).to_wire())
    assert lines == ["db.ns2.svc.cluster.local. 30 IN AAAA fd00::1:3"]


def test_a_known_name_without_the_family_is_nodata_not_nxdomain(handler: PacketHandler) -> None:
    msg = respond(handler, query("productpage.ns1", "AAAA"))
    assert msg.rcode() == dns.rcode.NOERROR and msg.answer == []
    assert msg.flags & dns.flags.AA
    assert handler.metrics.nodata == 1


def test_autopath_answers_a_cname_and_the_targets_addresses(handler: PacketHandler) -> None:
    msg = respond(handler, query("Reviews.ns2.ns1.svc.cluster.local", "AAAA"))
    assert answer_lines(msg.to_wire()) == [
        "Reviews.ns2.ns1.svc.cluster.local. 30 IN CNAME reviews.ns2.svc.cluster.local.",
        "reviews.ns2.svc.cluster.local. 30 IN AAAA fd00::2",
    ]
    assert handler.metrics.autopath_hits == 1


def test_an_edns_query_gets_an_opt_record_echoing_the_do_bit(handler: PacketHandler) -> None:
    msg = dns.message.make_query("web.default", "A", use_edns=0, want_dnssec=True)
    reply = respond(handler, msg.to_wire())
    assert reply.edns == 0 and reply.payload == 1232
    assert reply.ednsflags & dns.flags.DO
    assert answer_lines(reply.to_wire()) == ["web.default. 30 IN A 240.0.0.3"]


def test_an_edns_query_with_a_cookie_option_stays_on_the_fast_path(
    handler: PacketHandler,
) -> None:
    msg = dns.message.make_query("web.default", "A", use_edns=0,
                                 options=[dns.edns.CookieOption(b"12345678", b"")])
    reply = respond(handler, msg.to_wire())
    assert answer_lines(reply.to_wire()) == ["web.default. 30 IN A 240.0.0.3"]


def test_other_types_and_unknown_names_are_left_to_upstream(handler: PacketHandler) -> None:
    mx = handler.handle(query("productpage.ns1", "MX"), 0.0)
    unknown = handler.handle(query("example.org"), 0.0)
    assert isinstance(mx, Pending) and mx.known
    assert isinstance(unknown, Pending) and not unknown.known
    assert handler.metrics.forwarded == 2


def test_an_answer_too_big_for_plain_udp_is_truncated_and_whole_over_tcp() -> None:
    table = NameTable.from_json({"Services": [{
        "Name": "big", "Namespace": "ns1", "VirtualIPs": [],
        "Instances": [{"Address": f"10.1.{i // 250}.{i % 250 + 1}"} for i in range(40)],
    }]})
    handler = PacketHandler(table, View("ns1"), ResponseCache(10), Metrics())
    udp = respond(handler, query("big"))
    assert udp.flags & dns.flags.TC and udp.answer == []
    assert len(respond(handler, query("big"), tcp=True).answer[0]) == 40
    assert len(respond(handler, query("big", edns=True)).answer[0]) == 40
    assert handler.metrics.truncated == 1


def test_a_query_with_an_extra_record_is_answered_through_the_slow_path(
    handler: PacketHandler,
) -> None:
    msg = dns.message.make_query("web.default", "A")
    msg.additional.append(dns.rrset.from_text("x.example.", 60, "IN", "A", "192.0.2.1"))
    reply = respond(handler, msg.to_wire())
    assert answer_lines(reply.to_wire()) == ["web.default. 30 IN A 240.0.0.3"]


def test_a_table_swap_takes_effect_on_the_next_packet(handler: PacketHandler) -> None:
    assert answer_lines(respond(handler, query("web.default")).to_wire())[0].endswith("240.0.0.3")
    handler.set_table(NameTable.from_json({"Services": [
        {"Name": "web", "Namespace": "default", "VirtualIPs": ["240.0.0.99"]}]}))
    assert answer_lines(respond(handler, query("web.default")).to_wire())[0].endswith("240.0.0.99")


def header(qid: int = 1, flags: int = 0x0100, qd: int = 1, an: int = 0, ns: int = 0,
           ar: int = 0) -> bytes:
    return struct.pack("!6H", qid, flags, qd, an, ns, ar)


QTAIL = b"\x00\x01\x00\x01"
LOOP = b"\xc0\x0c"  # a pointer to itself
MALFORMED = [
    ("no questions", header(qd=0), dns.rcode.FORMERR),
    ("two questions", header(qd=2) + encode_name("a.b") + QTAIL + encode_name("c") + QTAIL,
     dns.rcode.FORMERR),
    ("question cut short", header() + b"\x03abc", dns.rcode.FORMERR),
    ("qtype missing", header() + encode_name("web.default"), dns.rcode.FORMERR),
    ("looping pointer", header() + LOOP + QTAIL, dns.rcode.FORMERR),
    ("pointer past the end", header() + b"\xc0\xff" + QTAIL, dns.rcode.FORMERR),
    ("reserved label type", header() + b"\x45abcde\x00" + QTAIL, dns.rcode.FORMERR),
    ("name over 255 bytes", header() + b"\x3f" + b"a" * 63 + b"\x3f" + b"b" * 63 + b"\x3f"
     + b"c" * 63 + b"\x3f" + b"d" * 63 + b"\x00" + QTAIL, dns.rcode.FORMERR),
    ("opt record cut short", header(ar=1) + encode_name("web") + QTAIL + b"\x00\x00\x29",
     dns.rcode.FORMERR),
    ("notify opcode", header(flags=4 << 11) + encode_name("web") + QTAIL, dns.rcode.NOTIMP),
]


@pytest.mark.parametrize(("case", "wire", "rcode"), MALFORMED, ids=[c[0] for c in MALFORMED])
def test_a_malformed_query_gets_an_error_answer_not_a_crash(
    handler: PacketHandler, case: str, wire: bytes, rcode: int
) -> None:
    out = handler.handle(wire, 0.0)
    assert isinstance(out, bytes)
    reply = dns.message.from_wire(out, question_only=True)
    assert reply.rcode() == rcode and reply.id == 1
    assert reply.flags & dns.flags.QR


def test_an_unsupported_edns_version_gets_badvers(handler: PacketHandler) -> None:
    wire = dns.message.make_query("web.default", "A", use_edns=1).to_wire()
    out = handler.handle(wire, 0.0)
    assert isinstance(out, bytes)
    assert dns.message.from_wire(out).rcode() == dns.rcode.BADVERS


@pytest.mark.parametrize("wire", [b"", b"\x00", b"\x12\x34\x01", header(flags=0x8180)],
                         ids=["empty", "one byte", "partial header", "a response"])
def test_a_packet_without_a_header_or_that_is_a_response_is_dropped(
    handler: PacketHandler, wire: bytes
) -> None:
    assert handler.handle(wire, 0.0) is None
    assert handler.metrics.dropped == 1


def test_walking_a_response_that_runs_past_its_end_fails_cleanly() -> None:
    good = dns.message.make_response(dns.message.make_query("a.example", "A"))
    good.answer.append(dns.rrset.from_text("a.example.", 60, "IN", "A", "192.0.2.1"))
    wire = good.to_wire()
    assert walk_response(wire).ttls == (60,)
    for cut in range(len(wire) - 1):
        with pytest.raises(WireError):
            walk_response(wire[:cut])


def test_encode_name_refuses_empty_and_long_labels() -> None:
    assert encode_name("a.b.") == b"\x01a\x01b\x00"
    for bad in ("a..b", "x" * 64 + ".com"):
        with pytest.raises(WireError):
            encode_name(bad)


def test_a_repeated_query_is_replayed_with_its_own_id_and_counted_again(
    handler: PacketHandler,
) -> None:
    first = handler.handle(query("reviews.ns2.ns1.svc.cluster.local", qid=1), 0.0)
    again = handler.handle(query("reviews.ns2.ns1.svc.cluster.local", qid=2), 0.0)
    assert isinstance(first, bytes) and isinstance(again, bytes)
    assert again[:2] == b"\x00\x02" and again[2:] == first[2:]
    assert (handler.metrics.local_answers, handler.metrics.autopath_hits) == (2, 2)
    nodata = [handler.handle(query("web.default", "AAAA", qid=i), 0.0) for i in (3, 4)]
    assert all(isinstance(out, bytes) for out in nodata)
    assert handler.metrics.nodata == 2


def _a_order(wire: bytes) -> list[str]:
    """The addresses of an answer in wire order (dnspython keeps insertion order)."""
    msg = dns.message.from_wire(wire)
    return [rd.to_text() for rrset in msg.answer if rrset.rdtype == 1 for rd in rrset]


@pytest.mark.parametrize(
    ("name", "edns"),
    [("db.ns2.svc.cluster.local", False), ("db.ns2.svc.cluster.local", True),
     ("db.ns2.ns1.svc.cluster.local", False)],
)
def test_answers_with_several_addresses_rotate_their_order_between_queries(
    handler: PacketHandler, name: str, edns: bool
) -> None:
    orders = []
    for qid in range(1, 5):
        out = handler.handle(query(name, edns=edns, qid=qid), 0.0)
        assert isinstance(out, bytes) and out[:2] == qid.to_bytes(2, "big")
        orders.append(_a_order(out))
    assert orders[0] == ["10.0.1.1", "10.0.1.2"]
    assert orders == [orders[0], orders[0][::-1], orders[0], orders[0][::-1]]
    tcp = handler.handle(query(name, edns=edns, qid=9), 0.0, tcp=True)
    assert isinstance(tcp, bytes) and sorted(_a_order(tcp)) == orders[0]


def test_a_single_address_answer_is_the_same_bytes_every_time(handler: PacketHandler) -> None:
    outs = {handler.handle(query("web.default", qid=7), 0.0) for _ in range(3)}
    assert len(outs) == 1
