"""The cache of forwarded answers, with an injected clock: TTLs, negative caching, LRU, replay."""

from __future__ import annotations

import dns.flags
import dns.message
import dns.rcode
import dns.rdatatype
import dns.rrset

from loom.dns.cache import ResponseCache, cache_ttl, prepare
from loom.dns.handler import PacketHandler, Pending
from loom.dns.wire import query_for, walk_response
from tests.unit.dns.dnstest import query


def upstream_reply(pending: Pending, *, rcode: int = dns.rcode.NOERROR,
                   answers: list[tuple[int, str]] | None = None,
                   soa: tuple[int, int] | None = None) -> bytes:
    """What a resolver would answer to the query the proxy sends upstream for ``pending``."""
    sent = dns.message.from_wire(query_for(0x5151, pending.question))
    reply = dns.message.make_response(sent)
    reply.set_rcode(rcode)
    name = sent.question[0].name
    for ttl, address in answers or []:
        reply.answer.append(dns.rrset.from_text(name, ttl, "IN", "A", address))
    if soa is not None:
        ttl, minimum = soa
        soa_text = f"ns.example.org. admin.example.org. 1 2 3 4 {minimum}"
        reply.authority.append(dns.rrset.from_text("example.org.", ttl, "IN", "SOA", soa_text))
    return reply.to_wire()


def forward(handler: PacketHandler, wire: bytes, now: float) -> Pending:
    pending = handler.handle(wire, now)
    assert isinstance(pending, Pending)
    return pending


def test_a_forwarded_answer_is_replayed_from_the_cache_with_aged_ttls(
    handler: PacketHandler,
) -> None:
    pending = forward(handler, query("www.example.org", qid=1), now=100.0)
    entry = handler.store(pending, upstream_reply(pending, answers=[(300, "192.0.2.7"),
                                                                     (60, "192.0.2.8")]), 100.0)
    first = handler.reply(pending, entry, 100.0)
    assert dns.message.from_wire(first).id == 1
    assert walk_response(first).ttls == (300, 60)

    hit = handler.handle(query("WWW.example.org", qid=2), 125.4)
    assert isinstance(hit, bytes)
    assert walk_response(hit).ttls == (275, 35)  # aged by 25 whole seconds
    msg = dns.message.from_wire(hit)
    assert msg.id == 2 and str(msg.question[0].name) == "WWW.example.org."
    assert handler.metrics.cache_hits == 1 and handler.metrics.forwarded == 1


def test_a_positive_answer_expires_after_its_smallest_ttl(handler: PacketHandler) -> None:
    pending = forward(handler, query("www.example.org"), now=0.0)
    handler.store(pending, upstream_reply(pending, answers=[(300, "192.0.2.7"),
                                                            (60, "192.0.2.8")]), 0.0)
    assert isinstance(handler.handle(query("www.example.org"), 59.9), bytes)
    assert isinstance(handler.handle(query("www.example.org"), 60.0), Pending)


def test_nxdomain_is_cached_for_the_soa_minimum(handler: PacketHandler) -> None:
    pending = forward(handler, query("nope.example.org"), now=0.0)
    entry = handler.store(pending, upstream_reply(pending, rcode=dns.rcode.NXDOMAIN,
                                                  soa=(3600, 15)), 0.0)
    assert entry is not None and entry.expires_at == 15.0
    hit = handler.handle(query("nope.example.org"), 10.0)
    assert isinstance(hit, bytes) and dns.message.from_wire(hit).rcode() == dns.rcode.NXDOMAIN
    assert isinstance(handler.handle(query("nope.example.org"), 15.0), Pending)


def test_nodata_is_cached_for_the_soa_ttl_when_it_is_smaller(handler: PacketHandler) -> None:
    pending = forward(handler, query("www.example.org", "AAAA"), now=0.0)
    entry = handler.store(pending, upstream_reply(pending, soa=(20, 900)), 0.0)
    assert entry is not None and entry.expires_at == 20.0


def test_a_negative_answer_without_soa_and_servfail_are_not_cached(
    handler: PacketHandler,
) -> None:
    for rcode in (dns.rcode.NXDOMAIN, dns.rcode.SERVFAIL):
        pending = forward(handler, query("bad.example.org"), now=0.0)
        handler.store(pending, upstream_reply(pending, rcode=rcode), 0.0)
        assert isinstance(handler.handle(query("bad.example.org"), 1.0), Pending)
    assert len(handler.cache) == 0


def test_an_upstream_nxdomain_for_a_known_name_becomes_nodata(handler: PacketHandler) -> None:
    pending = forward(handler, query("productpage.ns1", "MX"), now=0.0)
    assert pending.known
    entry = handler.store(pending, upstream_reply(pending, rcode=dns.rcode.NXDOMAIN,
                                                  soa=(60, 60)), 0.0)
    msg = dns.message.from_wire(handler.reply(pending, entry, 0.0))
    assert msg.rcode() == dns.rcode.NOERROR and msg.answer == []
    assert handler.metrics.nxdomain == 0


def test_without_an_upstream_answer_the_asker_gets_servfail(handler: PacketHandler) -> None:
    pending = forward(handler, query("www.example.org", edns=True, qid=9), now=0.0)
    assert handler.store(pending, None, 0.0) is None
    msg = dns.message.from_wire(handler.reply(pending, None, 0.0))
    assert msg.rcode() == dns.rcode.SERVFAIL and msg.id == 9 and msg.edns == 0
    assert handler.metrics.servfail == 1


def test_the_opt_record_follows_the_asker_not_the_upstream(handler: PacketHandler) -> None:
    plain = forward(handler, query("www.example.org"), now=0.0)
    reply = upstream_reply(plain, answers=[(300, "192.0.2.7")])
    assert dns.message.from_wire(reply).edns == 0  # upstream spoke EDNS to us
    entry = handler.store(plain, reply, 0.0)
    assert dns.message.from_wire(handler.reply(plain, entry, 0.0)).edns == -1
    with_edns = handler.handle(query("www.example.org", edns=True), 1.0)
    assert isinstance(with_edns, bytes) and dns.message.from_wire(with_edns).edns == 0


def test_replayed_answers_are_not_authoritative(handler: PacketHandler) -> None:
    pending = forward(handler, query("www.example.org"), now=0.0)
    reply = dns.message.from_wire(upstream_reply(pending, answers=[(300, "192.0.2.7")]))
    reply.flags |= dns.flags.AA
    entry = handler.store(pending, reply.to_wire(), 0.0)
    assert not dns.message.from_wire(handler.reply(pending, entry, 0.0)).flags & dns.flags.AA


def test_the_cache_evicts_the_least_recently_used_entry(handler: PacketHandler) -> None:
    pending = forward(handler, query("a.example.org"), now=0.0)
    info_wire = upstream_reply(pending, answers=[(300, "192.0.2.7")])
    entry = prepare(info_wire, walk_response(info_wire), 0.0)
    cache = ResponseCache(2)
    cache.put(b"a", entry)
    cache.put(b"b", entry)
    assert cache.get(b"a", 1.0) is entry  # "a" is now the most recently used
    cache.put(b"c", entry)
    assert cache.get(b"b", 1.0) is None
    assert cache.get(b"a", 1.0) is entry and cache.get(b"c", 1.0) is entry
    assert len(cache) == 2


def test_a_zero_ttl_answer_is_not_kept() -> None:
    wire = dns.message.make_response(dns.message.make_query("a.example", "A"))
    wire.answer.append(dns.rrset.from_text("a.example.", 0, "IN", "A", "192.0.2.1"))
    info = walk_response(wire.to_wire())
    assert cache_ttl(info) == 0
    cache = ResponseCache(5)
    cache.put(b"k", prepare(wire.to_wire(), info, 0.0))
    assert len(cache) == 0
