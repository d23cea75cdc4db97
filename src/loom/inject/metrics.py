"""Prometheus metrics of an injected pod, as consul-k8s's ``enable-metrics`` annotations ask.

With metrics on (``consul.hashicorp.com/enable-metrics``, else ``connectInject.metrics.
defaultEnabled``) the first sidecar serves Envoy's and its agent's metrics on the scrape port
(``prometheus-scrape-port``, 20200) and path (``prometheus-scrape-path``, /metrics), and the
pod is annotated ``prometheus.io/scrape: "true"``, ``prometheus.io/port`` and
``prometheus.io/path`` so an annotation-driven Prometheus finds it. With merging on
(``enable-metrics-merging``, else ``defaultEnableMerging``) the app's own metrics, at
``service-metrics-port`` (default: the service's port) and ``service-metrics-path``
(default /metrics) on the pod's loopback, are merged into that one endpoint. The scrape port
is excluded from inbound redirection, so Prometheus reaches it directly under transparent
proxy. Multi-port pods get metrics on their first sidecar only (one scrape target per pod).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from loom.inject import annotations as ann
from loom.inject.errors import InjectionRefused
from loom.inject.settings import MetricsDefaults


@dataclass(frozen=True)
class MetricsPlan:
    scrape_port: int
    """Where the first sidecar serves the (merged) metrics, on every pod address."""
    scrape_path: str
    service_metrics_url: str | None
    """``http://127.0.0.1:PORT/PATH`` of the app's metrics, merged in; None: not merged."""


def _flag(annotations: Mapping[str, object], key: str, default: bool) -> bool:
    value = ann.text(annotations, key)
    return default if value is None else ann.parse_bool(key, value)


def plan_metrics(
    annotations: Mapping[str, object], service_port: int | None, defaults: MetricsDefaults
) -> tuple[MetricsPlan | None, tuple[str, ...]]:
    """The metrics plan (None: metrics off) and the reasons for it."""
    enabled = _flag(annotations, ann.ENABLE_METRICS, defaults.enabled)
    merging = _flag(annotations, ann.ENABLE_METRICS_MERGING, defaults.merging)
    if not enabled:
        if merging and ann.text(annotations, ann.ENABLE_METRICS_MERGING) is not None:
            raise InjectionRefused(
                ann.ENABLE_METRICS_MERGING,
                ann.text(annotations, ann.ENABLE_METRICS_MERGING),
                f'metrics merging needs metrics: set {ann.ENABLE_METRICS}: "true"',
            )
        return None, ()
    port_text = ann.text(annotations, ann.PROMETHEUS_SCRAPE_PORT)
    port = (
        ann.parse_port(ann.PROMETHEUS_SCRAPE_PORT, port_text)
        if port_text is not None
        else defaults.scrape_port
    )
    path_text = ann.text(annotations, ann.PROMETHEUS_SCRAPE_PATH)
    path = (
        ann.parse_path(ann.PROMETHEUS_SCRAPE_PATH, path_text)
        if path_text is not None
        else defaults.scrape_path
    )
    reasons = [f"metrics on :{port}{path}"]
    url = None
    if merging:
        app_port_text = ann.text(annotations, ann.SERVICE_METRICS_PORT)
        app_port = (
            ann.parse_port(ann.SERVICE_METRICS_PORT, app_port_text)
            if app_port_text is not None
            else service_port
        )
        app_path_text = ann.text(annotations, ann.SERVICE_METRICS_PATH)
        app_path = (
            ann.parse_path(ann.SERVICE_METRICS_PATH, app_path_text)
            if app_path_text is not None
            else "/metrics"
        )
        if app_port is None:
            reasons.append("no app metrics merged: the pod serves no port")
        elif app_port == port:
            raise InjectionRefused(
                ann.SERVICE_METRICS_PORT,
                str(app_port),
                f"the app's metrics port is the scrape port {port}: set "
                f"{ann.PROMETHEUS_SCRAPE_PORT} to another port",
            )
        else:
            url = f"http://127.0.0.1:{app_port}{app_path}"
            reasons.append(f"the app's metrics at {url} merged in")
    return MetricsPlan(port, path, url), tuple(reasons)


def dataplane_args(plan: MetricsPlan) -> list[str]:
    """The sidecar's flags serving ``plan``."""
    args = [f"--metrics-bind=0.0.0.0:{plan.scrape_port}", f"--metrics-path={plan.scrape_path}"]
    if plan.service_metrics_url is not None:
        args.append(f"--service-metrics-url={plan.service_metrics_url}")
    return args


def scrape_annotations(plan: MetricsPlan) -> dict[str, str]:
    """The ``prometheus.io/*`` annotations pointing Prometheus at the sidecar."""
    return {
        ann.PROMETHEUS_SCRAPE: "true",
        ann.PROMETHEUS_PORT: str(plan.scrape_port),
        ann.PROMETHEUS_PATH: plan.scrape_path,
    }
