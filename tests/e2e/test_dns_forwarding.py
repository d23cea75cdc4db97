"""The DNS proxy on real loopback sockets, forwarding to a real upstream server it talks to.

The upstream is a small authoritative server built here with dnspython (real UDP and TCP
sockets, real wire format), so the tests can count what reaches it, truncate on purpose, stay
silent or fail. Clients are dnspython's stub resolver functions.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import dns.asyncquery
import dns.flags
import dns.message
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.rrset
import pytest

from loom.dns import BindError, DnsProxy, DnsSettings, NameTable

MESH = {"Services": [{"Name": "web", "Namespace": "default", "VirtualIPs": ["240.0.0.3"]}]}
ZONE = {
    ("www.example.test.", "A"): (300, ["192.0.2.10"]),
    ("www.example.test.", "TXT"): (300, ['"hello"']),
    ("big.example.test.", "A"): (300, ["192.0.2.21", "192.0.2.22", "192.0.2.23"]),
    ("slow.example.test.", "A"): (300, ["192.0.2.30"]),
}
SOA = "ns.example.test. admin.example.test. 1 3600 600 86400 30"


class Upstream:
    """An authoritative server for ZONE on 127.0.0.1, UDP and TCP, counting queries.

    ``truncate`` names are answered with TC over UDP (as if too large) and in full over TCP;
    ``rcode`` answers everything with that rcode; ``silent`` never answers; ``hold`` keeps UDP
    answers back until it is set (to let identical queries pile up at the proxy).
    """

    def __init__(self, *, truncate: tuple[str, ...] = (), rcode: int | None = None,
                 silent: bool = False, hold: asyncio.Event | None = None) -> None:
        self.truncate, self.rcode, self.silent, self.hold = truncate, rcode, silent, hold
        self.udp_queries: list[str] = []
        self.tcp_queries: list[str] = []
        self.port = 0
        self._udp: asyncio.DatagramTransport | None = None
        self._tcp: asyncio.Server | None = None
        self._held: set[asyncio.Future[None]] = set()

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        upstream = self

        class Protocol(asyncio.DatagramProtocol):
            def datagram_received(self, data: bytes, addr: Any) -> None:
                upstream._on_udp(data, addr)

        for _ in range(10):  # a free UDP port may be taken for TCP: then try another
            udp, _ = await loop.create_datagram_endpoint(Protocol, local_addr=("127.0.0.1", 0))
            port = udp.get_extra_info("sockname")[1]
            try:
                self._tcp = await asyncio.start_server(self._on_tcp, "127.0.0.1", port)
            except OSError:
                udp.close()
                continue
            self._udp, self.port = udp, port
            return
        raise RuntimeError("no port free for both UDP and TCP")

    async def stop(self) -> None:
        for held in self._held:
            held.cancel()
        await asyncio.gather(*self._held, return_exceptions=True)
        if self._udp is not None:
            self._udp.close()
        if self._tcp is not None:
            self._tcp.close()
            await self._tcp.wait_closed()

    def answer(self, data: bytes, tcp: bool) -> bytes:
        query = dns.message.from_wire(data)
        reply = dns.message.make_response(query)
        question = query.question[0]
        name, rdtype = question.name.to_text().lower(), dns.rdatatype.to_text(question.rdtype)
        (self.tcp_queries if tcp else self.udp_queries).append(f"{name} {rdtype}")
        if self.rcode is not None:
            reply.set_rcode(self.rcode)
        elif name in self.truncate and not tcp:
            reply.flags |= dns.flags.TC
        elif (name, rdtype) in ZONE:
            ttl, values = ZONE[(name, rdtype)]
            reply.answer.append(dns.rrset.from_text_list(question.name, ttl, "IN", rdtype,
                                                         values))
        else:
            if not any(n == name for n, _ in ZONE):
                reply.set_rcode(dns.rcode.NXDOMAIN)
            reply.authority.append(dns.rrset.from_text("example.test.", 3600, "IN", "SOA", SOA))
        return reply.to_wire()

    def _on_udp(self, data: bytes, addr: Any) -> None:
        if self.silent or self._udp is None:
            self.udp_queries.append("(ignored)")
            return
        out, udp = self.answer(data, tcp=False), self._udp
        if self.hold is None:
            udp.sendto(out, addr)
            return
        hold = self.hold

        async def release() -> None:
            await hold.wait()
            udp.sendto(out, addr)

        self._held.add(asyncio.ensure_future(release()))

    async def _on_tcp(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            size = int.from_bytes(await reader.readexactly(2), "big")
            out = self.answer(await reader.readexactly(size), tcp=True)
            writer.write(len(out).to_bytes(2, "big") + out)
            await writer.drain()
        finally:
            writer.close()


def closed_port() -> int:
    """A loopback UDP port nothing listens on (bound, noted, released)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


ProxyFactory = Callable[..., Any]


@pytest.fixture
async def upstream() -> AsyncIterator[Upstream]:
    server = Upstream()
    await server.start()
    yield server
    await server.stop()


@pytest.fixture
async def make_proxy(tmp_path: Path) -> AsyncIterator[ProxyFactory]:
    """Starts proxies on free loopback ports (stopped at teardown)."""
    resolv = tmp_path / "resolv.conf"
    resolv.write_text("nameserver 192.0.2.53\nsearch ns1.svc.cluster.local svc.cluster.local\n")
    started: list[DnsProxy] = []

    async def make(*upstreams: str, **overrides: Any) -> DnsProxy:
        settings = DnsSettings(listen_port=0, resolv_conf=str(resolv), upstreams=upstreams,
                               **overrides)
        proxy = DnsProxy(settings, NameTable.from_json(MESH))
        await proxy.start()
        started.append(proxy)
        return proxy

    yield make
    for proxy in started:
        await proxy.stop()


async def ask(proxy: DnsProxy, name: str, rdtype: str = "A", *, tcp: bool = False,
              edns: bool = True) -> dns.message.Message:
    query = dns.message.make_query(name, rdtype, use_edns=0 if edns else None)
    if tcp:
        return await dns.asyncquery.tcp(query, "127.0.0.1", port=proxy.port, timeout=5)
    return await dns.asyncquery.udp(query, "127.0.0.1", port=proxy.port, timeout=5)


def addresses(msg: dns.message.Message) -> list[str]:
    return sorted(rd.to_text() for rrset in msg.answer for rd in rrset)


async def test_a_forwarded_answer_is_cached_so_upstream_sees_the_question_once(
    make_proxy: ProxyFactory, upstream: Upstream
) -> None:
    proxy = await make_proxy(f"127.0.0.1:{upstream.port}")
    first = await ask(proxy, "www.example.test")
    second = await ask(proxy, "WWW.Example.Test")
    assert addresses(first) == addresses(second) == ["192.0.2.10"]
    assert str(second.question[0].name) == "WWW.Example.Test."
    assert upstream.udp_queries == ["www.example.test. A"]
    metrics = proxy.metrics()
    assert (metrics["forwarded"], metrics["cache_hits"]) == (1.0, 1.0)


async def test_nxdomain_and_nodata_are_cached_negatively(
    make_proxy: ProxyFactory, upstream: Upstream
) -> None:
    proxy = await make_proxy(f"127.0.0.1:{upstream.port}")
    for _ in range(3):
        assert (await ask(proxy, "nope.example.test")).rcode() == dns.rcode.NXDOMAIN
        nodata = await ask(proxy, "www.example.test", "AAAA")
        assert nodata.rcode() == dns.rcode.NOERROR and nodata.answer == []
    assert sorted(upstream.udp_queries) == ["nope.example.test. A", "www.example.test. AAAA"]
    assert proxy.metrics()["nxdomain"] == 3.0


async def test_a_truncated_upstream_answer_is_retried_over_tcp(
    make_proxy: ProxyFactory
) -> None:
    upstream = Upstream(truncate=("big.example.test.",))
    await upstream.start()
    try:
        proxy = await make_proxy(f"127.0.0.1:{upstream.port}")
        reply = await ask(proxy, "big.example.test")
        assert addresses(reply) == ["192.0.2.21", "192.0.2.22", "192.0.2.23"]
        assert not reply.flags & dns.flags.TC
        assert (upstream.udp_queries, upstream.tcp_queries) == (
            ["big.example.test. A"], ["big.example.test. A"])
    finally:
        await upstream.stop()


async def test_a_dead_first_server_fails_over_to_the_next(
    make_proxy: ProxyFactory, upstream: Upstream
) -> None:
    proxy = await make_proxy(f"127.0.0.1:{closed_port()}", f"127.0.0.1:{upstream.port}")
    assert addresses(await ask(proxy, "www.example.test")) == ["192.0.2.10"]
    assert proxy.metrics()["upstream_failures"] == 1.0


async def test_a_servfailing_server_is_skipped_for_the_next(
    make_proxy: ProxyFactory, upstream: Upstream
) -> None:
    failing = Upstream(rcode=dns.rcode.SERVFAIL)
    await failing.start()
    try:
        proxy = await make_proxy(f"127.0.0.1:{failing.port}", f"127.0.0.1:{upstream.port}")
        assert addresses(await ask(proxy, "www.example.test")) == ["192.0.2.10"]
        assert failing.udp_queries == ["www.example.test. A"]
    finally:
        await failing.stop()


async def test_servfail_comes_only_when_every_server_failed(make_proxy: ProxyFactory) -> None:
    silent = Upstream(silent=True)
    await silent.start()
    try:
        proxy = await make_proxy(f"127.0.0.1:{closed_port()}", f"127.0.0.1:{silent.port}",
                                 upstream_timeout_s=0.3)
        reply = await ask(proxy, "www.example.test")
        assert reply.rcode() == dns.rcode.SERVFAIL
        assert silent.udp_queries == ["(ignored)"]
        metrics = proxy.metrics()
        assert (metrics["upstream_failures"], metrics["servfail"]) == (2.0, 1.0)
    finally:
        await silent.stop()


async def test_identical_questions_in_flight_share_one_upstream_query(
    make_proxy: ProxyFactory
) -> None:
    release = asyncio.Event()
    slow = Upstream(hold=release)
    await slow.start()
    try:
        proxy = await make_proxy(f"127.0.0.1:{slow.port}")
        asking = asyncio.gather(*(ask(proxy, "slow.example.test") for _ in range(5)))
        async with asyncio.timeout(5):
            while proxy.metrics()["queries"] < 5:
                await asyncio.sleep(0.01)
        release.set()
        replies = await asking
        assert all(addresses(r) == ["192.0.2.30"] for r in replies)
        assert slow.udp_queries == ["slow.example.test. A"]
        assert proxy.metrics()["coalesced"] == 4.0
    finally:
        await slow.stop()


async def test_mesh_names_are_answered_over_udp_and_tcp_without_upstream(
    make_proxy: ProxyFactory, upstream: Upstream
) -> None:
    proxy = await make_proxy(f"127.0.0.1:{upstream.port}")
    for tcp in (False, True):
        reply = await ask(proxy, "web.default.ns1.svc.cluster.local", tcp=tcp)
        assert [rrset.to_text() for rrset in reply.answer] == [
            "web.default.ns1.svc.cluster.local. 30 IN CNAME web.default.svc.cluster.local.",
            "web.default.svc.cluster.local. 30 IN A 240.0.0.3",
        ]
    assert upstream.udp_queries == [] and upstream.tcp_queries == []
    assert proxy.metrics()["tcp_queries"] == 1.0


async def test_other_types_of_names_are_forwarded_over_tcp_too(
    make_proxy: ProxyFactory, upstream: Upstream
) -> None:
    proxy = await make_proxy(f"127.0.0.1:{upstream.port}")
    reply = await ask(proxy, "www.example.test", "TXT", tcp=True)
    assert [rd.to_text() for rrset in reply.answer for rd in rrset] == ['"hello"']


async def test_set_table_swaps_the_answers_of_a_running_proxy(
    make_proxy: ProxyFactory, upstream: Upstream
) -> None:
    proxy = await make_proxy(f"127.0.0.1:{upstream.port}")
    assert addresses(await ask(proxy, "web.default")) == ["240.0.0.3"]
    proxy.set_table(NameTable.from_json({"Index": 43, "Services": [
        {"Name": "web", "Namespace": "default", "VirtualIPs": ["240.0.0.4"]}]}))
    assert addresses(await ask(proxy, "web.default")) == ["240.0.0.4"]


async def test_a_taken_port_is_a_one_line_bind_error(
    make_proxy: ProxyFactory, upstream: Upstream, tmp_path: Path
) -> None:
    proxy = await make_proxy(f"127.0.0.1:{upstream.port}")
    second = DnsProxy(DnsSettings(listen_port=proxy.port, resolv_conf=str(tmp_path / "none")))
    with pytest.raises(BindError) as info:
        await second.start()
    assert str(info.value) == (
        f"cannot listen on 127.0.0.1:{proxy.port} (udp): Address already in use")


async def test_the_metrics_text_is_prometheus_exposition(
    make_proxy: ProxyFactory, upstream: Upstream
) -> None:
    proxy = await make_proxy(f"127.0.0.1:{upstream.port}")
    await ask(proxy, "web.default")
    text = proxy.metrics_text()
    assert "# TYPE loom_dns_queries_total counter\nloom_dns_queries_total 1\n" in text
    assert "loom_dns_local_answers_total 1\n" in text
    assert 'loom_dns_query_duration_seconds_bucket{le="+Inf"} 1\n' in text
    assert "loom_dns_query_duration_seconds_count 1\n" in text


def ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as sock:
            sock.bind(("::1", 0))
    except OSError:
        return False
    return True


@pytest.mark.skipif(not ipv6_loopback(), reason="needs IPv6 on loopback")
async def test_the_proxy_listens_on_ipv6_too(make_proxy: ProxyFactory, upstream: Upstream) -> None:
    proxy = await make_proxy(f"127.0.0.1:{upstream.port}", listen_host="::1")
    query = dns.message.make_query("web.default", "A")
    for reply in (await dns.asyncquery.udp(query, "::1", port=proxy.port, timeout=5),
                  await dns.asyncquery.tcp(query, "::1", port=proxy.port, timeout=5)):
        assert addresses(reply) == ["240.0.0.3"]
