"""Environment variables injected into the application containers.

For each explicit upstream every application container and each of the pod's own init
containers (as in consul-k8s; not Loom's connect-init) gets
``<NAME>_CONNECT_SERVICE_HOST=127.0.0.1`` and ``<NAME>_CONNECT_SERVICE_PORT=<local port>``
(as Kubernetes' own service variables, but pointing at the sidecar's local listener). A
variable the container already defines with the same name is replaced in place (the
annotation is the source of truth), so the list never holds a name twice.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from loom.inject.upstreams import UpstreamPlan


def upstream_env(upstreams: Sequence[UpstreamPlan]) -> list[tuple[str, str]]:
    """All (name, value) pairs, in upstream order."""
    return [pair for up in upstreams for pair in up.env()]


def add_env(container: dict[str, Any], pairs: Sequence[tuple[str, str]]) -> None:
    """Set each variable in ``container`` (mutated), replacing one of the same name."""
    if not pairs:
        return
    env = container.setdefault("env", [])
    index = {e.get("name"): i for i, e in enumerate(env) if isinstance(e, dict)}
    for name, value in pairs:
        item = {"name": name, "value": value}
        if name in index:
            env[index[name]] = item
        else:
            index[name] = len(env)
            env.append(item)


def downward_env() -> list[dict[str, Any]]:
    """POD_NAME and POD_NAMESPACE from the downward API (for connect-init and the sidecar)."""
    return [
        {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
        {"name": "POD_NAMESPACE", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
    ]
