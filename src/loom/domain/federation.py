"""What one datacenter tells the others about itself, and its JSON form.

Several datacenters federate over their servers' HTTP APIs (``loom.server.wan``): each
server publishes a ``FederationState`` of its own datacenter (its servers' addresses, its mesh
gateways' WAN addresses, its services) and keeps the states of every other datacenter it has
learned in the store (``federation_states``), so mesh snapshots, DNS and xDS see the other
datacenters without asking the WAN on every read. This module is pure: the records and their
strict reading (``state_from_json``), which every state received from another datacenter
passes through.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from loom.domain.fields import (
    Fields,
    ValidationError,
    check_address,
    check_name,
    check_namespace,
    is_mesh_name,
)
from loom.domain.mesh import Endpoint

if TYPE_CHECKING:
    from loom.domain.mesh import MeshSnapshot

Doc = dict[str, Any]

MAX_SERVERS = 64
MAX_GATEWAYS = 256
MAX_SERVICES = 10_000
MAX_INSTANCES = 4096
"""Bounds on one state's lists: a hostile or broken peer cannot make every server store
(and every snapshot carry) an unbounded document."""

STATE_FIELDS = ("Datacenter", "Servers", "MeshGateways", "Services", "UpdatedAt")
SERVICE_FIELDS = ("Name", "Namespace", "Meshed", "Addresses", "Ports", "Endpoints")
ENDPOINT_FIELDS = ("Address", "Port")


@dataclass(frozen=True)
class RemoteService:
    """One service of another datacenter (proxies and gateways excluded)."""

    name: str
    namespace: str
    meshed: bool
    """It has a connect sidecar (healthy or not)."""
    addresses: tuple[str, ...]
    """Its healthy instances' addresses (what ``<svc>.service.<dc>.consul`` answers)."""
    ports: tuple[int, ...]
    """Its instances' ports."""
    endpoints: tuple[Endpoint, ...]
    """Its healthy sidecars' public listeners (as ``MeshSnapshot.endpoints`` locally)."""


@dataclass(frozen=True)
class FederationState:
    """What one datacenter publishes about itself."""

    datacenter: str
    servers: tuple[str, ...]
    """Its servers' HTTP API addresses as reachable from other datacenters: ``HOST:PORT``
    (plain HTTP) or ``https://HOST:PORT``."""
    mesh_gateways: tuple[Endpoint, ...]
    """The WAN addresses of its healthy mesh gateways."""
    services: tuple[RemoteService, ...]
    updated_at: str
    """When its publisher last saw it change (RFC 3339)."""


def _endpoint_json(e: Endpoint) -> Doc:
    return {"Address": e.address, "Port": e.port}


def _service_json(s: RemoteService) -> Doc:
    return {
        "Name": s.name,
        "Namespace": s.namespace,
        "Meshed": s.meshed,
        "Addresses": list(s.addresses),
        "Ports": list(s.ports),
        "Endpoints": [_endpoint_json(e) for e in s.endpoints],
    }


def state_to_json(state: FederationState) -> Doc:
    """Consul-style CamelCase document of ``state`` (what ``state_from_json`` reads back)."""
    return {
        "Datacenter": state.datacenter,
        "Servers": list(state.servers),
        "MeshGateways": [_endpoint_json(e) for e in state.mesh_gateways],
        "Services": [_service_json(s) for s in state.services],
        "UpdatedAt": state.updated_at,
    }


def _bounded(items: list[Fields], limit: int, where: str) -> list[Fields]:
    if len(items) > limit:
        raise ValidationError(f"{where}: more than {limit} entries")
    return items


def _endpoint(f: Fields) -> Endpoint:
    f.only(ENDPOINT_FIELDS)
    address = check_address(f.text("Address", required=True), f.where("Address"))
    port = f.port("Port")
    if not port:
        raise ValidationError(f"{f.where('Port')}: is required")
    return Endpoint(address, port)


TLS_SCHEME = "https://"
"""The prefix of a server address reached over HTTPS; a bare ``HOST:PORT`` is plain HTTP."""


def check_server(value: str, where: str) -> str:
    """A server's ``HOST:PORT`` (IPv6 hosts in brackets), plain HTTP, or
    ``https://HOST:PORT``; ``http://HOST:PORT`` reads as the bare form. Unix sockets do not
    cross a WAN."""
    bare_addr = value.removeprefix("http://")
    tls = bare_addr.startswith(TLS_SCHEME)
    bare_addr = bare_addr.removeprefix(TLS_SCHEME)
    host, sep, port = bare_addr.rpartition(":")
    if not sep or not port.isascii() or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValidationError(f"{where}: {value!r} is not HOST:PORT or https://HOST:PORT")
    bare = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    if not bare:
        raise ValidationError(f"{where}: {value!r} has no host")
    check_address(bare, where)
    return TLS_SCHEME + bare_addr if tls else bare_addr


def server_url(server: str) -> str:
    """The base URL of a checked server address: ``https://HOST:PORT`` or
    ``http://HOST:PORT``."""
    return server if server.startswith(TLS_SCHEME) else f"http://{server}"


def is_tls_server(server: str) -> bool:
    """The server is reached over HTTPS."""
    return server.startswith(TLS_SCHEME)


def _strs(f: Fields, key: str, limit: int) -> list[str]:
    values = f.strs(key)
    if len(values) > limit:
        raise ValidationError(f"{f.where(key)}: more than {limit} entries")
    return values


def _ports(f: Fields) -> tuple[int, ...]:
    raw = f.raw("Ports")
    if raw is None:
        return ()
    if not isinstance(raw, list) or len(raw) > MAX_INSTANCES:
        raise ValidationError(f"{f.where('Ports')}: expected a list of at most {MAX_INSTANCES}")
    out: list[int] = []
    for i, p in enumerate(raw):
        if isinstance(p, bool) or not isinstance(p, int) or not 0 <= p <= 65535:
            raise ValidationError(f"{f.where('Ports')}[{i}]: expected a port number")
        out.append(p)
    return tuple(out)


def _service(f: Fields) -> RemoteService:
    f.only(SERVICE_FIELDS)
    name = check_name(f.text("Name", required=True), f.where("Name"))
    namespace = check_namespace(f.text("Namespace", "default") or "default", f.where("Namespace"))
    addresses = tuple(
        check_address(a, f"{f.where('Addresses')}[{i}]")
        for i, a in enumerate(_strs(f, "Addresses", MAX_INSTANCES))
    )
    endpoints = tuple(
        _endpoint(e) for e in _bounded(f.subs("Endpoints"), MAX_INSTANCES, f.where("Endpoints"))
    )
    return RemoteService(name, namespace, f.flag("Meshed"), addresses, _ports(f), endpoints)


def state_from_json(doc: Any) -> FederationState:
    """The state a document describes; a ``ValidationError`` for anything else (unknown
    fields, wrong types, bad names or addresses, lists over their bounds)."""
    f = Fields(doc, "FederationState")
    f.only(STATE_FIELDS)
    datacenter = check_name(f.text("Datacenter", required=True), f.where("Datacenter"))
    servers = tuple(
        check_server(s, f"{f.where('Servers')}[{i}]")
        for i, s in enumerate(_strs(f, "Servers", MAX_SERVERS))
    )
    gateways = tuple(
        _endpoint(e)
        for e in _bounded(f.subs("MeshGateways"), MAX_GATEWAYS, f.where("MeshGateways"))
    )
    services = tuple(
        _service(s) for s in _bounded(f.subs("Services"), MAX_SERVICES, f.where("Services"))
    )
    keys = [(s.namespace, s.name) for s in services]
    if len(set(keys)) != len(keys):
        raise ValidationError(f"{f.where('Services')}: a service is listed twice")
    return FederationState(datacenter, servers, gateways, services, f.text("UpdatedAt"))


def publish(snap: MeshSnapshot, servers: tuple[str, ...], updated_at: str) -> FederationState:
    """This datacenter's state as its snapshot shows it: its servers, its healthy mesh
    gateways' WAN addresses, every service (gateways and proxies are not in ``services``)."""
    services = []
    for key in sorted(snap.services):
        svc = snap.services[key]
        if not is_mesh_name(svc.name):
            continue  # ``api.v1`` (catalog-only): other datacenters read names strictly
        addresses = tuple(dict.fromkeys(h.address for h in svc.healthy if h.address))
        endpoints = tuple(snap.endpoints.get(key, ()))
        services.append(
            RemoteService(
                svc.name, svc.namespace, key in snap.meshed, addresses, tuple(svc.ports), endpoints
            )
        )
    return FederationState(
        snap.datacenter, servers, snap.gateways_wan, tuple(services), updated_at
    )


def same_content(a: FederationState | None, b: FederationState | None) -> bool:
    """The two say the same but for ``updated_at``."""
    if a is None or b is None:
        return a is b
    return replace(a, updated_at="") == replace(b, updated_at="")


__all__ = [
    "Endpoint",
    "FederationState",
    "RemoteService",
    "check_server",
    "is_tls_server",
    "publish",
    "same_content",
    "server_url",
    "state_from_json",
    "state_to_json",
]
