"""Prepared queries, the pure part: their record, parsing and validation, name templates, and
which instances a query's execution keeps.

A prepared query (Consul's ``/v1/query``) is a stored service lookup: a service name, tags
that must (``tag``) or must not (``!tag``) be present, whether warnings count as healthy
(``OnlyPassing``), node and service meta, checks to ignore, and a ``Near`` node to sort by.
It is found by ID, by exact name, or by the longest name prefix of a *template*
(``Template.Type: name_prefix_match``), whose strings are rendered with the name it was
called by: ``${name.full}``, ``${name.prefix}`` (the template's name), ``${name.suffix}``
(the rest) and, with ``Template.Regexp``, ``${match(N)}`` (group N of the regexp applied to
the full name). A query's ``Failover`` names the other datacenters to try when the local
execution keeps nothing (``failover_targets``, Consul's order). No I/O here:
``loom.control.queries`` stores and executes them, ``loom.server.query_http`` fails over.
"""

from __future__ import annotations

import hashlib
import re
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from loom.domain.fields import Fields, ValidationError, parse_duration
from loom.domain.records import Check, Instance, Node

Doc = dict[str, Any]
NAME_PREFIX_MATCH = "name_prefix_match"
_VAR = re.compile(r"\$\{\s*(name\.full|name\.prefix|name\.suffix|match\(\s*(\d+)\s*\)|[^}]*)\s*\}")


@dataclass(frozen=True)
class Template:
    type: str = ""
    """Empty (not a template) or ``name_prefix_match``."""
    regexp: str = ""
    """Applied to the full name called; its groups are ``${match(N)}``."""
    remove_empty_tags: bool = False
    """Drop tags that render empty (a template's optional tag)."""


@dataclass(frozen=True)
class Failover:
    """Consul's ``Service.Failover``: where an execution that keeps nothing locally goes next."""

    nearest_n: int = 0
    """How many other datacenters to try first, nearest first (Loom has one server per
    datacenter and no RTT: the order of ``State.federation.datacenters()``)."""
    datacenters: tuple[str, ...] = ()
    """Datacenters to try after the nearest, in order (unknown ones are skipped)."""
    targets: tuple[str, ...] = ()
    """``Targets``' datacenters, in order (instead of the two above; a target's ``Peer`` is
    refused: Loom has no cluster peering). An empty one is skipped, as Consul skips it."""

    @property
    def empty(self) -> bool:
        return not (self.nearest_n or self.datacenters or self.targets)


@dataclass(frozen=True)
class QueryService:
    service: str
    """The service looked up (required; may use template variables)."""
    namespace: str = ""
    tags: tuple[str, ...] = ()
    """Each must be on the instance, or, as ``!tag``, must not be (case-insensitive)."""
    only_passing: bool = False
    """Keep only instances whose checks all pass (else warnings are kept too)."""
    near: str = ""
    """A node name, or ``_agent`` (the node answering), whose instances sort first."""
    node_meta: dict[str, str] = field(default_factory=dict)
    service_meta: dict[str, str] = field(default_factory=dict)
    ignore_check_ids: tuple[str, ...] = ()
    failover: Failover = Failover()
    """Consul's ``Failover`` (``NearestN``, ``Datacenters``, ``Targets``)."""
    connect: bool = False
    """Answer the service's connect-capable endpoints (its sidecars) instead of itself."""


@dataclass(frozen=True)
class PreparedQuery:
    id: str
    name: str
    service: QueryService
    session: str = ""
    token: str = ""
    """The token the query executes with (empty: the caller's)."""
    template: Template = Template()
    dns_ttl: str = ""
    create_index: int = 0
    modify_index: int = 0

    @property
    def is_template(self) -> bool:
        return self.template.type == NAME_PREFIX_MATCH


def is_uuid(text: str) -> bool:
    try:
        return str(uuid.UUID(text)) == text.lower() and len(text) == 36
    except ValueError:
        return False


def dns_id_key(query_id: str) -> str:
    """What the DNS name table keys a query's ID by: the first 192 bits of its SHA-256 in
    hex, so the table (which every DNS proxy reads) answers ``<id>.query.consul`` without
    disclosing the ID, the only guard of an unnamed query."""
    return hashlib.sha256(query_id.lower().encode()).hexdigest()[:48]


def parse_query(body: Any, query_id: str = "") -> PreparedQuery:
    """A query from its JSON (``POST /v1/query``), validated as Consul validates one."""
    if not isinstance(body, dict):
        raise ValidationError("Request decode failed: body must be a JSON object")
    f = Fields(body, "")
    name = f.text("Name")
    if name and is_uuid(name):
        raise ValidationError("Query name cannot be a UUID")
    t = f.sub("Template")
    template = Template()
    if t is not None:
        kind = t.text("Type")
        if kind not in ("", NAME_PREFIX_MATCH):
            raise ValidationError(f"Bad Template.Type '{kind}'")
        regexp = t.text("Regexp")
        if regexp:
            try:
                re.compile(regexp)
            except re.error as exc:
                raise ValidationError(f"Invalid template regexp: {exc}") from exc
        template = Template(kind, regexp, t.flag("RemoveEmptyTags"))
    s = f.sub("Service")
    if s is None or not s.text("Service"):
        raise ValidationError("Must provide a Service name to query")
    connect = s.sub("Connect")
    fo = s.sub("Failover")
    failover = parse_failover(fo) if fo is not None else Failover()
    service = QueryService(
        service=s.text("Service"),
        namespace=s.text("Namespace"),
        tags=tuple(s.strs("Tags")),
        only_passing=s.flag("OnlyPassing"),
        near=s.text("Near"),
        node_meta=s.str_map("NodeMeta"),
        service_meta=s.str_map("ServiceMeta"),
        ignore_check_ids=tuple(s.strs("IgnoreCheckIDs")),
        failover=failover,
        connect=connect.flag("Enabled") if connect is not None else False,
    )
    dns = f.sub("DNS")
    ttl = dns.text("TTL") if dns is not None else ""
    if ttl:
        try:
            if parse_duration(ttl, "DNS.TTL") < 0:
                raise ValidationError(f"Bad DNS TTL '{ttl}': must be >= 0")
        except ValidationError as exc:
            raise ValidationError(f"Bad DNS TTL '{ttl}': {exc}") from exc
    q = PreparedQuery(
        id=query_id, name=name, service=service, session=f.text("Session"),
        token=f.text("Token"), template=template, dns_ttl=ttl,
    )  # fmt: skip
    render(q, name)  # a template that cannot render is refused now, not when called
    return q


def parse_failover(fo: Fields) -> Failover:
    """``Service.Failover``, validated as Consul validates it (and a ``Peer`` target refused)."""
    nearest = fo.integer("NearestN")
    if nearest < 0:
        raise ValidationError(f"Bad NearestN '{nearest}', must be >= 0")
    datacenters = tuple(fo.strs("Datacenters"))
    targets: list[str] = []
    for t in fo.subs("Targets"):
        if t.text("Peer"):
            raise ValidationError(
                f"{t.where('Peer')}: cluster peering is not supported; name a Datacenter"
            )
        targets.append(t.text("Datacenter"))
    if (nearest or datacenters) and targets:
        raise ValidationError("Targets cannot be populated with NearestN or Datacenters")
    return Failover(nearest, datacenters, tuple(targets))


def failover_doc(f: Failover) -> Doc:
    """Consul's JSON of ``Failover`` (what explain shows)."""
    return {
        "NearestN": f.nearest_n,
        "Datacenters": list(f.datacenters) or None,
        "Targets": [{"Peer": "", "Datacenter": dc} for dc in f.targets] or None,
    }


def failover_targets(f: Failover, others: Sequence[str]) -> list[str]:
    """The datacenters an execution with no local results tries, in order (Consul's
    ``queryFailover``): the first ``NearestN`` of ``others`` (every other known datacenter,
    nearest first), then ``Datacenters`` (or ``Targets``) that are not among those; a
    datacenter not in ``others`` (unknown, or this one) is skipped. As in Consul, a datacenter
    listed twice is tried twice."""
    known = set(others)
    nearest = list(others[: f.nearest_n])
    out = list(nearest)
    for dc in f.targets or f.datacenters:
        if dc in known and dc not in nearest:
            out.append(dc)
    return out


def query_doc(q: PreparedQuery, token: str | None = None) -> Doc:
    """Consul's JSON of a query; ``token`` replaces its Token (``<hidden>`` for a reader
    that may not see it)."""
    s = q.service
    return {
        "ID": q.id, "Name": q.name, "Session": q.session,
        "Token": q.token if token is None else token,
        "Template": {
            "Type": q.template.type, "Regexp": q.template.regexp,
            "RemoveEmptyTags": q.template.remove_empty_tags,
        },
        "Service": {
            "Service": s.service, "Namespace": s.namespace, "Failover": failover_doc(s.failover),
            "OnlyPassing": s.only_passing, "IgnoreCheckIDs": list(s.ignore_check_ids) or None,
            "Near": s.near, "Tags": list(s.tags) or None, "NodeMeta": s.node_meta or None,
            "ServiceMeta": s.service_meta or None, "Connect": {"Enabled": s.connect},
        },
        "DNS": {"TTL": q.dns_ttl},
        "CreateIndex": q.create_index, "ModifyIndex": q.modify_index,
    }  # fmt: skip


def query_from_doc(d: Doc) -> PreparedQuery:
    """The record of a stored ``query_doc`` (the store's codec)."""
    q = parse_query(d, d["ID"])
    return replace(q, create_index=d["CreateIndex"], modify_index=d["ModifyIndex"])


# -- finding and rendering -----------------------------------------------------------------------


def find(queries: Iterable[PreparedQuery], id_or_name: str) -> PreparedQuery | None:
    """Consul's lookup: by ID, else by exact name, else the template with the longest name
    prefix of it (a template named ``""`` matches every name); a template found is rendered
    with the name."""
    every = list(queries)
    for q in every:
        if q.id == id_or_name:
            return q
    for q in every:
        if q.name == id_or_name and not q.is_template:
            return q
    best: PreparedQuery | None = None
    for q in every:
        longer = best is None or len(q.name) > len(best.name)
        if q.is_template and id_or_name.startswith(q.name) and longer:
            best = q
    return render(best, id_or_name) if best is not None else None


def render(q: PreparedQuery, called: str) -> PreparedQuery:
    """A template's query with its variables replaced for the name it was called by."""
    if not q.is_template:
        return q
    groups: Sequence[str] = ()
    if q.template.regexp:
        m = re.search(q.template.regexp, called)
        groups = (m.group(0), *(g or "" for g in m.groups())) if m else ()
    values = {
        "name.full": called,
        "name.prefix": q.name,
        "name.suffix": called[len(q.name) :],
    }

    def sub(text: str) -> str:
        def one(m: re.Match[str]) -> str:
            if m.group(2) is not None:
                n = int(m.group(2))
                return groups[n] if n < len(groups) else ""
            key = m.group(1).strip()
            if key not in values:
                raise ValidationError(f"Failed to render template: unknown variable '{key}'")
            return values[key]

        return _VAR.sub(one, text)

    s = q.service
    tags = tuple(sub(t) for t in s.tags)
    if q.template.remove_empty_tags:
        tags = tuple(t for t in tags if t)
    service = replace(
        s,
        service=sub(s.service),
        tags=tags,
        near=sub(s.near),
        node_meta={k: sub(v) for k, v in s.node_meta.items()},
        service_meta={k: sub(v) for k, v in s.service_meta.items()},
    )
    return replace(q, service=service)


def name_conflict(queries: Iterable[PreparedQuery], q: PreparedQuery) -> str | None:
    """Why ``q``'s name may not be stored beside ``queries`` (None: it may)."""
    for other in queries:
        if other.id == q.id:
            continue
        if q.name and other.id == q.name:
            return f"Name '{q.name}' aliases an existing query ID"
        if other.name == q.name and (q.name or (q.is_template and other.is_template)):
            if other.is_template and q.is_template:
                return f"Name '{q.name}' aliases an existing query template name"
            if q.name:
                return f"Name '{q.name}' aliases an existing query name"
    return None


# -- execution -----------------------------------------------------------------------------------


def tags_pass(inst: Instance, wanted: Sequence[str]) -> bool:
    """Each tag present and each ``!tag`` absent, case-insensitively (as Consul)."""
    have = {t.lower() for t in inst.tags}
    for tag in wanted:
        tag = tag.lower()
        if tag.startswith("!"):
            if tag[1:] in have:
                return False
        elif tag not in have:
            return False
    return True


def health_passes(checks: Iterable[Check], s: QueryService) -> bool:
    """Critical never passes; warning passes unless ``OnlyPassing``; ignored IDs skipped."""
    for c in checks:
        if c.check_id in s.ignore_check_ids:
            continue
        if c.status == "critical" or (s.only_passing and c.status != "passing"):
            return False
    return True


def keeps(s: QueryService, inst: Instance, node: Node, checks: Iterable[Check]) -> bool:
    """Whether an execution of ``s`` keeps this instance."""
    if not tags_pass(inst, s.tags):
        return False
    if any(node.meta.get(k) != v for k, v in s.node_meta.items()):
        return False
    if any(inst.meta.get(k) != v for k, v in s.service_meta.items()):
        return False
    return health_passes(checks, s)


def near_first(nodes: Sequence[str], near: str, agent_node: str) -> list[int]:
    """Positions of ``nodes`` sorted with the ``Near`` node's first (``_agent``: the
    answering node), the rest in their given order (there are no network coordinates)."""
    target = agent_node if near == "_agent" else near
    order = sorted(range(len(nodes)), key=lambda i: (not target or nodes[i] != target, i))
    return order


__all__ = [
    "NAME_PREFIX_MATCH",
    "Failover",
    "PreparedQuery",
    "QueryService",
    "Template",
    "failover_doc",
    "failover_targets",
    "find",
    "health_passes",
    "is_uuid",
    "keeps",
    "name_conflict",
    "near_first",
    "parse_failover",
    "parse_query",
    "query_doc",
    "query_from_doc",
    "render",
    "tags_pass",
]
