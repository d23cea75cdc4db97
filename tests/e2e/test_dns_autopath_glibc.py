"""Auto-path with glibc's own resolver: "12 queries to 2", counted at the proxy.

A network namespace made by the test gets a resolv.conf like a Kubernetes pod's (five search
domains, ``ndots:5``, the nameserver on 127.0.0.1), the proxy on 127.0.0.1:53 inside it and a
dnsmasq behind the proxy that answers NXDOMAIN for everything (the names of a search walk do
not exist). ``socket.getaddrinfo`` in a Python process in the namespace is glibc walking the
search list; the proxy's ``queries`` counter says how many questions reached it.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(shutil.which("dnsmasq") is None and not Path("/usr/sbin/dnsmasq").exists(),
                       reason="needs dnsmasq (dnsmasq-base)"),
]

NETNS = f"lt{os.getpid()}dns"
SEARCH = ("ns1.svc.cluster.local svc.cluster.local cluster.local "
          "c.example-project.internal google.internal")
UPSTREAM_PORT = 5300
METRICS_PORT = 9153
TABLE = {
    "Index": 1,
    "Datacenter": "dc1",
    "ClusterDomain": "cluster.local",
    "Services": [{"Name": "productpage", "Namespace": "ns1", "VirtualIPs": ["240.0.0.7"]}],
    "ExternalHosts": [{"Host": "www.example.com", "Service": "example", "Namespace": "ns1",
                       "VirtualIPs": ["240.240.0.9"]}],
}


def in_netns(*cmd: str) -> list[str]:
    return ["ip", "netns", "exec", NETNS, *cmd]


@pytest.fixture(scope="module")
def netns(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The namespace with its resolv.conf and a dnsmasq upstream; yields a work directory."""
    work = tmp_path_factory.mktemp("netns")
    etc = Path("/etc/netns") / NETNS
    dnsmasq: subprocess.Popen[bytes] | None = None
    subprocess.run(["ip", "netns", "add", NETNS], check=True)
    try:
        etc.mkdir(parents=True)
        (etc / "resolv.conf").write_text(
            f"nameserver 127.0.0.1\nsearch {SEARCH}\noptions ndots:5\n")
        subprocess.run(in_netns("ip", "link", "set", "lo", "up"), check=True)
        with (work / "dnsmasq.log").open("wb") as log:
            dnsmasq = subprocess.Popen(in_netns(
                shutil.which("dnsmasq") or "/usr/sbin/dnsmasq", "--no-daemon", "--no-resolv",
                "--no-hosts", "--conf-file=/dev/null", f"--port={UPSTREAM_PORT}",
                "--listen-address=127.0.0.1", "--bind-interfaces",
                f"--pid-file={work / 'dnsmasq.pid'}", "--address=/#/"),
                stdout=subprocess.DEVNULL, stderr=log)
        (work / "table.json").write_text(json.dumps(TABLE))
        yield work
    finally:
        if dnsmasq is not None:
            dnsmasq.terminate()
            dnsmasq.wait(timeout=5)
        subprocess.run(["ip", "netns", "del", NETNS], check=False)
        shutil.rmtree(etc, ignore_errors=True)


def run_in_netns(code: str) -> str:
    out = subprocess.run(in_netns(sys.executable, "-c", code), capture_output=True, text=True,
                         timeout=60, check=True)
    return out.stdout.strip()


def count_queries(work: Path, host: str, *extra: str) -> tuple[int, list[str]]:
    """Start the proxy in the namespace, resolve ``host`` with glibc, count the queries."""
    log = work / "proxy.log"
    with log.open("wb") as err:
        proxy = subprocess.Popen(in_netns(
            sys.executable, "-m", "loom", "dns-proxy", "--table", str(work / "table.json"),
            "--listen", "127.0.0.1:53", "--namespace", "ns1",
            "--resolv-conf", f"/etc/netns/{NETNS}/resolv.conf",
            "--upstream", f"127.0.0.1:{UPSTREAM_PORT}",
            "--metrics", f"127.0.0.1:{METRICS_PORT}", *extra), stderr=err)
    try:
        metrics_url = f"http://127.0.0.1:{METRICS_PORT}/metrics"
        probe = (
            "import time, urllib.request\n"
            "for _ in range(100):\n"
            "    try:\n"
            f"        print(urllib.request.urlopen({metrics_url!r}).read().decode()); break\n"
            "    except OSError: time.sleep(0.05)\n"
        )
        assert "loom_dns_queries_total 0" in run_in_netns(probe), log.read_text()
        addresses = json.loads(run_in_netns(
            "import json, socket\n"
            f"infos = socket.getaddrinfo({host!r}, 80, proto=socket.IPPROTO_TCP)\n"
            "print(json.dumps(sorted({i[4][0] for i in infos})))\n"))
        # One more query, answered: the proxy reads its socket in order, so a late duplicate
        # from glibc (sent before the resolving process exited) has been counted by then.
        marker = subprocess.run(in_netns("dig", "+tries=1", "+time=10", "@127.0.0.1",
                                         "marker.invalid."), capture_output=True, text=True)
        assert marker.returncode == 0 and "->>HEADER<<-" in marker.stdout, marker
        text = run_in_netns(probe)
        queries = next(int(line.split()[1]) for line in text.splitlines()
                       if line.startswith("loom_dns_queries_total "))
        return queries - 1, addresses
    finally:
        proxy.terminate()
        proxy.wait(timeout=10)


def test_a_short_name_of_another_namespace_costs_two_queries_with_autopath(
    netns: Path,
) -> None:
    assert count_queries(netns, "productpage.ns1") == (2, ["240.0.0.7"])
    # Without auto-path glibc walks: productpage.ns1.ns1.svc.cluster.local (A+AAAA, NXDOMAIN),
    # then productpage.ns1.svc.cluster.local (A+AAAA, answered).
    assert count_queries(netns, "productpage.ns1", "--no-autopath") == (4, ["240.0.0.7"])


def test_an_external_host_costs_two_queries_instead_of_twelve(netns: Path) -> None:
    assert count_queries(netns, "www.example.com") == (2, ["240.240.0.9"])
    # Without auto-path: five search domains x (A+AAAA), then the name as is: 12.
    assert count_queries(netns, "www.example.com", "--no-autopath") == (12, ["240.240.0.9"])
