"""Helpers for tests of several datacenters: real ``loom server`` processes on loopback."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from tests.support.server import ServerProcess

Doc = dict[str, Any]


def known(server: ServerProcess) -> set[str]:
    status, states, _ = server.request("GET", "/v1/internal/federation-states")
    assert status == 200, states
    return {s["Datacenter"] for s in states}


def until_states(
    server: ServerProcess,
    check: Callable[[list[Doc]], bool],
    timeout: float = 20.0,
    headers: dict[str, str] | None = None,
) -> list[Doc]:
    """Blocking queries on the server's federation states until ``check`` holds (each wakes
    on a change: no polling)."""
    index = 0
    deadline = time.monotonic() + timeout
    while True:
        path = "/v1/internal/federation-states"
        if index:
            path += f"?index={index}&wait=2s"
        status, states, got = server.request("GET", path, headers=headers)
        assert status == 200, states
        if check(states):
            return list(states)
        assert time.monotonic() < deadline, f"never true; last states: {states}"
        index = int(got["X-Consul-Index"])


def until_blocking(
    server: ServerProcess,
    path: str,
    check: Callable[[Any], bool],
    timeout: float = 20.0,
    headers: dict[str, str] | None = None,
) -> Any:
    """Blocking queries on ``path`` (a Consul read with an index) until ``check`` holds."""
    index = 0
    deadline = time.monotonic() + timeout
    sep = "&" if "?" in path else "?"
    while True:
        status, body, got = server.request(
            "GET", path + (f"{sep}index={index}&wait=2s" if index else ""), headers=headers
        )
        if status == 200 and check(body):
            return body
        assert time.monotonic() < deadline, f"never true; last answer: {status} {body}"
        index = int(got.get("X-Consul-Index", "0") or 0)


def names_all(*dcs: str) -> Callable[[list[Doc]], bool]:
    return lambda states: {s["Datacenter"] for s in states} == set(dcs)


__all__ = ["known", "names_all", "until_blocking", "until_states"]
