"""The proxy says which server index its table is at (``DnsProxy.served_index``, the gauge
``loom_dns_table_index`` and ``loom dns-proxy --metrics``'s ``/table``), so a caller that saw
the server's table at some index can wait for the proxy to answer from it instead of retrying
queries: the read returns as soon as a swap reaches that index, or at its timeout with the
index it has."""

from __future__ import annotations

import asyncio

from loom.dns.server import DnsProxy
from loom.dns.settings import DnsSettings
from loom.dns.table import NameTable


def _at(index: int) -> NameTable:
    return NameTable.from_json({"Index": index, "Services": []})


async def test_a_read_of_the_served_index_returns_once_a_swap_reaches_the_index_asked_for() -> None:
    proxy = DnsProxy(DnsSettings(listen_port=0), _at(5))
    assert await proxy.served_index() == 5
    waiting = asyncio.create_task(proxy.served_index(7, timeout_s=30))
    proxy.set_table(_at(6))  # below 7: the waiter wakes, and waits on
    await asyncio.sleep(0)  # (no event to wait on for "still waiting": give it its turns)
    await asyncio.sleep(0)
    assert not waiting.done()
    proxy.set_table(_at(7))
    assert await asyncio.wait_for(waiting, 10) == 7
    proxy.set_table(_at(9))  # later swaps change nothing for a read already answered
    assert await proxy.served_index(8) == 9


async def test_a_read_of_an_index_never_reached_returns_the_one_served_at_its_timeout() -> None:
    proxy = DnsProxy(DnsSettings(listen_port=0), _at(3))
    assert await proxy.served_index(4, timeout_s=0.05) == 3


def test_the_metrics_text_carries_the_served_index_as_a_gauge() -> None:
    proxy = DnsProxy(DnsSettings(listen_port=0), _at(42))
    text = proxy.metrics_text()
    assert "# TYPE loom_dns_table_index gauge\nloom_dns_table_index 42\n" in text
    proxy.set_table(_at(43))
    assert proxy.metrics_text().endswith("loom_dns_table_index 43\n")
