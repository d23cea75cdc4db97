"""Envoy resources as served: canonical dicts -> versioned protobuf ``Any`` values.

Conversion (json_format.ParseDict, ~50 us a resource) happens once per distinct resource:
results are memoised by the resource's canonical JSON, so a thousand proxies that share a
cluster definition share one parsed message, and an unchanged resource is never re-parsed.
A resource's version is a short hash of that canonical JSON. The translators hand alike
proxies the very same document objects (they memoise their builders), so a second memo keyed
by the document's identity skips even the canonical JSON; it holds each document it keys, so
an identity cannot be reused while it is kept. It keeps the ``Served`` value too, and ``serve``
hands out one dict per distinct set of them (``Converter.typed``): translations whose clusters
(say) did not change share the very same dict, so a stream re-served it (``loom.xds.server``)
knows by identity alone that there is nothing to diff.
"""

from __future__ import annotations

import hashlib
import json
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

# Register every message type the translators reference in "@type" fields.
from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.endpoint.v3 import endpoint_pb2
from envoy.config.listener.v3 import listener_pb2
from envoy.extensions.clusters.aggregate.v3 import cluster_pb2 as aggregate_pb2  # noqa: F401
from envoy.extensions.filters.http.rbac.v3 import rbac_pb2 as http_rbac_pb2  # noqa: F401
from envoy.extensions.filters.http.router.v3 import router_pb2  # noqa: F401
from envoy.extensions.filters.listener.original_dst.v3 import original_dst_pb2  # noqa: F401
from envoy.extensions.filters.listener.tls_inspector.v3 import tls_inspector_pb2  # noqa: F401
from envoy.extensions.filters.network.direct_response.v3 import (  # noqa: F401
    config_pb2 as direct_response_pb2,
)
from envoy.extensions.filters.network.http_connection_manager.v3 import (  # noqa: F401
    http_connection_manager_pb2,
)
from envoy.extensions.filters.network.rbac.v3 import rbac_pb2  # noqa: F401
from envoy.extensions.filters.network.tcp_proxy.v3 import tcp_proxy_pb2  # noqa: F401
from envoy.extensions.transport_sockets.tls.v3 import secret_pb2, tls_pb2  # noqa: F401
from google.protobuf import any_pb2, json_format

from loom.xds.errors import ResourceError
from loom.xds.translate import Resources
from loom.xds.translate.names import TYPE_CLUSTER, TYPE_ENDPOINTS, TYPE_LISTENER, TYPE_SECRET

MESSAGES: dict[str, Any] = {
    TYPE_LISTENER: listener_pb2.Listener,
    TYPE_CLUSTER: cluster_pb2.Cluster,
    TYPE_ENDPOINTS: endpoint_pb2.ClusterLoadAssignment,
    TYPE_SECRET: secret_pb2.Secret,
}


@dataclass(frozen=True)
class Served:
    name: str
    version: str
    message: any_pb2.Any


class Converter:
    """Bounded memo of canonical JSON -> packed message."""

    def __init__(
        self, capacity: int = 50_000, by_identity: int = 32_768, typed: int = 32_768
    ) -> None:
        self._memo: OrderedDict[str, tuple[str, any_pb2.Any]] = OrderedDict()
        self._same: OrderedDict[int, tuple[dict[str, Any], str, str, any_pb2.Any]] = OrderedDict()
        self._served: dict[int, Served] = {}
        """Document identity -> its ``Served``, for the documents ``_same`` keeps."""
        self._typed: OrderedDict[tuple[str, tuple[int, ...]], dict[str, Served]] = OrderedDict()
        self.capacity = capacity
        self.by_identity = by_identity
        self.typed = typed
        """How many distinct per-type dicts ``serve`` keeps to hand out again."""
        self.parsed = 0

    def convert(self, type_url: str, doc: dict[str, Any]) -> tuple[str, any_pb2.Any]:
        same = self._same.get(id(doc))
        if same is not None and same[0] is doc and same[1] == type_url:
            self._same.move_to_end(id(doc))
            return same[2], same[3]
        version, packed = self._convert(type_url, doc)
        self._same[id(doc)] = (doc, type_url, version, packed)
        self._served.pop(id(doc), None)
        if len(self._same) > self.by_identity:
            gone, _ = self._same.popitem(last=False)
            self._served.pop(gone, None)
        return version, packed

    def _convert(self, type_url: str, doc: dict[str, Any]) -> tuple[str, any_pb2.Any]:
        key = type_url + json.dumps(doc, sort_keys=True, separators=(",", ":"))
        hit = self._memo.get(key)
        if hit is not None:
            self._memo.move_to_end(key)
            return hit
        msg = MESSAGES[type_url]()
        try:
            json_format.ParseDict(doc, msg)
        except json_format.ParseError as exc:
            raise ResourceError(f"{type_url} {doc.get('name', '?')}: {exc}") from exc
        packed = any_pb2.Any()
        packed.Pack(msg)
        version = hashlib.sha256(key.encode()).hexdigest()[:16]
        self._memo[key] = (version, packed)
        self.parsed += 1
        if len(self._memo) > self.capacity:
            self._memo.popitem(last=False)
        return version, packed

    def _serve_one(self, type_url: str, name: str, doc: dict[str, Any]) -> Served:
        version, packed = self.convert(type_url, doc)
        found = self._served.get(id(doc))
        if found is None or found.name != name or found.message is not packed:
            found = Served(name, version, packed)
            if id(doc) in self._same:
                self._served[id(doc)] = found
        return found

    def serve(self, resources: Resources) -> dict[str, dict[str, Served]]:
        """Each type's resources as served; a type whose resources are the very ``Served``
        values of one handed out before (in the same order) gets that same dict back."""
        out: dict[str, dict[str, Served]] = {}
        for type_url, named in resources.items():
            served = {name: self._serve_one(type_url, name, doc) for name, doc in named.items()}
            # The kept dict holds its values, so their identities stay theirs while kept.
            key = (type_url, tuple(map(id, served.values())))
            kept = self._typed.get(key)
            if kept is not None and kept.keys() == served.keys():
                self._typed.move_to_end(key)
                served = kept
            else:
                self._typed[key] = served
                if len(self._typed) > self.typed:
                    self._typed.popitem(last=False)
            out[type_url] = served
        return out


def type_version(served: dict[str, Served], names: set[str] | None) -> str:
    """Version of the set of resources a SotW response carries."""
    chosen = sorted((n, s.version) for n, s in served.items() if names is None or n in names)
    return hashlib.sha256(repr(chosen).encode()).hexdigest()[:16]
