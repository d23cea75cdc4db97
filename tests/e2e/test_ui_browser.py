"""The web UI in a real headless chromium (Playwright) against a real server and real Envoy
sidecars on loopback: the seed's flow clicked through the UI (services with health, a deny
intention created in the UI makes the client's curl exit 52, deleting it lets curl through),
the Explain page for an allowed and a denied pair, a topology edge, a page following a
registration without a reload, and no page rendered blank.

Skipped with the reason when the playwright package or the system chromium is missing.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.test_mesh_loopback import Mesh
from tests.support.browser import Browser, browser_missing, drawn_fraction
from tests.support.mesh import curl, start_echo, wait_for
from tests.support.server import ServerProcess
from tests.support.server import acl_server as running_acl_server

MISSING = browser_missing()
pytestmark = [pytest.mark.envoy, pytest.mark.skipif(MISSING is not None, reason=MISSING or "")]
TIMEOUT_MS = 20_000
PAGES = ["services", "service/static-server", "intentions", "topology", "nodes", "config",
         "explain?source=static-client&destination=static-server"]  # fmt: skip
SHOTS = os.environ.get("LOOM_UI_SCREENSHOTS")
"""A directory to keep each page's screenshot in (docs/img, for docs/ui.md); unset: none."""


@pytest.fixture(scope="module")
def mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mesh]:
    m = Mesh(tmp_path_factory.mktemp("ui-mesh"))
    try:
        m.own(start_echo(m.tmp, "hello world", m.app_port, "a"))
        m.register()
        m.dataplane("static-server-sidecar-proxy")
        m.dataplane("static-client-sidecar-proxy")
        m.server.put("/v1/agent/service/register", {
            "Name": "ledger", "Port": 7000, "Tags": ["v2"],
            "Check": {"TTL": "300s", "Status": "critical", "Notes": "ledger's check"}})  # fmt: skip
        wait_for(lambda: curl(m.url())[1] == "hello world\n", 30, "hello world through the mesh")
        yield m
    finally:
        m.close()


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Browser]:
    b = Browser(tmp_path_factory.mktemp("chromium-profile"))
    try:
        yield b
    finally:
        b.close()


@pytest.fixture
def page(browser: Browser, mesh: Mesh) -> Iterator[Any]:
    p = browser.page()
    p.set_default_timeout(TIMEOUT_MS)
    try:
        yield p
    finally:
        p.close()
    assert browser.errors == [], "uncaught errors in the page"


def _open(page: Any, mesh: Mesh, route: str) -> None:
    page.goto(f"http://{mesh.server.http}/ui/#/{route}")


def _expect() -> Any:
    from playwright.sync_api import expect

    return expect


def test_services_are_listed_with_their_health_and_instances(page: Any, mesh: Mesh) -> None:
    expect = _expect()
    _open(page, mesh, "services")
    server = page.locator('tr[data-service="static-server"]')
    expect(server.locator(".instances")).to_have_text("1")
    expect(server).to_contain_text("in mesh")
    ledger = page.locator('tr[data-service="ledger"]')
    expect(ledger).to_have_class("status-critical")
    expect(ledger.locator(".health")).to_contain_text("1 critical")
    expect(ledger).to_contain_text("v2")
    expect(page.locator('tr[data-service="static-server-sidecar-proxy"]')).to_have_count(0)
    page.fill("#service-search", "ledg")
    expect(page.locator("#services-table tbody tr")).to_have_count(1)
    page.fill("#service-search", "")
    page.select_option("#service-status", "critical")
    expect(page.locator("#services-table tbody tr")).to_have_count(1)


def test_a_deny_intention_made_in_the_ui_fails_the_clients_curl_until_deleted_there(
    page: Any, mesh: Mesh
) -> None:
    expect = _expect()
    assert curl(mesh.url()) == (0, "hello world\n")
    _open(page, mesh, "intentions")
    expect(page.locator("#intentions")).to_contain_text("No intentions")
    page.fill("#intention-source", "static-client")
    page.fill("#intention-destination", "static-server")
    page.select_option("#intention-action", "deny")
    page.click("#intention-save")
    expect(page.locator("#intention-result")).to_contain_text("connections are now denied")
    row = page.locator('#intentions-table tr[data-source="static-client"]')
    expect(row).to_contain_text("deny")  # the list follows the write (a blocking query)
    wait_for(lambda: curl(mesh.url())[0] == 52, 10, "curl exit 52 under the UI's deny")
    row.locator("button.delete").click()
    expect(page.locator("#intentions")).to_contain_text("No intentions")
    wait_for(lambda: curl(mesh.url()) == (0, "hello world\n"), 10, "hello world again")


def test_explain_shows_an_allowed_pair_and_follows_a_deny_to_a_denied_one(
    page: Any, mesh: Mesh
) -> None:
    expect = _expect()
    _open(page, mesh, "explain?source=static-client&destination=static-server")
    verdict = page.locator(".verdict")
    expect(verdict).to_have_attribute("data-allowed", "true")
    expect(page.locator("#decided-by")).to_have_text("the default policy (allow)")
    expect(verdict).to_contain_text("explicit at 127.0.0.1:")
    expect(verdict).to_contain_text("default-allow")
    pair = "/v1/connect/intentions/exact?source=static-client&destination=static-server"
    mesh.server.put(pair, {"Action": "deny"})
    try:
        expect(verdict).to_have_attribute("data-allowed", "false")
        expect(page.locator("#decided-by")).to_contain_text(
            "intention static-client ⇒ static-server (deny), precedence 9, L4"
        )
        expect(verdict).to_contain_text("rejected")
        expect(verdict).not_to_contain_text("translator bug")
    finally:
        mesh.server.request("DELETE", pair)


def test_the_topology_draws_the_clients_upstream_as_an_allowed_edge(page: Any, mesh: Mesh) -> None:
    expect = _expect()
    _open(page, mesh, "topology")
    edge = page.locator('g.edge[data-source="static-client"][data-destination="static-server"]')
    expect(edge).to_have_attribute("data-allowed", "true")
    expect(edge).to_have_class("edge allowed upstream")
    expect(page.locator('g.node[data-service="ledger"]')).to_have_count(1)


def test_the_services_page_shows_a_new_registration_without_a_reload(page: Any, mesh: Mesh) -> None:
    expect = _expect()
    _open(page, mesh, "services")
    expect(page.locator('tr[data-service="static-server"]')).to_have_count(1)
    page.evaluate("window.loomNotReloaded = true")
    mesh.server.put("/v1/agent/service/register", {"Name": "newcomer", "Port": 7100})
    try:
        expect(page.locator('tr[data-service="newcomer"]')).to_have_count(1)
        assert page.evaluate("window.loomNotReloaded") is True
    finally:
        mesh.server.put("/v1/agent/service/deregister/newcomer")
    expect(page.locator('tr[data-service="newcomer"]')).to_have_count(0)


@pytest.mark.parametrize("route", PAGES)
def test_no_page_renders_blank(page: Any, mesh: Mesh, route: str) -> None:
    expect = _expect()
    page.set_viewport_size({"width": 1000, "height": 700})
    _open(page, mesh, route)
    expect(page.locator("main h1")).to_be_visible()
    expect(page.locator("main")).not_to_contain_text("Loading")
    expect(page.locator("#error")).to_be_hidden()
    shot = page.locator("main").screenshot()
    assert drawn_fraction(shot) > 0.01, f"the {route} page looks blank"
    if SHOTS:
        name = route.split("?")[0].replace("/", "-")
        page.screenshot(path=str(Path(SHOTS) / f"ui-{name}.png"))


ROOT = "5b0b3f4e-3c2a-4d7e-9a51-0c1f7f3e2a10"


@pytest.fixture(scope="module")
def acl_server() -> Iterator[ServerProcess]:
    with running_acl_server(ROOT) as s:
        status, _, _ = s.request(
            "PUT", "/v1/agent/service/register", {"Name": "vault-ish", "Port": 8200},
            {"X-Consul-Token": ROOT},
        )  # fmt: skip
        assert status == 200
        yield s


def test_a_token_logged_in_is_kept_for_the_tab_and_sent_as_x_consul_token(
    browser: Browser, acl_server: ServerProcess
) -> None:
    expect = _expect()
    page = browser.page()
    page.set_default_timeout(TIMEOUT_MS)
    sent: list[str] = []
    page.on("request", lambda r: sent.append(r.headers.get("x-consul-token", "")))
    try:
        page.goto(f"http://{acl_server.http}/ui/#/services")
        expect(page.locator("#services")).to_contain_text("No services registered")  # filtered
        page.fill("#token", ROOT)
        page.click("#login-button")
        expect(page.locator('tr[data-service="vault-ish"]')).to_have_count(1)
        assert page.evaluate("sessionStorage.getItem('loom.token')") == ROOT
        assert ROOT in sent
        page.click("#logout-button")
        expect(page.locator('tr[data-service="vault-ish"]')).to_have_count(0)
        assert page.evaluate("sessionStorage.getItem('loom.token')") is None
        page.fill("#token", "not-a-token")
        page.click("#login-button")
        expect(page.locator("#error")).to_contain_text("ACL not found")
    finally:
        page.evaluate("sessionStorage.clear()")
        page.close()
    assert browser.errors == []
