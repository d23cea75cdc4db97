"""``service-resolver`` entries: decoding them strictly, checking the graph they form, and
resolving an upstream through them to the targets its callers dial.

A resolver names subsets of its service's instances (a bexpr ``Filter`` on the instance, as
Consul's), a default subset, a redirect to another target, and per subset (or ``*``) the
failover targets tried in order when every endpoint of the primary is down. ``resolve``
follows redirects and default subsets from one upstream to its ``Chain``: the primary target
and its failover targets, each with the connect timeout of its own service's resolver.
``check_graph`` runs on every write (``loom.control.configs``) over all resolvers at once, so
a redirect loop (``a -> b -> a``) or a reference to a subset that does not exist is a 400 and
nothing is written. Pure: no I/O; the records are in ``loom.domain.entries``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from loom.bexpr import BOOL, INT, STRING, Filter, FilterError, ListOf, MapOf, Struct, compile_filter
from loom.domain.entries import (
    FailoverTarget,
    ResolverFailover,
    ResolverRedirect,
    ResolverSubset,
    ServiceResolver,
)
from loom.domain.fields import Fields, ValidationError, check_name, check_namespace, parse_duration
from loom.domain.mesh import Endpoint
from loom.domain.records import Instance, Node

Key = tuple[str, str]
"""(namespace, service)."""

FIELDS = ("DefaultSubset", "Subsets", "Redirect", "Failover", "ConnectTimeout", "RequestTimeout")
SUBSET_NAME = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")
"""Consul's rule for subset names, as one DNS label (the first of a cluster's SNI)."""
DEFAULT_CONNECT_TIMEOUT_MS = 5000

FILTER_SCHEMA = Struct(
    {
        "Node": Struct(
            {
                "Node": STRING, "Address": STRING, "Datacenter": STRING,
                "TaggedAddresses": MapOf(STRING), "Meta": MapOf(STRING),
            }
        ),
        "Service": Struct(
            {
                "ID": STRING, "Service": STRING, "Tags": ListOf(STRING), "Meta": MapOf(STRING),
                "Port": INT, "Address": STRING, "Namespace": STRING, "Datacenter": STRING,
                "EnableTagOverride": BOOL,
            }
        ),
    }
)  # fmt: skip
"""What a subset's ``Filter`` runs against: the instance and its node (Consul's
``CheckServiceNode`` without its checks), so ``Service.Meta.version == v2`` selects."""


def instance_doc(inst: Instance, node: Node) -> dict[str, Any]:
    """The document a subset filter runs against for one instance."""
    return {
        "Node": {
            "Node": node.node, "Address": node.address, "Datacenter": node.datacenter,
            "TaggedAddresses": dict(node.tagged_addresses), "Meta": dict(node.meta),
        },
        "Service": {
            "ID": inst.id, "Service": inst.service, "Tags": list(inst.tags),
            "Meta": dict(inst.meta), "Port": inst.port, "Address": inst.address,
            "Namespace": inst.namespace, "Datacenter": inst.datacenter,
            "EnableTagOverride": inst.enable_tag_override,
        },
    }  # fmt: skip


@lru_cache(maxsize=1024)
def subset_filter(subset: ResolverSubset) -> Filter | None:
    """The subset's compiled filter (None: every instance); checked at decode time."""
    return compile_filter(subset.filter, FILTER_SCHEMA)


@dataclass(frozen=True)
class Candidate:
    """A healthy sidecar of one instance, as a subset filter sees that instance."""

    endpoint: Endpoint
    doc: Mapping[str, Any]
    """``instance_doc`` of the instance (not of its sidecar)."""
    passing: bool
    """Every check of the instance and of its sidecar is passing (``OnlyPassing``)."""


def select_subsets(
    resolvers: Mapping[Key, ServiceResolver], candidates: Mapping[Key, Sequence[Candidate]]
) -> dict[tuple[str, str, str], tuple[Endpoint, ...]]:
    """(namespace, service, subset) -> the endpoints of the candidates each subset keeps."""
    out: dict[tuple[str, str, str], tuple[Endpoint, ...]] = {}
    for (ns, name), resolver in resolvers.items():
        for subset_name, subset in resolver.subsets.items():
            flt = subset_filter(subset)
            out[(ns, name, subset_name)] = tuple(
                c.endpoint
                for c in candidates.get((ns, name), ())
                if (c.passing or not subset.only_passing) and (flt is None or flt.matches(c.doc))
            )
    return out


# -- decoding ------------------------------------------------------------------------------


def _duration(f: Fields, key: str) -> str:
    text = f.text(key)
    if text:
        try:
            parse_duration(text, f.where(key))
        except ValidationError:
            raise ValidationError(f"Bad {key} '{text}', must be a duration like '5s'") from None
    return text


def _subsets(f: Fields) -> dict[str, ResolverSubset]:
    raw = f.any_map("Subsets")
    out: dict[str, ResolverSubset] = {}
    for name in sorted(raw):
        if not SUBSET_NAME.match(name):
            raise ValidationError(f"Subset defined with invalid name {name!r}")
        s = Fields(raw[name], f"Subsets[{name!r}]")
        s.only(("Filter", "OnlyPassing"))
        subset = ResolverSubset(s.text("Filter"), s.flag("OnlyPassing"))
        try:
            subset_filter(subset)
        except FilterError as exc:
            raise ValidationError(
                f"Filter for subset {name!r} is not a valid expression: {exc}"
            ) from exc
        out[name] = subset
    return out


def _opt_name(f: Fields, key: str) -> str:
    value = f.text(key)
    return check_name(value, f.where(key)) if value else ""


def _opt_ns(f: Fields, key: str) -> str:
    value = f.text(key)
    return check_namespace(value, f.where(key)) if value else ""


def _opt_subset(f: Fields, key: str) -> str:
    value = f.text(key)
    if value and not SUBSET_NAME.match(value):
        raise ValidationError(f"{f.where(key)}: {value!r} is not a valid subset name")
    return value


def _opt_dc(f: Fields, key: str) -> str:
    value = f.text(key)
    if value and not re.match(r"^[a-z0-9_-]{1,64}$", value):
        raise ValidationError(f"{f.where(key)}: {value!r} is not a datacenter name")
    return value


def _redirect(f: Fields | None) -> ResolverRedirect | None:
    if f is None:
        return None
    f.only(("Service", "ServiceSubset", "Namespace", "Datacenter", "Partition", "Peer"))
    for unsupported in ("Partition", "Peer"):
        if f.text(unsupported):
            raise ValidationError(f"{f.where(unsupported)}: is not supported by Loom")
    r = ResolverRedirect(
        service=_opt_name(f, "Service"),
        service_subset=_opt_subset(f, "ServiceSubset"),
        namespace=_opt_ns(f, "Namespace"),
        datacenter=_opt_dc(f, "Datacenter"),
    )
    if r == ResolverRedirect():
        raise ValidationError("Redirect is empty")
    if not r.service:
        if r.service_subset:
            raise ValidationError("Redirect.ServiceSubset defined without Redirect.Service")
        if r.namespace:
            raise ValidationError("Redirect.Namespace defined without Redirect.Service")
    return r


def _target(f: Fields) -> FailoverTarget:
    f.only(("Service", "ServiceSubset", "Namespace", "Datacenter", "Partition", "Peer"))
    for unsupported in ("Partition", "Peer"):
        if f.text(unsupported):
            raise ValidationError(f"{f.where(unsupported)}: is not supported by Loom")
    return FailoverTarget(
        service=_opt_name(f, "Service"),
        service_subset=_opt_subset(f, "ServiceSubset"),
        namespace=_opt_ns(f, "Namespace"),
        datacenter=_opt_dc(f, "Datacenter"),
    )


def _failover(
    f: Fields, name: str, subsets: Mapping[str, ResolverSubset]
) -> dict[str, ResolverFailover]:
    raw = f.any_map("Failover")
    out: dict[str, ResolverFailover] = {}
    for subset in sorted(raw):
        if subset != "*" and subset not in subsets:
            raise ValidationError(f"Bad Failover[{subset!r}]: not a valid subset")
        g = Fields(raw[subset], f"Failover[{subset!r}]")
        g.only(("Service", "ServiceSubset", "Namespace", "Datacenters", "Targets", "Policy",
                "SamenessGroup"))  # fmt: skip
        if g.raw("Policy") is not None or g.text("SamenessGroup"):
            raise ValidationError(
                f"Bad Failover[{subset!r}]: Policy and SamenessGroup are not supported by Loom"
            )
        datacenters = g.strs("Datacenters")
        for dc in datacenters:
            if not dc:
                raise ValidationError(
                    f"Bad Failover[{subset!r}].Datacenters: found empty datacenter"
                )
            _opt_dc(Fields({"Datacenters": dc}, g.path), "Datacenters")
        fo = ResolverFailover(
            service=_opt_name(g, "Service"),
            service_subset=_opt_subset(g, "ServiceSubset"),
            namespace=_opt_ns(g, "Namespace"),
            datacenters=tuple(datacenters),
            targets=tuple(_target(t) for t in g.subs("Targets")),
        )
        if fo == ResolverFailover():
            raise ValidationError(
                f"Bad Failover[{subset!r}]: one of Service, ServiceSubset, Namespace, Targets, "
                "or Datacenters is required"
            )
        if fo.targets and (fo.service or fo.service_subset or fo.namespace or fo.datacenters):
            raise ValidationError(
                f"Bad Failover[{subset!r}]: Targets cannot be set with Service, ServiceSubset, "
                "Namespace, or Datacenters"
            )
        if fo.service_subset and fo.service in ("", name) and fo.service_subset not in subsets:
            raise ValidationError(
                f"Bad Failover[{subset!r}].ServiceSubset {fo.service_subset!r} is not a valid "
                f"subset of {name!r}"
            )
        out[subset] = fo
    return out


def decode_resolver(f: Fields, name: str, namespace: str, meta: dict[str, str]) -> ServiceResolver:
    """A ``service-resolver`` entry from Consul's JSON (``f`` is the whole entry), with
    Consul's messages; cross-entry rules (loops, other services' subsets) are
    ``check_graph``'s."""
    check_name(name, "Name")
    subsets = _subsets(f)
    default = f.text("DefaultSubset")
    if default and default not in subsets:
        raise ValidationError(f"DefaultSubset {default!r} is not a valid subset")
    redirect = _redirect(f.sub("Redirect"))
    if (
        redirect is not None
        and (redirect.service or name) == name
        and (redirect.namespace or namespace) == namespace
        and not redirect.datacenter
        and not redirect.service_subset
    ):
        raise ValidationError(
            f"detected circular resolver redirect: [{namespace}/{name} -> {namespace}/{name}]"
        )
    if redirect is not None and subsets:
        raise ValidationError("Redirect and Subsets cannot both be set")
    failover = _failover(f, name, subsets)
    if redirect is not None and failover:
        raise ValidationError("Redirect and Failover cannot both be set")
    return ServiceResolver(
        name=name,
        namespace=namespace,
        meta=meta,
        default_subset=default,
        subsets=subsets,
        redirect=redirect,
        failover=failover,
        connect_timeout=_duration(f, "ConnectTimeout"),
        request_timeout=_duration(f, "RequestTimeout"),
    )


def related_services(entry: ServiceResolver) -> list[str]:
    """The other services a resolver sends its service's traffic to (redirect and failover
    targets), sorted: writing it needs ``service:read`` on each, as in Consul."""
    names = {entry.redirect.service} if entry.redirect is not None else set()
    for fo in entry.failover.values():
        names.add(fo.service)
        names.update(t.service for t in fo.targets)
    return sorted(names - {"", entry.name})


# -- resolution ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Target:
    """One place an upstream's traffic can go: a service (subset) in a datacenter."""

    service: str
    namespace: str
    datacenter: str
    subset: str = ""
    connect_timeout_ms: int = DEFAULT_CONNECT_TIMEOUT_MS

    def ident(self) -> tuple[str, str, str, str]:
        return (self.subset, self.service, self.namespace, self.datacenter)

    def shown(self) -> str:
        sub = f"{self.subset}." if self.subset else ""
        dc = f"@{self.datacenter}" if self.datacenter else ""
        return f"{sub}{self.namespace}/{self.service}{dc}"


@dataclass(frozen=True)
class Chain:
    """What an upstream resolves to: the primary target, then its failover targets."""

    primary: Target
    failover: tuple[Target, ...] = ()


class ResolverGraphError(ValidationError):
    """Resolvers that cannot be followed (a loop, a subset that does not exist)."""


def _timeout_ms(resolver: ServiceResolver | None) -> int:
    if resolver is None or not resolver.connect_timeout:
        return DEFAULT_CONNECT_TIMEOUT_MS
    return round(parse_duration(resolver.connect_timeout, "ConnectTimeout") * 1000)


def _rewrite(t: Target, service: str, subset: str, namespace: str, dc: str) -> Target:
    """``t`` with the given parts replaced; another service starts from its default subset."""
    new_service = service or t.service
    keep_subset = t.subset if new_service == t.service else ""
    return Target(
        service=new_service,
        namespace=namespace or t.namespace,
        datacenter=dc or t.datacenter,
        subset=subset or keep_subset,
    )


def _follow(
    resolvers: Mapping[Key, ServiceResolver], t: Target
) -> tuple[Target, ServiceResolver | None]:
    """Follow redirects and the default subset from ``t`` to the target dialled, with its
    resolver; ``ResolverGraphError`` on a loop or a subset its resolver lacks."""
    history = [t]
    while True:
        resolver = resolvers.get((t.namespace, t.service))
        if resolver is not None and resolver.redirect is not None:
            r = resolver.redirect
            nxt = _rewrite(t, r.service, r.service_subset, r.namespace, r.datacenter)
            if nxt.ident() != t.ident():
                if any(h.ident() == nxt.ident() for h in history):
                    path = " -> ".join(h.shown() for h in (*history, nxt))
                    raise ResolverGraphError(f"detected circular resolver redirect: [{path}]")
                history.append(nxt)
                t = nxt
                continue
        subset = t.subset or (resolver.default_subset if resolver is not None else "")
        if subset and (resolver is None or subset not in resolver.subsets):
            raise ResolverGraphError(
                f"service {t.namespace}/{t.service} does not have a subset named {subset!r}"
            )
        done = Target(t.service, t.namespace, t.datacenter, subset, _timeout_ms(resolver))
        return done, resolver


def resolve(
    resolvers: Mapping[Key, ServiceResolver],
    service: str,
    namespace: str,
    datacenter: str,
    subset: str = "",
) -> Chain:
    """The chain of one upstream (``ResolverGraphError`` when the resolvers cannot be
    followed; ``check_graph`` refuses writes that would make one)."""
    primary, resolver = _follow(resolvers, Target(service, namespace, datacenter, subset))
    if resolver is None or not resolver.failover:
        return Chain(primary)
    fo = resolver.failover.get(primary.subset) or resolver.failover.get("*")
    if fo is None:
        return Chain(primary)
    wanted: list[Target] = []
    if fo.targets:
        for g in fo.targets:
            wanted.append(_rewrite(primary, g.service, g.service_subset, g.namespace, g.datacenter))
    elif fo.datacenters:
        for dc in fo.datacenters:
            wanted.append(_rewrite(primary, fo.service, fo.service_subset, fo.namespace, dc))
    else:
        wanted.append(_rewrite(primary, fo.service, fo.service_subset, fo.namespace, ""))
    out: list[Target] = []
    seen = {primary.ident()}
    for w in wanted:
        done, _ = _follow(resolvers, w)
        if done.ident() not in seen:
            seen.add(done.ident())
            out.append(done)
    return Chain(primary, tuple(out))


def check_graph(resolvers: Mapping[Key, ServiceResolver], datacenter: str = "") -> None:
    """Every resolver can be followed: no redirect loop, no reference to a missing subset
    (the first problem found, as a ``ResolverGraphError``)."""
    for ns, name in sorted(resolvers):
        resolve(resolvers, name, ns, datacenter)
        for subset in sorted(resolvers[(ns, name)].subsets):
            resolve(resolvers, name, ns, datacenter, subset)
