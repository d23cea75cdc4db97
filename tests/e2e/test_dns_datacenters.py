"""DNS across datacenters asked by real clients: ``dig`` and glibc, against ``loom dns-proxy``.

The proxy serves a ``--table`` holding two datacenters, as the dc1 server writes it: dc1's own
services, and dc2's with their healthy instances and the local VIPs dc1 allocated for them
(240.241.0.0/16). ``dig`` asks the standalone proxy on a loopback port (names the table does not
know go to a dnsmasq); ``getent hosts`` runs inside a network namespace the test creates, with a
pod-like resolv.conf (search list, ``ndots:5``) and the proxy on its 127.0.0.1:53, so the answer
is what glibc makes of the search walk.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.test_dns_cli import DIG, DNSMASQ, dig, serving
from tests.support.mesh import free_udp_tcp_port as free_port

pytestmark = [
    pytest.mark.skipif(DIG is None, reason="needs dig (apt-get install dnsutils)"),
    pytest.mark.skipif(not Path(DNSMASQ).exists(), reason="needs dnsmasq (dnsmasq-base)"),
]

TWO_DCS: dict[str, Any] = {
    "Index": 9,
    "Datacenter": "dc1",
    "ClusterDomain": "cluster.local",
    "Services": [
        {"Name": "web", "Namespace": "ns1", "Datacenter": "dc1", "VirtualIPs": ["240.0.0.1"],
         "Instances": [{"Address": "10.1.0.1", "Hostname": "web-0"}]},
        {"Name": "api", "Namespace": "ns1", "Datacenter": "dc2", "VirtualIPs": ["240.241.0.1"],
         "Instances": [{"Address": "10.2.0.1"}, {"Address": "10.2.0.2"}]},
        {"Name": "web", "Namespace": "ns1", "Datacenter": "dc2", "VirtualIPs": ["240.241.0.2"],
         "Instances": [{"Address": "10.2.0.9"}]},
        {"Name": "legacy", "Namespace": "default", "Datacenter": "dc2", "VirtualIPs": [],
         "Instances": [{"Address": "10.2.0.7"}]},
    ],
    "ExternalHosts": [],
}


def short(port: int, name: str, *extra: str) -> list[str]:
    return sorted(dig(port, name, "A", "+short", *extra).split())


@pytest.fixture(scope="module")
def proxy(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    """dnsmasq (answers example.test, NXDOMAIN under consul and cluster.local) behind ``loom dns-proxy --table`` of two datacenters."""
    work = tmp_path_factory.mktemp("twodcs")
    (work / "table.json").write_text(json.dumps(TWO_DCS))
    (work / "resolv.conf").write_text("nameserver 192.0.2.53\nsearch ns1.svc.cluster.local\n")
    upstream = free_port()
    dnsmasq = [
        DNSMASQ, "--no-daemon", "--no-resolv", "--no-hosts", "--conf-file=/dev/null",
        f"--port={upstream}", "--listen-address=127.0.0.1", "--bind-interfaces",
        f"--pid-file={work / 'dnsmasq.pid'}", "--address=/example.test/192.0.2.1",
        "--address=/consul/", "--address=/cluster.local/",  # NXDOMAIN for what it gets of these
    ]  # fmt: skip
    with serving(dnsmasq, upstream, work / "dnsmasq.log"):
        port = free_port()
        cmd = [
            sys.executable, "-m", "loom", "dns-proxy", "--table", str(work / "table.json"),
            "--listen", f"127.0.0.1:{port}", "--namespace", "ns1",
            "--resolv-conf", str(work / "resolv.conf"), "--upstream", f"127.0.0.1:{upstream}",
        ]  # fmt: skip
        with serving(cmd, port, work / "proxy.log") as proc:
            yield port
        assert proc.returncode == 0, (work / "proxy.log").read_text()


def test_dig_gets_another_datacenters_instances_and_local_vips_by_consul_name(proxy: int) -> None:
    assert short(proxy, "api.service.dc2.consul") == ["10.2.0.1", "10.2.0.2"]
    assert short(proxy, "api.service.ns1.ns.dc2.dc.consul", "+tcp") == ["10.2.0.1", "10.2.0.2"]
    assert short(proxy, "api.virtual.dc2.consul") == ["240.241.0.1"]
    assert short(proxy, "web.virtual.dc2.consul") == ["240.241.0.2"]
    assert short(proxy, "legacy.service.dc2.consul") == ["10.2.0.7"]
    out = dig(proxy, "legacy.virtual.dc2.consul", "A")
    assert "status: NOERROR" in out and "ANSWER: 0" in out  # no VIP: NODATA, not NXDOMAIN


def test_dig_gets_the_local_vip_of_a_remote_only_service_by_kubernetes_name(proxy: int) -> None:
    for name in ("api", "api.ns1", "api.ns1.svc", "api.ns1.svc.cluster.local"):
        assert short(proxy, name) == ["240.241.0.1"], name
    out = dig(proxy, "api.ns1.svc.cluster.local", "A", "+noall", "+comments", "+answer")
    assert "flags: qr aa rd ra;" in out


def test_dig_gets_the_local_service_when_both_datacenters_have_it(proxy: int) -> None:
    assert short(proxy, "web.ns1.svc.cluster.local") == ["240.0.0.1"]
    assert short(proxy, "web") == ["240.0.0.1"]


def test_names_no_datacenter_defines_still_go_upstream(proxy: int) -> None:
    assert short(proxy, "www.example.test") == ["192.0.2.1"]
    assert "status: NXDOMAIN" in dig(proxy, "nothing.service.dc3.consul", "A")
    assert "status: NXDOMAIN" in dig(proxy, "legacy.default.svc.cluster.local", "A")


# ---- glibc in a network namespace ------------------------------------------------------------

NETNS = f"lt{os.getpid()}xdc"
SEARCH = "ns1.svc.cluster.local svc.cluster.local cluster.local"


def in_netns(*cmd: str) -> list[str]:
    return ["ip", "netns", "exec", NETNS, *cmd]


@pytest.fixture(scope="module")
def pod(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A namespace with a pod's resolv.conf and the proxy on 127.0.0.1:53 (no upstream: an
    unknown name fails rather than leaking to the host's resolvers)."""
    if os.geteuid() != 0 or shutil.which("ip") is None:
        pytest.skip("needs root and ip(8) to make a network namespace")
    work = tmp_path_factory.mktemp("netns")
    (work / "table.json").write_text(json.dumps(TWO_DCS))
    etc = Path("/etc/netns") / NETNS
    subprocess.run(["ip", "netns", "add", NETNS], check=True)
    proxy: subprocess.Popen[bytes] | None = None
    try:
        etc.mkdir(parents=True)
        (etc / "resolv.conf").write_text(
            f"nameserver 127.0.0.1\nsearch {SEARCH}\noptions ndots:5 timeout:1 attempts:1\n"
        )
        subprocess.run(in_netns("ip", "link", "set", "lo", "up"), check=True)
        with (work / "proxy.log").open("wb") as err:
            proxy = subprocess.Popen(in_netns(
                sys.executable, "-m", "loom", "dns-proxy", "--table", str(work / "table.json"),
                "--listen", "127.0.0.1:53", "--namespace", "ns1",
                "--resolv-conf", str(etc / "resolv.conf"), "--upstream", "127.0.0.1:5399",
            ), stderr=err)  # fmt: skip
        wait_until_answering_in_netns(work / "proxy.log")
        yield work
    finally:
        if proxy is not None:
            proxy.terminate()
            proxy.wait(timeout=10)
        subprocess.run(["ip", "netns", "del", NETNS], check=False)
        shutil.rmtree(etc, ignore_errors=True)


def wait_until_answering_in_netns(log: Path) -> None:
    """Ask the proxy until it answers (bounded: 10 s); before it binds, dig fails at once."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        ready = subprocess.run(
            in_netns(DIG or "dig", "+tries=1", "+time=1", "@127.0.0.1", "web.ns1", "+short"),
            capture_output=True, text=True, timeout=10,
        )  # fmt: skip
        if ready.stdout.split() == ["240.0.0.1"]:
            return
        time.sleep(0.05)
    raise AssertionError(f"the proxy did not answer within 10 s: {log.read_text()}")


def getent(*args: str) -> list[list[str]]:
    out = subprocess.run(in_netns("getent", *args), capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out
    return [line.split() for line in out.stdout.splitlines()]


@pytest.mark.root
def test_glibc_resolves_a_remote_only_service_by_its_short_kubernetes_names(pod: Path) -> None:
    for name in ("api", "api.ns1", "api.ns1.svc.cluster.local"):
        [[address, canonical, *_]] = getent("hosts", name)
        assert (address, canonical) == ("240.241.0.1", "api.ns1.svc.cluster.local"), name


@pytest.mark.root
def test_glibc_resolves_consul_names_of_another_datacenter(pod: Path) -> None:
    [[address, *_]] = getent("hosts", "api.virtual.dc2.consul")
    assert address == "240.241.0.1"
    # gethostbyname2 (getent hosts) lists every address; getent ahosts would pass
    # AI_ADDRCONFIG, which finds no IPv4 address on a namespace with only loopback.
    found = {line[0] for line in getent("hosts", "api.service.dc2.consul")}
    assert found == {"10.2.0.1", "10.2.0.2"}


@pytest.mark.root
def test_glibc_gets_the_local_service_over_the_remote_one(pod: Path) -> None:
    [[address, *_]] = getent("hosts", "web")
    assert address == "240.0.0.1"
