"""Reading a Helm-style values file at the edge, for every Kubernetes front-end.

``loom inject``, ``loom k8s webhook`` and ``loom install`` accept the same ``--values`` file:
the injector's keys (``InjectSettings``) plus the install-only keys listed here, so one file
describes an installation. File and YAML errors become one-line ``SettingsError``s.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from loom.inject import InjectSettings, SettingsError

INSTALL_KEYS = (
    "global.name",
    "global.namespace",
    "connectInject.replicas",
    "connectInject.failurePolicy",
    "connectInject.certs.secretName",
    "connectInject.certs.caBundle",
    "connectInject.webhookUrl",
    "connectInject.certs.certManager",
    "controller.replicas",
    "controller.crds.install",
    "global.datacenter",
    "server.enabled",
    "server.replicas",
    "server.storage",
    "server.storageClass",
    "server.etcdEndpoints",
    "server.resources.requests.cpu",
    "server.resources.requests.memory",
    "server.resources.limits.cpu",
    "server.resources.limits.memory",
    "dns.enabled",
    "connectInject.resources.requests.cpu",
    "connectInject.resources.requests.memory",
    "connectInject.resources.limits.cpu",
    "connectInject.resources.limits.memory",
)
"""Keys read only by ``loom install`` (accepted, not read, by the injector)."""


def parse_values(text: str, source: str = "values") -> dict[str, Any]:
    """The values document in ``text`` (empty text: no values)."""
    try:
        values = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark else ""
        raise SettingsError(
            f"{source}:{where} malformed YAML: {getattr(exc, 'problem', exc)}"
        ) from None
    if values is None:
        return {}
    if not isinstance(values, dict):
        raise SettingsError(f"{source}: expected a mapping of keys, got {type(values).__name__}")
    return values


def read_values(path: str | None) -> dict[str, Any]:
    """The values file at ``path`` (None: no file, all defaults)."""
    if path is None:
        return {}
    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise SettingsError(f"{path}: cannot read values file: {exc.strerror}") from None
    return parse_values(text, path)


def settings_from(values: dict[str, Any]) -> InjectSettings:
    """Injector settings of a values document that may also hold install keys."""
    return InjectSettings.from_values(values, extra_keys=INSTALL_KEYS)
