"""The local mesh's network plumbing made for real: namespaces, bridge, veths, resolv.conf."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from loom.local.netns import (
    LocalNetError,
    LocalNetSettings,
    NodeNetwork,
    PodNetwork,
    netns_exec_argv,
)
from tests.e2e.netns_util import Processes, dial, our_netns, sweep, unique_prefix

pytestmark = pytest.mark.root


@pytest.fixture
def settings(tmp_path: Path) -> Iterator[LocalNetSettings]:
    prefix = unique_prefix("ln")
    made = LocalNetSettings(prefix=prefix, subnet="10.249.0.0/24", state_dir=tmp_path / "state")
    try:
        yield made
    finally:
        NodeNetwork(made).destroy()
        sweep(prefix)


def _run(argv: list[str]) -> str:
    return subprocess.run(argv, capture_output=True, text=True, timeout=15, check=True).stdout


def _node_links(settings: LocalNetSettings) -> list[str]:
    out = _run(["ip", "-n", settings.node_netns, "-o", "link", "show"])
    return sorted(line.split(": ")[1].split("@")[0] for line in out.splitlines())


def _etc_entries(prefix: str) -> list[str]:
    root = Path("/etc/netns")
    return (
        sorted(p.name for p in root.iterdir() if p.name.startswith(prefix)) if root.exists() else []
    )


def test_a_pod_gets_an_address_a_default_route_its_resolv_conf_and_no_ipv6(
    settings: LocalNetSettings,
) -> None:
    pod = PodNetwork(settings).add_pod("web", "nameserver 10.249.0.9\nsearch default.svc\n")
    assert (pod.ip, pod.gateway, pod.prefix_len) == ("10.249.0.2", "10.249.0.1", 24)
    assert pod.netns == f"{settings.prefix}-pod-web"
    routes = _run(["ip", "-n", pod.netns, "route", "show", "default"])
    assert routes.split()[:5] == ["default", "via", "10.249.0.1", "dev", "eth0"]
    resolv = _run(netns_exec_argv(pod.netns, ["cat", "/etc/resolv.conf"]))
    assert resolv == "nameserver 10.249.0.9\nsearch default.svc\n"
    assert _run(netns_exec_argv(pod.netns, ["cat", "/proc/net/if_inet6"])) == ""
    assert _run(["ip", "-n", pod.netns, "-6", "addr"]) == ""


def test_the_root_namespace_gets_nothing_from_the_mesh(settings: LocalNetSettings) -> None:
    before = _run(["ip", "-o", "link"]), _run(["ip", "-o", "addr"]), _run(["ip", "route"])
    PodNetwork(settings).add_pod("web", "")
    after = _run(["ip", "-o", "link"]), _run(["ip", "-o", "addr"]), _run(["ip", "route"])
    assert after == before
    assert "10.249." not in "".join(after)


def test_pods_reach_each_other_over_the_bridge_and_a_later_process_finds_them(
    settings: LocalNetSettings,
) -> None:
    pods = PodNetwork(settings)
    a = pods.add_pod("a", "")
    b = pods.add_pod("b", "")
    procs = Processes()
    try:
        procs.listen(b.netns, "b", ["tcp:0.0.0.0:7000"])
        assert dial(a.netns, "tcp", b.ip, 7000, uid=65534).startswith("b port=7000 ")
    finally:
        procs.stop_all()
    later = PodNetwork(dataclasses.replace(settings))
    assert later.list_pods() == [a, b]
    assert later.get_pod("b") == b


def test_adding_a_pod_twice_keeps_it_and_updates_its_resolv_conf(
    settings: LocalNetSettings,
) -> None:
    pods = PodNetwork(settings)
    first = pods.add_pod("web", "nameserver 10.249.0.7\n")
    again = pods.add_pod("web", "nameserver 10.249.0.8\n")
    assert again == first
    assert _run(netns_exec_argv(first.netns, ["cat", "/etc/resolv.conf"])) == (
        "nameserver 10.249.0.8\n"
    )
    assert our_netns(settings.prefix) == [settings.node_netns, first.netns]


def test_a_pod_name_that_is_not_a_dns_label_is_refused_before_anything_is_made(
    settings: LocalNetSettings,
) -> None:
    with pytest.raises(LocalNetError, match="pod name 'Web_1'"):
        PodNetwork(settings).add_pod("Web_1", "")
    assert our_netns(settings.prefix) == []


def test_a_pod_failing_midway_leaves_nothing_behind(
    settings: LocalNetSettings, tmp_path: Path
) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("")
    broken = dataclasses.replace(settings, etc_netns_dir=blocker)
    pods = PodNetwork(broken)
    with pytest.raises(LocalNetError, match="cannot write"):
        pods.add_pod("web", "nameserver 10.249.0.9\n")
    assert our_netns(settings.prefix) == [settings.node_netns]
    assert _node_links(settings) == [settings.bridge, "lo"]
    assert json.loads(settings.state_file.read_text())["pods"] == {}
    assert _etc_entries(settings.prefix) == []
    ok = PodNetwork(settings).add_pod("web", "")
    assert ok.ip == "10.249.0.2"


def test_a_half_made_pod_left_by_a_crash_is_rebuilt_or_removed(
    settings: LocalNetSettings,
) -> None:
    pods = PodNetwork(settings)
    pod = pods.add_pod("web", "")
    # Simulate a crash between recording and finishing: the record says incomplete and the
    # namespace lost its address.
    state = json.loads(settings.state_file.read_text())
    state["pods"]["web"]["complete"] = False
    settings.state_file.write_text(json.dumps(state))
    _run(["ip", "-n", pod.netns, "addr", "flush", "dev", "eth0"])
    assert pods.list_pods() == []
    rebuilt = pods.add_pod("web", "")
    assert rebuilt == pod
    assert f" {pod.ip}/24 " in _run(["ip", "-n", pod.netns, "-o", "addr", "show", "dev", "eth0"])
    state["pods"]["web"]["complete"] = False
    settings.state_file.write_text(json.dumps(state))
    assert pods.remove_pod("web") is True
    assert our_netns(settings.prefix) == [settings.node_netns]
    assert pods.remove_pod("web") is False


def test_removing_a_pod_frees_its_address(settings: LocalNetSettings) -> None:
    pods = PodNetwork(settings)
    a = pods.add_pod("a", "")
    pods.add_pod("b", "")
    assert pods.remove_pod("a") is True
    assert _node_links(settings) == sorted([settings.bridge, "lo", settings.node_veth(3)])
    assert pods.add_pod("c", "").ip == a.ip


def test_a_full_subnet_is_a_clear_error(tmp_path: Path) -> None:
    prefix = unique_prefix("lf")
    tiny = LocalNetSettings(prefix=prefix, subnet="10.248.0.0/30", state_dir=tmp_path / "s")
    try:
        pods = PodNetwork(tiny)
        assert pods.add_pod("a", "").ip == "10.248.0.2"
        with pytest.raises(LocalNetError, match=r"no free address left in 10.248.0.0/30"):
            pods.add_pod("b", "")
    finally:
        NodeNetwork(tiny).destroy()
        sweep(prefix)


def test_destroy_removes_everything_it_made_and_nothing_else(tmp_path: Path) -> None:
    prefix = unique_prefix("ld")
    mine = LocalNetSettings(prefix=prefix, subnet="10.247.0.0/24", state_dir=tmp_path / "s")
    bystander = f"{prefix}x-bystander"  # another mesh's prefix extends ours: must survive
    _run(["ip", "netns", "add", bystander])
    try:
        pods = PodNetwork(mine)
        pods.add_pod("a", "nameserver 10.247.0.9\n")
        pods.add_pod("b", "nameserver 10.247.0.9\n")
        assert len(_etc_entries(prefix + "-")) == 2
        removed = NodeNetwork(mine).destroy()
        assert sorted(removed) == sorted([f"{prefix}-pod-a", f"{prefix}-pod-b", f"{prefix}-node"])
        assert our_netns(prefix) == []
        assert _etc_entries(prefix + "-") == []
        assert not mine.state_dir.exists()
        assert bystander in _run(["ip", "netns", "list"])
        assert NodeNetwork(mine).destroy() == []
    finally:
        subprocess.run(["ip", "netns", "del", bystander], check=False, capture_output=True)
        sweep(prefix)


def test_without_root_the_library_says_so(tmp_path: Path) -> None:
    code = (
        "from loom.local.netns import *\n"
        "try:\n"
        "    PodNetwork(LocalNetSettings(prefix='lz1', state_dir=__import__('pathlib')"
        ".Path('/tmp/lz1'))).add_pod('a', '')\n"
        "except LocalNetError as exc:\n"
        "    print(exc)\n"
    )
    done = subprocess.run(
        ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "--", sys.executable,
         "-c", code],
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert done.stdout == (
        "loom local needs root: it creates network namespaces, veth pairs and /etc/netns entries\n"
    )
