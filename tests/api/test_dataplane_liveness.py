"""A dataplane's heartbeat is its checks' liveness, against a real `loom server` with a 3 s
deadline; the test sends the heartbeats a dataplane would (``PUT
/v1/loom/dataplane/:proxy-id/heartbeat``) from a thread, at the interval the server asks.

A runner that never beats is gone a deadline after the start; one that beats keeps its
checks; its heartbeat (the full state) brings back what the server overwrote; a server
restart gives every dataplane a deadline before anything turns critical. Each wait is a
blocking query on the server's answers, and "nothing turned critical" is shown by a runner
without heartbeats turning critical in the same time. Under ACLs, a token for ``a`` cannot
beat for ``b`` nor speak for ``b``'s checks in ``a``'s heartbeat.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from loom.domain.liveness import GONE_PREFIX
from tests.support.server import ServerProcess, start_server
from tests.support.server import acl_server as running_acl_server

DEADLINE = ("--dataplane-deadline", "3")
ROOT = str(uuid.uuid4())


def app(server: ServerProcess, name: str, token: str = "") -> str:
    """An app behind a sidecar with a passing TCP check (which the sidecar's dataplane runs)."""
    body = {"Name": name, "Port": 8080, "Connect": {"SidecarService": {}},
            "Check": {"TCP": "127.0.0.1:1", "Interval": "10s", "Status": "passing"}}  # fmt: skip
    headers = {"X-Consul-Token": token} if token else {}
    assert server.request("PUT", "/v1/agent/service/register", body, headers)[0] == 200
    return f"service:{name}"


def beat(
    server: ServerProcess, proxy_id: str, checks: dict[str, tuple[str, str]], token: str = ""
) -> tuple[int, Any]:
    body = {"Checks": {cid: {"Status": s, "Output": o} for cid, (s, o) in checks.items()}}
    headers = {"X-Consul-Token": token} if token else {}
    path = f"/v1/loom/dataplane/{proxy_id}/heartbeat"
    status, answer, _ = server.request("PUT", path, body, headers)
    return status, answer


class Beating:
    """A dataplane's heartbeat loop, in a thread, at the interval the server answers."""

    def __init__(self, server: ServerProcess, proxy_id: str, checks: dict[str, Any]) -> None:
        self.server, self.proxy_id, self.checks = server, proxy_id, checks
        self.stop = threading.Event()
        self.failures: list[Any] = []
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self.stop.is_set():
            status, answer = beat(self.server, self.proxy_id, self.checks)
            if status != 200:
                self.failures.append((status, answer))
                return
            self.stop.wait(answer["IntervalSeconds"])

    def close(self) -> None:
        self.stop.set()
        self.thread.join(10)
        assert not self.failures


def wait_checks(
    server: ServerProcess, want: Callable[[dict[str, Any]], bool], timeout: float = 15
) -> dict[str, Any]:
    """The agent's checks once ``want`` holds, waiting on them as a blocking query."""
    deadline, index = time.monotonic() + timeout, "0"
    while True:
        status, checks, headers = server.request("GET", f"/v1/agent/checks?index={index}&wait=2s")
        assert status == 200
        if want(checks):
            return dict(checks)
        assert time.monotonic() < deadline, checks
        index = headers["X-Consul-Index"]


def gone(cid: str) -> Callable[[dict[str, Any]], bool]:
    return lambda checks: checks[cid]["Status"] == "critical"


@pytest.fixture
def server() -> Iterator[ServerProcess]:
    s = start_server(*DEADLINE)
    try:
        yield s
    finally:
        s.stop()


def test_a_runner_that_never_beats_is_gone_a_deadline_after_the_start(
    server: ServerProcess,
) -> None:
    cid = app(server, "lonely")
    assert server.get("/v1/health/service/lonely?passing") != []
    checks = wait_checks(server, gone(cid))
    out = checks[cid]["Output"]
    assert out.startswith(GONE_PREFIX) and "lonely-sidecar-proxy" in out, out
    assert "sent no heartbeat in the" in out and "deadline 3s" in out
    assert server.get("/v1/health/service/lonely?passing") == []


def test_a_heartbeat_keeps_its_checks_and_brings_back_what_was_overwritten(
    server: ServerProcess,
) -> None:
    alive, dead = app(server, "alive"), app(server, "dead")
    side = {"service:alive-sidecar-proxy:1": ("passing", "listening")}
    beating = Beating(server, "alive-sidecar-proxy", {alive: ("passing", "fine"), **side})
    try:
        checks = wait_checks(server, gone(dead))
        # the same time has passed for both: the beating one kept what it reports
        assert (checks[alive]["Status"], checks[alive]["Output"]) == ("passing", "fine")
        assert checks["service:alive-sidecar-proxy:1"]["Status"] == "passing"
        assert [e["Service"]["ID"] for e in server.get("/v1/health/service/alive?passing")] == [
            "alive"
        ]
    finally:
        beating.close()
    # the heartbeat stopped: gone, and back with the next one (the full state, not a change)
    checks = wait_checks(server, gone(alive))
    assert "since its last heartbeat" in checks[alive]["Output"]
    status, answer = beat(server, "alive-sidecar-proxy", {alive: ("passing", "fine")})
    assert status == 200 and answer == {"IntervalSeconds": 1.0, "Ignored": []}
    checks = server.get("/v1/agent/checks")
    assert (checks[alive]["Status"], checks[alive]["Output"]) == ("passing", "fine")


def test_a_heartbeat_is_refused_for_an_unknown_proxy_or_a_bad_body(server: ServerProcess) -> None:
    cid = app(server, "web")
    assert beat(server, "nobody-sidecar-proxy", {})[0] == 404
    status, text, _ = server.request(
        "PUT", "/v1/loom/dataplane/web-sidecar-proxy/heartbeat",
        {"Checks": {cid: {"Status": "fine"}}},
    )  # fmt: skip
    assert status == 400 and "Status" in text
    assert server.get("/v1/agent/checks")[cid]["Status"] == "passing"


def test_a_server_restart_gives_every_dataplane_a_deadline_to_report(tmp_path: Path) -> None:
    data = tmp_path / "data"
    slower = ("--dataplane-deadline", "6")  # the checks right after the start must be in it
    first = start_server(*slower, data_dir=data)
    try:
        back, never = app(first, "back"), app(first, "never")
        for name, cid in (("back", back), ("never", never)):
            assert beat(first, f"{name}-sidecar-proxy", {cid: ("passing", "ok")})[0] == 200
    finally:
        first.stop()
    second = start_server(*slower, data_dir=data)
    try:
        checks = second.get("/v1/agent/checks")
        assert checks[back]["Status"] == checks[never]["Status"] == "passing"
        beating = Beating(second, "back-sidecar-proxy", {back: ("passing", "ok")})
        try:
            checks = wait_checks(second, gone(never))
            assert "since this server started" in checks[never]["Output"]
            assert checks[back]["Status"] == "passing"
        finally:
            beating.close()
    finally:
        second.stop()


@pytest.fixture
def acl_server() -> Iterator[ServerProcess]:
    with running_acl_server(ROOT, *DEADLINE) as s:
        yield s


def test_a_token_for_a_cannot_keep_bs_checks_alive(acl_server: ServerProcess) -> None:
    s = acl_server
    status, token, _ = s.request("PUT", "/v1/acl/token",
                                 {"ServiceIdentities": [{"ServiceName": "a"}]},
                                 {"X-Consul-Token": ROOT})  # fmt: skip
    assert status == 200
    a_token = token["SecretID"]
    a, b = app(s, "a", ROOT), app(s, "b", ROOT)
    # b's runner, with a's token: refused in Consul's words
    status, text = beat(s, "b-sidecar-proxy", {b: ("passing", "forged")}, a_token)
    assert status == 403 and "lacks permission 'service:write' on \"b-sidecar-proxy\"" in text
    assert beat(s, "b-sidecar-proxy", {b: ("passing", "forged")})[0] == 403  # anonymous
    # b's check inside a's heartbeat: ignored, said so, and b is not kept alive by it
    stop = threading.Event()
    answers: list[Any] = []

    def beat_as_a() -> None:
        while not stop.is_set():
            answers.append(beat(s, "a-sidecar-proxy", {a: ("passing", "a"), b: ("passing", "x")},
                                a_token))  # fmt: skip
            stop.wait(1.0)

    thread = threading.Thread(target=beat_as_a, daemon=True)
    thread.start()
    try:
        status, checks, _ = s.request("GET", "/v1/agent/checks", None, {"X-Consul-Token": ROOT})
        deadline, index = time.monotonic() + 15, "0"
        while checks[b]["Status"] != "critical":
            assert time.monotonic() < deadline, checks
            path = f"/v1/agent/checks?index={index}&wait=2s"
            status, checks, headers = s.request("GET", path, None, {"X-Consul-Token": ROOT})
            index = headers["X-Consul-Index"]
        assert checks[b]["Output"].startswith(GONE_PREFIX)
        assert (checks[a]["Status"], checks[a]["Output"]) == ("passing", "a")
    finally:
        stop.set()
        thread.join(10)
    assert answers and all(ans == (200, {"IntervalSeconds": 1.0, "Ignored": [b]})
                           for ans in answers)  # fmt: skip


def test_of_two_sidecars_only_the_one_running_the_instances_checks_speaks_for_them(
    server: ServerProcess,
) -> None:
    cid = app(server, "multi")  # its sidecar: multi-sidecar-proxy
    server.put("/v1/agent/service/register", {
        "Kind": "connect-proxy", "Name": "multi-proxy", "ID": "multi-a-proxy", "Port": 21001,
        "Proxy": {"DestinationServiceName": "multi", "DestinationServiceID": "multi"}})  # fmt: skip
    # the lowest ID runs the instance's checks (the rule both runners apply)
    status, answer = beat(server, "multi-sidecar-proxy", {cid: ("warning", "not mine")})
    assert (status, answer["Ignored"]) == (200, [cid])
    assert server.get("/v1/agent/checks")[cid]["Output"] != "not mine"
    status, answer = beat(server, "multi-a-proxy", {cid: ("warning", "mine")})
    assert (status, answer["Ignored"]) == (200, [])
    assert server.get("/v1/agent/checks")[cid]["Output"] == "mine"
