"""Network plumbing of the one-machine mesh: a node namespace with a bridge, pods on veths.

``loom local`` runs each workload in its own network namespace ("pod") joined to a bridge that
lives in a private "node" namespace. Addresses come from a private subnet that exists only
inside these namespaces: the root namespace gets no address, route or interface from here.
Every pod gets ``eth0`` with one address, ``lo`` up, a default route via the bridge (so the
240.0.0.0/4 virtual IPs are routable and nat ``OUTPUT`` sees connections to them), IPv6
disabled (the redirect rules are IPv4) and its own ``/etc/netns/<pod-ns>/resolv.conf``.

What exists is recorded in a JSON state file under ``LocalNetSettings.state_dir``, written
*before* anything is created, so a later process (``loom local ps``, ``down``) finds every pod
and a crash mid-way leaves a record that the next call cleans up. Every name carries the
prefix, and teardown removes only recorded, prefixed objects. All calls are idempotent and
serialised between processes with a lock file; a failed ``add_pod`` leaves nothing behind.
The veth pair is created directly inside the node namespace with its peer in the pod, so the
root namespace never sees a pod interface either.
"""

from __future__ import annotations

import contextlib
import fcntl
import ipaddress
import json
import os
import re
import shutil
import subprocess
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from loom.local.errors import LocalNetError

_NETNS_DIR = Path("/run/netns")
_TIMEOUT_S = 30.0
_PREFIX_RE = re.compile(r"[a-z][a-z0-9]{0,7}")
_POD_NAME_RE = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,38}[a-z0-9])?")
_IFNAME_MAX = 15
_STATE_VERSION = 1


@dataclass(frozen=True)
class LocalNetSettings:
    """Names and addresses of one local mesh; two meshes with different prefixes coexist."""

    prefix: str = "loom"
    """Start of every namespace, interface and state file name (1-8 of a-z0-9, a letter
    first): short enough that ``<prefix>-<hex index>`` fits the 15-byte interface limit."""
    subnet: str = "10.244.0.0/16"
    """Private IPv4 subnet of the pods; the bridge takes the first host address. Used only
    inside the node and pod namespaces."""
    state_dir: Path = Path("/run/loom/local")
    """Where the state and lock files live (tmpfs: namespaces do not survive a reboot either)."""
    etc_netns_dir: Path = Path("/etc/netns")
    """Where ``ip netns exec`` looks for per-namespace /etc files (resolv.conf)."""

    def __post_init__(self) -> None:
        if not _PREFIX_RE.fullmatch(self.prefix):
            raise LocalNetError(
                f"prefix {self.prefix!r}: use 1-8 lower-case letters or digits, a letter first"
            )
        net = self.network
        if net.num_addresses < 4:
            raise LocalNetError(f"subnet {self.subnet}: too small for a bridge and a pod")

    @property
    def network(self) -> ipaddress.IPv4Network:
        try:
            return ipaddress.IPv4Network(self.subnet, strict=True)
        except ValueError as exc:
            raise LocalNetError(f"subnet {self.subnet!r}: not an IPv4 network ({exc})") from exc

    @property
    def node_netns(self) -> str:
        return f"{self.prefix}-node"

    @property
    def bridge(self) -> str:
        return f"{self.prefix}-br0"

    @property
    def gateway(self) -> str:
        """The bridge's address: every pod's default route."""
        return str(self.network.network_address + 1)

    @property
    def state_file(self) -> Path:
        return self.state_dir / f"{self.prefix}-net.json"

    def pod_netns(self, name: str) -> str:
        return f"{self.prefix}-pod-{name}"

    def node_veth(self, index: int) -> str:
        return f"{self.prefix}-{index:x}"


@dataclass(frozen=True)
class PodInfo:
    """One pod's network as recorded in the state file."""

    name: str
    """The pod (workload) name given to ``add_pod``."""
    netns: str
    """Its network namespace (``ip netns exec <netns> ...``)."""
    ip: str
    """Its address on ``eth0``."""
    prefix_len: int
    """Length of the subnet prefix on ``eth0``."""
    gateway: str
    """The bridge address its default route points at."""
    veth_node: str
    """The veth end attached to the bridge, inside the node namespace."""
    veth_pod: str = "eth0"
    """The veth end inside the pod."""


def netns_exec_argv(
    netns: str,
    argv: Sequence[str],
    uid: int | None = None,
    gid: int | None = None,
    groups: Sequence[int] = (),
) -> list[str]:
    """Command line running ``argv`` in ``netns``, as ``uid``/``gid`` (default: gid = uid)
    with exactly the supplementary ``groups`` (none by default) when a uid is given; root
    otherwise."""
    out = ["ip", "netns", "exec", netns]
    if uid is not None:
        group = uid if gid is None else gid
        extra = f"--groups={','.join(map(str, groups))}" if groups else "--clear-groups"
        out += ["setpriv", f"--reuid={uid}", f"--regid={group}", extra, "--"]
    return out + list(argv)


class NodeNetwork:
    """The node namespace and its bridge."""

    def __init__(self, settings: LocalNetSettings | None = None) -> None:
        self.settings = settings or LocalNetSettings()

    def exists(self) -> bool:
        return _netns_exists(self.settings.node_netns)

    def create(self) -> None:
        """Make the node namespace and bridge (or complete a half-made one)."""
        _require_root()
        with _locked(self.settings):
            self._create_locked()

    def destroy(self) -> list[str]:
        """Remove every recorded pod, the node namespace and the state; returns the network
        namespaces removed. Touches nothing that is not recorded or prefixed."""
        _require_root()
        removed: list[str] = []
        with _locked(self.settings):
            state = _load(self.settings)
            for record in state["pods"].values():
                if _teardown_pod(self.settings, record):
                    removed.append(record["netns"])
            if self.exists():
                _ip("netns", "del", self.settings.node_netns)
                removed.append(self.settings.node_netns)
            self.settings.state_file.unlink(missing_ok=True)
            # Removed while held: a process waiting on it gets an orphan lock, then finds no
            # state (nothing to do) or makes a fresh mesh under a new lock file.
            _lock_file(self.settings).unlink(missing_ok=True)
        with contextlib.suppress(OSError):
            self.settings.state_dir.rmdir()  # only if empty: it may be shared
        return removed

    def _create_locked(self) -> None:
        s = self.settings
        state = _load(s)
        if state["subnet"] != s.subnet:
            raise LocalNetError(
                f"{s.state_file} records subnet {state['subnet']}, not {s.subnet}: "
                "run `loom local down` first"
            )
        made = False
        if not self.exists():
            _ip("netns", "add", s.node_netns)
            made = True
        try:
            _disable_ipv6(s.node_netns)
            _ip("-n", s.node_netns, "link", "set", "lo", "up")
            if not _link_exists(s.node_netns, s.bridge):
                # A fixed address: a bridge left to choose takes its lowest port's MAC and
                # changes it as pods come and go, and pods that cached the old one cannot
                # reach the node DNS until their ARP entry expires (up to about 50 s).
                mac = "02:" + ":".join(f"{b:02x}" for b in os.urandom(5))  # local, unicast
                _ip("-n", s.node_netns, "link", "add", s.bridge, "address", mac, "type", "bridge")
            cidr = f"{s.gateway}/{s.network.prefixlen}"
            _ip("-n", s.node_netns, "addr", "replace", cidr, "dev", s.bridge)
            _ip("-n", s.node_netns, "link", "set", s.bridge, "up")
        except LocalNetError:
            if made:
                _ip("netns", "del", s.node_netns, check=False)
            raise
        _save(s, state)


class PodNetwork:
    """Pods (network namespaces) on the node bridge, allocated and recorded in the state."""

    def __init__(self, settings: LocalNetSettings | None = None) -> None:
        self.settings = settings or LocalNetSettings()
        self.node = NodeNetwork(self.settings)

    def add_pod(self, name: str, resolv_conf_text: str) -> PodInfo:
        """Make pod ``name`` (and the node if missing); an existing complete pod is kept and
        gets the new resolv.conf; a half-made one is removed and made again."""
        s = self.settings
        if not _POD_NAME_RE.fullmatch(name):
            raise LocalNetError(
                f"pod name {name!r}: use 1-40 lower-case letters, digits and '-', "
                "starting and ending with a letter or digit"
            )
        _require_root()
        with _locked(s):
            self.node._create_locked()
            state = _load(s)
            record = state["pods"].get(name)
            if record is not None and record["complete"] and _pod_is_whole(s, record):
                _write_resolv_conf(s, record["netns"], resolv_conf_text)
                return _info(s, record)
            if record is not None:
                _teardown_pod(s, record)
                del state["pods"][name]
            netns = s.pod_netns(name)
            if _netns_exists(netns):
                raise LocalNetError(
                    f"network namespace {netns} exists but {s.state_file} does not record it: "
                    f"remove it with `ip netns del {netns}` if it is a leftover"
                )
            index = _free_index(s, state)
            record = {
                "name": name,
                "netns": netns,
                "index": index,
                "ip": str(s.network.network_address + index),
                "veth_node": s.node_veth(index),
                "complete": False,
            }
            state["pods"][name] = record
            _save(s, state)  # recorded before anything exists: a crash leaves a findable record
            try:
                _build_pod(s, record, resolv_conf_text)
            except BaseException:
                try:
                    _teardown_pod(s, record)
                except LocalNetError:
                    pass  # the incomplete record stays: the next call on this pod cleans up
                else:
                    del state["pods"][name]
                    _save(s, state)
                raise
            record["complete"] = True
            _save(s, state)
            return _info(s, record)

    def remove_pod(self, name: str) -> bool:
        """Remove pod ``name`` fully; False when nothing of it existed."""
        _require_root()
        with _locked(self.settings):
            state = _load(self.settings)
            record = state["pods"].pop(name, None)
            if record is None:
                return False
            _teardown_pod(self.settings, record)
            _save(self.settings, state)
            return True

    def get_pod(self, name: str) -> PodInfo | None:
        """The complete pod ``name`` as recorded, or None."""
        record = _load(self.settings)["pods"].get(name)
        if record is None or not record["complete"]:
            return None
        return _info(self.settings, record)

    def list_pods(self) -> list[PodInfo]:
        """Complete pods as recorded, by name (half-made ones are cleaned by the next call)."""
        pods = _load(self.settings)["pods"].values()
        return sorted(
            (_info(self.settings, r) for r in pods if r["complete"]), key=lambda p: p.name
        )


def _build_pod(s: LocalNetSettings, record: dict[str, Any], resolv_conf_text: str) -> None:
    netns, veth = record["netns"], record["veth_node"]
    _ip("netns", "add", netns)
    _disable_ipv6(netns)  # before eth0 exists, so it never gets a link-local address
    _ip("-n", netns, "link", "set", "lo", "up")
    _ip("-n", s.node_netns, "link", "del", veth, check=False)  # a leftover from a crash
    peer = ("peer", "name", "eth0", "address", pod_mac(record["ip"]), "netns", netns)
    _ip("-n", s.node_netns, "link", "add", veth, "type", "veth", *peer)
    _ip("-n", s.node_netns, "link", "set", veth, "master", s.bridge)
    _ip("-n", s.node_netns, "link", "set", veth, "up")
    _ip("-n", netns, "addr", "add", f"{record['ip']}/{s.network.prefixlen}", "dev", "eth0")
    _ip("-n", netns, "link", "set", "eth0", "up")
    _ip("-n", netns, "route", "add", "default", "via", s.gateway, "dev", "eth0")
    _write_resolv_conf(s, netns, resolv_conf_text)


def pod_mac(ip: str) -> str:
    """The MAC address of the pod with address ``ip``: local, unicast and made from the
    address, so a pod made again with an address another pod had (rm, then run) has that
    pod's MAC too, and its neighbours' ARP caches stay right. A random one left them sending
    to a MAC nobody had until the entry failed (several seconds of connection timeouts)."""
    return "02:4c:" + ":".join(f"{int(b):02x}" for b in ip.split("."))


def _teardown_pod(s: LocalNetSettings, record: dict[str, Any]) -> bool:
    """Remove whatever of one recorded pod exists; True if its namespace existed."""
    netns = record["netns"]
    existed = _netns_exists(netns)
    if existed:
        _ip("netns", "del", netns)
    # Deleting the pod namespace destroys the veth pair, but asynchronously: delete our end.
    if _netns_exists(s.node_netns) and _link_exists(s.node_netns, record["veth_node"]):
        _ip("-n", s.node_netns, "link", "del", record["veth_node"], check=False)
    shutil.rmtree(s.etc_netns_dir / netns, ignore_errors=True)
    return existed


def _pod_is_whole(s: LocalNetSettings, record: dict[str, Any]) -> bool:
    netns = record["netns"]
    if not _netns_exists(netns) or not (s.etc_netns_dir / netns / "resolv.conf").exists():
        return False
    done = _ip("-n", netns, "-4", "-o", "addr", "show", "dev", "eth0", check=False)
    return done.returncode == 0 and f" {record['ip']}/" in done.stdout


def _free_index(s: LocalNetSettings, state: dict[str, Any]) -> int:
    used = {int(r["index"]) for r in state["pods"].values()}
    last = s.network.num_addresses - 2  # the broadcast address is not a host
    for index in range(2, last + 1):
        if index not in used:
            if len(s.node_veth(index)) > _IFNAME_MAX:
                break
            return index
    raise LocalNetError(f"no free address left in {s.subnet} ({len(used)} pods)")


def _info(s: LocalNetSettings, record: dict[str, Any]) -> PodInfo:
    return PodInfo(
        name=record["name"],
        netns=record["netns"],
        ip=record["ip"],
        prefix_len=s.network.prefixlen,
        gateway=s.gateway,
        veth_node=record["veth_node"],
    )


def _write_resolv_conf(s: LocalNetSettings, netns: str, text: str) -> None:
    directory = s.etc_netns_dir / netns
    try:
        directory.mkdir(parents=True, exist_ok=True, mode=0o755)
        tmp = directory / ".resolv.conf.tmp"
        tmp.write_text(text if text.endswith("\n") or not text else text + "\n")
        tmp.chmod(0o644)
        tmp.replace(directory / "resolv.conf")
    except OSError as exc:
        raise LocalNetError(f"cannot write {directory / 'resolv.conf'}: {exc.strerror}") from exc


def _disable_ipv6(netns: str) -> None:
    if not Path("/proc/sys/net/ipv6").exists():
        return  # IPv6 is not in this kernel at all
    keys = [f"net.ipv6.conf.{dev}.disable_ipv6=1" for dev in ("all", "default", "lo")]
    _run(["ip", "netns", "exec", netns, "sysctl", "-q", "-w", *keys])


# --- state file -------------------------------------------------------------------------


@contextlib.contextmanager
def _locked(s: LocalNetSettings) -> Iterator[None]:
    try:
        s.state_dir.mkdir(parents=True, exist_ok=True, mode=0o755)
        lock = open(_lock_file(s), "a")  # noqa: SIM115 (closed by the with below)
    except OSError as exc:
        raise LocalNetError(f"cannot open {_lock_file(s)}: {exc.strerror or exc}") from exc
    with lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _lock_file(s: LocalNetSettings) -> Path:
    return s.state_dir / f"{s.prefix}-net.lock"


def _load(s: LocalNetSettings) -> dict[str, Any]:
    try:
        data: dict[str, Any] = json.loads(s.state_file.read_text())
    except FileNotFoundError:
        return {"version": _STATE_VERSION, "prefix": s.prefix, "subnet": s.subnet, "pods": {}}
    except (OSError, ValueError) as exc:
        raise LocalNetError(f"cannot read {s.state_file}: {exc}") from exc
    if data.get("version") != _STATE_VERSION or not isinstance(data.get("pods"), dict):
        raise LocalNetError(f"{s.state_file}: not a loom local network state file")
    return data


def _save(s: LocalNetSettings, state: dict[str, Any]) -> None:
    try:
        s.state_dir.mkdir(parents=True, exist_ok=True, mode=0o755)
        tmp = s.state_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(state, indent=2, sort_keys=True) + "\n")
        tmp.replace(s.state_file)
    except OSError as exc:
        raise LocalNetError(f"cannot write {s.state_file}: {exc.strerror or exc}") from exc


# --- running ip ---------------------------------------------------------------------------


def _require_root() -> None:
    if os.geteuid() != 0:
        raise LocalNetError(
            "loom local needs root: it creates network namespaces, veth pairs and "
            "/etc/netns entries"
        )
    if shutil.which("ip") is None:
        raise LocalNetError("the ip command is missing (Debian: apt-get install iproute2)")


def _netns_exists(name: str) -> bool:
    return (_NETNS_DIR / name).exists()


def _link_exists(netns: str, link: str) -> bool:
    return _ip("-n", netns, "link", "show", "dev", link, check=False).returncode == 0


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return _run(["ip", *args], check=check)


def _run(argv: list[str], check: bool = True) -> subprocess.CompletedProcess[str]:
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=_TIMEOUT_S)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise LocalNetError(f"{' '.join(argv)}: {exc}") from exc
    if check and done.returncode != 0:
        lines = [line for line in done.stderr.splitlines() if line.strip()]
        raise LocalNetError(f"{' '.join(argv)}: {lines[0] if lines else 'failed'}")
    return done


# The WAN of several datacenters (``wan.py``) is built with the same tools.
ip = _ip
locked = _locked
netns_exists = _netns_exists
link_exists = _link_exists
disable_ipv6 = _disable_ipv6

__all__ = [
    "LocalNetError",
    "LocalNetSettings",
    "NodeNetwork",
    "PodInfo",
    "PodNetwork",
    "netns_exec_argv",
]
