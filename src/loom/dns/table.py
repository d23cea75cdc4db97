"""The name table: which mesh names the DNS proxy answers, and with which addresses.

The server computes it (services with their virtual IPs and healthy instances, external hosts
with their auto-allocated VIPs) and serves it as JSON at ``GET /v1/loom/dns-table``; a
``--table FILE`` holds the same JSON. ``NameTable.from_json`` validates it and builds, once per
table, an index from every lowercase name the table defines to its records, so a lookup is one
dict access. Names that depend on the asking proxy (its namespace, its search list) are not in
the index: ``loom.dns.resolve`` maps them onto indexed names.

Services of other datacenters (``Datacenter`` not the table's) get their Consul names, and,
when they have virtual IPs (local addresses the server allocated for them), the Kubernetes
names no local service defines: the first datacenter by name wins a name two of them share.
Prepared queries the server executed (``Queries``) name ``<query>.query.consul`` and
``<query>.query.<dc>.consul`` (this datacenter), with the query's TTL and order, for SRV too
(targets ``<hex>.addr.<dc>.consul``, Consul's names of addresses, which answer A or AAAA).

Pure: no I/O, no clocks. Tables are immutable; the proxy swaps whole tables.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import Any

from loom.dns.errors import TableError
from loom.domain.fields import first_unknown
from loom.domain.mesh import ExternalHost

CONSUL_DOMAIN = "consul"
"""The domain of Consul-style names (``web.virtual.consul``)."""


@dataclass(frozen=True)
class Instance:
    """A healthy instance of a service."""

    address: str
    """Its IPv4 or IPv6 address (pod IP)."""
    hostname: str = ""
    """Its pod hostname; for headless services it gets ``<hostname>.<svc>.<ns>.svc.<domain>``."""


@dataclass(frozen=True)
class Service:
    """A service the server knows, in this datacenter or another one."""

    name: str
    namespace: str
    datacenter: str
    virtual_ips: tuple[str, ...]
    """Its virtual IPs (ClusterIP, Consul virtual IP); empty for a headless service."""
    instances: tuple[Instance, ...]
    """Only the healthy instances."""

    @property
    def headless(self) -> bool:
        return not self.virtual_ips


@dataclass(frozen=True)
class Records:
    """What one name answers: packed addresses per family, and its canonical name."""

    canonical: str
    """The name an auto-path CNAME points to; empty means "the name as asked"."""
    ipv4: tuple[bytes, ...] = ()
    """Packed 4-byte addresses, in table order."""
    ipv6: tuple[bytes, ...] = ()
    """Packed 16-byte addresses, in table order."""
    ttl: int = 0
    """The answer's TTL in seconds (a prepared query's ``DNS.TTL``); 0: the proxy's default."""
    ordered: bool = False
    """Answer in table order, never rotated (a query with ``Near``: nearest first)."""
    srv: tuple[tuple[int, str, bytes], ...] = ()
    """SRV answers (a prepared query's): port, target name (``<hex>.addr.<dc>.consul``, as
    Consul names an address) and the target's packed address, in table order."""

    @classmethod
    def of(
        cls, canonical: str, addresses: Iterable[str], ttl: int = 0, ordered: bool = False
    ) -> Records:
        parsed = [ipaddress.ip_address(a) for a in addresses]
        return cls(
            canonical,
            tuple(a.packed for a in parsed if a.version == 4),
            tuple(a.packed for a in parsed if a.version == 6),
            ttl,
            ordered,
        )

    def addresses(self) -> list[str]:
        """The addresses as text, IPv4 first (for listings and tests)."""
        return [str(ipaddress.ip_address(p)) for p in (*self.ipv4, *self.ipv6)]


@dataclass(frozen=True)
class QueryRecord:
    """A prepared query executed by the server: what ``<name>.query.consul`` answers."""

    name: str
    """The query's name (lowercase) or a name its template answers; or ``#`` and the hash of
    its ID (``loom.domain.queries.dns_id_key``), which ``loom.dns.resolve`` computes."""
    service: str
    ttl: int
    """``DNS.TTL`` in seconds; 0: the proxy's default."""
    ordered: bool
    """The query sorts by ``Near``: answer in this order."""
    instances: tuple[tuple[str, int], ...]
    """(IP address, port) of every instance the execution kept, in answer order."""


@dataclass(frozen=True)
class NameTable:
    """One immutable version of the name table, with its lookup index."""

    index: int = 0
    """The server's index (``X-Consul-Index``) this table was computed at."""
    datacenter: str = "dc1"
    """The datacenter of the proxy; a service of another datacenter gets Consul names, and
    Kubernetes names too when it has virtual IPs and no service of this one has its name."""
    cluster_domain: str = "cluster.local"
    """The Kubernetes cluster domain of the ``svc.ns.svc.<domain>`` names."""
    services: tuple[Service, ...] = ()
    external_hosts: tuple[ExternalHost, ...] = ()
    queries: tuple[QueryRecord, ...] = ()
    """Prepared queries by name: ``<name>.query.consul`` and ``<name>.query.<dc>.consul``."""
    names: Mapping[str, Records] = field(init=False, repr=False, compare=False)
    """Every name this table defines (lowercase, no trailing dot) -> its records."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "names", MappingProxyType(_build_index(self)))

    @classmethod
    def from_json(cls, obj: object) -> NameTable:
        """Validate the JSON form (see docs/dns.md); raises TableError naming the bad field."""
        return _parse_table(obj)

    def lookup(self, name: str) -> Records | None:
        """The records of an indexed name (lowercase, no trailing dot), or None."""
        return self.names.get(name)

    def consul_name(self, service: str, kind: str, namespace: str, datacenter: str) -> str:
        """The fully explicit Consul name the index holds for a service."""
        return f"{service}.{kind}.{namespace}.ns.{datacenter}.dc.{CONSUL_DOMAIN}"


def _build_index(table: NameTable) -> dict[str, Records]:
    primary: dict[str, Records] = {}
    secondary: dict[str, Records] = {}
    domain, dc = table.cluster_domain, table.datacenter
    local: set[tuple[str, str]] = set()
    for svc in table.services:
        instance_ips = [i.address for i in svc.instances]
        if svc.datacenter == table.datacenter:
            local.add((svc.namespace, svc.name))
            fqdn = f"{svc.name}.{svc.namespace}.svc.{domain}"
            records = Records.of(fqdn, svc.virtual_ips or instance_ips)
            primary.setdefault(fqdn, records)
            secondary.setdefault(f"{svc.name}.{svc.namespace}.svc", records)
            secondary.setdefault(f"{svc.name}.{svc.namespace}", records)
            if svc.headless:
                for inst in svc.instances:
                    if inst.hostname:
                        pod = f"{inst.hostname}.{fqdn}"
                        primary.setdefault(pod, Records.of(pod, [inst.address]))
        for kind, ips in (("virtual", svc.virtual_ips), ("service", instance_ips)):
            name = table.consul_name(svc.name, kind, svc.namespace, svc.datacenter)
            primary.setdefault(name, Records.of("", ips))
    for q in table.queries:
        records = Records.of("", [a for a, _ in q.instances], q.ttl, q.ordered)
        srv = []
        for address, port in q.instances:
            packed = ipaddress.ip_address(address).packed
            target = addr_name(packed, dc)
            srv.append((port, target, packed))
            primary.setdefault(target, Records.of("", [address], q.ttl))
        records = replace(records, srv=tuple(srv))
        for name in (f"{q.name}.query.{CONSUL_DOMAIN}", f"{q.name}.query.{dc}.{CONSUL_DOMAIN}"):
            primary.setdefault(name, records)
    for ext in table.external_hosts:
        if ext.virtual_ips and not ext.host.startswith("*"):
            primary.setdefault(ext.host, Records.of(ext.host, ext.virtual_ips))
    for name, records in secondary.items():
        primary.setdefault(name, records)
    for name, records in _remote_only_names(table, local).items():
        primary.setdefault(name, records)
    return primary


def addr_name(packed: bytes, datacenter: str) -> str:
    """Consul's name of an address (an SRV target): its bytes in hex, ``.addr.<dc>.consul``."""
    return f"{packed.hex()}.addr.{datacenter}.{CONSUL_DOMAIN}"


def _remote_only_names(table: NameTable, local: set[tuple[str, str]]) -> dict[str, Records]:
    """Kubernetes names of services found only in other datacenters (Istio's multicluster
    DNS): ``svc.ns.svc.<domain>`` and its short forms answer the local virtual IPs the
    server allocated for the service in the first datacenter, by name, that has some. A
    service of this datacenter always wins, and so does every name a local one defines."""
    remote = sorted(
        (svc for svc in table.services if svc.datacenter != table.datacenter and svc.virtual_ips),
        key=lambda svc: svc.datacenter,
    )
    out: dict[str, Records] = {}
    for svc in remote:
        if (svc.namespace, svc.name) in local:
            continue
        fqdn = f"{svc.name}.{svc.namespace}.svc.{table.cluster_domain}"
        if fqdn in out:
            continue  # a datacenter earlier by name has it
        records = Records.of(fqdn, svc.virtual_ips)
        for name in (fqdn, f"{svc.name}.{svc.namespace}.svc", f"{svc.name}.{svc.namespace}"):
            out.setdefault(name, records)
    return out


# ---- validation of the JSON form -------------------------------------------------------------


def _parse_table(obj: object) -> NameTable:
    top = _object(obj, "name table", _TABLE_KEYS)
    index = top.get("Index", 0)
    if not isinstance(index, int) or isinstance(index, bool) or index < 0:
        raise TableError(f"name table: Index: expected a non-negative integer, got {index!r}")
    datacenter = _label(top.get("Datacenter", "dc1"), "Datacenter")
    domain = _dns_name(top.get("ClusterDomain", "cluster.local"), "ClusterDomain")
    services = tuple(
        _parse_service(item, f"Services[{i}]", datacenter)
        for i, item in enumerate(_list(top.get("Services", []), "Services"))
    )
    externals = tuple(
        _parse_external(item, f"ExternalHosts[{i}]")
        for i, item in enumerate(_list(top.get("ExternalHosts", []), "ExternalHosts"))
    )
    queries = tuple(
        _parse_query(item, f"Queries[{i}]")
        for i, item in enumerate(_list(top.get("Queries", []), "Queries"))
    )
    return NameTable(index, datacenter, domain, services, externals, queries)


def _parse_query(obj: object, where: str) -> QueryRecord:
    q = _object(obj, where, ("Name", "IDHash", "Service", "TTL", "Ordered", "Instances"))
    ttl = q.get("TTL", 0)
    if not isinstance(ttl, int) or isinstance(ttl, bool) or not 0 <= ttl <= MAX_TTL:
        raise _fail(f"{where}.TTL", f"an integer 0..{MAX_TTL}", ttl)
    ordered = q.get("Ordered", False)
    if not isinstance(ordered, bool):
        raise _fail(f"{where}.Ordered", "true or false", ordered)
    instances = []
    for i, item in enumerate(_list(q.get("Instances", []), f"{where}.Instances")):
        at = f"{where}.Instances[{i}]"
        inst = _object(item, at, ("Address", "Port"))
        port = inst.get("Port", 0)
        if not isinstance(port, int) or isinstance(port, bool) or not 0 <= port <= 65535:
            raise _fail(f"{at}.Port", "a port 0..65535", port)
        instances.append((_ip(inst.get("Address"), f"{at}.Address"), port))
    if "IDHash" in q:
        id_hash = q["IDHash"]
        if "Name" in q or not isinstance(id_hash, str) or not _HASH.fullmatch(id_hash):
            raise _fail(f"{where}.IDHash", "48 hex digits (and no Name)", id_hash)
        name = "#" + id_hash
    else:
        name = _label(q.get("Name"), f"{where}.Name")
    return QueryRecord(
        name=name,
        service=_text(q.get("Service", ""), f"{where}.Service"),
        ttl=ttl,
        ordered=ordered,
        instances=tuple(instances),
    )


def _parse_service(obj: object, where: str, datacenter: str) -> Service:
    svc = _object(obj, where, _SERVICE_KEYS)
    instances = tuple(
        _parse_instance(item, f"{where}.Instances[{i}]")
        for i, item in enumerate(_list(svc.get("Instances", []), f"{where}.Instances"))
    )
    return Service(
        name=_label(svc.get("Name"), f"{where}.Name"),
        namespace=_label(svc.get("Namespace", "default"), f"{where}.Namespace"),
        datacenter=_label(svc.get("Datacenter", datacenter), f"{where}.Datacenter"),
        virtual_ips=_ips(svc.get("VirtualIPs", []), f"{where}.VirtualIPs"),
        instances=instances,
    )


def _parse_instance(obj: object, where: str) -> Instance:
    inst = _object(obj, where, ("Address", "Hostname"))
    address = _ip(inst.get("Address"), f"{where}.Address")
    hostname = inst.get("Hostname", "")
    return Instance(address, _label(hostname, f"{where}.Hostname") if hostname else "")


def _parse_external(obj: object, where: str) -> ExternalHost:
    ext = _object(obj, where, ("Host", "Service", "Namespace", "VirtualIPs"))
    host = ext.get("Host")
    if isinstance(host, str) and host.startswith("*."):
        host = "*." + _dns_name(host[2:], f"{where}.Host")
    else:
        host = _dns_name(host, f"{where}.Host")
    return ExternalHost(
        host=host,
        service=_text(ext.get("Service", ""), f"{where}.Service"),
        namespace=_text(ext.get("Namespace", ""), f"{where}.Namespace"),
        virtual_ips=_ips(ext.get("VirtualIPs", []), f"{where}.VirtualIPs"),
    )


def _fail(where: str, expected: str, got: object) -> TableError:
    shown = repr(got)
    if len(shown) > 60:
        shown = shown[:57] + "..."
    return TableError(f"name table: {where}: expected {expected}, got {shown}")


_TABLE_KEYS = ("Index", "Datacenter", "ClusterDomain", "Services", "ExternalHosts", "Queries")
_HASH = re.compile(r"[0-9a-f]{48}")
MAX_TTL = 2**31 - 1
"""RFC 2181: a TTL is an unsigned 31-bit number."""
_SERVICE_KEYS = ("Name", "Namespace", "Datacenter", "VirtualIPs", "Instances")


def _object(obj: object, where: str, known: tuple[str, ...]) -> dict[str, Any]:
    """A JSON object whose keys are all ``known`` (the server writes exactly these; a typo in
    a ``--table`` file is refused as ``config write`` refuses one, with a did-you-mean)."""
    if not isinstance(obj, dict):
        raise _fail(where, "a JSON object", obj)
    problem = first_unknown(obj, known, fold=False)
    if problem is not None:
        at = where if where == "name table" else f"name table: {where}"
        raise TableError(f"{at}: {problem[0]}: {problem[1]}")
    return obj


def _list(obj: object, where: str) -> list[Any]:
    if obj is None:
        return []
    if not isinstance(obj, list):
        raise _fail(where, "a JSON list", obj)
    return obj


def _text(obj: object, where: str) -> str:
    if not isinstance(obj, str):
        raise _fail(where, "a string", obj)
    return obj


_LABEL_CHARS = frozenset("abcdefghijklmnopqrstuvwxyz0123456789-_")


def _label(obj: object, where: str) -> str:
    text = _text(obj, where).lower()
    if not 0 < len(text) <= 63 or not set(text) <= _LABEL_CHARS:
        raise _fail(where, "a DNS label (1-63 of a-z 0-9 - _)", obj)
    return text


def _dns_name(obj: object, where: str) -> str:
    text = _text(obj, where).lower().rstrip(".")
    if not 0 < len(text) <= 253:
        raise _fail(where, "a DNS name", obj)
    for label in text.split("."):
        if not 0 < len(label) <= 63 or not set(label) <= _LABEL_CHARS:
            raise _fail(where, "a DNS name", obj)
    return text


def _ip(obj: object, where: str) -> str:
    try:
        return str(ipaddress.ip_address(_text(obj, where)))
    except ValueError:
        raise _fail(where, "an IPv4 or IPv6 address", obj) from None


def _ips(obj: object, where: str) -> tuple[str, ...]:
    return tuple(_ip(item, f"{where}[{i}]") for i, item in enumerate(_list(obj, where)))
