"""A real app with an HTTP health endpoint, registered as ``api-1`` with a check of it and a
sidecar, whose dataplanes the test starts: the setup the e2e tests of checks run by a
dataplane (``test_checks_envoy``) and of a dataplane's liveness (``test_dataplane_liveness``)
share. The server is the test's (each wants its own flags); the app, the dataplanes and the
server are stopped by ``close``."""

from __future__ import annotations

import http.server
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from tests.support.leaks import hand_over
from tests.support.mesh import Proc, free_port, start_dataplane
from tests.support.server import ServerProcess

Doc = dict[str, Any]


class HealthApp:
    """The ``api`` app: answers every path with ``body``, ``/health`` with the status code
    the test sets in ``health``, each path of ``redirects`` with a 302 to its location; the
    headers of every request are kept in ``seen``. ``body`` and ``health`` may change while
    it serves."""

    def __init__(self, body: bytes = b"api\n", redirects: Mapping[str, str] | None = None) -> None:
        app = self
        self.health = 200
        self.body = body
        self.seen: list[dict[str, str]] = []
        moved = dict(redirects or {})

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                app.seen.append(dict(self.headers))
                if self.path in moved:
                    self.send_response(302)
                    self.send_header("Location", moved[self.path])
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                code = app.health if self.path == "/health" else 200
                body = app.body
                self.send_response(code)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()
        self.closed = False

    def close(self) -> None:
        """Stop listening (the port refuses connections from then on); again is a no-op."""
        if self.closed:
            return
        self.closed = True
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join()


class AppMesh:
    """``server`` with the app ``api`` (``app``) and the dataplanes started by ``dataplane``;
    ``api-1``'s sidecar listens on ``sidecar_port``."""

    def __init__(self, tmp: Path, server: ServerProcess) -> None:
        self.tmp = tmp
        self.server = server
        self.app = HealthApp()
        self.sidecar_port = free_port()
        self.procs: list[Proc] = []

    def register_api(self, *checks: Doc) -> None:
        """Register ``api-1`` on the server's agent: the app's port, its HTTP check
        ``api-http`` of ``/health`` every second (then ``checks``), a sidecar."""
        http_check = {"CheckID": "api-http", "HTTP": f"http://127.0.0.1:{self.app.port}/health",
                      "Interval": "1s"}  # fmt: skip
        self.server.put("/v1/agent/service/register", {
            "Name": "api", "ID": "api-1", "Port": self.app.port, "Checks": [http_check, *checks],
            "Connect": {"SidecarService": {"Port": self.sidecar_port}}})  # fmt: skip

    def dataplane(self, proxy_id: str, *extra: str) -> Proc:
        """A real ``loom dataplane`` for ``proxy_id``, stopped by ``close`` (handed over to
        the module's leak check: module fixtures start them)."""
        proc = start_dataplane(self.tmp, proxy_id, self.server.http, self.server.grpc, *extra)
        self.procs.append(proc)
        hand_over(proc.p.pid)
        return proc

    def close(self) -> None:
        for proc in reversed(self.procs):
            proc.stop()
        self.app.close()
        self.server.stop()
