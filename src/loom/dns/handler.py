"""The packet handler: one query in, one decision out — an answer, a drop, or "ask upstream".

This is the proxy's hot path and the one place that maps decisions to wire responses. A
query's header and question are read by hand (``struct``, no dnspython); the decision for each
distinct question is computed once per table by ``resolve`` and memoised as ready-made answer
bytes, so a repeated mesh query costs a dict lookup, a header pack and a concatenation; a UDP
query whose very bytes (but the ID) were answered before costs one lookup of those bytes in the
replay table, whose plain entries are the answer itself (``replays``, for the batched socket loop
to answer a whole batch without a call per packet) and whose others carry every rotation of
their addresses, computed once. Forwarded
questions are looked up in the response cache, and otherwise returned as ``Pending`` for the
server to send upstream; ``store``/``reply`` turn what came back into answers.

No I/O and no clock: the server passes ``now``. It never raises on any input (the fuzz test
holds it to that): bad packets become FORMERR/NOTIMP/BADVERS answers or drops.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from typing import NamedTuple

from loom.dns.cache import CachedResponse, ResponseCache, prepare, render
from loom.dns.metrics import Metrics
from loom.dns.resolve import Action, Query, View, resolve
from loom.dns.table import NameTable
from loom.dns.wire import (
    CLASS_IN,
    ECHOED_FLAGS,
    EDNS_DO,
    FLAG_AA,
    FLAG_QR,
    FLAG_RA,
    FLAG_TC,
    HEADER,
    NXDOMAIN,
    PLAIN_UDP_LIMIT,
    POINTER_TO_QUESTION,
    RCODE_MASK,
    RR_FIXED,
    SERVFAIL,
    Question,
    WireError,
    address_records,
    cname_answer,
    decode_name,
    error_response,
    name_end,
    normalize_query,
    opt_record,
    srv_answer,
    walk_response,
)

TCP_LIMIT = 65535
MEMO_LIMIT = 65536
"""Distinct questions memoised per table; the memo starts over when full (random-name floods)."""
REPLAY_LIMIT = 16384
"""Distinct UDP query packets whose whole local answer is kept per table (starts over when
full). Stub resolvers send the same bytes but the ID for a name, so most hits end here."""
ROTATIONS_KEPT_BYTES = 16384
"""A replayed answer keeps every order of its addresses ready when they take at most this
many bytes in all; a longer one (many addresses) turns its block per answer instead."""
_PLAIN, _AUTOPATH, _NODATA = 0, 1, 2
_OPT = (opt_record(False), opt_record(True))
_LOCAL_FLAGS = FLAG_QR | FLAG_AA | FLAG_RA


class Rotation:
    """Round-robin order of an answer's address records (kube-dns and Istio rotate them).

    The records of one answer all have the same size and owner, so the answer in the next
    order is the same bytes with the address block turned by one record: no re-encoding.
    """

    __slots__ = ("count", "next", "size", "start")

    def __init__(self, start: int, size: int, count: int) -> None:
        self.start = start
        """Offset of the first address record in the answer body."""
        self.size = size
        """Bytes per address record."""
        self.count = count
        """Address records in the answer (at least two)."""
        self.next = 0
        """How many records the next answer's block is turned by."""

    def turn(self, out: bytes, offset: int) -> bytes:
        """``out`` (holding the body at ``offset``) with its addresses in the next order."""
        k = self.next
        self.next = (k + 1) % self.count
        return self.order(out, offset, k)

    def order(self, out: bytes, offset: int, k: int) -> bytes:
        """``out`` with its address block turned by ``k`` records (the ``k``-th order)."""
        if not k:
            return out
        a = offset + self.start
        cut = a + k * self.size
        end = a + self.count * self.size
        if len(out) < end:
            return out  # truncated: no answers to turn
        return out[:a] + out[cut:end] + out[a:cut] + out[end:]


class LocalAnswer(NamedTuple):
    """Ready-made answer records for one question under one table."""

    ancount: int
    body: bytes
    kind: int
    """What the answer counts as besides a local answer: _PLAIN, _AUTOPATH or _NODATA."""
    rotation: Rotation | None = None
    """The answer's address order, when it has several addresses."""
    arcount: int = 0
    """Additional records at the end of ``body`` (an SRV answer's target addresses)."""


class Replay:
    """A replayed answer that is not just bytes: it rotates, or counts as more than an answer.

    Plain answers (one order, counted only as local answers: the most common) are replay
    entries as bare bytes instead, which the batched loop writes without calling anything.
    """

    __slots__ = ("answer", "offset", "orders", "payload")

    def __init__(self, payload: bytes, answer: LocalAnswer, offset: int) -> None:
        self.payload = payload
        """The answer but its ID, addresses in table order."""
        self.answer = answer
        self.offset = offset
        """Where the answer body starts in ``payload``."""
        rotation = answer.rotation
        self.orders: tuple[bytes, ...] = ()
        """The payload in every order of the rotation, when small enough to keep."""
        if rotation is not None and len(payload) * rotation.count <= ROTATIONS_KEPT_BYTES:
            self.orders = tuple(rotation.order(payload, offset, k) for k in range(rotation.count))

    def next(self) -> bytes:
        """The payload to send now (the question's next order, when it rotates)."""
        rotation = self.answer.rotation
        if rotation is None:
            return self.payload
        if not self.orders:
            return rotation.turn(self.payload, self.offset)
        k = rotation.next
        rotation.next = (k + 1) % rotation.count
        return self.orders[k]


class Forward(NamedTuple):
    """Memo entry for a question the table does not answer."""

    known: bool
    """The name is a mesh name (another qtype): an upstream NXDOMAIN becomes NODATA."""


class Pending(NamedTuple):
    """A query waiting for upstream; one per asker, several may share a ``cache_key``."""

    question: Question
    cache_key: bytes
    known: bool
    tcp: bool


_FORWARD = Forward(False)
_FORWARD_KNOWN = Forward(True)


class PacketHandler:
    """Answers packets for one view; the table (and its memo) is swapped atomically."""

    def __init__(
        self, table: NameTable, view: View, cache: ResponseCache, metrics: Metrics
    ) -> None:
        self.view = view
        self.cache = cache
        self.metrics = metrics
        self._state: tuple[NameTable, dict[bytes, LocalAnswer | Forward],
                           dict[bytes, bytes | Replay]] = (table, {}, {})

    @property
    def table(self) -> NameTable:
        return self._state[0]

    @property
    def replays(self) -> Mapping[bytes, bytes | Replay]:
        """The current table's replay entries: a UDP query's bytes but its ID -> the answer
        but its ID when that is all there is to it (bytes), else a ``Replay``.

        The batched loop answers the bytes entries of a batch by itself, then counts them with
        ``count_replayed``; the others go through ``replayed`` or ``handle``. Read it once per
        batch: ``set_table`` replaces it.
        """
        return self._state[2]

    def count_replayed(self, count: int) -> None:
        """Count ``count`` queries answered from bytes entries of ``replays``."""
        metrics = self.metrics
        metrics.queries += count
        metrics.local_answers += count

    def set_table(self, table: NameTable) -> None:
        """Use ``table`` from the next packet on (one assignment: atomic for the event loop)."""
        self._state = (table, {}, {})

    def handle(self, data: bytes, now: float, tcp: bool = False) -> bytes | Pending | None:
        """The answer to send, a Pending to forward, or None to drop the packet."""
        metrics = self.metrics
        if not tcp:
            # Fastest path: these very bytes (but the ID) were answered from this table before.
            payload = self.replayed(data[2:])
            if payload is not None:
                return data[:2] + payload
        metrics.queries += 1
        table, memo, replay = self._state
        q = _fast_parse(data)
        if q is None:
            slow = normalize_query(data)
            if slow is None:
                metrics.dropped += 1
                return None
            if isinstance(slow, int):
                metrics.formerr += 1
                return error_response(data, slow)
            q = slow
        entry = memo.get(q.key)
        if entry is None:
            entry = self._decide(q.key, table, memo)
        if isinstance(entry, LocalAnswer):
            out = self._local(q, entry, tcp)
            body_at = HEADER.size + len(q.question)
            if not tcp:
                if len(replay) >= REPLAY_LIMIT:
                    replay.clear()
                plain = entry.rotation is None and not entry.kind
                replay[data[2:]] = out[2:] if plain else Replay(out[2:], entry, body_at - 2)
            if entry.rotation is not None:
                return entry.rotation.turn(out, body_at)
            return out
        cache_key = q.key + _edns_bits(q)
        cached = self.cache.get(cache_key, now)
        if cached is not None:
            metrics.cache_hits += 1
            if cached.message[3] & RCODE_MASK == NXDOMAIN:
                metrics.nxdomain += 1
            return self._fit(render(cached, q, now), q, tcp)
        metrics.forwarded += 1
        return Pending(q, cache_key, entry.known, tcp)

    def replayed(self, tail: bytes) -> bytes | None:
        """The answer but its ID to a UDP query whose bytes but its ID are ``tail``, when
        these very bytes were answered from the table before; None: call ``handle``.

        Counted as a query when it answers (the batched socket loop calls this first and
        writes the answer after the query's own ID, in place).
        """
        hit = self._state[2].get(tail)
        if hit is None:
            return None
        metrics = self.metrics
        metrics.queries += 1
        metrics.local_answers += 1
        if type(hit) is bytes:
            return hit
        assert isinstance(hit, Replay)
        if hit.answer.kind:
            self._count(hit.answer.kind)
        return hit.next()

    def store(self, pending: Pending, upstream: bytes | None, now: float) -> CachedResponse | None:
        """Cache what upstream answered (if cacheable); None when there is nothing usable."""
        if upstream is None:
            return None
        try:
            info = walk_response(upstream)
        except WireError:
            return None
        if pending.known and info.rcode == NXDOMAIN:
            upstream = upstream[:3] + bytes([upstream[3] & ~RCODE_MASK & 0xFF]) + upstream[4:]
            info = replace(info, flags=info.flags & ~RCODE_MASK)
        entry = prepare(upstream, info, now)
        self.cache.put(pending.cache_key, entry)
        return entry

    def reply(self, pending: Pending, entry: CachedResponse | None, now: float) -> bytes:
        """The answer for one asker of a forwarded question (SERVFAIL without an entry)."""
        q = pending.question
        if entry is None:
            self.metrics.servfail += 1
            return self._fit(self.failure(q, SERVFAIL), q, pending.tcp)
        if entry.message[3] & RCODE_MASK == NXDOMAIN:
            self.metrics.nxdomain += 1
        return self._fit(render(entry, q, now), q, pending.tcp)

    def failure(self, q: Question, rcode: int) -> bytes:
        """An error answer that still carries the question (SERVFAIL, REFUSED)."""
        head = FLAG_QR | FLAG_RA | (q.flags & ECHOED_FLAGS) | rcode
        if not q.edns_payload:
            return HEADER.pack(q.qid, head, 1, 0, 0, 0) + q.question
        return HEADER.pack(q.qid, head, 1, 0, 0, 1) + q.question + _OPT[q.dnssec_ok]

    def _count(self, kind: int) -> None:
        if kind == _AUTOPATH:
            self.metrics.autopath_hits += 1
        elif kind == _NODATA:
            self.metrics.nodata += 1

    def _local(self, q: Question, entry: LocalAnswer, tcp: bool) -> bytes:
        self.metrics.local_answers += 1
        if entry.kind:
            self._count(entry.kind)
        head = _LOCAL_FLAGS | (q.flags & ECHOED_FLAGS)
        if not q.edns_payload:
            out = (
                HEADER.pack(q.qid, head, 1, entry.ancount, 0, entry.arcount)
                + q.question
                + entry.body
            )
            if len(out) <= PLAIN_UDP_LIMIT or tcp:
                return out
        else:
            out = (
                HEADER.pack(q.qid, head, 1, entry.ancount, 0, entry.arcount + 1)
                + q.question
                + entry.body
                + _OPT[q.dnssec_ok]
            )
        return self._fit(out, q, tcp)

    def _fit(self, out: bytes, q: Question, tcp: bool) -> bytes:
        """``out`` if it fits the transport, else a truncated answer (TC) inviting TCP."""
        limit = TCP_LIMIT if tcp else (q.edns_payload or PLAIN_UDP_LIMIT)
        if len(out) <= limit:
            return out
        self.metrics.truncated += 1
        flags = (out[2] << 8 | out[3]) | FLAG_TC
        ar = 1 if q.edns_payload else 0
        tail = _OPT[q.dnssec_ok] if q.edns_payload else b""
        return HEADER.pack(q.qid, flags, 1, 0, 0, ar) + q.question + tail

    def _decide(
        self, key: bytes, table: NameTable, memo: dict[bytes, LocalAnswer | Forward]
    ) -> LocalAnswer | Forward:
        entry = _decision(key, table, self.view)
        if len(memo) >= MEMO_LIMIT:
            memo.clear()
        memo[key] = entry
        return entry


def _decision(key: bytes, table: NameTable, view: View) -> LocalAnswer | Forward:
    """What to do with a question (lowercased wire question), under ``table`` and ``view``."""
    qtype = key[-4] << 8 | key[-3]
    qclass = key[-2] << 8 | key[-1]
    name = decode_name(key[:-4])
    if qclass != CLASS_IN or name is None:
        return _FORWARD
    res = resolve(Query(name, qtype), table, view)
    if res.action is Action.FORWARD:
        return _FORWARD_KNOWN if res.known else _FORWARD
    if res.srv:  # a prepared query's SRV answer: in table order, targets' addresses after
        answers, extra = srv_answer(res.srv, res.ttl)
        return LocalAnswer(len(res.srv), answers + extra, _PLAIN, None, len(res.srv))
    count = len(res.addresses)
    turned = () if res.ordered else res.addresses  # a Near query's order is its answer
    if res.cname:
        body = cname_answer(len(key), res.cname, res.addresses, res.ttl)
        return LocalAnswer(1 + count, body, _AUTOPATH, _rotation(body, turned))
    body = address_records(POINTER_TO_QUESTION, res.addresses, res.ttl)
    return LocalAnswer(count, body, _PLAIN if count else _NODATA, _rotation(body, turned))


def _rotation(body: bytes, addresses: tuple[bytes, ...]) -> Rotation | None:
    """The order keeper of an answer whose body ends with the records of ``addresses``."""
    if len(addresses) < 2:
        return None
    size = len(POINTER_TO_QUESTION) + RR_FIXED.size + len(addresses[0])
    return Rotation(len(body) - size * len(addresses), size, len(addresses))


def _edns_bits(q: Question) -> bytes:
    """The part of a query besides its question that changes upstream's answer: DO and CD."""
    return bytes([(1 if q.dnssec_ok else 0) | (2 if q.flags & 0x0010 else 0)])


def _fast_parse(data: bytes) -> Question | None:
    """Header + one uncompressed question + at most an EDNS0 OPT record; None otherwise."""
    size = len(data)
    if size < 17:
        return None
    qid, flags, qdcount, ancount, nscount, arcount = HEADER.unpack_from(data)
    if flags & 0xF800 or qdcount != 1 or ancount or nscount or arcount > 1:
        return None
    end = name_end(data, 12)
    if end < 0:
        return None
    qend = end + 4
    if arcount == 0:
        if qend > size:
            return None
        return Question(qid, flags, data[12:qend], data[12:end].lower() + data[end:qend], 0, False)
    # One additional record: it must be a version-0 OPT with the root owner, ending the packet.
    if qend + 11 > size or data[qend] != 0 or data[qend + 1] != 0 or data[qend + 2] != 41:
        return None
    payload = data[qend + 3] << 8 | data[qend + 4]
    if data[qend + 6] != 0 or qend + 11 + (data[qend + 9] << 8 | data[qend + 10]) != size:
        return None
    dnssec_ok = bool(data[qend + 7] & (EDNS_DO >> 8))
    return Question(
        qid,
        flags,
        data[12:qend],
        data[12:end].lower() + data[end:qend],
        max(payload, PLAIN_UDP_LIMIT),
        dnssec_ok,
    )
