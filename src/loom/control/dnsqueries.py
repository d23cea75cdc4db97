"""Prepared queries executed for DNS: what ``<query>.query.consul`` answers, per snapshot.

Consul executes a prepared query per DNS question. Loom's DNS proxies answer from the one name
table the server pushes (``control/nametable.py``), so the server executes every query when it
builds a mesh snapshot and the table carries the results. That keeps answers as correct as
those of ``svc.service.consul``: a snapshot is built at every write of the tables a query reads
(catalog, health checks, queries), and every proxy's blocking watch gets the new table, so a
check going critical takes an ``OnlyPassing`` query's instance out of DNS at the same moment
it leaves the service's own name. Asking the server on a miss would add a round trip to a
question's latency and a server request per question, and still need a cache that goes
stale exactly when health changes.

What is executed, by Consul's lookup (``loom.domain.queries.find``): every query but a
template by its name and by its ID (keyed by a hash of it, which the proxy computes from the
name asked); a template (``name_prefix_match``) for the names it would answer that the
catalog suggests: its prefix followed by a service name or a tag, or a service name that
starts with the prefix, up to ``MAX_TEMPLATE_NAMES`` per template, each kept when its
execution finds some instance. A name that only a regular expression could render
(``${match(1)}`` of text no service or tag has) is not answered. Executions are local, in
catalog order (``Near``, ``_agent`` being this server's node, sorts first and keeps its
order; otherwise the proxy rotates the answer, as Consul shuffles it), without failover to
other datacenters. A query whose execution keeps nothing answers NODATA, as
``svc.service.consul`` of a service with no healthy instance does (Consul answers
NXDOMAIN). Names that are not DNS labels, and addresses that are not IPs, are left out.
"""

from __future__ import annotations

import ipaddress

from loom.control.catalog import Catalog
from loom.control.queries import Queries
from loom.domain.fields import ValidationError, parse_duration
from loom.domain.mesh import Endpoint, QueryAnswer
from loom.domain.queries import PreparedQuery, dns_id_key, render

MAX_TEMPLATE_NAMES = 1024
"""Names a template is executed for per snapshot (the first, sorted): a bound on the
snapshot's cost when a catch-all template meets a large catalog."""
_LABEL_CHARS = frozenset("abcdefghijklmnopqrstuvwxyz0123456789-_")


def _is_label(name: str) -> bool:
    return 0 < len(name) <= 63 and set(name.lower()) <= _LABEL_CHARS


def _ttl(q: PreparedQuery) -> int:
    """The query's ``DNS.TTL`` in whole seconds (0: the proxy's default)."""
    if not q.dns_ttl:
        return 0
    try:
        return int(parse_duration(q.dns_ttl, "DNS.TTL"))
    except ValidationError:
        return 0  # stored before validation refused it: the default


def _ip(text: str, seen: dict[str, str | None]) -> str | None:
    """The address in its normal form, or None when it is no IP (a host name); ``seen``
    remembers each text, as one instance is in many executions."""
    if text not in seen:
        try:
            seen[text] = str(ipaddress.ip_address(text))
        except ValueError:
            seen[text] = None
    return seen[text]


def _answer(
    q: PreparedQuery, catalog: Catalog, queries: Queries, seen: dict[str, str | None]
) -> QueryAnswer:
    done = queries.execute(q, catalog.settings.node)
    endpoints = []
    for inst, _ in done.hits:
        address = _ip(inst.address or catalog.node_of(inst).address, seen)
        if address is not None:
            endpoints.append(Endpoint(address, inst.port))
    return QueryAnswer(done.service, _ttl(q), bool(q.service.near), tuple(endpoints))


def _candidates(template: PreparedQuery, words: list[str]) -> list[str]:
    """Names the catalog suggests for a template: its prefix + a word, or a word that
    already starts with the prefix."""
    prefix = template.name
    names = {prefix + w for w in words}
    names.update(w for w in words if w.startswith(prefix))
    return sorted(n for n in names if _is_label(n))


def query_answers(catalog: Catalog, queries: Queries) -> dict[str, QueryAnswer]:
    """DNS label (lowercase) -> the execution it answers, and ``#`` + ``dns_id_key(ID)`` for
    each query's ID (not the ID itself: see ``dns_id_key``); a name two queries would answer
    (names differing in case) keeps the first by ID."""
    every = sorted(queries.all(), key=lambda q: q.id)
    out: dict[str, QueryAnswer] = {}
    seen: dict[str, str | None] = {}
    for q in every:
        if q.is_template:
            continue
        answer = _answer(q, catalog, queries, seen)
        out["#" + dns_id_key(q.id)] = answer
        if q.name and _is_label(q.name):
            out.setdefault(q.name.lower(), answer)
    templates = [q for q in every if q.is_template]
    if not templates:
        return out
    words = _catalog_words(catalog)
    names = sorted({n for t in templates for n in _candidates(t, words)})
    taken = {q.id for q in every} | {q.name for q in every if not q.is_template}
    longest_first = sorted(templates, key=lambda t: -len(t.name))  # stable: by ID on ties
    kept: dict[str, int] = {}
    for name in names:
        key = name.lower()
        if key in out or name in taken:
            continue  # an ID or a query's name: Consul's lookup (``find``) picks that query
        template = next(t for t in longest_first if name.startswith(t.name))
        if kept.get(template.id, 0) >= MAX_TEMPLATE_NAMES:
            continue
        try:
            rendered = render(template, name)
        except ValidationError:
            continue  # it does not render for this name
        answer = _answer(rendered, catalog, queries, seen)
        if answer.endpoints:
            out[key] = answer
            kept[template.id] = kept.get(template.id, 0) + 1
    return out


def _catalog_words(catalog: Catalog) -> list[str]:
    """Every service name and tag of the catalog's services (proxies left out), sorted."""
    words: set[str] = set()
    for inst in catalog.instances():
        if inst.is_proxy or inst.is_mesh_gateway:
            continue
        words.add(inst.service)
        words.update(inst.tags)
    return sorted(words)


__all__ = ["MAX_TEMPLATE_NAMES", "query_answers"]
