"""Pure translation of one proxy's inputs into Envoy resources (canonical dicts).

``build_resources(inputs)`` returns ``{type_url: {name: resource}}``; ``check_consistency``
verifies the set is self-contained before it is ever served (go-control-plane's rule: every
EDS cluster has endpoints, every referenced cluster and secret exists).
"""

from __future__ import annotations

from typing import Any

from loom.xds.errors import InconsistentSnapshot
from loom.xds.inputs import ProxyInputs
from loom.xds.translate.clusters import build_clusters, build_endpoints
from loom.xds.translate.listeners import build_listeners
from loom.xds.translate.names import TYPE_CLUSTER, TYPE_ENDPOINTS, TYPE_LISTENER, TYPE_SECRET
from loom.xds.translate.tls import secrets

Doc = dict[str, Any]
Resources = dict[str, dict[str, Doc]]



def build_resources(inp: ProxyInputs) -> Resources:
    res: Resources = {
        TYPE_LISTENER: {r["name"]: r for r in build_listeners(inp)},
        TYPE_CLUSTER: {r["name"]: r for r in build_clusters(inp)},
        TYPE_ENDPOINTS: {r["cluster_name"]: r for r in build_endpoints(inp)},
        TYPE_SECRET: secrets(inp.leaf_cert_pem, inp.leaf_key_pem, inp.roots_pem),
    }
    check_consistency(res)
    return res


def _walk(node: Any, found: dict[str, set[str]]) -> None:
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "cluster" and isinstance(value, str):
                found["cluster"].add(value)
            elif key == "route" and isinstance(value, dict) and "cluster" in value:
                found["cluster"].add(value["cluster"])
            elif key in ("tls_certificate_sds_secret_configs",):
                found["secret"].update(s["name"] for s in value)
            elif key == "validation_context_sds_secret_config":
                found["secret"].add(value["name"])
            else:
                _walk(value, found)
    elif isinstance(node, list):
        for item in node:
            _walk(item, found)


def check_consistency(res: Resources) -> None:
    found: dict[str, set[str]] = {"cluster": set(), "secret": set()}
    _walk(res[TYPE_LISTENER], found)
    _walk(res[TYPE_CLUSTER], found)
    missing = found["cluster"] - res[TYPE_CLUSTER].keys()
    if missing:
        raise InconsistentSnapshot(f"listeners use undefined clusters: {sorted(missing)}")
    missing = found["secret"] - res[TYPE_SECRET].keys()
    if missing:
        raise InconsistentSnapshot(f"resources use undefined secrets: {sorted(missing)}")
    eds = {n for n, c in res[TYPE_CLUSTER].items() if c.get("type") == "EDS"}
    if eds != res[TYPE_ENDPOINTS].keys():
        raise InconsistentSnapshot(
            f"EDS clusters {sorted(eds)} and endpoints {sorted(res[TYPE_ENDPOINTS])} differ"
        )
