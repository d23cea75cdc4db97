"""Name resolution against the table: which question is answered here, how, or forwarded.

``resolve(query, table, view)`` is the whole decision, as a pure function: the table gives the
names the mesh knows, the view says who is asking (the proxy's namespace, cluster domain and the
search list of its resolv.conf). Forms answered (see docs/dns.md):

- Kubernetes: ``svc.ns.svc.<domain>``, ``svc.ns.svc``, ``svc.ns`` for any namespace; ``svc`` for
  the proxy's own namespace; ``<hostname>.svc.ns.svc.<domain>`` for pods of headless services.
- Consul: ``svc.virtual.consul`` (virtual IPs) and ``svc.service.consul`` (healthy instance
  IPs), optionally with ``.<dc>``, ``.<ns>.ns`` or ``.<ns>.ns.<dc>.dc`` before ``.consul``.
  Without a namespace, the proxy's own namespace is tried, then ``default``.
- Other datacenters: ``svc.service.<dc>.consul`` (that datacenter's healthy instances) and
  ``svc.virtual.<dc>.consul`` (the local VIP routed to it); the Kubernetes forms above also
  name services found only in another datacenter (``loom.dns.table``), as Istio's
  multicluster DNS does.
- Prepared queries: ``<query>.query.consul`` and ``<query>.query.<dc>.consul`` (this
  datacenter), by name or ID (the table holds a hash of each ID, computed here from the name
  asked), as the server executed them for the table, with the query's ``DNS.TTL``; SRV too,
  to ``<hex>.addr.<dc>.consul`` targets whose addresses come in the additional section.
- External hosts registered with VIPs.
- Auto-path: ``<known name>.<search domain>`` answered with a CNAME to the known name and its
  addresses, which turns glibc's walk of the search list into one round of A + AAAA.

A known name asked for A or AAAA (a query's name: or SRV) is answered here (NODATA when it
lacks that family); anything else is forwarded, with ``known`` set so the forwarder can keep a
known name from ever being answered NXDOMAIN.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from loom.dns.table import CONSUL_DOMAIN, NameTable, Records
from loom.domain.queries import dns_id_key, is_uuid

QTYPE_A = 1
QTYPE_AAAA = 28
QTYPE_CNAME = 5
QTYPE_SRV = 33
ANSWER_TTL_S = 30
"""TTL of locally answered records: short, so clients follow table changes within 30 s."""


@dataclass(frozen=True)
class View:
    """Who is asking: the proxy's place, which decides the short forms and auto-path."""

    namespace: str = "default"
    """The proxy's own namespace: ``svc`` alone and namespace-less Consul names mean this one."""
    cluster_domain: str = "cluster.local"
    """The pod's cluster domain; an alias of the table's when they differ."""
    search: tuple[str, ...] = ()
    """The search list of the pod's resolv.conf, in order (lowercase, no trailing dots)."""
    autopath: bool = True
    """Answer ``<known>.<search domain>`` with a CNAME at once (off only to compare)."""


@dataclass(frozen=True)
class Query:
    """One question: the name as asked (any case, trailing dot optional) and its type."""

    name: str
    qtype: int


class Action(Enum):
    ANSWER = "answer"
    """Answer here: ``addresses`` (possibly empty: NODATA), after an optional CNAME."""
    FORWARD = "forward"
    """Ask the upstream resolvers."""


@dataclass(frozen=True)
class Resolution:
    """The decision for one query."""

    action: Action
    addresses: tuple[bytes, ...] = ()
    """Packed addresses of the asked family (4 or 16 bytes each)."""
    cname: str = ""
    """Auto-path: the known name the asked name is an alias of (empty otherwise)."""
    known: bool = False
    """The asked name is a mesh name (so an upstream NXDOMAIN for it must become NODATA)."""
    ttl: int = ANSWER_TTL_S
    """TTL of the answer's records (a prepared query's ``DNS.TTL``, else ``ANSWER_TTL_S``)."""
    ordered: bool = False
    """Keep the addresses in this order (a ``Near`` query), never rotated."""
    srv: tuple[tuple[int, str, bytes], ...] = ()
    """An SRV answer: (port, target, packed target address) per record (``Records.srv``)."""

    @property
    def autopath(self) -> bool:
        return bool(self.cname)


FORWARD = Resolution(Action.FORWARD)
FORWARD_KNOWN = Resolution(Action.FORWARD, known=True)


def resolve(query: Query, table: NameTable, view: View) -> Resolution:
    """Decide how to answer ``query``; pure and deterministic."""
    name = query.name.lower().rstrip(".")
    hit = lookup(name, table, view)
    if hit is not None:
        records = hit[0]
        if query.qtype == QTYPE_SRV and records.srv:
            ttl = records.ttl or ANSWER_TTL_S
            return Resolution(Action.ANSWER, (), "", True, ttl, records.ordered, records.srv)
        if query.qtype not in (QTYPE_A, QTYPE_AAAA):
            return FORWARD_KNOWN
        return _answer(hit[0], query.qtype, "")
    if query.qtype not in (QTYPE_A, QTYPE_AAAA) or not view.autopath:
        return FORWARD
    for domain in view.search:
        if len(name) > len(domain) + 1 and name.endswith(domain) and name[-len(domain) - 1] == ".":
            hit = lookup(name[: -len(domain) - 1], table, view)
            if hit is not None:
                records, target = hit
                return _answer(records, query.qtype, target)
    return FORWARD


def lookup(name: str, table: NameTable, view: View) -> tuple[Records, str] | None:
    """The records of a name (lowercase, no trailing dot) and its canonical name, or None."""
    records = table.names.get(name)
    if records is None:
        key = _alias(name, table, view)
        if key is None:
            return None
        records = table.names.get(key) if isinstance(key, str) else _first(table, key)
        if records is None:
            return None
    return records, records.canonical or name


def _alias(name: str, table: NameTable, view: View) -> str | tuple[str, ...] | None:
    """The indexed name(s) a view-dependent form stands for."""
    if "." not in name:
        return f"{name}.{view.namespace}.svc.{table.cluster_domain}"
    if name.endswith("." + CONSUL_DOMAIN):
        return _consul_keys(name.split("."), table, view)
    if view.cluster_domain != table.cluster_domain:
        suffix = ".svc." + view.cluster_domain
        if name.endswith(suffix):
            return name[: -len(suffix)] + ".svc." + table.cluster_domain
    return None


def _consul_keys(labels: list[str], table: NameTable, view: View) -> tuple[str, ...] | None:
    if labels[1:2] == ["query"] and len(labels) in (3, 4) and is_uuid(labels[0]):
        return (".".join(["#" + dns_id_key(labels[0]), *labels[1:]]),)  # by ID: its hash
    if len(labels) < 3 or labels[1] not in ("virtual", "service"):
        return None
    svc, kind, rest = labels[0], labels[1], labels[2:-1]
    namespaces: tuple[str, ...] = (view.namespace, "default")
    if not rest:
        datacenter = table.datacenter
    elif len(rest) == 1 or (len(rest) == 2 and rest[1] == "dc"):
        datacenter = rest[0]
    elif len(rest) == 2 and rest[1] == "ns":
        namespaces, datacenter = (rest[0],), table.datacenter
    elif len(rest) == 4 and rest[1] == "ns" and rest[3] == "dc":
        namespaces, datacenter = (rest[0],), rest[2]
    else:
        return None
    return tuple(table.consul_name(svc, kind, ns, datacenter) for ns in namespaces)


def _first(table: NameTable, keys: tuple[str, ...]) -> Records | None:
    for key in keys:
        records = table.names.get(key)
        if records is not None:
            return records
    return None


def _answer(records: Records, qtype: int, cname: str) -> Resolution:
    return Resolution(
        Action.ANSWER,
        _family(records, qtype),
        cname,
        True,
        records.ttl or ANSWER_TTL_S,
        records.ordered,
    )


def _family(records: Records, qtype: int) -> tuple[bytes, ...]:
    return records.ipv4 if qtype == QTYPE_A else records.ipv6
