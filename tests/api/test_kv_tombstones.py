"""KV tombstone reaping on a real `loom server --kv-tombstone-ttl 1`: a deleted key's
tombstone goes after its TTL, and a blocking query parked on that key stays parked through
the reap and returns when the key is written again, with a higher index."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import pytest

from tests.support.server import ServerProcess, start_server


@pytest.fixture(scope="module")
def server() -> Iterator[ServerProcess]:
    s = start_server("--kv-tombstone-ttl", "1")
    try:
        yield s
    finally:
        s.stop()


def _index(server: ServerProcess, path: str) -> int:
    _, _, headers = server.request("GET", path)
    return int(headers["X-Consul-Index"])


def test_a_watch_on_a_deleted_key_survives_the_reaping_of_its_tombstone(
    server: ServerProcess,
) -> None:
    server.request("PUT", "/v1/kv/gone/k", b"1")
    server.request("PUT", "/v1/kv/other/x", b"1")
    server.request("DELETE", "/v1/kv/gone/k")
    deleted = _index(server, "/v1/kv/gone/k")
    answers: list[tuple[int, Any, dict[str, str]]] = []
    watcher = threading.Thread(target=lambda: answers.append(
        server.request("GET", f"/v1/kv/gone/k?index={deleted}&wait=30s")))  # fmt: skip
    watcher.start()
    # the reap is seen as the graveyard index passing a never-written key's (1)
    never = _index(server, "/v1/kv/never/written")
    status, _, headers = server.request("GET", f"/v1/kv/never/written?index={never}&wait=20s")
    assert status == 404 and int(headers["X-Consul-Index"]) >= deleted > never
    assert _index(server, "/v1/kv/gone/k") == deleted  # not backwards: still its deletion's
    assert watcher.is_alive() and not answers  # still parked after the reap
    server.request("PUT", "/v1/kv/gone/k", b"2")
    watcher.join(10)
    [(status, body, headers)] = answers
    assert status == 200 and int(headers["X-Consul-Index"]) > deleted
    assert body[0]["Key"] == "gone/k"
