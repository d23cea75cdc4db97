"""``?filter=`` on the list endpoints: what each one's selectors are, and reading the parameter.

Consul filters each endpoint on the fields of what it answers, so the shapes here follow
``views`` field for field (a test renders rich records and checks that every field a view
emits has its shape here, apart from the raft indexes, which Consul's filters leave out too).
An endpoint filters the items of its list, or the values of its map (agent services and
checks), after ACLs have hidden what the token may not read, as Consul does since it
stopped letting a filter probe unreadable data. The expression is parsed and checked before
a blocking query starts waiting, so a bad one is a 400 at once and never a long poll.
"""

from __future__ import annotations

from aiohttp import web

from loom.bexpr import BOOL, INT, STRING, Filter, ListOf, MapOf, Scalar, Struct, compile_filter

OPAQUE = Scalar("opaque")
"""A value of any JSON type (``Proxy.Config``'s): its map takes ``in`` on keys and emptiness."""

_ADDRESS = Struct({"Address": STRING, "Port": INT})
_MESH_GATEWAY = Struct({"Mode": STRING})
_UPSTREAM = Struct(
    {
        "DestinationType": STRING,
        "DestinationName": STRING,
        "DestinationNamespace": STRING,
        "Datacenter": STRING,
        "LocalBindAddress": STRING,
        "LocalBindPort": INT,
        "Config": MapOf(OPAQUE),
        "MeshGateway": _MESH_GATEWAY,
    }
)
_EXPOSE_PATH = Struct(
    {"ListenerPort": INT, "Path": STRING, "LocalPathPort": INT, "Protocol": STRING}
)
PROXY = Struct(
    {
        "DestinationServiceName": STRING,
        "DestinationServiceID": STRING,
        "LocalServiceAddress": STRING,
        "LocalServicePort": INT,
        "Mode": STRING,
        "TransparentProxy": Struct({"OutboundListenerPort": INT, "DialedDirectly": BOOL}),
        "Upstreams": ListOf(_UPSTREAM),
        "Config": MapOf(OPAQUE),
        "Expose": Struct({"Checks": BOOL, "Paths": ListOf(_EXPOSE_PATH)}),
        "MeshGateway": _MESH_GATEWAY,
    }
)
_WEIGHTS = Struct({"Passing": INT, "Warning": INT})

AGENT_SERVICE = Struct(
    {
        "ID": STRING,
        "Service": STRING,
        "Tags": ListOf(STRING),
        "Meta": MapOf(STRING),
        "Port": INT,
        "Address": STRING,
        "TaggedAddresses": MapOf(_ADDRESS),
        "Weights": _WEIGHTS,
        "EnableTagOverride": BOOL,
        "Datacenter": STRING,
        "Namespace": STRING,
        "Connect": Struct({"Native": BOOL}),
        "Kind": STRING,
        "Proxy": PROXY,
    }
)
"""``/v1/agent/services`` (each value) and ``Service`` of a health entry."""

NODE = Struct(
    {
        "ID": STRING,
        "Node": STRING,
        "Address": STRING,
        "Datacenter": STRING,
        "TaggedAddresses": MapOf(STRING),
        "Meta": MapOf(STRING),
    }
)
"""``/v1/catalog/nodes`` and ``Node`` of a health entry."""

CATALOG_SERVICE = Struct(
    {
        "ID": STRING,
        "Node": STRING,
        "Address": STRING,
        "Datacenter": STRING,
        "TaggedAddresses": MapOf(STRING),
        "NodeMeta": MapOf(STRING),
        "ServiceKind": STRING,
        "ServiceID": STRING,
        "ServiceName": STRING,
        "ServiceTags": ListOf(STRING),
        "ServiceAddress": STRING,
        "ServiceTaggedAddresses": MapOf(_ADDRESS),
        "ServiceWeights": _WEIGHTS,
        "ServiceMeta": MapOf(STRING),
        "ServicePort": INT,
        "ServiceEnableTagOverride": BOOL,
        "ServiceProxy": PROXY,
        "ServiceConnect": Struct({"Native": BOOL}),
        "Namespace": STRING,
    }
)
"""``/v1/catalog/service/:name``, and each instance behind ``/v1/catalog/services``."""

_DEFINITION_TEXT = ("HTTP", "Method", "Body", "TLSServerName", "TCP", "GRPC", "H2PING",
                    "AliasService", "AliasNode", "TTL", "Interval", "Timeout",
                    "DeregisterCriticalServiceAfter")  # fmt: skip
_DEFINITION_FLAGS = ("TLSSkipVerify", "GRPCUseTLS", "H2PingUseTLS")
_DEFINITION_COUNTS = ("SuccessBeforePassing", "FailuresBeforeWarning", "FailuresBeforeCritical")
_CHECK_DEFINITION = Struct(
    {
        **dict.fromkeys(_DEFINITION_TEXT, STRING),
        **dict.fromkeys(_DEFINITION_FLAGS, BOOL),
        **dict.fromkeys(_DEFINITION_COUNTS, INT),
        "Header": MapOf(ListOf(STRING)),
        "ScriptArgs": ListOf(STRING),
    }
)
"""A check's ``Definition`` as ``views`` shows it (``loom.domain.checks.definition_doc``)."""

HEALTH_CHECK = Struct(
    {
        "Node": STRING,
        "CheckID": STRING,
        "Name": STRING,
        "Status": STRING,
        "Notes": STRING,
        "Output": STRING,
        "ServiceID": STRING,
        "ServiceName": STRING,
        "ServiceTags": ListOf(STRING),
        "Type": STRING,
        "Namespace": STRING,
        "Interval": STRING,
        "Timeout": STRING,
        "Definition": _CHECK_DEFINITION,
    }
)
"""``/v1/health/checks/:name``, ``/v1/agent/checks`` (each value), a health entry's checks."""

HEALTH_ENTRY = Struct({"Node": NODE, "Service": AGENT_SERVICE, "Checks": ListOf(HEALTH_CHECK)})
"""``/v1/health/service/:name`` and ``/v1/health/connect/:name``."""

_HEADER = Struct(
    {
        "Name": STRING,
        "Exact": STRING,
        "Prefix": STRING,
        "Suffix": STRING,
        "Regex": STRING,
        "Present": BOOL,
        "Invert": BOOL,
    }
)
_HTTP_MATCH = Struct(
    {
        "PathExact": STRING,
        "PathPrefix": STRING,
        "PathRegex": STRING,
        "Methods": ListOf(STRING),
        "Header": ListOf(_HEADER),
    }
)
INTENTION = Struct(
    {
        "ID": STRING,
        "Description": STRING,
        "SourceNS": STRING,
        "SourceName": STRING,
        "DestinationNS": STRING,
        "DestinationName": STRING,
        "SourceType": STRING,
        "Action": STRING,
        "Permissions": ListOf(Struct({"Action": STRING, "HTTP": _HTTP_MATCH})),
        "Precedence": INT,
        "Meta": MapOf(STRING),
    }
)
"""``/v1/connect/intentions``."""

_GATEWAY_NAME = Struct({"Name": STRING, "Namespace": STRING})
GATEWAY_SERVICE = Struct(
    {
        "Gateway": _GATEWAY_NAME,
        "Service": _GATEWAY_NAME,
        "GatewayKind": STRING,
        "Port": INT,
        "Protocol": STRING,
        "Hosts": ListOf(STRING),
        "CAFile": STRING,
        "CertFile": STRING,
        "KeyFile": STRING,
        "SNI": STRING,
        "FromWildcard": BOOL,
    }
)
"""``/v1/catalog/gateway-services/:gateway`` (Consul's GatewayService)."""

UNFILTERED = frozenset({"CreateIndex", "ModifyIndex"})
"""Fields a view emits that no selector reaches (Consul's raft indexes are ``bexpr:"-"``)."""


def request_filter(request: web.Request, schema: Struct) -> Filter | None:
    """The request's ``?filter=`` checked against ``schema``; ``None`` without one.

    A bad expression raises ``FilterError``, which the error middleware answers with 400.
    """
    text = request.query.get("filter", "")
    return compile_filter(text, schema)


__all__ = [
    "AGENT_SERVICE",
    "CATALOG_SERVICE",
    "GATEWAY_SERVICE",
    "HEALTH_CHECK",
    "HEALTH_ENTRY",
    "INTENTION",
    "NODE",
    "OPAQUE",
    "PROXY",
    "UNFILTERED",
    "request_filter",
]
