"""The "WAN" between the datacenters of ``loom local``: a bridge only mesh gateways are on.

Each datacenter's pods sit on its own node bridge and subnet, in a node namespace of its own,
so a pod of dc1 has no route to dc2's pods. The WAN is one more node namespace with a bridge
(``<prefix>wan-node``, ``<prefix>wan-br0``); a datacenter's mesh gateway pod gets a second
interface, ``wan0``, on it with the WAN address of its datacenter (``datacenters.WanLayout``).
Nothing forwards between the interfaces of a gateway pod (IP forwarding is off in every
namespace made here), so the gateways' WAN addresses are the only path between datacenters,
as across the Internet. Attachments are recorded (under the WAN's lock) before they are made;
the last detach removes the WAN namespace, its state and lock, so each datacenter's ``down``
leaves the others' gateways attached and removes the WAN with the last one.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from loom.local import netns
from loom.local.datacenters import WanLayout
from loom.local.errors import LocalNetError
from loom.local.netns import LocalNetSettings, NodeNetwork

WAN_IFACE = "wan0"
"""The gateway pod's interface on the WAN (its LAN one is ``eth0``)."""


def net_settings(wan: WanLayout) -> LocalNetSettings:
    """The WAN as a node network of its own (namespace, bridge at the subnet's first host)."""
    return LocalNetSettings(prefix=wan.prefix, subnet=wan.subnet, state_dir=wan.state_dir)


def _state_file(wan: WanLayout) -> Path:
    return wan.state_dir / f"{wan.prefix}-attached.json"


def _load(wan: WanLayout) -> dict[str, Any]:
    try:
        data: dict[str, Any] = json.loads(_state_file(wan).read_text())
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        raise LocalNetError(f"cannot read {_state_file(wan)}: {exc}") from exc
    return data


def _save(wan: WanLayout, state: dict[str, Any]) -> None:
    path = _state_file(wan)
    try:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o755)
        if not state:
            path.unlink(missing_ok=True)
            return
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(state, indent=2, sort_keys=True) + "\n")
        tmp.replace(path)
    except OSError as exc:
        raise LocalNetError(f"cannot write {path}: {exc.strerror or exc}") from exc


def attachments(wan: WanLayout) -> dict[str, dict[str, Any]]:
    """Datacenter -> its gateway's attachment (``netns``, ``ip``, ``veth``), as recorded."""
    return _load(wan)


def attach(wan: WanLayout, datacenter: str, index: int, pod_netns: str) -> str:
    """Give the gateway pod ``pod_netns`` of ``datacenter`` its WAN interface; its address.
    Idempotent; a failed attach leaves no interface behind."""
    s = net_settings(wan)
    NodeNetwork(s).create()
    address = wan.address(index)
    veth = s.node_veth(index + 2)
    with netns.locked(s):
        state = _load(wan)
        other = next((dc for dc, r in state.items() if r["ip"] == address and dc != datacenter),
                     None)  # fmt: skip
        if other is not None:
            raise LocalNetError(f"WAN address {address} of {datacenter} is {other}'s already")
        state[datacenter] = {"netns": pod_netns, "ip": address, "veth": veth}
        _save(wan, state)  # recorded first: a crash leaves a record detach cleans up
        have = netns.ip("-n", pod_netns, "-4", "-o", "addr", "show", "dev", WAN_IFACE,
                        check=False)  # fmt: skip
        if have.returncode == 0 and f" {address}/" in have.stdout:
            return address
        try:
            netns.ip("-n", s.node_netns, "link", "del", veth, check=False)  # a leftover
            peer = ("peer", "name", WAN_IFACE, "netns", pod_netns)
            netns.ip("-n", s.node_netns, "link", "add", veth, "type", "veth", *peer)
            netns.ip("-n", s.node_netns, "link", "set", veth, "master", s.bridge)
            netns.ip("-n", s.node_netns, "link", "set", veth, "up")
            cidr = f"{address}/{s.network.prefixlen}"
            netns.ip("-n", pod_netns, "addr", "add", cidr, "dev", WAN_IFACE)
            netns.ip("-n", pod_netns, "link", "set", WAN_IFACE, "up")
        except BaseException:
            netns.ip("-n", s.node_netns, "link", "del", veth, check=False)
            raise
    return address


def detach(wan: WanLayout, datacenter: str) -> None:
    """Remove ``datacenter``'s WAN interface (if any); the last one removes the WAN."""
    s = net_settings(wan)
    if not s.state_file.exists() and not _state_file(wan).exists():
        return
    with netns.locked(s):
        state = _load(wan)
        record = state.pop(datacenter, None)
        node = netns.netns_exists(s.node_netns)
        if record is not None and node and netns.link_exists(s.node_netns, record["veth"]):
            netns.ip("-n", s.node_netns, "link", "del", record["veth"], check=False)
        _save(wan, state)
        last = not state
    if last:
        NodeNetwork(s).destroy()
