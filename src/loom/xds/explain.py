"""Why is a connection allowed or denied? One answer, end to end, from the mesh snapshot.

``explain`` asks the questions a user asks when a request fails: which intention decided
(its precedence, L4 or L7, else the default policy), does the source's sidecar have the
destination as an upstream at all (explicit listener or transparent proxy), and does the
Envoy RBAC generated for the destination's sidecars carry that decision. The last part is
not a second reading of intentions: the destination's inputs are collected by
``collect_inputs`` and its public listener built by ``public_listener``, exactly as they are
before being pushed to Envoy, and the RBAC filter found in that listener is then evaluated
for the source's SPIFFE identity (and the request, for HTTP), as Envoy would. When the two
disagree, the explanation says so: that is a bug in a translator, never the user's fault.

Pure: the snapshot in, frozen values out.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from loom.ca.authority import spiffe_id
from loom.domain.intentions import Decision, Intention, decide, decide_request
from loom.domain.mesh import MeshSnapshot
from loom.xds.inputs import ProxyInputs
from loom.xds.translate.listeners import public_listener
from loom.xds.view import collect_inputs

Doc = dict[str, Any]
NETWORK_RBAC = "envoy.filters.network.rbac"
HTTP_RBAC = "envoy.filters.http.rbac"
HCM = "envoy.filters.network.http_connection_manager"
DEFAULT_METHOD = "GET"
DEFAULT_PATH = "/"


@dataclass(frozen=True)
class UpstreamRoute:
    """How one of the source's sidecars reaches the destination, if it does."""

    proxy_id: str
    kind: str
    """``explicit`` (a local listener), ``transparent`` (the outbound listener) or ``""``:
    this sidecar has no route to the destination."""
    address: str = ""
    """Explicit: the local ``HOST:PORT`` the app dials; transparent: its VIPs, comma-joined."""


@dataclass(frozen=True)
class RbacVerdict:
    """The destination sidecar's generated RBAC, evaluated for the source (and request)."""

    proxy_id: str
    filter: str
    """``network`` (L4: a denied connection is closed) or ``http`` (L7: a denied request
    gets a 403)."""
    allowed: bool
    policy: str
    """The RBAC policy admitting the source, ``""`` when none does (denied)."""
    policies: tuple[str, ...]
    """Every policy of the filter, in order (what Envoy holds)."""
    agrees: bool
    """The RBAC's answer equals the intention decision for this layer."""


@dataclass(frozen=True)
class Explanation:
    source_ns: str
    source: str
    destination_ns: str
    destination: str
    method: str
    """The request's method, ``""`` when none was given (the L4 question)."""
    path: str
    allowed: bool
    reason: str
    intention: Intention | None
    """The intention that decided, None when the default policy did."""
    layer: str
    """``L4`` (an intention's Action, or the default) or ``L7`` (its Permissions)."""
    default_allow: bool
    upstreams: tuple[UpstreamRoute, ...]
    """One per sidecar of the source; empty when the source has none."""
    rbac: tuple[RbacVerdict, ...]
    """One per sidecar of the destination; empty when the destination has none."""
    notes: tuple[str, ...]
    """What else explains the outcome (no sidecar, unhealthy endpoints, disagreement)."""


def explain(
    view: MeshSnapshot,
    source_ns: str,
    source: str,
    destination_ns: str,
    destination: str,
    method: str = "",
    path: str = "",
) -> Explanation:
    l4 = decide(view.intentions, source_ns, source, destination_ns, destination, view.default_allow)
    asked_l7 = bool(method or path)
    req = _request_decision(view, source_ns, source, destination_ns, destination, method, path)
    decision = req if asked_l7 and l4.allowed else l4
    found = l4.intention
    layer = "L7" if found is not None and not found.action and asked_l7 else "L4"
    notes: list[str] = []
    if found is not None and not found.action and not asked_l7:
        notes.append(
            "the deciding intention has L7 permissions: give a method and path to see "
            "whether a request is allowed"
        )
    upstreams = tuple(_upstream_routes(view, source_ns, source, destination_ns, destination))
    if not upstreams:
        notes.append(f"{source} has no sidecar: its traffic does not go through the mesh")
    elif not any(u.kind for u in upstreams):
        notes.append(f"no sidecar of {source} has {destination} as an upstream")
    rbac = tuple(
        _verdict(view, inp, source_ns, source, l4, req, method, path)
        for inp in _destination_inputs(view, destination_ns, destination)
    )
    if not rbac:
        notes.append(f"{destination} has no sidecar: nothing enforces intentions for it")
    elif not view.endpoints.get((destination_ns, destination)):
        notes.append(f"{destination} has no healthy sidecar: connections fail whatever the RBAC")
    notes.extend(
        f"the RBAC of {v.proxy_id} disagrees with the intentions (a translator bug)"
        for v in rbac
        if not v.agrees
    )
    return Explanation(
        source_ns=source_ns,
        source=source,
        destination_ns=destination_ns,
        destination=destination,
        method=method,
        path=path,
        allowed=decision.allowed,
        reason=decision.reason,
        intention=found,
        layer=layer,
        default_allow=view.default_allow,
        upstreams=upstreams,
        rbac=rbac,
        notes=tuple(notes),
    )


def _request_decision(
    view: MeshSnapshot, sns: str, src: str, dns: str, dst: str, method: str, path: str
) -> Decision:
    return decide_request(
        view.intentions, sns, src, dns, dst, view.default_allow,
        method or DEFAULT_METHOD, path or DEFAULT_PATH,
    )  # fmt: skip


def _upstream_routes(
    view: MeshSnapshot, sns: str, src: str, dns: str, dst: str
) -> list[UpstreamRoute]:
    out = []
    for proxy_id in sorted(view.proxies):
        inst = view.proxies[proxy_id]
        proxy = inst.proxy
        if proxy is None or (inst.namespace, proxy.destination_service_name) != (sns, src):
            continue
        inp = collect_inputs(view, proxy_id)
        route = UpstreamRoute(proxy_id, "")
        for u in inp.upstreams if isinstance(inp, ProxyInputs) else ():
            if (u.namespace, u.service) != (dns, dst):
                continue
            if u.bind_port:
                route = UpstreamRoute(proxy_id, "explicit", f"{u.bind_address}:{u.bind_port}")
                break
            route = UpstreamRoute(proxy_id, "transparent", ",".join(u.virtual_ips))
        out.append(route)
    return out


def _destination_inputs(view: MeshSnapshot, dns: str, dst: str) -> list[ProxyInputs]:
    out = []
    for proxy_id in sorted(view.proxies):
        inst = view.proxies[proxy_id]
        proxy = inst.proxy
        if proxy is None or (inst.namespace, proxy.destination_service_name) != (dns, dst):
            continue
        inp = collect_inputs(view, proxy_id)
        if isinstance(inp, ProxyInputs):  # view.proxies holds sidecars only
            out.append(inp)
    return out


def _verdict(
    view: MeshSnapshot,
    inp: ProxyInputs,
    sns: str,
    src: str,
    l4: Decision,
    req: Decision,
    method: str,
    path: str,
) -> RbacVerdict:
    """Envoy's answer for the source: its network RBAC (TCP) or HTTP RBAC (HTTP, for the
    request asked about, else ``GET /``), as found in the translated public listener."""
    listener = public_listener(inp)
    principal = spiffe_id(view.trust_domain, sns, view.datacenter, src)
    chain = next(
        c
        for c in listener["filter_chains"]
        if c.get("filter_chain_match", {}).get("transport_protocol") == "tls"
    )
    for f in chain["filters"]:
        if f["name"] == NETWORK_RBAC:
            rules = f["typed_config"]["rules"]
            policy = evaluate_rbac(rules, principal, {})
            return _made(inp.proxy_id, "network", rules, policy, l4.allowed)
        if f["name"] == HCM:
            for h in f["typed_config"]["http_filters"]:
                if h["name"] == HTTP_RBAC:
                    rules = h["typed_config"]["rules"]
                    headers = {
                        ":method": (method or DEFAULT_METHOD).upper(),
                        ":path": path or DEFAULT_PATH,
                    }
                    policy = evaluate_rbac(rules, principal, headers)
                    return _made(inp.proxy_id, "http", rules, policy, req.allowed)
    raise AssertionError(f"the public listener of {inp.proxy_id} has no RBAC filter")


def _made(proxy_id: str, kind: str, rules: Doc, policy: str | None, expected: bool) -> RbacVerdict:
    allowed = policy is not None
    return RbacVerdict(
        proxy_id=proxy_id,
        filter=kind,
        allowed=allowed,
        policy=policy or "",
        policies=tuple(rules["policies"]),
        agrees=allowed == expected,
    )


# -- Envoy's RBAC matching, over the generated (canonical dict) config -------------------------


def evaluate_rbac(rules: Doc, principal: str, headers: dict[str, str]) -> str | None:
    """The first policy of an ALLOW rule set admitting ``principal`` (and the request whose
    pseudo-headers are in ``headers``), None when none does. Envoy evaluates policies in
    name order (a proto map); for ALLOW the order does not change the outcome."""
    assert rules["action"] == "ALLOW", "the translators build ALLOW rule sets only"
    for name, policy in rules["policies"].items():
        if any(_principal(p, principal) for p in policy["principals"]) and any(
            _permission(p, headers) for p in policy["permissions"]
        ):
            return str(name)
    return None


def _principal(p: Doc, uri: str) -> bool:
    if p.get("any"):
        return True
    if "authenticated" in p:
        regex = p["authenticated"]["principal_name"]["safe_regex"]["regex"]
        return re.search(regex, uri) is not None
    if "and_ids" in p:
        return all(_principal(i, uri) for i in p["and_ids"]["ids"])
    if "or_ids" in p:
        return any(_principal(i, uri) for i in p["or_ids"]["ids"])
    if "not_id" in p:
        return not _principal(p["not_id"], uri)
    raise AssertionError(f"principal matcher the translators do not build: {sorted(p)}")


def _string(match: Doc, value: str) -> bool:
    if "exact" in match:
        return bool(value == match["exact"])
    if "prefix" in match:
        return value.startswith(match["prefix"])
    if "suffix" in match:
        return value.endswith(match["suffix"])
    if "safe_regex" in match:
        return re.fullmatch(match["safe_regex"]["regex"], value) is not None
    raise AssertionError(f"string matcher the translators do not build: {sorted(match)}")


def _permission(p: Doc, headers: dict[str, str]) -> bool:
    if p.get("any"):
        return True
    if "and_rules" in p:
        return all(_permission(r, headers) for r in p["and_rules"]["rules"])
    if "or_rules" in p:
        return any(_permission(r, headers) for r in p["or_rules"]["rules"])
    if "not_rule" in p:
        return not _permission(p["not_rule"], headers)
    if "url_path" in p:
        path = headers.get(":path", "").split("?", 1)[0]
        return _string(p["url_path"]["path"], path)
    if "header" in p:
        h = p["header"]
        value = headers.get(h["name"])
        if "present_match" in h:
            hit = (value is not None) == bool(h["present_match"])
        else:
            hit = value is not None and _string(h["string_match"], value)
        return hit != bool(h.get("invert_match"))
    raise AssertionError(f"permission the translators do not build: {sorted(p)}")
