"""Batched UDP (``recvmmsg``/``sendmmsg``) on real loopback sockets, and the proxy served by
the batched loop and by the plain one giving the same answers."""

from __future__ import annotations

import itertools
import socket
import sys
from collections.abc import Iterator
from pathlib import Path

import dns.message
import dns.rcode
import pytest

from loom.dns.batch import SLOT_SIZE, UdpBatch
from loom.dns.server import DnsProxy
from loom.dns.settings import DnsSettings
from loom.dns.table import NameTable
from tests.unit.dns.dnstest import MESH, answer_lines, query

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux calls")


def _pair(family: socket.AddressFamily, host: str) -> tuple[socket.socket, socket.socket]:
    server = socket.socket(family, socket.SOCK_DGRAM)
    server.bind((host, 0))
    server.setblocking(False)
    client = socket.socket(family, socket.SOCK_DGRAM)
    client.bind((host, 0))
    client.settimeout(2.0)
    return server, client


@pytest.fixture
def v4() -> Iterator[tuple[socket.socket, socket.socket, UdpBatch]]:
    server, client = _pair(socket.AF_INET, "127.0.0.1")
    batch = UdpBatch.create(server, slots=8)
    assert batch is not None
    yield server, client, batch
    batch.close()
    server.close()
    client.close()


def _wait_readable(sock: socket.socket) -> None:
    import select

    assert select.select([sock], [], [], 2.0)[0], "the datagrams never arrived"


def test_every_waiting_datagram_is_read_by_one_receive_in_order(
    v4: tuple[socket.socket, socket.socket, UdpBatch],
) -> None:
    server, client, batch = v4
    assert batch.receive() == 0
    for i in range(5):
        client.sendto(b"\x00%c query %d" % (i, i), server.getsockname())
    _wait_readable(server)
    assert batch.receive() == 5  # loopback queues a datagram before sendto returns
    assert [batch.packet(i) for i in range(5)] == [b"\x00%c query %d" % (i, i) for i in range(5)]
    assert batch.tail(3) == b" query 3"
    assert batch.address(2) == client.getsockname()


def test_answers_go_back_to_each_sender_with_the_queries_own_first_two_bytes(
    v4: tuple[socket.socket, socket.socket, UdpBatch],
) -> None:
    server, client, batch = v4
    other = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    other.bind(("127.0.0.1", 0))
    other.settimeout(2.0)
    try:
        client.sendto(b"AAfrom client", server.getsockname())
        other.sendto(b"BBfrom other", server.getsockname())
        client.sendto(b"CCagain", server.getsockname())
        _wait_readable(server)
        assert batch.receive() == 3
        batch.reply_tail(0, b" answer one")
        batch.reply(1, b"whole answer")
        batch.reply_tail(2, b" answer three, longer than the query was")
        assert batch.flush() == 0
        assert client.recv(100) == b"AA answer one"
        assert client.recv(100) == b"CC answer three, longer than the query was"
        assert other.recvfrom(100) == (b"whole answer", server.getsockname())
    finally:
        other.close()


def test_unanswered_datagrams_leave_gaps_and_the_answers_around_them_still_go(
    v4: tuple[socket.socket, socket.socket, UdpBatch],
) -> None:
    server, client, batch = v4
    for i in range(6):
        client.sendto(b"q%d" % i, server.getsockname())
    _wait_readable(server)
    assert batch.receive() == 6
    for i in (0, 2, 3, 5):
        batch.reply(i, b"a%d" % i)
    assert batch.flush() == 0
    assert [client.recv(10) for _ in range(4)] == [b"a0", b"a2", b"a3", b"a5"]
    # The next receive re-arms the slots: answered lengths do not cap the next datagrams.
    client.sendto(b"x" * 100, server.getsockname())
    _wait_readable(server)
    assert batch.receive() == 1 and batch.packet(0) == b"x" * 100


def test_slots_a_small_batch_left_alone_still_take_whole_datagrams_later(
    v4: tuple[socket.socket, socket.socket, UdpBatch],
) -> None:
    # A receive re-arms only the slots the batch before it used: slots 2..5, shortened by
    # answers two batches ago and untouched by the one-datagram batch between, must still
    # take whole datagrams, from the right senders.
    server, client, batch = v4

    def batch_of(sizes: list[int]) -> list[bytes]:
        for i, size in enumerate(sizes):
            client.sendto(bytes([65 + i]) * size, server.getsockname())
        _wait_readable(server)
        assert batch.receive() == len(sizes)
        return [batch.packet(i) for i in range(len(sizes))]

    assert batch_of([10] * 6) == [bytes([65 + i]) * 10 for i in range(6)]
    for i in range(6):
        batch.reply(i, b"ok")
    assert batch.flush() == 0
    assert [client.recv(10) for _ in range(6)] == [b"ok"] * 6
    assert batch_of([300]) == [b"A" * 300]
    batch.reply(0, b"one")
    assert batch.flush() == 0 and client.recv(10) == b"one"
    assert batch_of([500] * 6) == [bytes([65 + i]) * 500 for i in range(6)]
    assert all(batch.address(i) == client.getsockname() for i in range(6))


def test_an_answer_longer_than_a_slot_is_sent_alone(
    v4: tuple[socket.socket, socket.socket, UdpBatch],
) -> None:
    server, client, batch = v4
    client.sendto(b"IDbig please", server.getsockname())
    _wait_readable(server)
    assert batch.receive() == 1
    big = b"y" * (SLOT_SIZE + 10)
    batch.reply_tail(0, big)
    assert batch.flush() == 0
    assert client.recv(SLOT_SIZE * 2) == b"ID" + big


def test_known_datagrams_are_answered_from_the_table_and_the_others_left_in_order(
    v4: tuple[socket.socket, socket.socket, UdpBatch],
) -> None:
    server, client, batch = v4
    for i, tail in enumerate([b"known", b"other", b"known", b"rotating", b"known"]):
        client.sendto(b"%c%c" % (0, i) + tail, server.getsockname())
    _wait_readable(server)
    assert batch.receive() == 5
    answers: dict[bytes, object] = {b"known": b" answer", b"rotating": object()}
    assert batch.reply_known(answers) == [1, 3]  # not bytes: the caller's to answer
    batch.reply(3, b"by the caller")  # an index lower than reply_known's last
    assert batch.flush() == 0
    got = [client.recv(100) for _ in range(4)]
    assert got == [b"\x00\x00 answer", b"\x00\x02 answer", b"by the caller", b"\x00\x04 answer"]
    client.settimeout(0.2)
    with pytest.raises(TimeoutError):
        client.recv(100)  # datagram 1 was never answered: nothing else came


def test_a_known_answer_longer_than_a_slot_is_left_to_the_caller(
    v4: tuple[socket.socket, socket.socket, UdpBatch],
) -> None:
    server, client, batch = v4
    client.sendto(b"IDbig", server.getsockname())
    _wait_readable(server)
    assert batch.receive() == 1
    assert batch.reply_known({b"big": b"y" * (SLOT_SIZE - 1)}) == [0]
    assert batch.flush() == 0


def test_an_ipv6_sender_is_answered_and_spelled_as_the_socket_module_does() -> None:
    try:
        server, client = _pair(socket.AF_INET6, "::1")
    except OSError:
        pytest.skip("no IPv6 loopback")
    batch = UdpBatch.create(server)
    assert batch is not None
    try:
        client.sendto(b"v6query", server.getsockname())
        _wait_readable(server)
        assert batch.receive() == 1
        assert batch.address(0) == client.getsockname()
        batch.reply(0, b"v6answer")
        assert batch.flush() == 0
        assert client.recv(100) == b"v6answer"
    finally:
        batch.close()
        server.close()
        client.close()


async def _ask(port: int, wire: bytes) -> bytes:
    import asyncio

    loop = asyncio.get_running_loop()
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setblocking(False)
    try:
        await loop.sock_connect(sock, ("127.0.0.1", port))
        await loop.sock_sendall(sock, wire)
        async with asyncio.timeout(3):
            return await loop.sock_recv(sock, 65535)
    finally:
        sock.close()


async def _booked(proxy: DnsProxy, answers: int) -> dict[str, float]:
    """The metrics once ``answers`` latencies are booked: the UDP thread books a batch's
    after its ``sendmmsg``, so its client may read the answers first. Bounded."""
    import asyncio

    async with asyncio.timeout(5):
        while (metrics := proxy.metrics())["latency_seconds_count"] < answers:
            await asyncio.sleep(0.01)
    assert metrics["latency_seconds_count"] == answers
    return metrics


@pytest.mark.parametrize("batched", [True, False], ids=["batched", "plain"])
async def test_the_proxy_answers_the_same_over_the_batched_and_the_plain_loop(
    batched: bool, tmp_path: Path
) -> None:
    (tmp_path / "resolv.conf").write_text("search ns1.svc.cluster.local svc.cluster.local\n")
    settings = DnsSettings(listen_port=0, resolv_conf=str(tmp_path / "resolv.conf"),
                           namespace="ns1",
                           batch_syscalls=batched, upstreams=())
    proxy = DnsProxy(settings, NameTable.from_json(MESH))
    await proxy.start()
    try:
        assert (proxy._batch is not None) is batched
        names = ["productpage", "reviews.ns2.svc.cluster.local", "db.ns2"]
        for qid, name in enumerate(names * 2, start=1):  # the second round is replayed
            out = await _ask(proxy.port, query(name, qid=qid))
            msg = dns.message.from_wire(out)
            assert msg.id == qid and msg.rcode() == dns.rcode.NOERROR
            assert answer_lines(out)
        # Not a mesh name and no upstream: forwarded, answered SERVFAIL from the forward path.
        failed = await _ask(proxy.port, query("www.example.org", qid=99))
        msg = dns.message.from_wire(failed)
        assert msg.id == 99 and msg.rcode() == dns.rcode.SERVFAIL
        metrics = await _booked(proxy, 7)
        assert (metrics["queries"], metrics["local_answers"], metrics["servfail"]) == (7, 6, 1)
    finally:
        await proxy.stop()


async def test_a_burst_of_known_queries_is_answered_whole_with_each_own_id_and_rotation(
    tmp_path: Path,
) -> None:
    """Replayed answers of one batch: the plain ones written by the batch, the rotating
    ones (db.ns2 has two addresses) turned per answer, every one counted."""
    import asyncio

    (tmp_path / "resolv.conf").write_text("search ns1.svc.cluster.local svc.cluster.local\n")
    settings = DnsSettings(listen_port=0, resolv_conf=str(tmp_path / "resolv.conf"),
                           namespace="ns1", upstreams=())
    proxy = DnsProxy(settings, NameTable.from_json(MESH))
    await proxy.start()
    loop = asyncio.get_running_loop()
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setblocking(False)
    try:
        await loop.sock_connect(sock, ("127.0.0.1", proxy.port))
        names = ["productpage", "db.ns2", "reviews.ns2.svc.cluster.local", "db.ns2"] * 8
        for qid, name in enumerate(names, start=1):
            await loop.sock_sendall(sock, query(name, qid=qid))
        got: dict[int, dns.message.Message] = {}
        async with asyncio.timeout(5):
            while len(got) < len(names):
                msg = dns.message.from_wire(await loop.sock_recv(sock, 65535))
                got[msg.id] = msg
        for qid, name in enumerate(names, start=1):
            assert got[qid].question[0].name.to_text() == name + "."
            assert got[qid].rcode() == dns.rcode.NOERROR and got[qid].answer
        orders = [
            [rd.to_text() for rrset in got[qid].answer for rd in rrset]
            for qid, name in enumerate(names, start=1) if name == "db.ns2"
        ]
        assert {tuple(o) for o in orders} == {tuple(orders[0]), tuple(orders[0][::-1])}
        assert all(a != b for a, b in itertools.pairwise(orders))  # turns every time
        metrics = await _booked(proxy, len(names))
        assert (metrics["queries"], metrics["local_answers"]) == (len(names), len(names))
    finally:
        sock.close()
        await proxy.stop()


def test_a_blocking_receive_waits_for_the_first_datagram_and_takes_the_rest() -> None:
    server, client = _pair(socket.AF_INET, "127.0.0.1")
    server.setblocking(True)
    batch = UdpBatch.create(server, slots=8)
    assert batch is not None
    try:
        for i in range(3):
            client.sendto(b"q%d" % i, server.getsockname())
        _wait_readable(server)
        assert batch.receive(wait=True) == 3  # returns with what is there, not 8
        assert [batch.packet(i) for i in range(3)] == [b"q0", b"q1", b"q2"]
        server.settimeout(None)
        import struct

        server.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, struct.pack("ll", 0, 50_000))
        assert batch.receive(wait=True) == 0  # its receive timeout ends an empty wait
    finally:
        batch.close()
        server.close()
        client.close()


def _udp_threads() -> list[str]:
    import threading

    return [t.name for t in threading.enumerate() if t.name == "loom-dns-udp"]


async def test_the_udp_thread_survives_hostile_datagrams_and_ends_with_stop(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The batched proxy's UDP thread: empty, truncated and garbage datagrams are dropped or
    refused, and the next query is answered; ``stop`` ends the thread at once (its wake-up
    datagram, not its receive timeout, here a minute)."""
    import asyncio

    from loom.dns import server

    monkeypatch.setattr(server, "UDP_WAKE_S", 60.0)
    (tmp_path / "resolv.conf").write_text("search ns1.svc.cluster.local svc.cluster.local\n")
    settings = DnsSettings(listen_port=0, resolv_conf=str(tmp_path / "resolv.conf"),
                           namespace="ns1", upstreams=())  # fmt: skip
    before = len(_udp_threads())
    proxy = DnsProxy(settings, NameTable.from_json(MESH))
    await proxy.start()
    try:
        assert len(_udp_threads()) == before + 1
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as hostile:
            for junk in (b"", b"\x00", b"\x12\x34\x01", b"\xff" * 12, b"\x00" * 4096, b"x" * 9000):
                hostile.sendto(junk, ("127.0.0.1", proxy.port))
        out = await _ask(proxy.port, query("productpage", qid=7))
        msg = dns.message.from_wire(out)
        assert msg.id == 7 and msg.rcode() == dns.rcode.NOERROR and answer_lines(out)
    finally:
        # A receive timeout longer than the wait: stop must wake the thread itself.
        async with asyncio.timeout(20):
            await proxy.stop()
    assert len(_udp_threads()) == before
