"""`loom local up --prometheus` (root, real Envoy, real Prometheus): the mesh shows its traffic.

A local mesh with the seed's pair (static-server over HTTP, static-client) and Debian's
Prometheus run by `up`: after some requests through both sidecars, Prometheus's HTTP API (on
the host's loopback, forwarded into the node namespace) answers non-zero request counts for
the pair, scraped from each pod's merged metrics endpoint; a pod that comes becomes a target
and one that goes is dropped; `down` stops Prometheus and its forwarder. Skipped with the
reason where the prometheus binary is missing.
"""

from __future__ import annotations

import json
import shutil
import urllib.parse
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest

from loom.api import HTTPStatusError
from loom.api.client import Client
from loom.local import prometheus
from loom.local.mesh import LocalMesh, LocalSettings
from loom.local.processes import alive
from tests.support.localmesh import curl, local_settings, seed_pair
from tests.support.mesh import free_port, wait_for

pytestmark = [
    pytest.mark.root,
    pytest.mark.envoy,
    pytest.mark.skipif(
        shutil.which("prometheus") is None,
        reason="no prometheus binary (Debian's prometheus; scripts/setup.sh installs it as root)",
    ),
]


def settings(tag: str = "lp", subnet: str = "10.241.0.0/16") -> LocalSettings:
    """A mesh of its own with ACLs default allow and Prometheus on."""
    return local_settings(tag, subnet, acl_default_policy="allow", prometheus=True,
                          prometheus_addr=f"127.0.0.1:{free_port()}")  # fmt: skip


def _http_defaults(m: LocalMesh) -> None:
    m.client().put("/v1/config", {"Kind": "service-defaults", "Name": "static-server",
                                  "Protocol": "http"})  # fmt: skip


@pytest.fixture(scope="module")
def mesh() -> Iterator[LocalMesh]:
    with seed_pair(settings(), before=_http_defaults) as m:
        yield m


def api(mesh: LocalMesh, path: str, **params: str) -> Any:
    url = f"http://{mesh.s.prometheus_addr}{path}?{urllib.parse.urlencode(params)}"
    with urllib.request.urlopen(url, timeout=5) as answer:
        body = json.loads(answer.read())
    assert body["status"] == "success", body
    return body["data"]


def value(mesh: LocalMesh, query: str) -> float:
    result = api(mesh, "/api/v1/query", query=query)["result"]
    return sum(float(r["value"][1]) for r in result)


def active(mesh: LocalMesh) -> dict[str, str]:
    """Pod -> health of each active target."""
    found = api(mesh, "/api/v1/targets", state="active")["activeTargets"]
    return {t["labels"]["pod"]: t["health"] for t in found}


def test_prometheus_counts_the_requests_from_static_client_to_static_server(
    mesh: LocalMesh,
) -> None:
    wait_for(lambda: curl(mesh, "static-client", "http://static-server/")[0] == 0, 20, "hello")
    for _ in range(5):
        assert curl(mesh, "static-client", "http://static-server/") == (0, "hello world\n")
    sent = 'envoy_cluster_upstream_rq_total{pod="static-client",envoy_cluster_name="static-server"}'
    received = (
        'envoy_http_downstream_rq_total{pod="static-server",'
        'envoy_http_conn_manager_prefix="public_listener"}'
    )
    wait_for(lambda: value(mesh, sent) >= 5, 60, "the client's requests scraped")
    wait_for(lambda: value(mesh, received) >= 5, 60, "the server's requests scraped")
    assert value(mesh, 'loom_dataplane_metrics_source_up{source="envoy"}') == 2


def test_a_pod_that_comes_becomes_a_target_and_one_that_goes_is_dropped(
    mesh: LocalMesh,
) -> None:
    assert wait_for(lambda: active(mesh).get("static-server") == "up", 60, "scraped")
    mesh.run("extra", [], {}, ["sleep", "3600"])
    try:
        wait_for(lambda: active(mesh).get("extra") == "up", 60, "the new pod scraped")
        entries = json.loads(prometheus.targets_file(mesh.s).read_text())
        extra = next(e for e in entries if e["labels"]["pod"] == "extra")
        rec = mesh.record("extra")
        assert rec is not None and extra["targets"] == [f"{rec['ip']}:20200"]
    finally:
        mesh.rm("extra")
    wait_for(lambda: "extra" not in active(mesh), 60, "the pod dropped")
    assert set(active(mesh)) == {"static-server", "static-client"}


def test_a_pod_annotated_without_metrics_is_not_a_target(mesh: LocalMesh) -> None:
    mesh.run("quiet", [], {"enable-metrics": "false"}, ["sleep", "3600"])
    try:
        rec = mesh.record("quiet")
        assert rec is not None and "metrics" not in rec
        pods = [e["labels"]["pod"] for e in json.loads(prometheus.targets_file(mesh.s).read_text())]
        assert pods == ["static-client", "static-server"]
    finally:
        mesh.rm("quiet")


def test_down_stops_prometheus_and_its_forwarder() -> None:
    m = LocalMesh(settings("lq", "10.240.0.0/16"))
    m.up()
    pids = json.loads((m.s.net.state_dir / "prometheus.json").read_text())
    assert api(m, "/api/v1/status/buildinfo")["version"]
    m.down()
    assert not any(alive(int(p)) for p in pids.values())
    with pytest.raises(OSError):
        urllib.request.urlopen(f"http://{m.s.prometheus_addr}/-/ready", timeout=2)
    state = m.s.net.state_dir
    if state.exists():
        state.rmdir()


def ui_metrics(mesh: LocalMesh, token: str | None = None) -> Any:
    client = mesh.client() if token is None else Client(mesh.s.http_addr, timeout=10, token=token)
    return client.request("GET", "/v1/loom/ui/metrics")


def test_the_uis_metrics_show_the_pairs_request_rate_per_service_and_per_edge(
    mesh: LocalMesh,
) -> None:
    def traffic() -> Any:
        assert curl(mesh, "static-client", "http://static-server/")[0] == 0
        doc = ui_metrics(mesh).body
        edges = [e for e in doc["Edges"] if e["Source"] == "static-client"]
        server = doc["Services"].get("static-server", {})
        # Envoy's histograms reach its stats at its flush (5 s), after the counters.
        timed = edges and server.get("P99Ms") is not None
        return doc if timed and server["RequestRate"] > 0 else None

    doc = wait_for(traffic, 60, "a request rate and p99 on static-server and its edge")
    assert doc["Provider"] == "prometheus"
    (edge,) = [e for e in doc["Edges"] if e["Source"] == "static-client"]
    assert edge["Destination"] == "static-server" and edge["RequestRate"] > 0
    assert edge["ErrorRate"] == 0
    # The client's transparent outbound is a TCP proxy: no request timings on its side.
    assert edge["P99Ms"] is None
    server = doc["Services"]["static-server"]
    assert server["ErrorRate"] == 0 and server["P99Ms"] > 0


def test_the_uis_metrics_hold_only_what_the_token_may_read(mesh: LocalMesh) -> None:
    admin = mesh.client()
    # The mesh's ACL default is allow: the token is denied static-server outright.
    rules = 'service "static-client" { policy = "read" }\nservice "static-server" { policy = "deny" }'
    admin.put("/v1/acl/policy", {"Name": "no-server", "Rules": rules})
    secret = admin.put("/v1/acl/token", {"Policies": [{"Name": "no-server"}]})["SecretID"]
    wait_for(lambda: "static-server" in ui_metrics(mesh).body["Services"], 60, "server metrics")
    answer = ui_metrics(mesh, secret)
    assert "static-server" not in answer.body["Services"]
    assert answer.body["Edges"] == []  # every edge here has static-server at one end
    assert answer.headers.get("x-consul-results-filtered-by-acls") == "true"
    with pytest.raises(HTTPStatusError) as refused:
        ui_metrics(mesh, "00000000-0000-4000-8000-000000000000")
    assert refused.value.status == 403
