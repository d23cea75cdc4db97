"""The cache of forwarded answers: keep upstream responses for their TTL, replay them aged.

Istio's proxy forwards without caching; ours keeps what the pod's resolvers said, so repeated
lookups of non-mesh names (package mirrors, cloud APIs) stop costing a round trip to kube-dns.
Positive answers live for the smallest TTL in them; NXDOMAIN and NODATA for the SOA's negative
TTL (RFC 2308: min of the SOA record's TTL and its MINIMUM field), and are not cached without
an SOA. SERVFAIL and other errors are never cached. The cache is a bounded LRU.

Pure: the caller passes ``now`` (a monotonic clock reading in seconds), so expiry and ageing are
tested without sleeping.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

from loom.dns.wire import (
    FLAG_AA,
    FLAG_RD,
    FLAG_TC,
    HEADER,
    NOERROR,
    NXDOMAIN,
    U32,
    Question,
    ResponseInfo,
    opt_record,
)


@dataclass(frozen=True)
class CachedResponse:
    """An upstream response made ready to replay: no OPT, no ID, AA and TC cleared."""

    message: bytes
    question_end: int
    ttl_offsets: tuple[int, ...]
    ttls: tuple[int, ...]
    stored_at: float
    """Clock reading when it arrived; TTLs are aged by the seconds since."""
    expires_at: float


def cache_ttl(info: ResponseInfo) -> int:
    """How long a response may be kept, in seconds; 0 means not at all."""
    if info.rcode == NOERROR and info.ancount:
        return min(info.ttls, default=0)
    if info.rcode in (NOERROR, NXDOMAIN) and info.negative_ttl is not None:
        return info.negative_ttl
    return 0


def prepare(message: bytes, info: ResponseInfo, now: float) -> CachedResponse:
    """Strip what must not be replayed (ID, OPT, AA/TC flags) and note where the TTLs are."""
    offsets = info.ttl_offsets
    message = message[: info.end]
    if info.opt_span is not None:
        start, end = info.opt_span
        removed = end - start
        message = message[:start] + message[end:]
        offsets = tuple(o - removed if o >= end else o for o in offsets)
        arcount = HEADER.unpack_from(message)[5] - 1
        message = message[:10] + arcount.to_bytes(2, "big") + message[12:]
    flags = info.flags & ~(FLAG_AA | FLAG_TC)
    message = b"\x00\x00" + flags.to_bytes(2, "big") + message[4:]
    return CachedResponse(
        message, info.question_end, offsets, info.ttls, now, now + cache_ttl(info)
    )


def render(entry: CachedResponse, q: Question, now: float) -> bytes:
    """The cached response for one asker: its ID, RD bit and question case, TTLs aged."""
    buf = bytearray(entry.message)
    flags = (buf[2] << 8 | buf[3]) & ~FLAG_RD | (q.flags & FLAG_RD)
    buf[0:4] = q.qid.to_bytes(2, "big") + flags.to_bytes(2, "big")
    buf[HEADER.size : entry.question_end] = q.question
    elapsed = int(now - entry.stored_at)
    if elapsed > 0:
        for offset, ttl in zip(entry.ttl_offsets, entry.ttls, strict=True):
            U32.pack_into(buf, offset, max(ttl - elapsed, 0))
    if q.edns_payload:
        arcount = (buf[10] << 8 | buf[11]) + 1
        buf[10:12] = arcount.to_bytes(2, "big")
        buf += opt_record(q.dnssec_ok)
    return bytes(buf)


class ResponseCache:
    """A bounded LRU of prepared responses keyed by lowercased question + DO/CD bits."""

    def __init__(self, max_entries: int) -> None:
        self.max_entries = max_entries
        self._entries: OrderedDict[bytes, CachedResponse] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: bytes, now: float) -> CachedResponse | None:
        entry = self._entries.get(key)
        if entry is None:
            return None
        if now >= entry.expires_at:
            del self._entries[key]
            return None
        self._entries.move_to_end(key)
        return entry

    def put(self, key: bytes, entry: CachedResponse) -> None:
        """Keep ``entry`` unless it is already expired; evict the least recently used."""
        if entry.expires_at <= entry.stored_at or self.max_entries <= 0:
            return
        self._entries[key] = entry
        self._entries.move_to_end(key)
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)

    def clear(self) -> None:
        self._entries.clear()
