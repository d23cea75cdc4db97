"""The web UI's metrics in a real headless chromium (root, real Envoy, real Prometheus).

A local mesh made by `up --prometheus` (its server has that Prometheus as the UI's metrics
provider) with the seed's pair over HTTP: while the client sends requests, the Services
page's Traffic column shows static-server's request rate and p99, and the Topology page
labels the static-client => static-server edge with its observed rate. Skipped with the
reason when the browser or the prometheus binary is missing.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from loom.local.mesh import LocalMesh
from tests.e2e.test_local_prometheus import settings
from tests.support.browser import Browser, browser_missing, drawn_fraction
from tests.support.mesh import wait_for

MISSING = browser_missing() or (
    "no prometheus binary (Debian's prometheus)" if shutil.which("prometheus") is None else None
)
pytestmark = [
    pytest.mark.root,
    pytest.mark.envoy,
    pytest.mark.skipif(MISSING is not None, reason=MISSING or ""),
]
ECHO = [sys.executable, "-m", "loom", "http-echo"]
SHOTS = os.environ.get("LOOM_UI_SCREENSHOTS")
LOOP = "while true; do curl -s -o /dev/null -m 2 http://static-server/; sleep 0.2; done"


@pytest.fixture(scope="module")
def mesh() -> Iterator[LocalMesh]:
    m = LocalMesh(settings("lw", "10.236.0.0/16"))
    state = m.s.net.state_dir
    try:
        m.up()
        m.client().put("/v1/config", {"Kind": "service-defaults", "Name": "static-server",
                                      "Protocol": "http"})  # fmt: skip
        m.run("static-server", [8080], {}, [*ECHO, "-text", "hello world", "-listen", ":8080"])
        # The client's app sends requests all along, so the rates stay live.
        m.run("static-client", [], {}, ["sh", "-c", LOOP])
        yield m
    finally:
        m.down()
        if state.exists():
            state.rmdir()


@pytest.fixture
def page(tmp_path_factory: pytest.TempPathFactory, mesh: LocalMesh) -> Iterator[Any]:
    b = Browser(tmp_path_factory.mktemp("chromium-profile"))
    try:
        p = b.page()
        p.set_default_timeout(20_000)
        yield p
        assert b.errors == [], "uncaught errors in the page"
    finally:
        b.close()


def requests_seen(mesh: LocalMesh) -> bool:
    """Whether the metrics endpoint sees the client's requests on the edge and the server
    (plain urllib: Playwright's sync API runs an event loop the API client would need)."""
    request = urllib.request.Request(
        f"http://{mesh.s.http_addr}/v1/loom/ui/metrics",
        headers={"X-Consul-Token": mesh.s.token_file.read_text().strip()},
    )
    with urllib.request.urlopen(request, timeout=10) as answer:
        doc = json.loads(answer.read())
    server = doc["Services"].get("static-server") or {}
    return bool(doc["Edges"]) and server.get("P99Ms") is not None


def test_services_and_topology_show_the_pairs_live_request_rate(page: Any, mesh: LocalMesh) -> None:
    from playwright.sync_api import expect

    wait_for(lambda: requests_seen(mesh), 90, "requests seen by the metrics endpoint")
    page.goto(f"http://{mesh.s.http_addr}/ui/#/services")
    cell = page.locator('tr[data-service="static-server"] td.traffic')
    expect(cell).to_contain_text("req/s")
    expect(cell).to_contain_text("p99")
    assert float(cell.get_attribute("data-rate")) > 0
    shot("services-metrics", page)
    page.goto(f"http://{mesh.s.http_addr}/ui/#/topology")
    edge = page.locator(
        'g.edge.observed[data-source="static-client"][data-destination="static-server"]'
    )
    expect(edge.locator("text.traffic")).to_contain_text("req/s")
    assert float(edge.get_attribute("data-rate")) > 0
    shot("topology-metrics", page)


def shot(name: str, page: Any) -> None:
    """The page is not blank; kept in LOOM_UI_SCREENSHOTS (docs/img) when that is set."""
    assert drawn_fraction(page.screenshot()) > 0.01, f"the {name} page looks blank"
    if SHOTS:
        page.screenshot(path=str(Path(SHOTS) / f"ui-{name}.png"))
