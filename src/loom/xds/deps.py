"""Which parts of the mesh a proxy's inputs read, and which parts a write changed.

With thousands of streams, a write that changes one service must not wake every session to
collect its inputs again and find them equal. ``dependencies`` names the parts of a
``MeshSnapshot`` that ``loom.xds.view.collect_inputs`` reads for one proxy (its own
registration, its service's ``service-defaults``, the intentions that can target it, the
endpoints of its upstreams and of their resolver targets, its prepared queries), and
``changes`` names the parts that differ between two snapshots; the hub (``loom.xds.hub``)
wakes a session only when the two meet. Whatever is read by every proxy (``proxy-defaults``,
``mesh``, resolvers, other datacenters, the gateways...) is not named: a change there wakes
everyone (``changes`` gives None). Transparent proxies and mesh gateways read the whole
mesh: ``dependencies`` gives None for them (woken by every write).

Both functions are pure; they err on the side of waking a session (a spurious wake-up costs
a refresh that finds equal inputs, a missed one leaves a proxy stale). ``Known`` keeps what
they were computed from, so a session woken by a write every proxy sees does not resolve its
upstreams a second time (``collect_inputs`` already did) when none of that changed.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable, Mapping
from dataclasses import dataclass
from typing import TypeVar

from loom.domain.intentions import Intention
from loom.domain.mesh import MeshSnapshot
from loom.domain.resolver import ResolverGraphError, resolve
from loom.xds.inputs import GatewayInputs, Inputs, ProxyInputs

__all__ = [
    "DEFAULTS",
    "ENDPOINTS",
    "INTENTIONS",
    "PROXY",
    "QUERY",
    "Dep",
    "Deps",
    "Known",
    "changes",
    "dependencies",
    "known",
]

Dep = tuple[str, ...]
"""A part of the mesh: ``(kind, *names)``, one of the kinds below."""
Deps = tuple[Dep, ...]
"""What one proxy depends on, each part once, sorted: kept per stream, a tuple costs a sixth
of a frozenset of its ~7 parts (~110 bytes against ~730)."""

PROXY = "proxy"
"""``(PROXY, id)``: the registration of proxy (or mesh gateway) ``id``."""
DEFAULTS = "defaults"
"""``(DEFAULTS, ns, service)``: the service's ``service-defaults`` entry."""
INTENTIONS = "intentions"
"""``(INTENTIONS, ns, service)``: the intentions of that destination (either may be ``*``)."""
ENDPOINTS = "endpoints"
"""``(ENDPOINTS, ns, service)``: its healthy sidecars, and those of its subsets."""
QUERY = "query"
"""``(QUERY, name)``: what the prepared query a ``prepared_query`` upstream names keeps."""

_GLOBAL_FIELDS = (
    "datacenter",
    "trust_domain",
    "default_allow",
    "proxy_defaults",
    "mesh",
    "externals",
    "resolvers",
    "remote",
    "remote_vips",
    "gateways_lan",
)
"""Snapshot fields sidecars read whatever they are: a change wakes every session."""

K = TypeVar("K", bound=Hashable)


def dependencies(view: MeshSnapshot, proxy_id: str, inputs: Inputs | None) -> Deps | None:
    """What the inputs of ``proxy_id`` (``inputs``, collected from ``view``) depend on
    beyond the fields every proxy reads; None: everything (a transparent proxy, a gateway)."""
    if inputs is None:  # not registered: only its registration can change that
        return ((PROXY, proxy_id),)
    if isinstance(inputs, GatewayInputs) or inputs.transparent:
        return None
    inst = view.proxies.get(proxy_id)
    if inst is None or inst.proxy is None:
        return None
    ns, service = inputs.namespace, inputs.service
    deps: set[Dep] = {
        (PROXY, proxy_id),
        (DEFAULTS, ns, service),
        (INTENTIONS, ns, service),
        (INTENTIONS, "*", service),
        (INTENTIONS, ns, "*"),
        (INTENTIONS, "*", "*"),
    }
    for u in inst.proxy.upstreams:
        if u.destination_type == "prepared_query":
            deps.add((QUERY, u.destination_name))
            continue
        if u.destination_type != "service":
            continue
        uns = u.destination_namespace or ns
        deps.add((ENDPOINTS, uns, u.destination_name))
        try:
            chain = resolve(
                view.resolvers, u.destination_name, uns, u.datacenter or view.datacenter
            )
        except ResolverGraphError:
            continue
        for t in (chain.primary, *chain.failover):
            deps.add((ENDPOINTS, t.namespace, t.service))
    return tuple(sorted(deps))


@dataclass(frozen=True, eq=False)
class Known:
    """The dependencies of one proxy and what ``dependencies`` computed them from."""

    deps: Deps | None
    """What ``dependencies`` gave."""
    instance: object
    """The proxy's registration in the snapshot (the catalog's object, kept across
    snapshots while unchanged); None for an unregistered proxy or a gateway."""
    resolvers: object
    """The snapshot's ``resolvers``."""
    datacenter: str
    """The snapshot's datacenter."""
    transparent: bool
    """Whether the inputs were a transparent proxy's."""


def known(
    view: MeshSnapshot, proxy_id: str, inputs: Inputs | None, last: Known | None
) -> Known:
    """``dependencies(view, proxy_id, inputs)`` with what it was computed from; ``last``
    itself when that is unchanged (the same registration object, equal resolvers and
    datacenter, a sidecar that is still not transparent)."""
    inst = view.proxies.get(proxy_id)
    sidecar = inst is not None and inst.proxy is not None and isinstance(inputs, ProxyInputs)
    transparent = isinstance(inputs, ProxyInputs) and inputs.transparent
    if (
        sidecar
        and last is not None
        and last.instance is inst
        and last.transparent == transparent
        and last.datacenter == view.datacenter
        and last.resolvers == view.resolvers
    ):
        return last
    return Known(
        dependencies(view, proxy_id, inputs),
        inst if sidecar else None,
        view.resolvers,
        view.datacenter,
        transparent,
    )


def _changed_keys(old: Mapping[K, object], new: Mapping[K, object]) -> Iterable[K]:
    if old is new:
        return ()
    return [
        k for k in old.keys() | new.keys() if (a := old.get(k)) is not (b := new.get(k)) and a != b
    ]


def _by_destination(intentions: list[Intention]) -> dict[tuple[str, str], list[Intention]]:
    out: dict[tuple[str, str], list[Intention]] = {}
    for i in intentions:
        out.setdefault((i.destination_ns, i.destination), []).append(i)
    return out


def changes(old: MeshSnapshot, new: MeshSnapshot) -> frozenset[Dep] | None:
    """The parts of the mesh that differ from ``old`` to ``new``; None: a field every proxy
    reads changed (wake everyone)."""
    if any(getattr(old, f) != getattr(new, f) for f in _GLOBAL_FIELDS):
        return None
    out: set[Dep] = set()
    for pid in _changed_keys(old.proxies, new.proxies):
        out.add((PROXY, pid))
    for pid in _changed_keys(old.mesh_gateways, new.mesh_gateways):
        out.add((PROXY, pid))
    for ns, name in _changed_keys(old.service_defaults, new.service_defaults):
        out.add((DEFAULTS, ns, name))
    for ns, name in _changed_keys(old.endpoints, new.endpoints):
        out.add((ENDPOINTS, ns, name))
    for ns, name, _ in _changed_keys(old.subset_endpoints, new.subset_endpoints):
        out.add((ENDPOINTS, ns, name))
    for name in _changed_keys(old.query_targets, new.query_targets):
        out.add((QUERY, name))
    if old.intentions != new.intentions:
        moved = list(
            _changed_keys(_by_destination(old.intentions), _by_destination(new.intentions))
        )
        if not moved:  # the same intentions per destination, in another order overall
            return None
        out.update((INTENTIONS, ns, name) for ns, name in moved)
    return frozenset(out)
