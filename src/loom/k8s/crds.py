"""The CustomResourceDefinitions of consul-k8s's config-entry resources, for ``loom install``.

ServiceDefaults, ProxyDefaults, ServiceIntentions and Mesh (``consul.hashicorp.com/v1alpha1``,
namespaced, with a ``status`` subresource and the ``Synced`` / ``Last Synced`` / ``Age``
columns) carry the same field names and types as consul-k8s's, so existing manifests apply
unchanged and nothing they set is pruned: fields Loom does not implement reach the server,
which refuses them by name (the resource's ``Synced=False`` condition says so). The schemas
are written here as a compact type tree (``STR`` string, ``INT`` integer, ``BOOL`` boolean, ``ANY``
a free-form map, a dict an object, a one-item list an array) and expanded into OpenAPI v3.
"""

from __future__ import annotations

import copy
from typing import Any

from loom.domain.crds import CRD_KINDS, GROUP, VERSION

STR, INT, BOOL, ANY = "string", "integer", "boolean", "any"

_EXPOSE = {"checks": BOOL, "paths": [{"listenerPort": INT, "localPathPort": INT, "path": STR,
                                   "protocol": STR}]}  # fmt: skip
_EXTENSIONS = [{"name": STR, "required": BOOL, "arguments": ANY}]
_TPROXY = {"dialedDirectly": BOOL, "outboundListenerPort": INT}
_MESH_GATEWAY = {"mode": STR}
_UPSTREAM = {
    "name": STR, "namespace": STR, "partition": STR, "peer": STR, "protocol": STR,
    "connectTimeoutMs": INT, "envoyClusterJSON": STR, "envoyListenerJSON": STR,
    "limits": {"maxConcurrentRequests": INT, "maxConnections": INT, "maxPendingRequests": INT},
    "meshGateway": _MESH_GATEWAY,
    "passiveHealthCheck": {"baseEjectionTime": STR, "enforcingConsecutive5xx": INT, "interval": STR,
                           "maxEjectionPercent": INT, "maxFailures": INT},
}  # fmt: skip
_PATHS = {"pathExact": STR, "pathPrefix": STR, "pathRegex": STR}
_JWT = {"providers": [{"name": STR, "verifyClaims": [{"path": [STR], "value": STR}]}]}
_TLS_DIRECTION = {"cipherSuites": [STR], "tlsMaxVersion": STR, "tlsMinVersion": STR}

SPECS: dict[str, dict[str, Any]] = {
    "ServiceDefaults": {
        "protocol": STR, "mode": STR, "mutualTLSMode": STR, "transparentProxy": _TPROXY,
        "meshGateway": _MESH_GATEWAY, "expose": _EXPOSE, "externalSNI": STR,
        "upstreamConfig": {"defaults": _UPSTREAM, "overrides": [_UPSTREAM]},
        "destination": {"addresses": [STR], "port": INT}, "maxInboundConnections": INT,
        "localConnectTimeoutMs": INT, "localRequestTimeoutMs": INT,
        "balanceInboundConnections": STR, "envoyExtensions": _EXTENSIONS,
        "rateLimits": {"instanceLevel": {
            "requestsMaxBurst": INT, "requestsPerSecond": INT,
            "routes": [{**_PATHS, "requestsMaxBurst": INT, "requestsPerSecond": INT}]}},
    },
    "ProxyDefaults": {
        "config": ANY, "mode": STR, "mutualTLSMode": STR, "transparentProxy": _TPROXY,
        "meshGateway": _MESH_GATEWAY, "expose": _EXPOSE, "envoyExtensions": _EXTENSIONS,
        "accessLogs": {"enabled": BOOL, "disableListenerLogs": BOOL, "type": STR, "path": STR,
                       "jsonFormat": STR, "textFormat": STR},
        "failoverPolicy": {"mode": STR, "regions": [STR]}, "prioritizeByLocality": {"mode": STR},
    },
    "ServiceIntentions": {
        "destination": {"name": STR, "namespace": STR},
        "jwt": _JWT,
        "sources": [{
            "name": STR, "namespace": STR, "partition": STR, "peer": STR, "samenessGroup": STR,
            "action": STR, "description": STR,
            "permissions": [{
                "action": STR, "jwt": _JWT,
                "http": {**_PATHS, "methods": [STR], "header": [{
                    "name": STR, "exact": STR, "prefix": STR, "suffix": STR, "regex": STR,
                    "present": BOOL, "invert": BOOL}]},
            }],
        }],
    },
    "Mesh": {
        "allowEnablingPermissiveMutualTLS": BOOL, "validateClusters": BOOL,
        "transparentProxy": {"meshDestinationsOnly": BOOL},
        "tls": {"incoming": _TLS_DIRECTION, "outgoing": _TLS_DIRECTION},
        "http": {"sanitizeXForwardedClientCert": BOOL, "incoming": {"requestNormalization": {
            "headersWithUnderscoresAction": STR, "insecureDisablePathNormalization": BOOL,
            "mergeSlashes": BOOL, "pathWithEscapedSlashesAction": STR}}},
        "peering": {"peerThroughMeshGateways": BOOL},
    },
}  # fmt: skip
"""The ``spec`` of each kind, as consul-k8s's CRDs declare it."""

_STATUS = {
    "type": "object",
    "properties": {
        "conditions": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["status", "type"],
                "properties": {
                    "type": {"type": "string"},
                    "status": {"type": "string"},
                    "reason": {"type": "string"},
                    "message": {"type": "string"},
                    "lastTransitionTime": {"type": "string", "format": "date-time"},
                },
            },
        },
        "lastSyncedTime": {"type": "string", "format": "date-time"},
    },
}


def schema(node: Any) -> dict[str, Any]:
    """The OpenAPI v3 schema of a type-tree node."""
    if node == ANY:
        return {"type": "object", "x-kubernetes-preserve-unknown-fields": True}
    if isinstance(node, str):
        return {"type": node}
    if isinstance(node, list):
        return {"type": "array", "items": schema(node[0])}
    return {"type": "object", "properties": {k: schema(v) for k, v in sorted(node.items())}}


def custom_resource_definitions(labels: dict[str, str]) -> list[dict[str, Any]]:
    """The four CRDs, labelled ``labels``."""
    docs = []
    for kind in CRD_KINDS.values():
        names: dict[str, Any] = {
            "kind": kind.kind,
            "listKind": f"{kind.kind}List",
            "plural": kind.plural,
            "singular": kind.kind.lower(),
        }
        if kind.short_name:
            names["shortNames"] = [kind.short_name]
        version = {
            "name": VERSION,
            "served": True,
            "storage": True,
            "subresources": {"status": {}},
            "additionalPrinterColumns": [
                {
                    "name": "Synced",
                    "type": "string",
                    "description": "Synced with Loom",
                    "jsonPath": '.status.conditions[?(@.type=="Synced")].status',
                },
                {
                    "name": "Last Synced",
                    "type": "date",
                    "description": "Last successful sync",
                    "jsonPath": ".status.lastSyncedTime",
                },
                {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
            ],
            "schema": {
                "openAPIV3Schema": {
                    "type": "object",
                    "properties": {
                        "apiVersion": {"type": "string"},
                        "kind": {"type": "string"},
                        "metadata": {"type": "object"},
                        "spec": schema(SPECS[kind.kind]),
                        "status": copy.deepcopy(_STATUS),
                    },
                }
            },
        }
        docs.append(
            {
                "apiVersion": "apiextensions.k8s.io/v1",
                "kind": "CustomResourceDefinition",
                "metadata": {"name": f"{kind.plural}.{GROUP}", "labels": dict(labels)},
                "spec": {
                    "group": GROUP,
                    "names": names,
                    "scope": "Namespaced",
                    "versions": [version],
                },
            }
        )
    return docs
