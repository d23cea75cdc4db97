"""``connect-service-upstreams``: explicit upstreams as local listeners, and their env vars.

Formats (comma separated, as Consul's):

- ``svc:port`` and ``svc:port:dc``
- ``svc.ns:port[:dc]`` when Consul namespaces are on (otherwise ``svc.ns`` is a service name)
- ``prepared_query:name:port``

Each upstream becomes a listener on ``127.0.0.1:port`` in the first service's sidecar and two
environment variables in every application container and the pod's own init containers:
``<NAME>_CONNECT_SERVICE_HOST`` and ``<NAME>_CONNECT_SERVICE_PORT``, NAME being the upstream's
name upper-cased with ``-`` and ``.`` turned into ``_``.
"""

from __future__ import annotations

from dataclasses import dataclass

from loom.inject.annotations import (
    CONNECT_SERVICE_UPSTREAMS,
    parse_name,
    parse_port,
    split_list,
)
from loom.inject.errors import InjectionRefused

PREPARED_QUERY = "prepared_query"
UPSTREAM_HOST = "127.0.0.1"


@dataclass(frozen=True)
class UpstreamPlan:
    """One explicit upstream: a local listener of the sidecar leading to a mesh service."""

    name: str
    """Destination service name, or the prepared query's name."""
    namespace: str | None
    """Consul namespace of the destination; None: the source service's own."""
    datacenter: str | None
    """Datacenter of the destination; None: the local one."""
    local_port: int
    """Port the sidecar listens on at 127.0.0.1 for this upstream."""
    prepared_query: bool = False
    """True when ``name`` is a prepared query rather than a service."""

    @property
    def env_prefix(self) -> str:
        """``static-server`` -> ``STATIC_SERVER``: the prefix of the upstream's env vars."""
        return self.name.upper().replace("-", "_").replace(".", "_")

    def env(self) -> tuple[tuple[str, str], ...]:
        """The (name, value) env vars every application container gets for this upstream."""
        return (
            (f"{self.env_prefix}_CONNECT_SERVICE_HOST", UPSTREAM_HOST),
            (f"{self.env_prefix}_CONNECT_SERVICE_PORT", str(self.local_port)),
        )

    def to_registration(self) -> dict[str, object]:
        """The upstream as Consul's ``Proxy.Upstreams[]`` JSON object."""
        out: dict[str, object] = {
            "DestinationType": "prepared_query" if self.prepared_query else "service",
            "DestinationName": self.name,
            "LocalBindAddress": UPSTREAM_HOST,
            "LocalBindPort": self.local_port,
        }
        if self.namespace is not None:
            out["DestinationNamespace"] = self.namespace
        if self.datacenter is not None:
            out["Datacenter"] = self.datacenter
        return out


def parse_upstreams(value: str, namespaces_enabled: bool) -> tuple[UpstreamPlan, ...]:
    """All upstreams of the annotation; refused on any malformed entry or a clash."""
    key = CONNECT_SERVICE_UPSTREAMS
    upstreams = tuple(_parse_one(value, item, namespaces_enabled) for item in split_list(value))
    seen_ports: dict[int, str] = {}
    seen_env: dict[str, str] = {}
    for up in upstreams:
        if up.local_port in seen_ports:
            raise InjectionRefused(
                key,
                value,
                f"{seen_ports[up.local_port]!r} and {up.name!r} both use local port "
                f"{up.local_port}",
            )
        seen_ports[up.local_port] = up.name
        if up.env_prefix in seen_env:
            raise InjectionRefused(
                key,
                value,
                f"{seen_env[up.env_prefix]!r} and {up.name!r} would both set "
                f"{up.env_prefix}_CONNECT_SERVICE_PORT",
            )
        seen_env[up.env_prefix] = up.name
    return upstreams


def _parse_one(value: str, item: str, namespaces_enabled: bool) -> UpstreamPlan:
    key = CONNECT_SERVICE_UPSTREAMS
    parts = [p.strip() for p in item.split(":")]
    if parts[0] == PREPARED_QUERY:
        if len(parts) != 3:
            raise InjectionRefused(
                key, value, f"{item!r}: a prepared query upstream is prepared_query:NAME:PORT"
            )
        name = parse_name(key, value, parts[1], "prepared query name")
        return UpstreamPlan(name, None, None, parse_port(key, value, parts[2]), prepared_query=True)
    if len(parts) not in (2, 3):
        raise InjectionRefused(
            key, value, f"{item!r}: expected SERVICE:PORT or SERVICE:PORT:DATACENTER"
        )
    service, namespace = parts[0], None
    if "." in service:
        if namespaces_enabled:
            service, namespace = service.split(".", 1)
            parse_name(key, value, namespace, "namespace name")
        else:
            # As Consul: without namespaces the whole "svc.ns" is the service name.
            for piece in service.split("."):
                parse_name(key, value, piece)
            return _with_port(value, item, service, None, parts)
    parse_name(key, value, service)
    return _with_port(value, item, service, namespace, parts)


def _with_port(
    value: str, item: str, service: str, namespace: str | None, parts: list[str]
) -> UpstreamPlan:
    key = CONNECT_SERVICE_UPSTREAMS
    datacenter = None
    if len(parts) == 3:
        if not parts[2]:
            raise InjectionRefused(key, value, f"{item!r}: empty datacenter")
        datacenter = parse_name(key, value, parts[2], "datacenter name")
    return UpstreamPlan(service, namespace, datacenter, parse_port(key, value, parts[1]))
