"""HTTP probes under transparent proxy: point them at the sidecar's expose listeners.

With traffic redirection, kubelet's probe would land on the sidecar's mTLS inbound listener
and fail. With ``transparent-proxy-overwrite-probes``, each application container's HTTP
liveness, readiness and startup probes are moved to per-container ports (20300 + i, 20400 + i,
20500 + i, i the container's index) that the sidecar serves in plain HTTP and forwards to the
probe's original port and path (Consul's ``Proxy.Expose.Paths``). Those ports are also
excluded from inbound redirection so kubelet reaches them directly.

``plan_expose_paths`` is pure planning (what moves where); ``rewrite_probes`` applies it to a
copy of the pod.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from loom.inject.annotations import OVERWRITE_PROBES
from loom.inject.errors import InjectionRefused

PROBE_BASE_PORTS = (("livenessProbe", 20300), ("readinessProbe", 20400), ("startupProbe", 20500))
"""Probe field and the first expose port of its kind (Consul's ranges)."""


@dataclass(frozen=True)
class ExposedProbe:
    """One probe moved to the sidecar: kubelet calls ``listener_port``, Envoy forwards."""

    container: str
    """Application container whose probe this is."""
    probe: str
    """``livenessProbe``, ``readinessProbe`` or ``startupProbe``."""
    listener_port: int
    """Port the sidecar listens on (plain HTTP, pod IP) for this probe."""
    path: str
    """HTTP path of the probe."""
    local_path_port: int
    """The application's port the probe originally targeted."""

    def to_registration(self) -> dict[str, object]:
        """As one of Consul's ``Proxy.Expose.Paths`` entries."""
        return {
            "ListenerPort": self.listener_port,
            "LocalPathPort": self.local_path_port,
            "Path": self.path,
            "Protocol": "http",
        }


def plan_expose_paths(
    containers: Sequence[Mapping[str, Any]],
) -> tuple[tuple[ExposedProbe, ...], tuple[str, ...]]:
    """Expose paths for every HTTP probe of the application containers, plus notes on the
    probes left alone (HTTPS, exec, TCP, gRPC)."""
    paths: list[ExposedProbe] = []
    notes: list[str] = []
    for index, container in enumerate(containers):
        name = str(container.get("name", ""))
        for probe, base in PROBE_BASE_PORTS:
            spec = container.get(probe)
            if not (type(spec) is dict or isinstance(spec, Mapping)):
                continue
            http = spec.get("httpGet")
            if not (type(http) is dict or isinstance(http, Mapping)):
                continue
            if str(http.get("scheme", "HTTP")).upper() != "HTTP":
                notes.append(f"{name}.{probe} uses HTTPS: not rewritten")
                continue
            port = _resolve_port(container, http.get("port"))
            paths.append(ExposedProbe(name, probe, base + index, str(http.get("path", "/")), port))
    return tuple(paths), tuple(notes)


def rewrite_probes(containers: list[dict[str, Any]], paths: Sequence[ExposedProbe]) -> None:
    """Point each planned probe of ``containers`` (mutated in place) at its expose port."""
    by_key = {(p.container, p.probe): p for p in paths}
    for container in containers:
        for probe, _ in PROBE_BASE_PORTS:
            path = by_key.get((str(container.get("name", "")), probe))
            if path is not None:
                container[probe]["httpGet"]["port"] = path.listener_port


def _resolve_port(container: Mapping[str, Any], port: object) -> int:
    name = container.get("name", "")
    if isinstance(port, int) and not isinstance(port, bool) and 0 < port < 65536:
        return port
    if isinstance(port, str):
        if port.isdigit() and 0 < int(port) < 65536:
            return int(port)
        for declared in container.get("ports") or ():
            if isinstance(declared, Mapping) and declared.get("name") == port:
                number = declared.get("containerPort")
                if isinstance(number, int):
                    return number
    raise InjectionRefused(
        OVERWRITE_PROBES,
        "true",
        f"container {name!r} has an HTTP probe on port {port!r}, "
        "which is neither a number nor one of its named ports",
    )
