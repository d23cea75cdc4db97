"""Values of the derived mesh shared by its consumers (xDS inputs and the DNS name table).

One definition each, so the snapshot the control plane builds, the inputs it hands the xDS
translators and the table a DNS proxy parses all speak of the same things.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Endpoint:
    """A reachable address of a service: for the mesh, a healthy sidecar's public listener."""

    address: str
    port: int


@dataclass(frozen=True)
class ExternalHost:
    """A host outside the mesh registered by an ``external-service`` entry.

    The DNS proxy answers it with its VIPs; a transparent proxy's outbound listener routes
    ``VIP:port`` to it. Wildcard hosts (``*.example.com``) get no VIP."""

    host: str
    service: str
    """The ``external-service`` entry naming it."""
    namespace: str
    virtual_ips: tuple[str, ...]
    """Its IPv4 and IPv6 VIPs (240.240.0.0/16, fd00:f0f0::/96); empty: none allocated."""
    ports: tuple[int, ...] = ()
    """The entry's ports (what the outbound listener matches); the DNS table omits them."""
