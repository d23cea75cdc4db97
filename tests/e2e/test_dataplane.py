"""`loom dataplane` lifecycle with real Envoy: failures are clear, a dead Envoy is restarted."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from loom.addrs import parse_address
from loom.dataplane.bootstrap import build_bootstrap
from tests.support.mesh import curl, free_port, start_dataplane, start_echo, wait_for

pytestmark = pytest.mark.envoy


def _register(server, app_port: int, side_port: int) -> None:  # type: ignore[no-untyped-def]
    server.put("/v1/agent/service/register", {"Name": "web", "Port": app_port,
                                              "Connect": {"SidecarService": {"Port": side_port}}})  # fmt: skip


def _dataplane(
    server, *extra: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:  # type: ignore[no-untyped-def]
    return subprocess.run(
        [sys.executable, "-m", "loom", "dataplane", "--proxy-id", "web-sidecar-proxy",
         "--http-addr", server.http, "--grpc-addr", server.grpc, *extra],
        capture_output=True, text=True, timeout=60, env={**os.environ, **(env or {})},
    )  # fmt: skip


def test_an_envoy_that_cannot_start_is_a_clear_nonzero_exit(loom_server) -> None:
    _register(loom_server, free_port(), free_port())
    out = _dataplane(loom_server, env={"LOOM_ENVOY_BINARY": "/bin/false"})
    assert out.returncode == 1
    last = out.stderr.strip().splitlines()[-1]
    assert last == "loom: Envoy exited with status 1 before it was ready"


def test_an_admin_port_in_use_reports_envoys_own_reason(loom_server) -> None:
    import socket

    _register(loom_server, free_port(), free_port())
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        out = _dataplane(loom_server, "--admin-bind", f"127.0.0.1:{port}")
    assert out.returncode == 1
    last = out.stderr.strip().splitlines()[-1]
    assert last.startswith("loom: Envoy exited with status 1 before it was ready: ")
    assert "Traceback" not in out.stderr


def test_a_killed_envoy_is_restarted_and_traffic_recovers(loom_server, tmp_path: Path) -> None:
    app, side = free_port(), free_port()
    echo = start_echo(tmp_path, "hello world", app)
    _register(loom_server, app, side)
    loom_server.put(
        "/v1/config", {"Kind": "service-defaults", "Name": "web", "MutualTLSMode": "permissive"}
    )
    dp = start_dataplane(tmp_path, "web-sidecar-proxy", loom_server.http, loom_server.grpc)
    try:
        url = f"http://127.0.0.1:{side}/"  # permissive: plain text reaches the app
        wait_for(lambda: curl(url) == (0, "hello world\n"), 30, "the sidecar")
        assert dp.work is not None
        wait_for(lambda: (dp.work / "ready").exists(), 10, "the dataplane to see Envoy ready")
        envoy_pid = int(subprocess.run(
            ["pgrep", "-f", "--", f"--log-path {dp.work}/envoy.log"], capture_output=True, text=True
        ).stdout.split()[0])  # fmt: skip
        os.kill(envoy_pid, signal.SIGKILL)
        wait_for(lambda: curl(url) == (0, "hello world\n"), 30, "the restarted Envoy")
        assert dp.alive()
    finally:
        dp_status = dp.stop()
        echo.stop()  # always, even when the dataplane misbehaved
    assert dp_status == 0
    assert subprocess.run(["pgrep", "-f", "--", f"--log-path {dp.work}/envoy.log"]).returncode == 1


def test_connect_envoy_bootstrap_prints_the_bootstrap(loom_server) -> None:
    _register(loom_server, free_port(), free_port())
    out = subprocess.run(
        [sys.executable, "-m", "loom", "connect", "envoy", "--bootstrap", "--proxy-id",
         "web-sidecar-proxy", "--http-addr", loom_server.http, "--grpc-addr", loom_server.grpc,
         "--sds-socket", "/run/web/sds.sock"],
        capture_output=True, text=True, timeout=30, check=True,
    )  # fmt: skip
    boot = json.loads(out.stdout)
    assert boot["node"]["id"] == "web-sidecar-proxy" and boot["node"]["cluster"] == "web"
    assert boot["dynamic_resources"]["ads_config"]["api_type"] == "DELTA_GRPC"
    sds = boot["static_resources"]["clusters"][1]
    assert sds["name"] == "loom_agent_sds"
    endpoint = sds["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]
    assert endpoint["address"] == {"pipe": {"path": "/run/web/sds.sock"}}
    assert "PRIVATE KEY" not in out.stdout


def test_bootstraps_match_the_golden_files(golden) -> None:  # type: ignore[no-untyped-def]
    tcp = build_bootstrap("web-sidecar-proxy", "web", "default", parse_address("127.0.0.1:8502"),
                          sds_socket="/tmp/dp/sds.sock")  # fmt: skip
    unix = build_bootstrap("web-sidecar-proxy", "web", "default", parse_address("unix:/run/loom/xds.sock"),
                           delta=False, sds_socket="/run/loom/dp/sds.sock")  # fmt: skip
    golden.check("xds/bootstrap_tcp.json", json.dumps(tcp, indent=1, sort_keys=True) + "\n")
    golden.check("xds/bootstrap_unix_sotw.json", json.dumps(unix, indent=1, sort_keys=True) + "\n")


def test_an_envoy_run_by_someone_else_reads_its_leaf_from_a_no_envoy_agent(
    loom_server, tmp_path: Path
) -> None:
    from loom.dataplane.envoy import envoy_binary
    from tests.support.mesh import Proc, envoy_admin, loom_argv

    _register(loom_server, free_port(), free_port())
    work = tmp_path / "agent"
    agent = Proc(loom_argv("dataplane", "--no-envoy", "--proxy-id", "web-sidecar-proxy",
                           "--http-addr", loom_server.http, "--grpc-addr", loom_server.grpc,
                           "--work-dir", str(work)), tmp_path / "agent.log")  # fmt: skip
    envoy = None
    try:
        wait_for(lambda: (work / "sds.sock").exists(), 30, "the agent's SDS socket")
        boot = subprocess.run(
            [sys.executable, "-m", "loom", "connect", "envoy", "--bootstrap", "--proxy-id",
             "web-sidecar-proxy", "--http-addr", loom_server.http, "--grpc-addr", loom_server.grpc,
             "--sds-socket", str(work / "sds.sock")],
            capture_output=True, text=True, timeout=30, check=True,
        ).stdout  # fmt: skip
        assert "PRIVATE KEY" not in boot
        own = tmp_path / "own"
        own.mkdir()
        (own / "bootstrap.json").write_text(boot)
        envoy = Proc([envoy_binary(), "-c", str(own / "bootstrap.json"), "--disable-hot-restart",
                      "--admin-address-path", str(own / "admin-address"), "-l", "warning"],
                     tmp_path / "envoy.log")  # fmt: skip

        def leaf_uri() -> str:
            certs = json.loads(envoy_admin(own, "/certs"))["certificates"]
            sans = certs[0]["cert_chain"][0]["subject_alt_names"] if certs else []
            return next((s["uri"] for s in sans if "uri" in s), "")

        uri = wait_for(leaf_uri, 30, "Envoy to hold the agent's leaf")
        assert uri.endswith("/ns/default/dc/dc1/svc/web")
    finally:
        if envoy is not None:
            envoy.stop()
        status = agent.stop()
    assert status == 0
    assert not (work / "sds.sock").exists()


def test_a_rejected_public_listener_is_never_ready_and_the_reason_is_the_error(
    loom_server, tmp_path: Path
) -> None:
    import socket

    with socket.socket() as taken:  # the sidecar's port, held without SO_REUSEPORT
        taken.bind(("0.0.0.0", 0))
        taken.listen()
        side = taken.getsockname()[1]
        _register(loom_server, free_port(), side)
        work = tmp_path / "work"
        out = _dataplane(loom_server, "--ready-timeout", "4", "--work-dir", str(work))
    assert out.returncode == 1, out.stderr
    last = out.stderr.strip().splitlines()[-1]
    assert last.startswith("loom: Envoy was not ready after 4 s: rejected listener "), last
    assert "ddress already in use" in last  # Envoy's own words
    assert "not ready" in out.stderr and "Envoy ready" not in out.stderr
    assert not (work / "ready").exists()
