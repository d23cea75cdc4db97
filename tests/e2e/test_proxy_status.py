"""`loom proxy status` and `loom wait proxy` against a real server and a real Envoy: what the
server sent each proxy, what Envoy ACKed, and waiting until a change has been taken."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.support.mesh import free_port, start_dataplane


def _loom(*args: str, addr: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "loom", *args, "-http-addr", addr],
        capture_output=True, text=True, timeout=90,
    )  # fmt: skip


def test_a_running_sidecar_is_synced_and_a_change_is_waited_for(loom_server, tmp_path: Path) -> None:
    addr = loom_server.http
    loom_server.put("/v1/agent/service/register",
                    {"Name": "web", "Port": free_port(), "Connect": {"SidecarService": {}}})  # fmt: skip
    dp = start_dataplane(tmp_path, "web-sidecar-proxy", addr, loom_server.grpc)
    try:
        waited = _loom("wait", "proxy", "web-sidecar-proxy", "-timeout", "60", addr=addr)
        assert (waited.returncode, waited.stdout) == (0, "proxy web-sidecar-proxy is synced\n")
        (status,) = json.loads(_loom("proxy", "status", "-format=json", addr=addr).stdout)
        assert (status["ID"], status["Service"], status["Datacenter"]) == (
            "web-sidecar-proxy", "web", "dc1",
        )  # fmt: skip
        assert status["Synced"] and status["Registered"] and status["Protocol"] == "delta"
        assert {"Cluster", "Listener"} <= set(status["Types"])
        assert all(t["Acked"] == t["Sent"] and not t["Nack"] for t in status["Types"].values())
        table = _loom("proxy", "status", addr=addr).stdout.splitlines()
        assert table[0].split() == ["PROXY", "SERVICE", "DC", "XDS", "CDS", "EDS", "LDS", "RDS",
                                    "STATUS"]  # fmt: skip
        assert table[1].split()[0] == "web-sidecar-proxy" and table[1].split()[-1] == "synced"
        denied = _loom("intention", "create", "-deny", "api", "web", addr=addr)
        assert denied.returncode == 0, denied.stderr
        again = _loom("wait", "proxy", "web-sidecar-proxy", addr=addr)
        assert again.returncode == 0, again.stderr
        rbac = json.loads(_loom("proxy", "status", "-format", "json", addr=addr).stdout)[0]
        assert rbac["Types"]["Listener"]["Acked"] != status["Types"]["Listener"]["Acked"]
    finally:
        dp.stop()


def test_waiting_for_a_proxy_that_never_connects_ends_with_the_reason(loom_server) -> None:
    out = _loom("wait", "proxy", "nobody-sidecar-proxy", "-timeout", "0.3", addr=loom_server.http)
    assert out.returncode == 1
    assert out.stderr == (
        "loom: proxy nobody-sidecar-proxy is not synced after 0.3 s: no xDS stream from it "
        "(is `loom dataplane --proxy-id nobody-sidecar-proxy` running?)\n"
    )


def test_waiting_for_a_server_that_is_not_there_ends_with_the_reason() -> None:
    out = _loom("wait", "server", "-timeout", "0.2", addr=f"127.0.0.1:{free_port()}")
    assert out.returncode == 1
    assert out.stderr.startswith("loom: the server is not ready after 0.2 s: cannot reach")
