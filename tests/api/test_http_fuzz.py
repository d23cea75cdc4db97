"""Every route of a real server on loopback, driven with hostile methods, paths, queries and
bodies (hypothesis): never a 5xx, never a traceback in an answer or in the server log, and a
refused write leaves the store index where it was (issue 11). ``bench/fuzz_http.py`` runs the
same for longer."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, given, settings

from tests.support.httpfuzz import Hostile, Target, check, hostile_requests, route_paths
from tests.support.server import ServerProcess, start_server

ROUTES = route_paths()


@pytest.fixture(scope="module")
def server() -> Iterator[ServerProcess]:
    proc = start_server()
    proc.put("/v1/agent/service/register", {"Name": "web", "Port": 8080,
                                            "Connect": {"SidecarService": {}}})  # fmt: skip
    yield proc
    log = proc.log_text()
    proc.stop()
    assert "Traceback" not in log, log[-3000:]
    assert " 500" not in log and "internal error" not in log, log[-3000:]


@pytest.fixture(scope="module")
def target(server: ServerProcess) -> Iterator[Target]:
    t = Target(server.http)
    yield t
    t.close()


def test_the_fuzz_covers_every_kind_of_route() -> None:
    assert len(ROUTES) > 50
    assert ("PUT", "/v1/agent/service/register") in ROUTES
    assert ("GET", "/v1/acl/token/{id}") in ROUTES


@settings(max_examples=400, deadline=None, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])  # fmt: skip
@given(hostile_requests(ROUTES))
def test_no_hostile_request_gets_a_5xx_or_a_traceback_or_moves_the_index_when_refused(
    target: Target, req: Hostile
) -> None:
    check(target, req)


def test_the_server_still_takes_writes_after_the_fuzz(target: Target) -> None:
    body = b'{"Name": "after-fuzz", "Port": 9090}'
    assert target.send(Hostile("PUT", "/v1/agent/service/register", body))[0] == 200
    status, out, _ = target.send(Hostile("GET", "/v1/catalog/service/after-fuzz", None))
    assert status == 200 and b'"ServiceName": "after-fuzz"' in out
