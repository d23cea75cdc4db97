"""Helpers for tests of several datacenters: real ``loom server`` processes on loopback, and
a primary ``State`` serving a secondary's federated CA in-process (``federated_ca``)."""

from __future__ import annotations

import contextlib
import datetime as dt
import time
from collections.abc import AsyncIterator, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

from loom.control.fedca import FederatedCa
from loom.control.state import ServerSettings, State
from loom.server.http import build_app
from tests.support.server import ServerProcess, start_server

Doc = dict[str, Any]


def known(server: ServerProcess, headers: dict[str, str] | None = None) -> set[str]:
    """The datacenters ``server`` holds a federation state of."""
    status, states, _ = server.request("GET", "/v1/internal/federation-states", headers=headers)
    assert status == 200, states
    return {s["Datacenter"] for s in states}


@dataclass(frozen=True)
class Caller:
    """Reads and writes on any of the federated servers with one set of ``headers`` (a
    token), each asserting a 200 and returning the answer's body."""

    headers: dict[str, str]

    def get(self, server: ServerProcess, path: str) -> Any:
        status, body, _ = server.request("GET", path, headers=self.headers)
        assert status == 200, (path, status, body)
        return body

    def put(self, server: ServerProcess, path: str, body: Any) -> Any:
        status, out, _ = server.request("PUT", path, body, headers=self.headers)
        assert status == 200, (path, status, out)
        return out

    def known(self, server: ServerProcess) -> set[str]:
        return known(server, self.headers)


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


@contextlib.contextmanager
def federated(
    names: Sequence[str],
    *extra: str,
    replication_token: str = "",
    headers: dict[str, str] | None = None,
    data_dir: Path | None = None,
    join_previous: bool = False,
    wait_all: bool = True,
    https_only: bool = False,
    trust: str = "",
    each: Callable[[str], Sequence[str]] = lambda name: (),
) -> Iterator[list[ServerProcess]]:
    """Real servers for datacenters ``names``, the first the primary; every other joins the
    WAN through the primary (``join_previous``: through the one started before it). Each gets
    ``extra`` (ACL flags, say) and, with ``replication_token``, replicates with it; with
    ``data_dir``, each keeps its state in ``data_dir / name``. Yields once each server knows
    every datacenter (``wait_all=False``: once the primary does); stops them all afterwards,
    also when one fails to start. ``https_only``: each serves HTTPS alone (``--no-http``) and
    they join over ``https://``; ``request`` verifies them with ``trust`` (a CA file).
    ``each(name)``: flags of that datacenter's server alone (its certificate files, say)."""
    started: list[ServerProcess] = []
    try:
        for name in names:
            args = ["--datacenter", name, *extra, *each(name)]
            if started:
                joined = started[-1] if join_previous else started[0]
                args += ["--primary-datacenter", names[0], "--join-wan", joined.wan]
                if replication_token:
                    args += ["--acl-replication-token", replication_token]
            here = data_dir / name if data_dir is not None else None
            started.append(start_server(*args, data_dir=here, https_only=https_only, trust=trust))
        for server in started if wait_all else started[:1]:
            until_states(server, names_all(*names), headers=headers)
        yield started
    finally:
        for server in reversed(started):
            server.stop()


@dataclass
class CaPair:
    """dc1's ``State`` (served over HTTP), dc2's, and dc2's ``FederatedCa`` asking dc1."""

    primary: State
    secondary: State
    fed: FederatedCa


@contextlib.asynccontextmanager
async def federated_ca(ca_sign_workers: int = 0) -> AsyncIterator[CaPair]:
    """A primary ``State`` (dc1) whose aiohttp app is served on loopback, and a secondary
    (dc2, ``ca_sign_workers`` signing processes) whose ``FederatedCa`` calls it as
    ``loom.server.wan.call`` would; the secondary has no intermediate until the test syncs.
    Everything is closed afterwards."""
    primary = State(ServerSettings(http_addrs=(), grpc_addrs=(), datacenter="dc1"))
    secondary = State(
        ServerSettings(
            http_addrs=(),
            grpc_addrs=(),
            datacenter="dc2",
            primary_datacenter="dc1",
            ca_sign_workers=ca_sign_workers,
        )
    )
    await primary.start()
    await secondary.start()
    runner = web.AppRunner(build_app(primary))
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    url = f"http://127.0.0.1:{runner.addresses[0][1]}"
    session = aiohttp.ClientSession()

    async def call(
        method: str, path: str, query: dict[str, str] | None, body: bytes | None, timeout: float
    ) -> tuple[int, Mapping[str, str], bytes]:
        async with session.request(
            method, url + path, params=query, data=body, timeout=aiohttp.ClientTimeout(timeout)
        ) as resp:
            return resp.status, dict(resp.headers), await resp.read()

    fed = FederatedCa(
        secondary.certs, secondary.store, secondary.lock, call, lambda: dt.datetime.now(dt.UTC)
    )
    try:
        yield CaPair(primary, secondary, fed)
    finally:
        await session.close()
        await runner.cleanup()
        await secondary.close()
        await primary.close()


__all__ = [
    "CaPair",
    "Caller",
    "federated",
    "federated_ca",
    "known",
    "names_all",
    "until_blocking",
    "until_states",
]
