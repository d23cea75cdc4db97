"""DNS wire format: the few shapes the proxy reads and writes, hand-rolled with ``struct``.

The hot path reads a query's header and single uncompressed question, and writes answers whose
owner names are compression pointers to the question (so answers echo the asker's case for
free). Responses from upstream resolvers are only walked, never decoded: the walk finds the
TTLs to age, the OPT record to drop and the SOA minimum for negative caching, and checks every
record of the types a resolver mostly sees (A, AAAA, CNAME, NS, PTR, DNAME, SOA, MX, SRV, TXT)
as a full parse would. Anything unusual in a query (a compressed question, extra records) goes
to ``normalize_query``, a slower parse of the whole message, still by hand.

dnspython is imported only for an upstream response holding a record of another type (or
class), which ``check_response`` has it parse: the proxy runs inside every pod's agent, and
dnspython with what it imports (importlib.metadata, email, csv, zipfile) is 3.3 MB of its
resident memory, more than the agent's whole margin under its 30 MB goal.

Pure functions on bytes. ``WireError`` marks bytes that are not a DNS message we can use; the
packet handler turns it into FORMERR, SERVFAIL or a drop, so it never reaches a socket loop.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from dataclasses import dataclass
from typing import NamedTuple

from loom.dns.errors import DnsError

HEADER = struct.Struct("!HHHHHH")
"""id, flags, qdcount, ancount, nscount, arcount."""
RR_FIXED = struct.Struct("!HHIH")
"""type, class, ttl, rdlength: the fixed part of a resource record after its owner name."""
U32 = struct.Struct("!I")

FLAG_QR = 0x8000
FLAG_AA = 0x0400
FLAG_TC = 0x0200
FLAG_RD = 0x0100
FLAG_RA = 0x0080
FLAG_CD = 0x0010
OPCODE_MASK = 0x7800
RCODE_MASK = 0x000F
ECHOED_FLAGS = FLAG_RD | FLAG_CD
"""Flags copied from a query into its response."""

NOERROR, FORMERR, SERVFAIL, NXDOMAIN, NOTIMP, REFUSED = 0, 1, 2, 3, 4, 5
BADVERS = 16
"""Extended rcode (needs an OPT record): the query's EDNS version is not 0."""
TYPE_A, TYPE_CNAME, TYPE_SOA, TYPE_AAAA, TYPE_SRV, TYPE_OPT = 1, 5, 6, 28, 33, 41
TYPE_NS, TYPE_PTR, TYPE_MX, TYPE_TXT, TYPE_DNAME = 2, 12, 15, 16, 39
NAME_MAX = 255
"""Longest name on the wire, its final zero byte included (RFC 1035, 3.1)."""
CLASS_IN = 1
EDNS_DO = 0x8000
"""The DNSSEC OK bit in the OPT record's flags."""
EDNS_PAYLOAD = 1232
"""UDP payload size we advertise (the DNS flag day 2020 value: no IP fragmentation)."""
PLAIN_UDP_LIMIT = 512
"""Largest UDP response to a client that sent no OPT record."""
POINTER_TO_QUESTION = b"\xc0\x0c"


class WireError(DnsError):
    """Bytes that are not a DNS message the proxy can use."""


class Question(NamedTuple):
    """A query reduced to what the proxy needs; ``question`` is the wire question as asked.

    A NamedTuple rather than a frozen dataclass: one is built per packet, and this is ~5x faster.
    """

    qid: int
    flags: int
    question: bytes
    """Name (uncompressed, asker's case) + qtype + qclass."""
    key: bytes
    """``question`` with the name lowercased: the key of every memo and cache."""
    edns_payload: int
    """The asker's advertised UDP size; 0 when it sent no OPT record."""
    dnssec_ok: bool

    @property
    def qtype(self) -> int:
        return (self.question[-4] << 8) | self.question[-3]


def name_end(data: bytes, offset: int) -> int:
    """Offset just past an uncompressed name starting at ``offset``; -1 if not one."""
    end = len(data)
    total = 0
    while offset < end:
        length = data[offset]
        if length == 0:
            return offset + 1 if total <= 255 else -1
        if length > 63:
            return -1
        total += length + 1
        offset += length + 1
    return -1


def read_name(data: bytes, offset: int, end: int | None = None) -> tuple[bytes, int]:
    """The name at ``offset``, uncompressed (as asked: case kept), and the offset just past
    it; WireError unless it is a name a full parse reads.

    Its labels must lie before ``end`` (default: the message's end); each pointer must point
    past the header and before the name's start, each before the one it came from (so
    following them ends), and what it points to must end before the first pointer; labels
    are at most 63 bytes and the name at most ``NAME_MAX``.
    """
    stop = len(data) if end is None else end
    out = bytearray()
    after = -1
    limit = offset  # a pointer must point before this
    while offset < stop:
        length = data[offset]
        if length == 0:  # labels stopped short of NAME_MAX below: the zero byte fits
            out.append(0)
            return bytes(out), offset + 1 if after < 0 else after
        if length >= 0xC0:
            if offset + 2 > stop:
                break
            target = (length & 0x3F) << 8 | data[offset + 1]
            if not HEADER.size <= target < limit:
                raise WireError("compression pointer outside the message body")
            if after < 0:  # what follows must lie before this first pointer, as an
                after, stop = offset + 2, offset  # earlier name does (no overlapping reads)
            offset = limit = target
            continue
        if length > 63:
            raise WireError("unsupported label type")
        if offset + 1 + length > stop:
            break
        out += data[offset : offset + 1 + length]
        if len(out) >= NAME_MAX:
            raise WireError("name longer than 255 bytes")
        offset += length + 1
    raise WireError("name runs past the end of the message")


class Record(NamedTuple):
    """Where one resource record of a message lies, and its fixed fields."""

    start: int
    """Offset of its owner name."""
    rtype: int
    rclass: int
    ttl: int
    rdata: int
    """Offset of its data."""
    end: int
    """Offset just past it."""


def records(msg: bytes, offset: int, count: int) -> Iterator[Record]:
    """The ``count`` records from ``offset`` on, in order: each owner name read in full
    (``read_name``), each record's data within the message; WireError otherwise."""
    for _ in range(count):
        start = offset
        _, offset = read_name(msg, offset)
        if offset + RR_FIXED.size > len(msg):
            raise WireError("record runs past the end of the message")
        rtype, rclass, ttl, rdlength = RR_FIXED.unpack_from(msg, offset)
        rdata = offset + RR_FIXED.size
        offset = rdata + rdlength
        if offset > len(msg):
            raise WireError("record data runs past the end of the message")
        yield Record(start, rtype, rclass, ttl, rdata, offset)


_NAME_ONLY = frozenset({TYPE_NS, TYPE_CNAME, TYPE_PTR, TYPE_DNAME})
_ANY_CLASS = frozenset({TYPE_SOA, TYPE_MX, TYPE_TXT, *_NAME_ONLY})
"""Types whose data ``check_rdata`` reads as a full parse does, in any class."""
_IN_ONLY = frozenset({TYPE_A, TYPE_AAAA, TYPE_SRV})
"""And those it reads so in class IN only (an A record of class CH is another shape)."""


_FIXED_BEFORE_NAME = {TYPE_MX: 2, TYPE_SRV: 6}
"""Bytes of fixed fields before the name in a record's data (preference; priority, weight,
port)."""


def read_question(data: bytes, offset: int) -> tuple[bytes, int]:
    """The question at ``offset`` (name uncompressed, then type and class) and the offset
    just past it; WireError unless it is whole."""
    name, offset = read_name(data, offset)
    if offset + 4 > len(data):
        raise WireError("question cut short")
    return name + data[offset : offset + 4], offset + 4


def checks(rtype: int, rclass: int) -> bool:
    """Whether ``check_rdata`` reads records of this type and class."""
    return rtype in _ANY_CLASS or (rtype in _IN_ONLY and rclass == CLASS_IN)


def check_rdata(msg: bytes, rtype: int, start: int, end: int) -> None:
    """WireError unless ``msg[start:end]`` is whole, valid data of a ``rtype`` record (one
    ``checks`` says it reads): the fixed sizes, names as ``read_name`` reads them, nothing
    left over."""
    size = end - start
    if rtype in (TYPE_A, TYPE_AAAA):
        if size != (4 if rtype == TYPE_A else 16):
            raise WireError("address record of the wrong length")
        return
    if rtype == TYPE_TXT:
        at = start
        while at < end:
            at += msg[at] + 1
        if at != end or size == 0:
            raise WireError("TXT strings do not fill the record")
        return
    fixed = _FIXED_BEFORE_NAME.get(rtype, 0)
    if size < fixed:
        raise WireError("record data shorter than its fixed fields")
    _, at = read_name(msg, start + fixed, end)
    if rtype == TYPE_SOA:
        _, at = read_name(msg, at, end)
        at += 20  # serial, refresh, retry, expire, minimum
    if at != end:
        raise WireError("record data longer than its fields")


def encode_name(name: str) -> bytes:
    """Wire form of a dotted name (ASCII, no trailing dot needed)."""
    out = bytearray()
    for label in name.rstrip(".").split("."):
        raw = label.encode("ascii")
        if not 0 < len(raw) <= 63:
            raise WireError(f"bad label in {name!r}")
        out.append(len(raw))
        out += raw
    out.append(0)
    return bytes(out)


def decode_name(wire: bytes) -> str | None:
    """Dotted text of an uncompressed name; None when a label has bytes no mesh name has."""
    labels = []
    offset = 0
    while wire[offset]:
        length = wire[offset]
        label = wire[offset + 1 : offset + 1 + length]
        if b"." in label or not label.isascii():
            return None
        labels.append(label.decode("ascii"))
        offset += length + 1
    return ".".join(labels) + "."


def opt_record(dnssec_ok: bool, payload: int = EDNS_PAYLOAD, ext_rcode: int = 0) -> bytes:
    """An OPT pseudo-record (EDNS0) with no options."""
    return struct.pack(
        "!BHHBBHH", 0, TYPE_OPT, payload, ext_rcode, 0, EDNS_DO if dnssec_ok else 0, 0
    )


def address_records(owner: bytes, addresses: tuple[bytes, ...], ttl: int) -> bytes:
    """A or AAAA records for packed addresses, all owned by ``owner`` (usually a pointer)."""
    out = bytearray()
    for packed in addresses:
        rtype = TYPE_A if len(packed) == 4 else TYPE_AAAA
        out += owner + RR_FIXED.pack(rtype, CLASS_IN, ttl, len(packed)) + packed
    return bytes(out)


def srv_answer(records: tuple[tuple[int, str, bytes], ...], ttl: int) -> tuple[bytes, bytes]:
    """SRV records (priority 1, weight 1) owned by the question, to each (port, target,
    packed address); and the additional section: each target's A or AAAA record."""
    answers = bytearray()
    extra = bytearray()
    for port, target, packed in records:
        name = encode_name(target)
        rdata = struct.pack("!HHH", 1, 1, port) + name
        answers += POINTER_TO_QUESTION + RR_FIXED.pack(TYPE_SRV, CLASS_IN, ttl, len(rdata))
        answers += rdata
        extra += address_records(name, (packed,), ttl)
    return bytes(answers), bytes(extra)


def cname_answer(question_len: int, target: str, addresses: tuple[bytes, ...], ttl: int) -> bytes:
    """A CNAME from the question to ``target``, then ``target``'s addresses.

    The address records point at the CNAME's rdata, which sits right after the header, the
    question and the CNAME's own fixed part.
    """
    rdata = encode_name(target)
    cname = POINTER_TO_QUESTION + RR_FIXED.pack(TYPE_CNAME, CLASS_IN, ttl, len(rdata)) + rdata
    target_offset = HEADER.size + question_len + len(POINTER_TO_QUESTION) + RR_FIXED.size
    owner = struct.pack("!H", 0xC000 | target_offset)
    return cname + address_records(owner, addresses, ttl)


def error_response(data: bytes, rcode: int) -> bytes | None:
    """A response without question or records to the query ``data`` holds.

    None when there is nothing to answer: no readable header, or a response (answering
    responses could make two servers bounce errors forever). Extended rcodes get an OPT record.
    """
    if len(data) < HEADER.size:
        return None
    qid, flags = struct.unpack_from("!HH", data)
    if flags & FLAG_QR:
        return None
    head = FLAG_QR | (flags & (OPCODE_MASK | ECHOED_FLAGS)) | (rcode & RCODE_MASK)
    if rcode <= RCODE_MASK:
        return HEADER.pack(qid, head, 0, 0, 0, 0)
    return HEADER.pack(qid, head, 0, 0, 0, 1) + opt_record(False, ext_rcode=rcode >> 4)


def query_for(qid: int, q: Question) -> bytes:
    """The query the proxy sends upstream for ``q``: RD set, EDNS0, DO/CD as the asker's."""
    flags = FLAG_RD | (q.flags & FLAG_CD)
    return HEADER.pack(qid, flags, 1, 0, 0, 1) + q.question + opt_record(q.dnssec_ok)


def normalize_query(data: bytes) -> Question | int | None:
    """The slow path: any well-formed query, reduced to a Question (the whole message read).

    Returns an rcode to answer with when the message is not a usable query (FORMERR when it
    does not parse, NOTIMP for an opcode but QUERY, BADVERS for an EDNS version but 0), or
    None to drop it (no readable header, or not a query at all). Bytes after the last record
    are ignored; records in a query are read but not used, their data opaque past the types
    ``checks`` covers.
    """
    if len(data) < HEADER.size or data[2] & 0x80:
        return None
    qid, flags, qdcount, ancount, nscount, arcount = HEADER.unpack_from(data)
    try:
        offset, questions = HEADER.size, []
        for _ in range(qdcount):
            question, offset = read_question(data, offset)
            questions.append(question)
        opt = None
        for index, rr in enumerate(records(data, offset, ancount + nscount + arcount)):
            if rr.rtype == TYPE_OPT:
                additional = index >= ancount + nscount
                if not additional or opt is not None or data[rr.start] != 0:
                    raise WireError("OPT record out of place")
                opt = (rr.rclass, rr.ttl)
            elif checks(rr.rtype, rr.rclass):
                check_rdata(data, rr.rtype, rr.rdata, rr.end)
    except WireError:
        return FORMERR
    if (flags & OPCODE_MASK) >> 11 != 0:
        return NOTIMP
    if len(questions) != 1:
        return FORMERR
    if opt is not None and (opt[1] >> 16) & 0xFF > 0:
        return BADVERS
    question = questions[0]
    name_len = len(question) - 4
    return Question(
        qid=qid,
        flags=flags,
        question=question,
        key=question[:name_len].lower() + question[name_len:],
        edns_payload=max(opt[0], PLAIN_UDP_LIMIT) if opt is not None else 0,
        dnssec_ok=opt is not None and bool(opt[1] & EDNS_DO),
    )


@dataclass(frozen=True)
class ResponseInfo:
    """What the forwarder needs from an upstream response, found by one walk."""

    flags: int
    question_end: int
    ttl_offsets: tuple[int, ...]
    """Offsets of the TTL fields of every record except OPT, to age them in the cache."""
    ttls: tuple[int, ...]
    ancount: int
    opt_span: tuple[int, int] | None
    """Start and end of the OPT record, if any (dropped before caching)."""
    negative_ttl: int | None
    """min(SOA TTL, SOA MINIMUM) from the authority section, for negative caching."""
    end: int
    """Offset just past the last record (trailing bytes are not relayed)."""
    unchecked: bool = False
    """Whether a record's data is of a type (or class) ``checks`` does not cover."""

    @property
    def rcode(self) -> int:
        return self.flags & RCODE_MASK


def answers(reply: bytes, qid: int, q: Question) -> bool:
    """Is ``reply`` a response to ``q`` sent with ID ``qid``? (Same question, any case.)"""
    size = len(q.question)
    if len(reply) < HEADER.size + size:
        return False
    rid, flags, qdcount = HEADER.unpack_from(reply)[:3]
    if rid != qid or flags & (FLAG_QR | OPCODE_MASK) != FLAG_QR or qdcount != 1:
        return False
    asked = reply[HEADER.size : HEADER.size + size]
    return asked[:-4].lower() + asked[-4:] == q.key


def check_response(msg: bytes) -> ResponseInfo:
    """Walk an upstream response and make sure every record in it parses.

    The forwarder calls this once per upstream reply, so a corrupt reply moves on to the next
    server instead of being cached and relayed. The walk reads the records of the common types
    itself; a response with any other (``unchecked``) is parsed by dnspython too, imported
    then, with ID and flags poisoned (opcode kept at QUERY): a name in record data that points
    into them is refused, because those bytes are rewritten for every asker.
    """
    info = walk_response(msg)
    if info.unchecked:
        import dns.message  # the rare response: see the module docstring

        try:
            dns.message.from_wire(b"\xff\xff\x87\xff" + msg[4 : info.end])
        except Exception as exc:  # dnspython fails in many ways on hostile bytes
            raise WireError(f"unparseable response: {exc}") from exc
    return info


def walk_response(msg: bytes) -> ResponseInfo:
    """Walk an upstream response; WireError if it is truncated, not a one-question answer, or
    holds a name, or a record ``checks`` covers, that does not parse."""
    if len(msg) < HEADER.size:
        raise WireError("response shorter than a header")
    _, flags, qdcount, ancount, nscount, arcount = HEADER.unpack_from(msg)
    if not flags & FLAG_QR or qdcount != 1:
        raise WireError("not a response to one question")
    _, question_end = read_question(msg, HEADER.size)
    ttl_offsets: list[int] = []
    ttls: list[int] = []
    opt_span = None
    negative_ttl = None
    unchecked = False
    end = question_end
    for index, (start, rtype, rclass, ttl, rdata, end) in enumerate(
        records(msg, question_end, ancount + nscount + arcount)
    ):
        rdlength = end - rdata
        if rtype == TYPE_OPT:
            if index < ancount + nscount or opt_span is not None or msg[start] != 0:
                unchecked = True  # out of place: dnspython's call
            opt_span = (start, end)
            continue
        if checks(rtype, rclass):
            check_rdata(msg, rtype, rdata, end)
        else:
            unchecked = True
        ttl_offsets.append(rdata - 6)
        ttls.append(ttl & 0x7FFFFFFF)
        in_authority = ancount <= index < ancount + nscount
        if rtype == TYPE_SOA and in_authority and rdlength >= 20:
            (minimum,) = U32.unpack_from(msg, end - 4)
            negative_ttl = min(ttl & 0x7FFFFFFF, minimum & 0x7FFFFFFF)
    return ResponseInfo(
        flags,
        question_end,
        tuple(ttl_offsets),
        tuple(ttls),
        ancount,
        opt_span,
        negative_ttl,
        end,
        unchecked,
    )
