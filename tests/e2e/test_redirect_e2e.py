"""redirect-traffic applied for real: iptables in a pod namespace, traffic checked end to end.

Three pods on a node bridge (made by ``loom.local.netns``). Pod A gets the rules through the
CLI (``--netns``); a "fake proxy" (plain Python listeners running as the proxy UID) stands in
for Envoy on 15001/20000 and for the DNS proxy on 127.0.0.1:15053, and reports the original
destination the nat table recorded. Pods B and C are plain servers without rules.
"""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from loom.local.netns import LocalNetSettings, NodeNetwork, PodInfo, PodNetwork
from loom.redirect.applying import saved_rules
from tests.e2e.netns_util import Processes, dial, sweep, unique_prefix

pytestmark = pytest.mark.root

PROXY_UID = 5995
APP_UID = 4242
EXCLUDED_UID = 4343
VIP = "240.0.0.7"


@dataclass
class Mesh:
    a: PodInfo
    b: PodInfo
    c: PodInfo
    apply_argv: list[str]


@pytest.fixture(scope="module")
def mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mesh]:
    prefix = unique_prefix("lr")
    settings = LocalNetSettings(
        prefix=prefix, subnet="10.250.0.0/24", state_dir=tmp_path_factory.mktemp("state")
    )
    pods = PodNetwork(settings)
    procs = Processes()
    try:
        a = pods.add_pod("a", "nameserver 10.250.0.3\n")
        b = pods.add_pod("b", "nameserver 10.250.0.3\n")
        c = pods.add_pod("c", "nameserver 10.250.0.3\n")
        apply_argv = [
            sys.executable, "-m", "loom", "connect", "redirect-traffic", "--netns", a.netns,
            "--proxy-uid", str(PROXY_UID), "--exclude-uid", str(EXCLUDED_UID),
            "--exclude-inbound-port", "9090", "--exclude-outbound-port", "5432",
            "--exclude-outbound-cidr", f"{c.ip}/32", "--dns-port", "15053",
        ]  # fmt: skip
        done = subprocess.run(apply_argv, capture_output=True, text=True, timeout=30)
        assert done.returncode == 0, done.stderr
        proxy = ["tcp:0.0.0.0:15001", "tcp:0.0.0.0:20000", "udp:127.0.0.1:15053",
                 "tcp:127.0.0.1:15053"]  # fmt: skip
        procs.listen(a.netns, "a-proxy", proxy, uid=PROXY_UID)
        procs.listen(a.netns, "a-app", ["tcp:0.0.0.0:8080", "tcp:0.0.0.0:9090"], uid=APP_UID)
        server = ["tcp:0.0.0.0:80", "tcp:0.0.0.0:5432", "tcp:0.0.0.0:53", "udp:0.0.0.0:53"]
        procs.listen(b.netns, "b", server)
        procs.listen(c.netns, "c", ["tcp:0.0.0.0:80"])
        yield Mesh(a, b, c, apply_argv)
    finally:
        procs.stop_all()
        NodeNetwork(settings).destroy()
        sweep(prefix)


def test_pods_on_the_bridge_reach_each_other_directly(mesh: Mesh) -> None:
    assert dial(mesh.b.netns, "tcp", mesh.c.ip, 80).startswith("c port=80 ")


def test_the_apps_connection_to_another_pod_lands_on_the_outbound_listener(mesh: Mesh) -> None:
    reply = dial(mesh.a.netns, "tcp", mesh.b.ip, 80, uid=APP_UID)
    assert reply == f"a-proxy port=15001 orig={mesh.b.ip}:80"


def test_a_connection_to_a_virtual_ip_lands_on_the_outbound_listener(mesh: Mesh) -> None:
    reply = dial(mesh.a.netns, "tcp", VIP, 8443, uid=APP_UID)
    assert reply == f"a-proxy port=15001 orig={VIP}:8443"


def test_root_in_the_pod_is_redirected_too(mesh: Mesh) -> None:
    assert dial(mesh.a.netns, "tcp", mesh.b.ip, 80) == f"a-proxy port=15001 orig={mesh.b.ip}:80"


def test_the_proxys_own_connection_is_not_redirected(mesh: Mesh) -> None:
    reply = dial(mesh.a.netns, "tcp", mesh.b.ip, 80, uid=PROXY_UID)
    assert reply.startswith("b port=80 ")


def test_an_excluded_uid_is_not_redirected(mesh: Mesh) -> None:
    reply = dial(mesh.a.netns, "tcp", mesh.b.ip, 80, uid=EXCLUDED_UID)
    assert reply.startswith("b port=80 ")


def test_an_excluded_outbound_port_bypasses_the_proxy(mesh: Mesh) -> None:
    reply = dial(mesh.a.netns, "tcp", mesh.b.ip, 5432, uid=APP_UID)
    assert reply.startswith("b port=5432 ")


def test_an_excluded_outbound_cidr_bypasses_the_proxy(mesh: Mesh) -> None:
    assert dial(mesh.a.netns, "tcp", mesh.c.ip, 80, uid=APP_UID).startswith("c port=80 ")


def test_loopback_and_the_pods_own_ip_reach_the_app_directly(mesh: Mesh) -> None:
    assert dial(mesh.a.netns, "tcp", "127.0.0.1", 8080, uid=APP_UID).startswith("a-app port=8080")
    own = dial(mesh.a.netns, "tcp", mesh.a.ip, 8080, uid=APP_UID)
    assert own == f"a-app port=8080 orig={mesh.a.ip}:8080"


def test_inbound_connections_land_on_the_inbound_listener(mesh: Mesh) -> None:
    reply = dial(mesh.b.netns, "tcp", mesh.a.ip, 8080)
    assert reply == f"a-proxy port=20000 orig={mesh.a.ip}:8080"


def test_an_excluded_inbound_port_reaches_the_app_directly(mesh: Mesh) -> None:
    assert dial(mesh.b.netns, "tcp", mesh.a.ip, 9090).startswith("a-app port=9090 ")


def test_udp_dns_from_the_app_lands_on_the_dns_proxy(mesh: Mesh) -> None:
    assert dial(mesh.a.netns, "udp", mesh.b.ip, 53, uid=APP_UID) == "a-proxy port=15053"
    assert dial(mesh.a.netns, "udp", VIP, 53, uid=APP_UID) == "a-proxy port=15053"


def test_tcp_dns_from_the_app_lands_on_the_dns_proxy(mesh: Mesh) -> None:
    reply = dial(mesh.a.netns, "tcp", mesh.b.ip, 53, uid=APP_UID)
    assert reply == f"a-proxy port=15053 orig={mesh.b.ip}:53"


def test_the_dns_proxys_own_queries_are_not_redirected(mesh: Mesh) -> None:
    assert dial(mesh.a.netns, "udp", mesh.b.ip, 53, uid=PROXY_UID) == "b port=53"
    assert dial(mesh.a.netns, "tcp", mesh.b.ip, 53, uid=PROXY_UID).startswith("b port=53 ")


def _without_counters(text: str) -> str:
    return re.sub(r"\[\d+:\d+\]", "[-]", text)


def test_applying_again_leaves_the_same_rules(mesh: Mesh) -> None:
    before = _without_counters(saved_rules(4, mesh.a.netns))
    for _ in range(2):
        done = subprocess.run(mesh.apply_argv, capture_output=True, text=True, timeout=30)
        assert done.returncode == 0, done.stderr
        assert done.stdout.strip() == (
            f"redirect rules installed in network namespace {mesh.a.netns} "
            "(IPv4; IPv6 has no address here)"
        )
        assert _without_counters(saved_rules(4, mesh.a.netns)) == before
    assert before.count("-j CONSUL_PROXY_OUTPUT") == 1
    assert before.count("-j CONSUL_PROXY_INBOUND") == 1


def test_reapplying_without_dns_removes_the_dns_jump_and_rules(mesh: Mesh) -> None:
    without_dns = [arg for arg in mesh.apply_argv if arg not in ("--dns-port", "15053")]
    try:
        done = subprocess.run(without_dns, capture_output=True, text=True, timeout=30)
        assert done.returncode == 0, done.stderr
        rules = saved_rules(4, mesh.a.netns)
        assert "CONSUL_DNS_REDIRECT -" not in rules.replace(":CONSUL_DNS_REDIRECT -", "")
        assert dial(mesh.a.netns, "udp", mesh.b.ip, 53, uid=APP_UID) == "b port=53"
    finally:
        subprocess.run(mesh.apply_argv, capture_output=True, text=True, timeout=30, check=True)
    assert dial(mesh.a.netns, "udp", mesh.b.ip, 53, uid=APP_UID) == "a-proxy port=15053"


def test_the_rules_in_the_kernel_are_the_printed_ones(mesh: Mesh) -> None:
    printed = subprocess.run(
        [*mesh.apply_argv, "--print"], capture_output=True, text=True, timeout=30, check=True
    ).stdout
    v4 = printed.split("# IPv6")[0]
    wanted = sorted(line for line in v4.splitlines() if line.startswith("-A "))
    installed = saved_rules(4, mesh.a.netns)
    assert sorted(line for line in installed.splitlines() if line.startswith("-A ")) == wanted


def test_without_root_the_cli_says_so_in_one_line() -> None:
    loom = Path(sys.executable).with_name("loom")
    done = subprocess.run(
        ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "--", str(loom),
         "connect", "redirect-traffic", "--proxy-uid", "5995"],
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert done.returncode == 1
    assert done.stdout == ""
    assert done.stderr == (
        "loom: redirect-traffic needs root to change iptables rules "
        "(use --print to see the rules without applying them)\n"
    )


def test_an_unknown_netns_is_one_line() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "loom", "connect", "redirect-traffic", "--proxy-uid", "1",
         "--netns", "lr-no-such-ns"],
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert done.returncode == 1
    assert done.stderr == "loom: no network namespace named 'lr-no-such-ns' (see ip netns list)\n"


def test_without_iptables_the_cli_says_so_in_one_line() -> None:
    # Run inside a namespace of our own, so even a broken PATH trick could touch nothing else.
    netns = f"{unique_prefix('lr')}-bare"
    subprocess.run(["ip", "netns", "add", netns], check=True, timeout=15)
    try:
        done = subprocess.run(
            ["ip", "netns", "exec", netns, "env", "PATH=/nonexistent", sys.executable, "-m",
             "loom", "connect", "redirect-traffic", "--proxy-uid", "5995"],
            capture_output=True, text=True, timeout=30,
        )  # fmt: skip
        assert done.returncode == 1
        assert done.stderr == (
            "loom: iptables-restore not found: install the iptables package "
            "(Debian: apt-get install iptables)\n"
        )
    finally:
        subprocess.run(["ip", "netns", "del", netns], check=False, timeout=15)
