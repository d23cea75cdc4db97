"""Pure translation of one proxy's inputs into Envoy resources (canonical dicts).

``build_resources(inputs)`` returns ``{type_url: {name: resource}}`` and depends on the inputs
only through ``translation_key(inputs)``; ``check_consistency``
verifies the set is self-contained before it is ever served (go-control-plane's rule: every
EDS cluster has endpoints, every referenced cluster exists). Secrets are the exception: the
server serves none (no private key leaves the workload), so every referenced secret must be
one the proxy's local agent serves, over the agent's SDS source. A mesh gateway's inputs
(``GatewayInputs``) go to ``gateway.build_gateway`` and pass the same check.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

from loom.xds.errors import InconsistentSnapshot
from loom.xds.inputs import GatewayInputs, Inputs
from loom.xds.translate.clusters import build_clusters, build_endpoints
from loom.xds.translate.gateway import build_gateway
from loom.xds.translate.listeners import build_listeners
from loom.xds.translate.names import (
    AGENT_SDS,
    AGENT_SECRETS,
    TYPE_CLUSTER,
    TYPE_ENDPOINTS,
    TYPE_LISTENER,
    TYPE_SECRET,
)

Doc = dict[str, Any]
Resources = dict[str, dict[str, Doc]]


def translation_key(inp: Inputs) -> Inputs:
    """``inp`` without who the proxy is (its id, service, namespace, datacenter), which no
    translator reads: proxies whose keys are equal get equal resources (the sidecars of one
    service's instances, or services alike in ports, rules and upstreams), so one
    translation can serve them all.

    Built as a copy of the instance's fields, not ``dataclasses.replace`` (which re-runs the
    frozen ``__init__``, ~14 us against ~2 us): every stream computes its key on every
    write. The input types are plain frozen dataclasses (no slots, no ``__post_init__``)."""
    key = object.__new__(type(inp))
    fields = key.__dict__
    fields.update(inp.__dict__)
    fields.update(proxy_id="", service="", namespace="", datacenter="")
    return key


def build_resources(inp: Inputs) -> Resources:
    if isinstance(inp, GatewayInputs):
        listeners, clusters, endpoints = build_gateway(inp)
        res: Resources = {
            TYPE_LISTENER: {r["name"]: r for r in listeners},
            TYPE_CLUSTER: {r["name"]: r for r in clusters},
            TYPE_ENDPOINTS: {r["cluster_name"]: r for r in endpoints},
            TYPE_SECRET: {},  # a gateway holds no certificate: TLS passes through it
        }
        check_consistency(res)
        return res
    res = {
        TYPE_LISTENER: {r["name"]: r for r in build_listeners(inp)},
        TYPE_CLUSTER: {r["name"]: r for r in build_clusters(inp)},
        TYPE_ENDPOINTS: {r["cluster_name"]: r for r in build_endpoints(inp)},
        TYPE_SECRET: {},  # the agent serves the leaf and roots (SDS on its unix socket)
    }
    check_consistency(res)
    return res


def _walk(node: Any, found: dict[str, Any]) -> None:
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "cluster" and isinstance(value, str):
                found["cluster"].add(value)
            elif key == "clusters" and isinstance(value, list):  # an aggregate's members
                found["cluster"].update(v for v in value if isinstance(v, str))
                _walk([v for v in value if not isinstance(v, str)], found)
            elif key == "route" and isinstance(value, dict) and "cluster" in value:
                found["cluster"].add(value["cluster"])
            elif key in ("tls_certificate_sds_secret_configs",):
                found["secret"].extend(value)
            elif key == "validation_context_sds_secret_config":
                found["secret"].append(value)
            else:
                _walk(value, found)
    elif isinstance(node, list):
        for item in node:
            _walk(item, found)


_REFS_KEPT = 32_768
"""Documents whose references ``_refs`` remembers (by identity, holding the document)."""
_refs_of: OrderedDict[int, tuple[Doc, frozenset[str], tuple[Doc, ...]]] = OrderedDict()


def _refs(doc: Doc) -> tuple[frozenset[str], tuple[Doc, ...]]:
    """The clusters and secret configs one resource refers to. Memoised by identity: the
    builders hand alike proxies the very same documents, walked once."""
    kept = _refs_of.get(id(doc))
    if kept is not None and kept[0] is doc:
        _refs_of.move_to_end(id(doc))
        return kept[1], kept[2]
    found: dict[str, Any] = {"cluster": set(), "secret": []}
    _walk(doc, found)
    clusters, secrets = frozenset(found["cluster"]), tuple(found["secret"])
    _refs_of[id(doc)] = (doc, clusters, secrets)
    if len(_refs_of) > _REFS_KEPT:
        _refs_of.popitem(last=False)
    return clusters, secrets


def check_consistency(res: Resources) -> None:
    found: dict[str, Any] = {"cluster": set(), "secret": []}
    for doc in (*res[TYPE_LISTENER].values(), *res[TYPE_CLUSTER].values()):
        clusters, secrets = _refs(doc)
        found["cluster"] |= clusters
        found["secret"].extend(secrets)
    missing = found["cluster"] - res[TYPE_CLUSTER].keys()
    if missing:
        raise InconsistentSnapshot(f"listeners use undefined clusters: {sorted(missing)}")
    if res[TYPE_SECRET]:
        raise InconsistentSnapshot(f"the server must serve no secret: {sorted(res[TYPE_SECRET])}")
    names = {s["name"] for s in found["secret"]}
    if names - set(AGENT_SECRETS):
        raise InconsistentSnapshot(
            f"resources use secrets the agent does not serve: {sorted(names - set(AGENT_SECRETS))}"
        )
    elsewhere = sorted({s["name"] for s in found["secret"] if s.get("sds_config") != AGENT_SDS})
    if elsewhere:
        raise InconsistentSnapshot(f"secrets {elsewhere} are not read from the agent's SDS")
    eds = {n for n, c in res[TYPE_CLUSTER].items() if c.get("type") == "EDS"}
    if eds != res[TYPE_ENDPOINTS].keys():
        raise InconsistentSnapshot(
            f"EDS clusters {sorted(eds)} and endpoints {sorted(res[TYPE_ENDPOINTS])} differ"
        )
