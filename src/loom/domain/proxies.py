"""The ``Proxy`` block of a registration: a sidecar's, and a mesh gateway's by its own rules.

Apart from ``loom.domain.services`` (which validates the rest of a registration and builds
its instances and checks) because a proxy's block is a body of rules of its own: upstreams
(no two on one local address and port), ``Expose`` paths, transparent proxy settings, the
``MeshGateway`` mode (which config entries parse too), and what Consul refuses of a mesh
gateway's block (destination fields, upstreams) and of its ``Config`` bind addresses.
"""

from __future__ import annotations

import ipaddress
import re
from typing import Any

from loom.domain.fields import (
    Fields,
    ValidationError,
    check_address,
    check_datacenter,
    check_lenient_name,
    check_namespace,
    refuse_in_mesh,
)
from loom.domain.records import (
    MESH_GATEWAY,
    MESH_GATEWAY_MODES,
    Expose,
    ExposedPath,
    Proxy,
    TransparentProxySettings,
    Upstream,
)

PROXY_MODES = ("", "direct", "transparent")


def mesh_gateway_mode(f: Fields) -> str:
    """A ``MeshGateway`` block's ``Mode`` (absent block: empty)."""
    mg = f.sub("MeshGateway")
    if mg is None:
        return ""
    mg.only(("Mode",))
    return mg.one_of("Mode", MESH_GATEWAY_MODES)


def _upstream(f: Fields) -> Upstream:
    dtype = f.one_of("DestinationType", ("", "service", "prepared_query"), "service") or "service"
    name = f.text("DestinationName", required=True)
    if dtype == "service":
        where = f.where("DestinationName")
        refuse_in_mesh(check_lenient_name(name, where), "an upstream", where)
    ns = f.text("DestinationNamespace")
    if ns:
        check_namespace(ns, f.where("DestinationNamespace"))
    dc = f.text("Datacenter")
    bind_port = f.port("LocalBindPort")
    if bind_port == 0 and not f.flag("CentrallyConfigured"):
        raise ValidationError(f"{f.where('LocalBindPort')}: is required for an upstream")
    return Upstream(
        destination_type=dtype,
        destination_name=name,
        destination_namespace=ns,
        datacenter=check_datacenter(dc, f.where("Datacenter")) if dc else "",
        local_bind_address=check_address(
            f.text("LocalBindAddress", "127.0.0.1"), f.where("LocalBindAddress")
        ),
        local_bind_port=bind_port,
        config=f.any_map("Config"),
        mesh_gateway=mesh_gateway_mode(f),
    )


def _expose(f: Fields | None) -> Expose:
    """Consul's ``Proxy.Expose``: plain-HTTP paths the sidecar serves for probes."""
    if f is None:
        return Expose()
    paths = []
    for p in f.subs("Paths"):
        listener = p.port("ListenerPort")
        local = p.port("LocalPathPort")
        if not listener or not local:
            raise ValidationError(f"{p.path}: ListenerPort and LocalPathPort are required")
        path = p.text("Path", "/") or "/"
        if not path.startswith("/"):
            raise ValidationError(f"{p.where('Path')}: {path!r} must start with '/'")
        protocol = p.one_of("Protocol", ("", "http", "http2")) or "http"
        paths.append(ExposedPath(listener, path, local, protocol))
    return Expose(f.flag("Checks"), tuple(paths))


def parse_proxy(f: Fields, defaults: Proxy | None = None) -> Proxy:
    d = defaults or Proxy("", "")
    tp = f.sub("TransparentProxy")
    return Proxy(
        destination_service_name=f.text("DestinationServiceName", d.destination_service_name),
        destination_service_id=f.text("DestinationServiceID", d.destination_service_id),
        local_service_address=check_address(
            f.text("LocalServiceAddress", d.local_service_address),
            f.where("LocalServiceAddress"),
        ),
        local_service_port=f.port("LocalServicePort", d.local_service_port),
        mode=f.one_of("Mode", PROXY_MODES),
        transparent_proxy=TransparentProxySettings(
            tp.port("OutboundListenerPort") if tp else 0,
            tp.flag("DialedDirectly") if tp else False,
        ),
        upstreams=_distinct_binds(f, tuple(_upstream(u) for u in f.subs("Upstreams"))),
        config=f.any_map("Config"),
        expose=_expose(f.sub("Expose")),
        mesh_gateway=mesh_gateway_mode(f),
    )


def _distinct_binds(f: Fields, upstreams: tuple[Upstream, ...]) -> tuple[Upstream, ...]:
    """Consul's rule: no two upstreams listen on one local address and port (centrally
    configured ones, without a port, have no listener of their own)."""
    seen: set[str] = set()
    for u in upstreams:
        if not u.local_bind_port:
            continue
        host = u.local_bind_address or "127.0.0.1"
        addr = f"[{host}]:{u.local_bind_port}" if ":" in host else f"{host}:{u.local_bind_port}"
        if addr in seen:
            raise ValidationError(
                f"{f.where('Upstreams')}: upstreams cannot contain duplicates by local bind "
                f'address and port; "{addr}" is specified twice'
            )
        seen.add(addr)
    return upstreams


GATEWAY_TAGS = ("lan", "wan")
"""A mesh gateway's tagged addresses: where this datacenter's sidecars reach it, and where
the other datacenters' gateways do."""


def gateway_proxy(f: Fields, proxy_f: Fields | None) -> Proxy:
    """A mesh gateway's ``Proxy`` block (``Config`` only) and its other fields, by Consul's
    rules for gateways. Every gateway gets a block, as Consul shows one for it."""
    if not f.port("Port"):
        raise ValidationError(f"{f.where('Port')}: Port must be non-zero for a {MESH_GATEWAY}")
    for tag in GATEWAY_TAGS:
        raw = f.any_map("TaggedAddresses").get(tag)
        sub = Fields(raw, f.where(f"TaggedAddresses.{tag}")) if raw is not None else None
        if sub is not None and not sub.port("Port"):
            raise ValidationError(f"{sub.where('Port')}: is required for a {MESH_GATEWAY}")
    proxy = parse_proxy(proxy_f) if proxy_f is not None else Proxy("", "")
    if proxy_f is not None:
        _bind_addresses(proxy.config, proxy_f.where("Config"))
    invalid = (
        ("DestinationServiceName", proxy.destination_service_name),
        ("DestinationServiceID", proxy.destination_service_id),
        ("LocalServiceAddress", proxy.local_service_address),
        ("LocalServicePort", proxy.local_service_port),
        ("Upstreams", proxy.upstreams),
    )
    for key, value in invalid:
        if value and proxy_f is not None:
            raise ValidationError(
                f"{proxy_f.where(key)}: The Proxy.{key} configuration is invalid for a "
                f"{MESH_GATEWAY}"
            )
    return proxy


BIND_ADDRESSES = ("envoy_gateway_bind_addresses", "envoy_mesh_gateway_bind_addresses")
"""Consul's ``Proxy.Config`` keys naming the addresses a gateway listens on."""


def _bind_addresses(config: dict[str, Any], where: str) -> None:
    """``{NAME: {"Address": ADDR, "Port": PORT}}`` (what ``loom.xds.view`` reads): a name Envoy
    can carry in a listener name, an IP address (a listener binds no host name), a port."""
    for key in BIND_ADDRESSES:
        if key not in config:
            continue
        named = config[key]
        if not isinstance(named, dict):
            raise ValidationError(f"{where}.{key}: expected an object of named addresses")
        for name, addr in named.items():
            at = f"{where}.{key}.{name}"
            if not re.fullmatch(r"[A-Za-z0-9_-]{1,64}", name):
                raise ValidationError(f"{at}: a name of letters, digits, '-' and '_'")
            sub = Fields(addr, at)
            host = sub.text("Address", required=True)
            try:
                ipaddress.ip_address(host)
            except ValueError:
                where_ = sub.where("Address")
                raise ValidationError(f"{where_}: {host!r} is not an IP address") from None
            if not sub.port("Port"):
                raise ValidationError(f"{sub.where('Port')}: is required")
