"""The dataplane's merged Prometheus endpoint with real Envoy on loopback: Envoy's stats
(non-zero connection counts for the seed's pair once the client has called the server), the
agent's own, and the app's metrics merged in; an app that stops answering is reported down
and the scrape still succeeds."""

from __future__ import annotations

import re
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.test_mesh_loopback import Mesh
from tests.support.mesh import Proc, connects, curl, free_port, start_echo, wait_for

pytestmark = pytest.mark.envoy


class MetricsMesh(Mesh):
    metrics_port: int
    app_metrics: Proc


@pytest.fixture(scope="module")
def mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MetricsMesh]:
    m = MetricsMesh(tmp_path_factory.mktemp("metrics-mesh"))
    try:
        m.own(start_echo(m.tmp, "hello world", m.app_port, "a"))
        site = m.tmp / "app-metrics"
        site.mkdir()
        (site / "metrics").write_text("# TYPE app_requests_total counter\napp_requests_total 7\n")
        app_port = free_port()
        m.app_metrics = m.own(Proc(
            [sys.executable, "-m", "http.server", str(app_port), "--bind", "127.0.0.1",
             "--directory", str(site)], m.tmp / "app-metrics.log"))  # fmt: skip
        wait_for(lambda: connects(app_port), 10, "the app's metrics server")
        m.register()
        m.metrics_port = free_port()
        m.dataplane("static-server-sidecar-proxy")
        m.dataplane(
            "static-client-sidecar-proxy",
            "--metrics-bind", f"127.0.0.1:{m.metrics_port}",
            "--service-metrics-url", f"http://127.0.0.1:{app_port}/metrics",
        )  # fmt: skip
        wait_for(lambda: curl(m.url())[1] == "hello world\n", 30, "hello world through the mesh")
        yield m
    finally:
        m.close()


def _scrape(mesh: MetricsMesh) -> str:
    url = f"http://127.0.0.1:{mesh.metrics_port}/metrics"
    with urllib.request.urlopen(url, timeout=10) as resp:
        assert resp.headers["Content-Type"].startswith("text/plain; version=0.0.4")
        return str(resp.read().decode())


def _connections_to_server(text: str) -> int:
    """The client's connections to static-server: one family for every cluster, the service,
    namespace and datacenter as labels (the bootstrap's stats tags), no trust domain in the
    metric's name."""
    found = re.findall(
        r'^envoy_cluster_upstream_cx_total\{envoy_cluster_name="static-server",'
        r'consul_destination_namespace="default",consul_destination_datacenter="dc1"\} (\d+)$',
        text,
        re.M,
    )
    assert len(found) == 1, "one series for the static-server upstream"
    return int(found[0])


def test_one_scrape_holds_envoys_stats_the_agents_own_and_the_apps(mesh: MetricsMesh) -> None:
    # Envoy may carry traffic a moment before the agent has seen it ready.
    def ready() -> str | None:
        text = _scrape(mesh)
        return text if "\nloom_dataplane_envoy_ready 1\n" in text else None

    text = wait_for(ready, 10, "the agent's ready gauge")
    assert re.search(r"^envoy_server_live(\{[^}]*\})? 1$", text, re.M)
    assert not re.search(r"^envoy_\w*_consul_", text, re.M), "a trust domain in a metric's name"
    assert (
        'loom_dataplane_info{proxy_id="static-client-sidecar-proxy",service="static-client"} 1'
        in text
    )
    assert "\napp_requests_total 7\n" in text
    for source in ("envoy", "agent", "app"):
        assert f'loom_dataplane_metrics_source_up{{source="{source}"}} 1' in text


def test_the_seeds_pair_shows_non_zero_connection_counts(mesh: MetricsMesh) -> None:
    before = _connections_to_server(_scrape(mesh))
    for _ in range(3):
        assert curl(mesh.url()) == (0, "hello world\n")
    wait_for(lambda: _connections_to_server(_scrape(mesh)) >= before + 3, 10, "3 more connections")
    assert before >= 1  # the fixture's own call


def test_an_app_that_stops_answering_is_reported_down_and_the_scrape_still_works(
    mesh: MetricsMesh,
) -> None:
    mesh.app_metrics.stop()
    text = _scrape(mesh)
    assert 'loom_dataplane_metrics_source_up{source="app"} 0' in text
    assert "app_requests_total" not in text
    assert "envoy_server_live" in text


def test_service_metrics_without_a_metrics_bind_is_refused(tmp_path: Path) -> None:
    import subprocess

    done = subprocess.run(
        [sys.executable, "-m", "loom", "dataplane", "--proxy-id", "x",
         "--service-metrics-url", "http://127.0.0.1:1/metrics"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode != 0
    assert "--service-metrics-url needs --metrics-bind" in done.stderr
