"""The proxy's own parse of whole messages (``loom.dns.wire``) against dnspython's.

The proxy reads upstream responses and unusual queries by hand, so that a pod's agent never
imports dnspython (3.3 MB of its memory) but for a response with a record of a rare type.
What it accepts must be what a full parse accepts: here every response of a corpus, and every
one-byte change of each, that the walk takes without calling dnspython must parse with
dnspython too (as the forwarder used to require of every reply); and unusual queries reduce
to the question the former dnspython-based parse found, or to the same error.
"""

from __future__ import annotations

import struct
import subprocess
import sys

import dns.edns
import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.opcode
import dns.rrset
import pytest

from loom.dns.wire import (
    BADVERS,
    FORMERR,
    NOTIMP,
    PLAIN_UDP_LIMIT,
    Question,
    WireError,
    check_response,
    checks,
    normalize_query,
    read_name,
    walk_response,
)

RECORDS = [
    ("a.example.", "A", "192.0.2.1"),
    ("a.example.", "AAAA", "2001:db8::1"),
    ("www.example.", "CNAME", "a.example."),
    ("example.", "NS", "ns1.example."),
    ("1.2.0.192.in-addr.arpa.", "PTR", "a.example."),
    ("sub.example.", "DNAME", "other.example."),
    ("example.", "MX", "10 mail.example."),
    ("_http._tcp.example.", "SRV", "0 5 80 a.example."),
    ("example.", "TXT", '"v=spf1 -all" "second"'),
    ("example.", "SOA", "ns1.example. admin.example. 1 7200 900 1209600 60"),
]


def response(owner: str, rdtype: str, text: str, edns: bool = True) -> bytes:
    """A compressed response with one record of ``rdtype`` in the answer, an SOA in authority."""
    q = dns.message.make_query(owner, rdtype, use_edns=0 if edns else None)
    r = dns.message.make_response(q)
    r.answer.append(dns.rrset.from_text(owner, 60, "IN", rdtype, text))
    r.authority.append(dns.rrset.from_text("example.", 30, "IN", "SOA",
                                           "ns1.example. admin.example. 1 2 3 4 5"))  # fmt: skip
    return r.to_wire()


def dnspython_parses(msg: bytes) -> bool:
    try:
        dns.message.from_wire(b"\xff\xff\x87\xff" + msg[4:])
    except Exception:
        return False
    return True


@pytest.mark.parametrize(("owner", "rdtype", "text"), RECORDS)
def test_the_common_types_are_read_without_dnspython(owner: str, rdtype: str, text: str) -> None:
    msg = response(owner, rdtype, text)
    info = check_response(msg)
    assert not info.unchecked
    assert info.ttls == (60, 30) and info.negative_ttl == 5 and info.end == len(msg)


@pytest.mark.parametrize(("owner", "rdtype", "text"), RECORDS)
def test_what_the_walk_accepts_of_every_one_byte_change_dnspython_parses(
    owner: str, rdtype: str, text: str
) -> None:
    msg = response(owner, rdtype, text)
    accepted = 0
    for at in range(4, len(msg)):  # ID and flags are poisoned anyway
        for value in (0x00, 0x01, 0x04, 0x0C, 0x3F, 0x40, 0xC0, 0xFF, msg[at] ^ 0x20):
            changed = msg[:at] + bytes([value]) + msg[at + 1 :]
            try:
                info = walk_response(changed)
            except WireError:
                continue
            accepted += 1
            if not info.unchecked:
                assert dnspython_parses(changed[: info.end]), (at, value, changed.hex())
    assert accepted  # some changes (TTLs, addresses, case) keep the message valid


def test_records_of_other_types_or_classes_are_left_to_dnspython() -> None:
    for rdtype, text in (("CAA", '0 issue "ca.example"'), ("HTTPS", "1 . alpn=h2")):
        info = walk_response(response("a.example.", rdtype, text))
        assert info.unchecked
    chaos = bytearray(response("a.example.", "A", "192.0.2.1"))
    at = chaos.index(bytes.fromhex("0001000100") + b"\x00\x00\x3c")  # type A, class IN, ttl
    chaos[at + 2 : at + 4] = b"\x00\x03"  # class CH: its A record is another shape
    assert walk_response(bytes(chaos)).unchecked


def test_a_broken_common_record_is_refused_by_the_walk_itself() -> None:
    msg = bytearray(response("a.example.", "A", "192.0.2.1", edns=False))
    at = msg.index(bytes([192, 0, 2, 1]))
    msg[at - 1] = 3  # rdlength 4 -> 3: an A record of three bytes
    with pytest.raises(WireError):
        walk_response(bytes(msg[:-1]))
    long_name = b"".join(b"\x3f" + b"x" * 63 for _ in range(4)) + b"\x00"  # 257 bytes
    with pytest.raises(WireError, match="longer than 255"):
        read_name(b"\x00" * 12 + long_name, 12)


def _reference(data: bytes) -> Question | int | None:
    """The former dnspython-based ``normalize_query``, kept here as the oracle."""
    if len(data) < 12 or data[2] & 0x80:
        return None
    try:
        msg = dns.message.from_wire(data, ignore_trailing=True)
    except Exception:
        return FORMERR
    if msg.opcode() != dns.opcode.QUERY:
        return NOTIMP
    if len(msg.question) != 1:
        return FORMERR
    if msg.edns > 0:
        return BADVERS
    rrset = msg.question[0]
    wire_name = rrset.name.to_wire()
    assert wire_name is not None
    question = wire_name + rrset.rdtype.to_bytes(2, "big") + rrset.rdclass.to_bytes(2, "big")
    n = len(wire_name)
    return Question(msg.id, msg.flags, question, question[:n].lower() + question[n:],
                    max(msg.payload, PLAIN_UDP_LIMIT) if msg.edns == 0 else 0,
                    bool(msg.ednsflags & dns.flags.DO))  # fmt: skip


def _records(msg: bytes) -> list[tuple[int, int]]:
    """(type, class) of every record of a message past its one question."""
    _, offset = read_name(msg, 12)
    offset += 4
    out = []
    for _ in range(sum(struct.unpack_from("!HHH", msg, 6))):
        _, offset = read_name(msg, offset)
        rtype, rclass, _, size = struct.unpack_from("!HHIH", msg, offset)
        out.append((rtype, rclass))
        offset += 10 + size
    return out


def _queries() -> list[bytes]:
    plain = dns.message.make_query("Web.Default.svc.cluster.local", "A", use_edns=0,
                                   want_dnssec=True, payload=4096)  # fmt: skip
    cookie = dns.message.make_query("api.example", "AAAA", use_edns=0,
                                    options=[dns.edns.CookieOption(b"12345678", b"")])  # fmt: skip
    with_answer = dns.message.make_query("a.example", "A")
    with_answer.answer.append(dns.rrset.from_text("a.example.", 5, "IN", "A", "192.0.2.9"))
    extra = dns.message.make_query("b.example", "MX")
    extra.additional.append(dns.rrset.from_text("b.example.", 5, "IN", "TXT", '"x"'))
    notify = dns.message.make_query("example", "SOA")
    notify.set_opcode(dns.opcode.NOTIFY)
    v1 = dns.message.make_query("c.example", "A", use_edns=1)
    return [q.to_wire() for q in (plain, cookie, with_answer, extra, notify, v1)]


def test_unusual_queries_read_as_the_dnspython_parse_read_them() -> None:
    differ = []
    for query in _queries():
        assert normalize_query(query) == _reference(query)
        for at in range(2, len(query)):
            for value in (0x00, 0x01, 0x02, 0x29, 0x3F, 0xC0, 0xC0 | 12 >> 8, 0x0C, 0xFF):
                changed = query[:at] + bytes([value]) + query[at + 1 :]
                ours, theirs = normalize_query(changed), _reference(changed)
                if ours != theirs:
                    differ.append((changed.hex(), ours, theirs))
    # The only differences allowed: a name with a pointer the proxy refuses (into the header,
    # or to labels running past the pointer) where dnspython reads on (FORMERR for the
    # proxy); and an opcode but QUERY, NOTIMP for the proxy whatever follows, where dnspython
    # reads an UPDATE's sections by rules of their own (FORMERR).
    # And a record the proxy keeps opaque (RFC 3597: a type it does not read, in a query,
    # whose data it never uses) where dnspython reads that type's fields.
    for hexed, ours, theirs in differ:
        changed = bytes.fromhex(hexed)
        if isinstance(ours, Question):
            assert theirs == FORMERR and not all(checks(*r) for r in _records(changed)), hexed
        elif ours == NOTIMP:
            assert changed[2] & 0x78 and theirs == FORMERR, hexed
        else:
            assert ours == FORMERR and any(b >= 0xC0 for b in changed[12:]), hexed


def test_the_proxy_answers_and_forwards_common_records_without_importing_dnspython() -> None:
    code = """
import sys
from loom.dns.cache import ResponseCache
from loom.dns.handler import PacketHandler, Pending
from loom.dns.metrics import Metrics
from loom.dns.resolve import View
from loom.dns.table import NameTable
from loom.dns.wire import check_response, query_for, encode_name
import loom.dns.server, loom.dns.watch
handler = PacketHandler(NameTable.from_json({"Index": 1, "Services": []}), View(namespace="default"),
                        ResponseCache(10), Metrics())
query = (b"\\x00\\x07\\x01\\x00\\x00\\x01\\x00\\x00\\x00\\x00\\x00\\x00" + encode_name("www.example.org")
         + b"\\x00\\x01\\x00\\x01")
pending = handler.handle(query, 0.0)
assert isinstance(pending, Pending)
upstream = bytearray(query_for(1, pending.question))
upstream[2] |= 0x80
upstream[6:8] = b"\\x00\\x01"
reply = bytes(upstream[:12]) + bytes(upstream[12:-11]) + b"\\xc0\\x0c\\x00\\x01\\x00\\x01\\x00\\x00\\x00\\x3c\\x00\\x04\\xc0\\x00\\x02\\x01"
reply = reply[:10] + b"\\x00\\x00" + reply[12:]
info = check_response(reply)
entry = handler.store(pending, reply, 0.0)
out = handler.reply(pending, entry, 0.0)
assert out[:2] == b"\\x00\\x07" and out.endswith(bytes([192, 0, 2, 1])), out
print(sorted(m for m in sys.modules if m == "dns" or m.startswith("dns.")))
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_a_reply_of_a_rare_type_is_still_held_to_a_full_parse() -> None:
    good = response("a.example.", "CAA", '0 issue "ca.example"')
    assert check_response(good).unchecked  # dnspython read it, and found nothing wrong
    broken = bytearray(good)
    at = broken.index(b"\x05issue")
    broken[at] = 0x40  # the tag's length now runs past the record's data
    with pytest.raises(WireError, match="unparseable"):
        check_response(bytes(broken))
