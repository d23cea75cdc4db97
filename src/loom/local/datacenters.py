"""Where each datacenter of the one-machine mesh lives: names, subnets, ports (pure).

``loom local`` can run several datacenters side by side (``--datacenter dc2``), each with its
own server, state directory, node network and pods, plus one shared "WAN" network that only
the mesh gateways are on. Every command finds a datacenter's mesh again from its name alone,
so the layout is a function of the base settings (the environment, as for one mesh) and the
name: the default datacenter (``dc1``) is exactly today's mesh, with unchanged paths and
names, and another one is offset from it by the datacenter's index (``dcN`` -> N-1). Two
datacenters never share a prefix, state directory, data directory, subnet, port or sidecar
UID, so
``down`` of one removes exactly its own. No I/O here.
"""

from __future__ import annotations

import ipaddress
import re
import zlib
from dataclasses import dataclass
from pathlib import Path

from loom.local.errors import LocalError

DEFAULT_DATACENTER = "dc1"
"""The datacenter of a mesh made without ``--datacenter`` (the server's default)."""
PORT_STEP = 10
"""How far apart two datacenters' HTTP (and gRPC) ports are: dc2 on 8510/8512."""
_DC_RE = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,30}[a-z0-9])?")
_NUMBERED = re.compile(r"dc([1-9][0-9]{0,2})")
UID_BASE = 200000
"""Where the sidecar UIDs of datacenters other than the default one start (above 65535:
clear of login users, systemd's dynamic users and ``nobody``)."""
_HASHED = 16
"""Datacenters not named ``dcN`` get an index of 100-115 from a hash of the name."""


@dataclass(frozen=True)
class BaseLayout:
    """The default datacenter's mesh, as the environment gives it (``LOOM_LOCAL_*``)."""

    prefix: str = "loom"
    """Prefix of its namespaces and interfaces."""
    subnet: str = "10.244.0.0/16"
    """Its pods' subnet; another datacenter's is the ``index``-th next one of that size
    (wrapping inside the private block that holds it)."""
    state_dir: Path = Path("/run/loom/local")
    """Its state directory; another datacenter's is a sibling, ``<state_dir>-<dc>``."""
    data_dir: Path | None = Path("/var/lib/loom/local")
    """Its server's store (None: in memory); another's is ``<data_dir>-<dc>``."""
    http_addr: str = "127.0.0.1:8500"
    """Its server's HTTP API; another's port is ``index * PORT_STEP`` higher."""
    grpc_addr: str = "127.0.0.1:8502"
    """Its server's xDS port; shifted as the HTTP one."""
    wan_subnet: str = "10.243.0.0/24"
    """The WAN the mesh gateways of every datacenter sit on (``LOOM_LOCAL_WAN_SUBNET``)."""


@dataclass(frozen=True)
class DatacenterLayout:
    """Everything of one datacenter's mesh that must not collide with another's."""

    datacenter: str
    """Its name."""
    index: int
    """0 for the default datacenter, N-1 for ``dcN``, 100-115 for other names."""
    prefix: str
    """Namespace and interface prefix (``loom``, ``loomdc2``)."""
    subnet: str
    """Its node network."""
    state_dir: Path
    """Its state directory (sockets, tokens, pods)."""
    data_dir: Path | None
    """Its server's store."""
    http_addr: str
    """Its server's HTTP API on loopback (other datacenters' servers join it here)."""
    grpc_addr: str
    """Its server's xDS endpoint on loopback."""
    first_uid: int = 60000
    """The first of its pods' 1000 sidecar UIDs (``uids.UidRange``): dc1's 60000-60999, another
    datacenter's ``UID_BASE + index * 1000``, so no two pods of the machine share a UID."""


@dataclass(frozen=True)
class WanLayout:
    """The shared WAN: a bridge in a namespace of its own, one address per gateway."""

    prefix: str
    """Its namespace and interface prefix (``loomwan``)."""
    subnet: str
    """Its addresses; a datacenter's gateway takes ``index + 2``."""
    state_dir: Path
    """Its state file and lock (``<state_dir>-wan``, beside the datacenters')."""

    def address(self, index: int) -> str:
        """The WAN address of the mesh gateway of the datacenter of ``index``."""
        net = _network(self.subnet)
        if index + 2 >= net.num_addresses - 1:
            raise LocalError(f"WAN subnet {self.subnet}: no address for datacenter index {index}")
        return str(net.network_address + index + 2)


def check_name(datacenter: str) -> str:
    """``datacenter`` if it is a usable name (lower-case letters, digits, '-')."""
    if not _DC_RE.fullmatch(datacenter):
        raise LocalError(
            f"datacenter {datacenter!r}: use 1-32 lower-case letters, digits and '-', "
            "starting and ending with a letter or digit"
        )
    return datacenter


def index_of(datacenter: str) -> int:
    """0 for ``dc1`` (the default), N-1 for ``dcN``, else 100 + a hash of the name."""
    check_name(datacenter)
    numbered = _NUMBERED.fullmatch(datacenter)
    if numbered:
        return int(numbered.group(1)) - 1
    return 100 + zlib.crc32(datacenter.encode()) % _HASHED


def layout(base: BaseLayout, datacenter: str = DEFAULT_DATACENTER) -> DatacenterLayout:
    """Where ``datacenter``'s mesh lives, given the default one's ``base``."""
    index = index_of(datacenter)
    if datacenter == DEFAULT_DATACENTER:
        return DatacenterLayout(datacenter, 0, base.prefix, base.subnet, base.state_dir,
                                base.data_dir, base.http_addr, base.grpc_addr)  # fmt: skip
    subnet = _nth_subnet(_network(base.subnet), index)
    if subnet is None:
        raise LocalError(
            f"datacenter {datacenter}: no private subnet {index} places after {base.subnet}; "
            "give LOOM_LOCAL_SUBNET a smaller one"
        )
    data_dir = None if base.data_dir is None else _sibling(base.data_dir, datacenter)
    return DatacenterLayout(
        datacenter=datacenter,
        index=index,
        prefix=_prefix(base.prefix, datacenter),
        subnet=str(subnet),
        state_dir=_sibling(base.state_dir, datacenter),
        data_dir=data_dir,
        http_addr=_shift(base.http_addr, index * PORT_STEP),
        grpc_addr=_shift(base.grpc_addr, index * PORT_STEP),
        first_uid=UID_BASE + index * 1000,
    )


def wan_layout(base: BaseLayout) -> WanLayout:
    """The WAN of every datacenter made from ``base``."""
    _network(base.wan_subnet)
    return WanLayout(_prefix(base.prefix, "wan"), base.wan_subnet, _sibling(base.state_dir, "wan"))


_PRIVATE = tuple(ipaddress.IPv4Network(n) for n in ("10.0.0.0/8", "172.16.0.0/12",
                                                    "192.168.0.0/16"))  # fmt: skip


def _nth_subnet(net: ipaddress.IPv4Network, n: int) -> ipaddress.IPv4Network | None:
    """The ``n``-th subnet of ``net``'s size after it, wrapping inside the private block
    that holds ``net`` (10/8, 172.16/12, 192.168/16); None when it does not fit."""
    block = next((b for b in _PRIVATE if net.subnet_of(b)), None)
    if block is None:
        return None
    count = block.num_addresses // net.num_addresses
    if count <= n:
        return None
    start = (int(net.network_address) - int(block.network_address)) // net.num_addresses
    first = int(block.network_address) + ((start + n) % count) * net.num_addresses
    return ipaddress.IPv4Network((first, net.prefixlen))


def _prefix(base: str, suffix: str) -> str:
    """``<base><suffix>`` when that fits the 8 characters of a prefix, else ``base``'s first
    four and four hex digits of a hash of both (still distinct per datacenter)."""
    joined = base + suffix.replace("-", "")
    if len(joined) <= 8:
        return joined
    return base[:4] + f"{zlib.crc32(joined.encode()) & 0xFFFF:04x}"


def _sibling(path: Path, datacenter: str) -> Path:
    return path.with_name(f"{path.name}-{datacenter}")


def _shift(addr: str, by: int) -> str:
    host, sep, port = addr.rpartition(":")
    if not sep or not port.isdigit():
        raise LocalError(f"address {addr!r}: expected HOST:PORT")
    shifted = int(port) + by
    if not 0 < shifted < 65536:
        raise LocalError(f"address {addr!r}: port {shifted} for this datacenter is out of range")
    return f"{host}:{shifted}"


def _network(subnet: str) -> ipaddress.IPv4Network:
    try:
        return ipaddress.IPv4Network(subnet, strict=True)
    except ValueError as exc:
        raise LocalError(f"subnet {subnet!r}: not an IPv4 network ({exc})") from exc
