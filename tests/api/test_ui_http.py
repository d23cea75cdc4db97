"""``loom server`` serves the web UI at ``/ui/`` and redirects ``/`` there (as Consul does);
``--ui=false`` and ``--no-ui`` turn both off. Only files of the static directory are served."""

from __future__ import annotations

import http.client
from collections.abc import Iterator
from pathlib import Path

import pytest

from loom.server.ui_http import static_file
from loom.ui import STATIC
from tests.support.server import ServerProcess, start_server


@pytest.fixture(scope="module")
def server() -> Iterator[ServerProcess]:
    s = start_server()
    try:
        yield s
    finally:
        s.stop()


def _get(server: ServerProcess, path: str) -> tuple[int, dict[str, str], bytes]:
    host, port = server.http.rsplit(":", 1)
    conn = http.client.HTTPConnection(host, int(port), timeout=10)
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
    finally:
        conn.close()


def test_the_ui_page_is_served_with_a_strict_content_security_policy(server: ServerProcess) -> None:
    status, headers, body = _get(server, "/ui/")
    assert status == 200 and headers["content-type"].startswith("text/html")
    assert b'<script type="module" src="app.js">' in body
    assert "default-src 'self'" in headers["content-security-policy"]
    assert "frame-ancestors 'none'" in headers["content-security-policy"]


def test_every_module_the_page_imports_is_served_as_javascript(server: ServerProcess) -> None:
    for path in ["app.js", "api.js", "dom.js", "model.js", "style.css", "pages/topology.js"]:
        status, headers, _ = _get(server, f"/ui/{path}")
        assert status == 200, path
        want = "text/css" if path.endswith(".css") else "text/javascript"
        assert headers["content-type"].startswith(want), path


def test_the_root_redirects_to_the_ui(server: ServerProcess) -> None:
    for path in ("/", "/ui"):
        status, headers, _ = _get(server, path)
        assert (status, headers["location"]) == (301, "/ui/")


def test_no_file_outside_the_static_directory_is_served(server: ServerProcess) -> None:
    for path in ("/ui/../__init__.py", "/ui/%2e%2e/__init__.py", "/ui/missing.js", "/ui/pages",
                 "/ui/%00", "/ui/app.js%00.css"):
        status, _, body = _get(server, path)
        assert status == 404, (path, body)
    assert static_file(STATIC, "../__init__.py") is None
    assert static_file(STATIC, "/etc/passwd") is None
    assert static_file(STATIC, "app.js\x00") is None  # a 500 (ValueError) before
    assert static_file(STATIC, "") == STATIC / "index.html"


def test_the_package_ships_the_static_files() -> None:
    shipped = {p.relative_to(STATIC).as_posix() for p in STATIC.rglob("*") if p.is_file()}
    assert {"index.html", "app.js", "style.css", "pages/explain.js"} <= shipped
    assert Path(STATIC, "index.html").read_text().startswith("<!doctype html>")


@pytest.mark.parametrize("flag", ["--ui=false", "--no-ui"])
def test_the_ui_can_be_turned_off(flag: str) -> None:
    s = start_server(flag)
    try:
        assert not any("web UI" in line for line in s.ready_lines)
        for path in ("/", "/ui/"):
            assert _get(s, path)[0] == 404
        assert _get(s, "/v1/catalog/services")[0] == 200
    finally:
        s.stop()


def test_the_ready_lines_say_where_the_ui_is(server: ServerProcess) -> None:
    assert f"loom server: web UI on http://{server.http}/ui/\n" in server.ready_lines
