"""Bounded fuzzing of the packet path: random and mutated packets never crash the handler.

Every answer the handler gives must parse with dnspython and carry the query's ID; every query
it would send upstream must parse; arbitrary bytes as the upstream's reply (after the checks
the forwarder applies to every reply) must still yield a parseable answer, or SERVFAIL.
Hypothesis runs a fixed number of examples with no deadline and no example database, so
``make test`` stays bounded and writes nothing.
"""

from __future__ import annotations

import struct

import dns.message
import dns.rcode
import dns.rrset
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from loom.dns.cache import ResponseCache
from loom.dns.handler import PacketHandler, Pending
from loom.dns.metrics import Metrics
from loom.dns.resolve import View
from loom.dns.table import NameTable
from loom.dns.wire import Question, WireError, answers, check_response, query_for
from tests.unit.dns.dnstest import MESH, SEARCH, query

FUZZ = settings(max_examples=300, deadline=None, database=None,
                suppress_health_check=[HealthCheck.too_slow])

SEEDS = [
    query("productpage"),
    query("reviews.ns2.ns1.svc.cluster.local", "AAAA", edns=True),
    query("db.ns2.svc.cluster.local"),
    query("www.example.org", "MX", edns=True),
    query("web.virtual.consul", "A"),
]


def new_handler() -> PacketHandler:
    view = View(namespace="ns1", search=SEARCH)
    return PacketHandler(NameTable.from_json(MESH), view, ResponseCache(50), Metrics())


def as_forwarded(upstream: bytes, q: Question) -> bytes | None:
    """What the forwarder hands over: the reply if it passes the forwarder's checks, else None.

    The fuzzed replies carry ID 1, the ID the harness builds its upstream queries with.
    """
    try:
        check_response(upstream)
    except WireError:
        return None
    return upstream if answers(upstream, 1, q) else None


def check(handler: PacketHandler, packet: bytes, upstream: bytes) -> None:
    out = handler.handle(packet, 0.0)
    if isinstance(out, Pending):
        dns.message.from_wire(query_for(1, out.question))  # what goes upstream is valid
        entry = handler.store(out, as_forwarded(upstream, out.question), 0.0)
        out = handler.reply(out, entry, 0.0)
        if entry is None:
            assert dns.message.from_wire(out).rcode() == dns.rcode.SERVFAIL
    if out is not None:
        reply = dns.message.from_wire(out)
        assert reply.id == struct.unpack_from("!H", packet)[0]


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    packet = bytearray(draw(st.sampled_from(SEEDS)))
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(["flip", "cut", "insert", "count"]))
        if kind == "flip" and packet:
            packet[draw(st.integers(0, len(packet) - 1))] = draw(st.integers(0, 255))
        elif kind == "cut":
            del packet[draw(st.integers(0, len(packet))):]
        elif kind == "insert":
            at = draw(st.integers(0, len(packet)))
            packet[at:at] = draw(st.binary(min_size=1, max_size=8))
        elif kind == "count" and len(packet) >= 12:
            at = draw(st.sampled_from([4, 6, 8, 10]))
            packet[at:at + 2] = struct.pack("!H", draw(st.integers(0, 3)))
    return bytes(packet)


@FUZZ
@given(packet=st.binary(max_size=600), upstream=st.binary(max_size=200))
def test_random_bytes_never_crash_the_handler(packet: bytes, upstream: bytes) -> None:
    check(new_handler(), packet, upstream)


@FUZZ
@given(packet=mutated(), upstream=st.binary(max_size=200))
def test_mutated_queries_never_crash_the_handler(packet: bytes, upstream: bytes) -> None:
    check(new_handler(), packet, upstream)


@FUZZ
@given(flips=st.lists(st.tuples(st.integers(0, 200), st.integers(0, 255)), max_size=4),
       tail=st.binary(max_size=16), cut=st.integers(0, 400))
def test_mutated_upstream_replies_never_crash_the_handler(
    flips: list[tuple[int, int]], tail: bytes, cut: int
) -> None:
    handler = new_handler()
    out = handler.handle(query("www.example.org", edns=True, qid=77), 0.0)
    assert isinstance(out, Pending)
    sent = dns.message.from_wire(query_for(1, out.question))
    good = dns.message.make_response(sent)
    good.answer.append(dns.rrset.from_text("www.example.org.", 60, "IN", "A", "192.0.2.1"))
    good.answer.append(dns.rrset.from_text("www.example.org.", 60, "IN", "TXT", '"v=1"'))
    upstream = bytearray(good.to_wire() + tail)
    for at, value in flips:
        if at < len(upstream):
            upstream[at] = value
    entry = handler.store(out, as_forwarded(bytes(upstream[:cut]), out.question), 0.0)
    assert dns.message.from_wire(handler.reply(out, entry, 0.0)).id == 77
