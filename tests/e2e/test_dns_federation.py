"""DNS across two federated datacenters of real processes: dc2 joins dc1 over the WAN, dc1's
server learns dc2's services, gives the meshed ones local VIPs (kept across dc1's restart) and
``loom dns-proxy --server`` against dc1 answers them to ``dig``."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.test_dns_cli import DIG, DNSMASQ, dig, serving
from tests.support.federation import federated, until_blocking
from tests.support.mesh import free_udp_tcp_port as free_port
from tests.support.server import ServerProcess, start_server

pytestmark = [
    pytest.mark.skipif(DIG is None, reason="needs dig (apt-get install dnsutils)"),
    pytest.mark.skipif(not Path(DNSMASQ).exists(), reason="needs dnsmasq (dnsmasq-base)"),
]


def meshed(name: str, port: int) -> dict[str, Any]:
    return {"Name": name, "Port": port, "Connect": {"SidecarService": {}}}


def remote_vips(table: dict[str, Any]) -> dict[str, list[str]]:
    return {s["Name"]: s["VirtualIPs"] for s in table["Services"] if s["Datacenter"] == "dc2"}


def table_where(check: Callable[[dict[str, list[str]]], bool]) -> Callable[[Any], bool]:
    return lambda table: check(remote_vips(table))


@pytest.fixture
def dcs(tmp_path: Path) -> Iterator[tuple[ServerProcess, ServerProcess, Path]]:
    with federated(("dc1", "dc2"), data_dir=tmp_path, wait_all=False) as (dc1, dc2):
        yield dc1, dc2, tmp_path


def short(port: int, name: str) -> list[str]:
    return sorted(dig(port, name, "A", "+short").split())


def test_a_proxy_watching_dc1_answers_dc2s_services_by_every_name(
    dcs: tuple[ServerProcess, ServerProcess, Path],
) -> None:
    dc1, dc2, work = dcs
    dc2.put("/v1/agent/service/register", meshed("api", 9090))
    dc2.put("/v1/agent/service/register", {"Name": "legacy", "Port": 80})  # no sidecar
    until_blocking(dc1, "/v1/loom/dns-table", table_where(
        lambda vips: vips.get("api") == ["240.241.0.1"] and vips.get("legacy") == []))
    (work / "resolv.conf").write_text("nameserver 192.0.2.53\n")
    upstream, port = free_port(), free_port()
    dnsmasq = [
        DNSMASQ, "--no-daemon", "--no-resolv", "--no-hosts", "--conf-file=/dev/null",
        f"--port={upstream}", "--listen-address=127.0.0.1", "--bind-interfaces",
        f"--pid-file={work / 'dnsmasq.pid'}", "--address=/cluster.local/", "--address=/consul/",
    ]  # fmt: skip
    proxy = [
        sys.executable, "-m", "loom", "dns-proxy", "--server", dc1.http,
        "--listen", f"127.0.0.1:{port}", "--namespace", "default",
        "--resolv-conf", str(work / "resolv.conf"), "--upstream", f"127.0.0.1:{upstream}",
    ]  # fmt: skip
    with serving(dnsmasq, upstream, work / "dnsmasq.log"), \
            serving(proxy, port, work / "proxy.log"):  # fmt: skip
        for name in ("api", "api.default", "api.default.svc.cluster.local",
                     "api.virtual.dc2.consul"):  # fmt: skip
            assert short(port, name) == ["240.241.0.1"], name
        assert short(port, "api.service.dc2.consul") == ["127.0.0.1"]
        assert short(port, "legacy.service.dc2.consul") == ["127.0.0.1"]
        assert "status: NXDOMAIN" in dig(port, "legacy.default.svc.cluster.local", "A")
        # A local api takes the Kubernetes names over; dc2's keeps its Consul name.
        dc1.put("/v1/agent/service/register", {"Name": "api", "Port": 9090})
        local = dc1.get("/v1/catalog/service/api")[0]["ServiceTaggedAddresses"]["virtual"]
        until_blocking(dc1, "/v1/loom/dns-table", lambda t: any(
            s["Name"] == "api" and s["Datacenter"] == "dc1" for s in t["Services"]))
        assert local["Address"].startswith("240.0.")

        def answers_local() -> bool:
            return short(port, "api") == [local["Address"]]

        until_true(answers_local)
        assert short(port, "api.virtual.dc2.consul") == ["240.241.0.1"]


def until_true(check: Callable[[], bool], tries: int = 100) -> None:
    """The proxy follows the table with its own blocking query: ask until it has caught up
    (each try is a real query, answered at once)."""
    for _ in range(tries):
        if check():
            return
        time.sleep(0.05)
    raise AssertionError("the proxy never answered as expected")


def test_dc1s_vips_for_dc2_stay_put_as_services_come_and_go_and_across_a_restart(
    dcs: tuple[ServerProcess, ServerProcess, Path],
) -> None:
    dc1, dc2, work = dcs
    dc2.put("/v1/agent/service/register", meshed("aaa", 7000))
    dc2.put("/v1/agent/service/register", meshed("api", 9090))
    until_blocking(dc1, "/v1/loom/dns-table", table_where(
        lambda vips: vips.get("aaa") == ["240.241.0.1"] and vips.get("api") == ["240.241.0.2"]))
    dc2.put("/v1/agent/service/deregister/aaa")
    until_blocking(dc1, "/v1/loom/dns-table", table_where(
        lambda vips: "aaa" not in vips and vips.get("api") == ["240.241.0.2"]))
    dc1.stop()
    again = start_server("--datacenter", "dc1", data_dir=work / "dc1")
    try:
        vips = remote_vips(again.get("/v1/loom/dns-table"))
        assert vips["api"] == ["240.241.0.2"]  # the same address after the restart
        dc2.put("/v1/agent/service/register", meshed("zzz", 7001))
        until_blocking(again, "/v1/loom/dns-table", table_where(
            lambda vips: vips.get("zzz") == ["240.241.0.1"]))  # the freed one, reused
        assert remote_vips(again.get("/v1/loom/dns-table"))["api"] == ["240.241.0.2"]
    finally:
        again.stop()
