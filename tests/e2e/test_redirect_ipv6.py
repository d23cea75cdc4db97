"""IPv6 does not bypass the mesh: with an IPv6 address up, the rules are mirrored with ip6tables.

Two plain namespaces joined by a veth with IPv6 addresses (no loom.local pod: those have IPv6
disabled). The app's IPv6 connection must land on the proxy's listener, the proxy's own
connection must reach the peer.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator

import pytest

from loom.redirect.applying import saved_rules
from tests.e2e.netns_util import Processes, dial, sweep, unique_prefix

pytestmark = pytest.mark.root

PROXY_UID = 5995
APP_UID = 4242


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, timeout=15)


@pytest.fixture(scope="module")
def v6_pair() -> Iterator[tuple[str, str]]:
    prefix = unique_prefix("l6")
    app, peer = f"{prefix}-app", f"{prefix}-peer"
    procs = Processes()
    try:
        for ns in (app, peer):
            _ip("netns", "add", ns)
            _ip("-n", ns, "link", "set", "lo", "up")
        _ip("-n", app, "link", "add", "eth0", "type", "veth", "peer", "name", "eth0", "netns", peer)
        for ns, addr in ((app, "fd00:7::1/64"), (peer, "fd00:7::2/64")):
            _ip("-n", ns, "addr", "add", addr, "dev", "eth0", "nodad")
            _ip("-n", ns, "link", "set", "eth0", "up")
        done = subprocess.run(
            [sys.executable, "-m", "loom", "connect", "redirect-traffic", "--netns", app,
             "--proxy-uid", str(PROXY_UID)],
            capture_output=True, text=True, timeout=30,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        assert done.stdout.strip().endswith("(IPv4 and IPv6)")
        procs.listen(app, "proxy", ["tcp6:[::1]:15001"], uid=PROXY_UID)
        procs.listen(peer, "peer", ["tcp6:[::]:80"])
        yield app, peer
    finally:
        procs.stop_all()
        sweep(prefix)


def test_the_apps_ipv6_connection_lands_on_the_proxy(v6_pair: tuple[str, str]) -> None:
    app, _ = v6_pair
    assert dial(app, "tcp", "fd00:7::2", 80, uid=APP_UID) == "proxy port=15001 orig=[fd00:7::2]:80"


def test_the_proxys_ipv6_connection_reaches_the_peer(v6_pair: tuple[str, str]) -> None:
    app, _ = v6_pair
    assert dial(app, "tcp", "fd00:7::2", 80, uid=PROXY_UID).startswith("peer port=80 ")


def test_the_ipv6_rules_are_the_mirror_of_the_ipv4_ones(v6_pair: tuple[str, str]) -> None:
    app, _ = v6_pair
    v4 = saved_rules(4, app).replace("127.0.0.0/8", "LOOPBACK")
    v6 = saved_rules(6, app).replace("::1/128", "LOOPBACK")
    assert "-A CONSUL_PROXY_OUTPUT -d LOOPBACK -j RETURN" in v6
    assert [line for line in v6.splitlines() if line.startswith("-A")] == [
        line for line in v4.splitlines() if line.startswith("-A")
    ]
