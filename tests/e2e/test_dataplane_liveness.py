"""A dataplane's liveness with real processes: a real `loom server` (``--dataplane-deadline
3``, a durable store), a real `loom dataplane` running Envoy for ``api-1``'s sidecar and its
HTTP check of a real app.

- Envoy killed alone (its dataplane restarts it) turns nothing of the instance critical, and
  the sidecar's own checks come back: the dataplane kept beating.
- The server restarted on its store: the running dataplane's instance never leaves
  ``?passing`` (the start's grace, then its heartbeats).
- The dataplane killed with SIGKILL (its Envoy too, as on a lost node): the instance leaves
  ``/v1/health/service/api?passing`` with the reason in the check's Output; a new dataplane
  brings it back.

Every wait is a blocking query on the server's answers; "nothing turned critical for a
deadline" is watched until a witness runner, beaten once by the test when the watch starts,
has been declared gone (one deadline has then passed).
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from loom.domain.liveness import GONE_PREFIX
from tests.support.appmesh import AppMesh
from tests.support.leaks import hand_over
from tests.support.mesh import Proc, free_port, wait_for
from tests.support.server import ServerProcess

pytestmark = pytest.mark.envoy

PROXY = "api-1-sidecar-proxy"
WITNESS = "witness-sidecar-proxy"


def envoy_pid(work: Path) -> int | None:
    out = subprocess.run(["pgrep", "-f", "--", f"--log-path {work}/envoy.log"],
                         capture_output=True, text=True).stdout.split()  # fmt: skip
    return int(out[0]) if out else None


class Mesh(AppMesh):
    def __init__(self, tmp: Path) -> None:
        self.data = tmp / "data"
        super().__init__(tmp, ServerProcess(self._args("127.0.0.1:0", "127.0.0.1:0")).start())

    def _args(self, http: str, grpc: str) -> list[str]:
        return ["--data-dir", str(self.data), "--http-addr", http, "--grpc-addr", grpc,
                "--dataplane-deadline", "3"]  # fmt: skip

    @property
    def dp(self) -> Proc | None:
        """The dataplane started last."""
        return self.procs[-1] if self.procs else None

    def restart_server(self) -> None:
        http, grpc = self.server.http, self.server.grpc
        self.server.stop()
        self.server = ServerProcess(self._args(http, grpc)).start()
        assert self.server.proc is not None
        hand_over(self.server.proc.pid)

    def start_dataplane(self) -> Proc:
        return self.dataplane(PROXY)

    def kill_dataplane(self) -> None:
        """SIGKILL the dataplane and then its Envoy (its own session: it would outlive it)."""
        assert self.dp is not None and self.dp.work is not None
        pid = envoy_pid(self.dp.work)
        self.dp.stop(signal.SIGKILL)
        if pid is not None:
            os.kill(pid, signal.SIGKILL)

    def watch(self, path: str, until: Callable[[Any], bool], each: Callable[[Any], None],
              timeout: float = 30) -> Any:  # fmt: skip
        """Follow ``path`` as a blocking query, calling ``each`` on every answer, until
        ``until`` holds."""
        deadline, index = time.monotonic() + timeout, "0"
        sep = "&" if "?" in path else "?"
        while True:
            status, body, headers = self.server.request("GET", f"{path}{sep}index={index}&wait=2s")
            assert status == 200, body
            each(body)
            if until(body):
                return body
            assert time.monotonic() < deadline, (path, body)
            index = headers["X-Consul-Index"]

    def passing(self, body: Any = None) -> list[str]:
        entries = self.server.get("/v1/health/service/api?passing") if body is None else body
        return [e["Service"]["ID"] for e in entries]

    def beat_witness(self) -> None:
        """One heartbeat of the witness runner: it is gone one deadline from now."""
        body = {"Checks": {"service:witness": {"Status": "passing", "Output": "here"}}}
        self.server.put(f"/v1/loom/dataplane/{WITNESS}/heartbeat", body)
        assert self.server.get("/v1/agent/checks")["service:witness"]["Status"] == "passing"

    def until_witness_gone(self, each: Callable[[Any], None]) -> None:
        def gone(checks: Any) -> bool:
            return bool(checks["service:witness"]["Status"] == "critical")

        self.watch("/v1/agent/checks", gone, each)


@pytest.fixture(scope="module")
def mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mesh]:
    m = Mesh(tmp_path_factory.mktemp("liveness"))
    try:
        m.register_api()
        m.server.put("/v1/agent/service/register", {
            "Name": "witness", "Port": free_port(), "Connect": {"SidecarService": {}},
            "Check": {"TCP": "127.0.0.1:1", "Interval": "10s", "Status": "passing"}})  # fmt: skip
        m.start_dataplane()
        m.watch("/v1/health/service/api?passing", lambda b: m.passing(b) == ["api-1"],
                lambda b: None)  # fmt: skip
        yield m
    finally:
        m.close()


def _no_gone_check(checks: Any) -> None:
    said = {cid: c["Output"] for cid, c in checks.items()
            if cid != "service:witness" and c["Output"].startswith(GONE_PREFIX)}  # fmt: skip
    assert said == {}


def test_an_envoy_restart_alone_turns_nothing_critical(mesh: Mesh) -> None:
    assert mesh.dp is not None and mesh.dp.work is not None
    work, dp = mesh.dp.work, mesh.dp
    # An Envoy killed before it was first ready ends the dataplane (a start that failed),
    # which is not the case here: the api's check passing does not wait for Envoy.
    wait_for(lambda: "Envoy ready for proxy" in dp.output(), 30, "the dataplane's Envoy ready")
    before = wait_for(lambda: envoy_pid(work), 10, "Envoy's pid")
    mesh.beat_witness()
    os.kill(before, signal.SIGKILL)
    wait_for(lambda: envoy_pid(work) not in (None, before), 30, "the dataplane to restart Envoy")

    def api_stays(checks: Any) -> None:
        _no_gone_check(checks)
        assert checks["api-http"]["Status"] == "passing", checks["api-http"]
        assert mesh.passing() == ["api-1"]

    mesh.until_witness_gone(api_stays)
    # the sidecar's own checks (critical while Envoy was down) are back: nothing stuck
    listening = f"service:{PROXY}:1"
    mesh.watch("/v1/agent/checks", lambda c: c[listening]["Status"] == "passing", _no_gone_check)


def test_a_server_restart_keeps_a_running_dataplanes_instance_passing(mesh: Mesh) -> None:
    mesh.restart_server()
    assert mesh.passing() == ["api-1"]
    mesh.beat_witness()

    def api_stays(checks: Any) -> None:
        _no_gone_check(checks)
        assert mesh.passing() == ["api-1"]

    mesh.until_witness_gone(api_stays)


def test_a_killed_dataplane_takes_its_instance_out_of_passing_and_a_new_one_brings_it_back(
    mesh: Mesh,
) -> None:
    mesh.kill_dataplane()
    mesh.watch("/v1/health/service/api?passing", lambda b: mesh.passing(b) == [], lambda b: None)
    check = mesh.server.get("/v1/agent/checks")["api-http"]
    assert check["Status"] == "critical"
    assert check["Output"].startswith(GONE_PREFIX) and PROXY in check["Output"], check
    assert "since its last heartbeat" in check["Output"]
    mesh.start_dataplane()
    mesh.watch("/v1/health/service/api?passing", lambda b: mesh.passing(b) == ["api-1"],
               lambda b: None)  # fmt: skip
    check = mesh.server.get("/v1/agent/checks")["api-http"]
    assert check["Output"].startswith("HTTP GET http://127.0.0.1:"), check
