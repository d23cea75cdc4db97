"""The ``consul.hashicorp.com/*`` annotation names and their strict value parsers.

Every annotation the injector reads or writes is named here once, so the planner, the
mutation modules, ``loom local`` and the documentation agree on spelling. The parsers turn an
annotation's text into a typed value or raise ``InjectionRefused`` naming the annotation and
quoting the value: a typo never silently changes what gets injected.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Mapping

from loom.inject.errors import InjectionRefused

PREFIX = "consul.hashicorp.com/"

# Read from the pod (template).
CONNECT_INJECT = PREFIX + "connect-inject"
CONNECT_SERVICE = PREFIX + "connect-service"
CONNECT_SERVICE_PORT = PREFIX + "connect-service-port"
CONNECT_SERVICE_UPSTREAMS = PREFIX + "connect-service-upstreams"
CONNECT_SERVICE_PROTOCOL = PREFIX + "connect-service-protocol"
ENVOY_EXTRA_ARGS = PREFIX + "envoy-extra-args"
SERVICE_TAGS = PREFIX + "service-tags"
SERVICE_META_PREFIX = PREFIX + "service-meta-"
SIDECAR_CPU_LIMIT = PREFIX + "sidecar-proxy-cpu-limit"
SIDECAR_CPU_REQUEST = PREFIX + "sidecar-proxy-cpu-request"
SIDECAR_MEMORY_LIMIT = PREFIX + "sidecar-proxy-memory-limit"
SIDECAR_MEMORY_REQUEST = PREFIX + "sidecar-proxy-memory-request"
TRANSPARENT_PROXY = PREFIX + "transparent-proxy"
OVERWRITE_PROBES = PREFIX + "transparent-proxy-overwrite-probes"
EXCLUDE_INBOUND_PORTS = PREFIX + "transparent-proxy-exclude-inbound-ports"
EXCLUDE_OUTBOUND_PORTS = PREFIX + "transparent-proxy-exclude-outbound-ports"
EXCLUDE_OUTBOUND_CIDRS = PREFIX + "transparent-proxy-exclude-outbound-cidrs"
EXCLUDE_UIDS = PREFIX + "transparent-proxy-exclude-uids"
ENABLE_METRICS = PREFIX + "enable-metrics"
ENABLE_METRICS_MERGING = PREFIX + "enable-metrics-merging"
PROMETHEUS_SCRAPE_PORT = PREFIX + "prometheus-scrape-port"
PROMETHEUS_SCRAPE_PATH = PREFIX + "prometheus-scrape-path"
SERVICE_METRICS_PORT = PREFIX + "service-metrics-port"
SERVICE_METRICS_PATH = PREFIX + "service-metrics-path"

READ = (
    CONNECT_INJECT, CONNECT_SERVICE, CONNECT_SERVICE_PORT, CONNECT_SERVICE_UPSTREAMS,
    CONNECT_SERVICE_PROTOCOL, ENVOY_EXTRA_ARGS, SERVICE_TAGS, SIDECAR_CPU_LIMIT,
    SIDECAR_CPU_REQUEST, SIDECAR_MEMORY_LIMIT, SIDECAR_MEMORY_REQUEST, TRANSPARENT_PROXY,
    OVERWRITE_PROBES, EXCLUDE_INBOUND_PORTS, EXCLUDE_OUTBOUND_PORTS, EXCLUDE_OUTBOUND_CIDRS,
    EXCLUDE_UIDS, ENABLE_METRICS, ENABLE_METRICS_MERGING, PROMETHEUS_SCRAPE_PORT,
    PROMETHEUS_SCRAPE_PATH, SERVICE_METRICS_PORT, SERVICE_METRICS_PATH,
)  # fmt: skip
"""The annotations a pod's author writes and the injector reads (``SERVICE_META_PREFIX`` keys
aside); ``tests/unit/test_annotations_lint.py`` fails on a ``PREFIX`` name above missing here."""

# Read from the Namespace's labels.
NAMESPACE_TRANSPARENT_PROXY_LABEL = TRANSPARENT_PROXY

# Written on the injected pod.
INJECT_STATUS = PREFIX + "connect-inject-status"
INJECT_STATUS_INJECTED = "injected"
MANAGED_BY = PREFIX + "connect-inject-managed-by"
MANAGED_BY_VALUE = "loom-k8s-controller"
ORIGINAL_POD = PREFIX + "original-pod"
TRANSPARENT_PROXY_STATUS = PREFIX + "transparent-proxy-status"
TRANSPARENT_PROXY_ENABLED = "enabled"
CONSUL_NAMESPACE = PREFIX + "consul-namespace"
SERVICE_NAME = PREFIX + "service-name"
"""Read at login (``loom k8s connect-init``), not by injection."""
WRITTEN = (
    INJECT_STATUS, MANAGED_BY, ORIGINAL_POD, TRANSPARENT_PROXY_STATUS, CONSUL_NAMESPACE,
    SERVICE_NAME,
)  # fmt: skip
"""Annotations the injector writes, and ``service-name``: known, but not the pod author's."""
# Prometheus's conventional scrape annotations (written when metrics are on).
PROMETHEUS_SCRAPE = "prometheus.io/scrape"
PROMETHEUS_PORT = "prometheus.io/port"
PROMETHEUS_PATH = "prometheus.io/path"

# Go's strconv.ParseBool spellings, so manifests written for Consul keep working; nothing else.
_TRUE = frozenset({"1", "t", "T", "TRUE", "true", "True"})
_FALSE = frozenset({"0", "f", "F", "FALSE", "false", "False"})

# A Kubernetes resource quantity ("100m", "128Mi", "0.5", "1e3").
QUANTITY = re.compile(r"^[+]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+|[munkMGTPE]|[KMGTPE]i)?$")
# A Consul service or namespace name: letters, digits, '-', '_' ; starts alphanumeric.
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]*$")
_PROTOCOLS = ("grpc", "http", "http2", "tcp")


def text(annotations: Mapping[str, object], key: str) -> str | None:
    """The annotation's value, or None when absent; a non-string value is refused."""
    if key not in annotations:
        return None
    value = annotations[key]
    if not isinstance(value, str):
        raise InjectionRefused(
            key, value, "annotation values must be strings (quote it in YAML, e.g. 'true')"
        )
    return value


def parse_bool(key: str, value: str) -> bool:
    """``true``/``false`` (and Go's ParseBool spellings); anything else is refused."""
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise InjectionRefused(key, value, 'not a boolean: use "true" or "false"')


def parse_port(key: str, value: str, item: str | None = None) -> int:
    """A TCP port number 1-65535: ``item`` (one entry of the annotation ``value``) or all."""
    item = (value if item is None else item).strip()
    if not item.isdigit() or not 0 < int(item) < 65536:
        raise InjectionRefused(key, value, f"{item!r} is not a port number (1-65535)")
    return int(item)


def split_list(value: str) -> tuple[str, ...]:
    """A comma-separated annotation: items stripped, empty items (trailing commas) dropped."""
    return tuple(item.strip() for item in value.split(",") if item.strip())


def parse_ports(key: str, value: str) -> tuple[int, ...]:
    """A comma-separated list of port numbers."""
    return tuple(parse_port(key, value, item) for item in split_list(value))


def parse_uids(key: str, value: str) -> tuple[int, ...]:
    """A comma-separated list of numeric user IDs (their range is ``RedirectConfig``'s)."""
    items = split_list(value)
    for item in items:
        if not (item.isascii() and item.isdigit()):
            raise InjectionRefused(key, value, f"{item!r} is not a numeric user ID")
    return tuple(int(item) for item in items)


def parse_path(key: str, value: str) -> str:
    """An HTTP path: starts with ``/``, no spaces."""
    if not value.startswith("/") or any(c.isspace() for c in value):
        raise InjectionRefused(key, value, "not an HTTP path (starts with /, no spaces)")
    return value


def parse_quantity(key: str, value: str) -> str:
    """A Kubernetes resource quantity such as ``100m`` or ``128Mi``."""
    if not QUANTITY.match(value.strip()):
        raise InjectionRefused(key, value, "not a Kubernetes quantity (e.g. 100m, 0.5, 128Mi)")
    return value.strip()


def parse_name(key: str, value: str, item: str, what: str = "service name") -> str:
    """A Consul service (or namespace) name."""
    if not _NAME.match(item):
        raise InjectionRefused(
            key, value, f"{item!r} is not a valid {what} (letters, digits, '-', '_')"
        )
    return item


def parse_protocol(key: str, value: str) -> str:
    """One of Consul's service protocols."""
    if value not in _PROTOCOLS:
        raise InjectionRefused(key, value, f"unknown protocol: use one of {', '.join(_PROTOCOLS)}")
    return value


def parse_args(key: str, value: str) -> tuple[str, ...]:
    """A shell-like argument string (``--log-level debug --disable-hot-restart``)."""
    try:
        return tuple(shlex.split(value))
    except ValueError as exc:
        raise InjectionRefused(key, value, f"cannot split into arguments: {exc}") from None


def service_meta(annotations: Mapping[str, object]) -> tuple[tuple[str, str], ...]:
    """``service-meta-<key>: value`` annotations as sorted (key, value) pairs."""
    pairs = []
    for key in sorted(annotations):
        if key.startswith(SERVICE_META_PREFIX):
            meta_key = key[len(SERVICE_META_PREFIX) :]
            value = text(annotations, key)
            if not meta_key:
                raise InjectionRefused(key, value, "the meta key after 'service-meta-' is empty")
            assert value is not None
            pairs.append((meta_key, value))
    return tuple(pairs)
