"""Typed records of the control plane's state, in place of Consul-shaped dicts.

The core works on these; only two edges see another shape: the HTTP layer (``server.views``
and the request decoders of ``loom.domain``) speaks Consul's JSON, and the store layer
(``loom.store.tables``) encodes them to the documents kept on disk, byte for byte what was
stored before these types existed. A mistyped field is then a ``mypy --strict`` error, not a
``KeyError`` at run time.

Not yet typed (still documents): service instances and config entries (intentions live in
``service-intentions`` entries and are parsed by ``loom.domain.intentions``).
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Check:
    """A health check of an instance (``service_id``) or of its whole node (empty)."""

    node: str
    check_id: str
    name: str
    status: str
    """passing | warning | critical."""
    notes: str = ""
    output: str = ""
    service_id: str = ""
    service_name: str = ""
    namespace: str = "default"
    type: str = ""
    """``ttl`` for TTL checks, empty for static ones (set through the API)."""
    ttl: str = ""
    """The TTL as given (``30s``); empty: not a TTL check."""


@dataclass(frozen=True)
class Node:
    """A catalog node: where its instances run unless they name their own address."""

    node: str
    address: str
    datacenter: str
    id: str = ""
    tagged_addresses: dict[str, str] = field(default_factory=dict)
    meta: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class VirtualIp:
    """The virtual IP allocated to one service name in one namespace."""

    address: str


@dataclass(frozen=True)
class ExternalVips:
    """The virtual IPs allocated to one external-service host."""

    address: str
    """IPv4, from 240.240.0.0/16."""
    address6: str
    """IPv6, from fd00:f0f0::/96, with the same host number."""


@dataclass(frozen=True)
class CaRoot:
    """The persisted CA root: certificate, key and the trust domain it signs for."""

    cert_pem: str
    key_pem: str
    trust_domain: str


@dataclass(frozen=True)
class Cluster:
    """The cluster's identity, made on first start (names the trust domain)."""

    id: str
