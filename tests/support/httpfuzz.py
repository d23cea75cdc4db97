"""Hostile HTTP requests for every route of the server (hypothesis strategies), and the check
that a running server answers each without a 5xx, a traceback or a write when it refuses.

The routes come from the application itself (``build_app``), so a route added later is fuzzed
without anyone listing it. Used by ``tests/api/test_http_fuzz.py`` (bounded, seconds) and by
``bench/fuzz_http.py`` (as long as you like).
"""

from __future__ import annotations

import http.client
import json
import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from hypothesis import strategies as st

from loom.control.state import ServerSettings, State
from loom.server.http import build_app

METHODS = ("GET", "PUT", "POST", "DELETE", "HEAD", "PATCH", "OPTIONS", "BREW")
QUERY_KEYS = ("ns", "cas", "source", "destination", "passing", "tag", "by", "name", "note",
              "dc", "filter", "token", "stale", "consistent", "index", "wait", "x")  # fmt: skip
SHORT_WAITS = ("1ms", "0s", "5ms", "2ms", "x", "-1s", "1e3s", "10")
"""Blocking queries in the fuzz wait at most a few milliseconds (or are refused). Never an
empty ``wait=``: as in Consul, that is the default wait (5 minutes) of a real blocking query,
which a huge ``index`` then spends in full."""


def route_paths() -> list[tuple[str, str]]:
    """(method, path template) of every route the server serves."""
    app = build_app(State(ServerSettings(http_addrs=(), grpc_addrs=())))
    out = []
    for route in app.router.routes():
        info = route.resource.get_info() if route.resource is not None else {}
        path = info.get("path") or info.get("formatter")
        if path and route.method != "HEAD":
            out.append((route.method, path))
    return sorted(set(out))


@dataclass(frozen=True)
class Hostile:
    method: str
    path: str
    body: bytes | None

    def __str__(self) -> str:
        shown = self.body[:80] if self.body is not None else None
        return f"{self.method} {self.path[:200]} body={shown!r}"


def _segment() -> st.SearchStrategy[str]:
    text = st.text(max_size=12) | st.sampled_from(
        [
            "web",
            "..",
            ".",
            "%",
            "a/b",
            "service-defaults",
            "proxy-defaults",
            "mesh",
            "-",
            "\x00",
            "é",
        ]
    )
    return text.map(lambda t: quote(t, safe="", errors="surrogatepass"))


def _query() -> st.SearchStrategy[str]:
    value = st.text(max_size=10) | st.sampled_from(
        ["web", "0", "1", "-1", "99999999999999999999", "true", "*", "default/web", "a/b/c"]
    )
    pairs = st.lists(st.tuples(st.sampled_from(QUERY_KEYS), value), max_size=4)

    def encode(items: list[tuple[str, str]]) -> str:
        keys = {k for k, _ in items}
        if "index" in keys:  # never a real wait: bounded in time
            items = [(k, v) for k, v in items if k != "wait"] + [
                ("wait", SHORT_WAITS[len(items) % 8])
            ]
        return "&".join(f"{k}={quote(v, safe='', errors='surrogatepass')}" for k, v in items)

    return pairs.map(encode)


_json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=10),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(
        st.sampled_from(["Name", "ID", "Port", "Kind", "Check", "Checks", "Connect", "SidecarService",
                         "Proxy", "Upstreams", "Meta", "Tags", "Address", "Node", "Service",
                         "Action", "Sources", "Protocol", "TTL", "Status", "Rules", "Policies",
                         "SecretID", "AccessorID", "Description", "Target", "ClientCertURI",
                         "DestinationName", "SourceName", "Permissions"]) | st.text(max_size=6),
        inner, max_size=5),
    max_leaves=20,
)  # fmt: skip
_bodies = st.none() | _json_values.map(lambda v: json.dumps(v).encode()) | st.binary(max_size=64) | st.sampled_from([
    b"[" * 5000 + b"]" * 5000, b'{"Name": "\\ud800"}', b'{"Name": "web", "Port": 99999999999999999999999}',
    b"\xff\xfe", b'{"Name": 1e400}', b"null", b'"x"',
])  # fmt: skip


@st.composite
def hostile_requests(draw: st.DrawFn, routes: list[tuple[str, str]]) -> Hostile:
    method, template = draw(st.sampled_from(routes))
    path = re.sub(r"\{[^}]+\}", lambda _: draw(_segment()), template)
    if draw(st.integers(0, 9)) == 0:  # now and then, a path no route has
        path = "/" + "/".join(draw(st.lists(_segment(), max_size=4)))
    if draw(st.integers(0, 9)) == 0:
        method = draw(st.sampled_from(METHODS))
    query = draw(_query())
    return Hostile(method, path + (f"?{query}" if query else ""), draw(_bodies))


class Target:
    """One keep-alive connection to the server under test."""

    def __init__(self, hostport: str) -> None:
        host, port = hostport.rsplit(":", 1)
        self.host, self.port = host, int(port)
        self.conn = http.client.HTTPConnection(self.host, self.port, timeout=30)

    def send(self, req: Hostile) -> tuple[int, bytes, dict[str, str]]:
        for attempt in range(2):
            try:
                self.conn.request(req.method, req.path, body=req.body)
                resp = self.conn.getresponse()
                return resp.status, resp.read(), dict(resp.headers)
            except (http.client.HTTPException, ConnectionError):
                self.conn.close()  # the server closed it (a 400 from aiohttp): reconnect once
                self.conn = http.client.HTTPConnection(self.host, self.port, timeout=30)
                if attempt:
                    raise
        raise AssertionError("unreachable")

    def index(self) -> int:
        """The store's index (the leaf endpoint reports it; minting a leaf writes nothing)."""
        status, _, headers = self.send(Hostile("GET", "/v1/agent/connect/ca/leaf/fuzz-probe", None))
        assert status == 200
        return int(headers["X-Consul-Index"])

    def close(self) -> None:
        self.conn.close()


def check(target: Target, req: Hostile) -> int:
    """Send ``req``; fail on a 5xx or a traceback, or on a refused write that moved the index."""
    before = target.index() if req.method not in ("GET", "HEAD") else None
    status, body, _ = target.send(req)
    # The one 5xx that is a deliberate answer: Consul's to a ?dc= it cannot reach.
    deliberate = status == 500 and body == b"No path to datacenter"
    if status == 500 and req.method == "HEAD":  # no body to read: ask the same as a GET
        again, got, _ = target.send(Hostile("GET", req.path, None))
        deliberate = again == 500 and got == b"No path to datacenter"
    assert status < 500 or deliberate, (str(req), status, body[:300])
    assert b"Traceback" not in body, str(req)
    if before is not None and status >= 400:
        assert target.index() == before, f"a refused write changed the store: {req}"
    return status


def as_text(req: Any) -> str:
    return str(req)
