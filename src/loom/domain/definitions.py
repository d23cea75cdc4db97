"""The keys a Consul service definition file may hold, and a strict check against them.

``consul services register web.hcl`` refuses a key it does not know (a typo such as
``prot = 86`` would otherwise register the service on port 0); the agent HTTP API, like
Consul's, stays lenient for the clients already written against it. So the strict check runs
where a file is read (``loom services register|deregister``), over the same names the
registration parser reads (``loom.domain.services``), matched as ``Fields`` matches them (case
and underscores aside, so ``sidecar_service`` is ``SidecarService``), with the same message
``config write`` gives (``domain.fields.first_unknown``). Pure: data and one walk.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Union

from loom.domain.fields import ValidationError, field_key, first_unknown


@dataclass(frozen=True)
class ListOf:
    """A list whose items are objects of ``schema``."""

    schema: Schema


@dataclass(frozen=True)
class MapOf:
    """An object of free keys whose values are objects of ``schema``."""

    schema: Schema


Schema = dict[str, Union["Schema", ListOf, MapOf, None]]
"""Known key -> what its value holds; None: a value not walked (scalars, free maps)."""

_CHECK: Schema = dict.fromkeys(
    (
        "CheckID", "ID", "Name", "Notes", "Status", "TTL", "HTTP", "TCP", "GRPC", "GRPCUseTLS",
        "UDP", "H2PING", "H2PingUseTLS", "Args", "ScriptArgs", "Shell", "DockerContainerID",
        "Interval", "Timeout", "DeregisterCriticalServiceAfter", "ServiceID", "Header",
        "Method", "Body", "TLSSkipVerify", "TLSServerName", "OutputMaxSize",
        "SuccessBeforePassing", "FailuresBeforeWarning", "FailuresBeforeCritical",
        "AliasNode", "AliasService", "OSService",
    )
)  # fmt: skip

_MESH_GATEWAY: Schema = {"Mode": None}

_UPSTREAM: Schema = {
    **dict.fromkeys(
        (
            "DestinationType", "DestinationNamespace", "DestinationPartition",
            "DestinationPeer", "DestinationName", "Datacenter", "LocalBindAddress",
            "LocalBindPort", "LocalBindSocketPath", "LocalBindSocketMode", "Config",
            "CentrallyConfigured",
        )
    ),
    "MeshGateway": _MESH_GATEWAY,
}  # fmt: skip

_PROXY: Schema = {
    **dict.fromkeys(
        (
            "DestinationServiceName", "DestinationServiceID", "LocalServiceAddress",
            "LocalServicePort", "LocalServiceSocketPath", "Mode", "Config", "AccessLogs",
        )
    ),
    "TransparentProxy": {"OutboundListenerPort": None, "DialedDirectly": None},
    "Upstreams": ListOf(_UPSTREAM),
    "MeshGateway": _MESH_GATEWAY,
    "Expose": {
        "Checks": None,
        "Paths": ListOf(dict.fromkeys(("ListenerPort", "Path", "LocalPathPort", "Protocol"))),
    },
}  # fmt: skip

_BASE: Schema = {
    **dict.fromkeys(
        (
            "ID", "Name", "Service", "Kind", "Tags", "Address", "Port", "SocketPath", "Meta",
            "EnableTagOverride", "Namespace", "Partition", "Token", "Locality",
        )
    ),
    "TaggedAddresses": MapOf({"Address": None, "Port": None}),
    "Weights": {"Passing": None, "Warning": None},
    "Proxy": _PROXY,
    "Check": _CHECK,
    "Checks": ListOf(_CHECK),
}  # fmt: skip

SIDECAR: Schema = {**_BASE, "Connect": {"Native": None}}
"""``Connect.SidecarService``: a service of its own, without a sidecar of its own."""

SERVICE: Schema = {**_BASE, "Connect": {"Native": None, "SidecarService": SIDECAR}}
"""One service definition (the object under ``service`` in a file)."""


def check_keys(obj: Any, schema: Schema, where: str) -> None:
    """Raise ``ValidationError`` at the first key of ``obj`` (recursively) that ``schema``
    does not know, naming its path and the nearest known key. Values of the wrong type are
    left to the registration's own validation (the server's answer names them)."""
    stack: list[tuple[Any, Schema, str]] = [(obj, schema, where)]
    while stack:
        value, known, path = stack.pop()
        if not isinstance(value, dict):
            continue
        problem = first_unknown(value, known)
        if problem is not None:
            raise ValidationError(f"{_join(path, problem[0])}: {problem[1]}")
        norm = {field_key(k): sub for k, sub in known.items()}
        for key, item in value.items():
            sub = norm[field_key(key)]
            at = _join(path, key)
            if isinstance(sub, dict):
                stack.append((item, sub, at))
            elif isinstance(sub, ListOf) and isinstance(item, list):
                stack.extend((x, sub.schema, f"{at}[{i}]") for i, x in enumerate(item))
            elif isinstance(sub, MapOf) and isinstance(item, dict):
                stack.extend((x, sub.schema, f"{at}.{k}") for k, x in item.items())


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key
