"""SIGKILL + restart on the same data dir finds every acknowledged write (real processes)."""

from __future__ import annotations

from pathlib import Path

from tests.support.server import start_server


def test_every_acknowledged_write_survives_sigkill_and_restart(tmp_path: Path) -> None:
    server = start_server(data_dir=tmp_path)
    try:
        for n in range(30):
            server.put("/v1/agent/service/register", {"Name": f"svc-{n}", "Port": 1000 + n,
                                                      "Connect": {"SidecarService": {}}})  # fmt: skip
        server.put(
            "/v1/connect/intentions/exact?source=svc-1&destination=svc-2", {"Action": "deny"}
        )
        server.put("/v1/config", {"Kind": "service-defaults", "Name": "svc-3", "Protocol": "http"})
        before_vips = {
            n: server.get(f"/v1/catalog/service/svc-{n}")[0]["ServiceTaggedAddresses"]["virtual"]
            for n in range(30)
        }
        before_root = server.get("/v1/connect/ca/roots")["Roots"][0]["RootCert"]
        before_index = int(server.request("GET", "/v1/catalog/services")[2]["X-Consul-Index"])
    finally:
        server.kill()  # SIGKILL: no chance to flush anything
    restarted = start_server(data_dir=tmp_path)
    try:
        services = restarted.get("/v1/agent/services")
        assert len(services) == 60
        assert restarted.get("/v1/connect/intentions/check?source=svc-1&destination=svc-2") == {
            "Allowed": False, "Reason": "matched intention svc-1 => svc-2 (deny)",
        }  # fmt: skip
        assert restarted.get("/v1/config/service-defaults/svc-3")["Protocol"] == "http"
        assert restarted.get("/v1/connect/ca/roots")["Roots"][0]["RootCert"] == before_root
        for n in range(30):
            tagged = restarted.get(f"/v1/catalog/service/svc-{n}")[0]["ServiceTaggedAddresses"]
            assert tagged["virtual"] == before_vips[n]
        index = int(restarted.request("GET", "/v1/catalog/services")[2]["X-Consul-Index"])
        assert index == before_index
        restarted.put("/v1/agent/service/register", {"Name": "after", "Port": 1})
        assert int(restarted.request("GET", "/v1/catalog/services")[2]["X-Consul-Index"]) > index
    finally:
        restarted.stop()


def test_a_data_dir_that_cannot_be_created_is_one_clear_line(tmp_path: Path) -> None:
    import subprocess
    import sys

    blocker = tmp_path / "file"
    blocker.write_text("x")
    out = subprocess.run(
        [sys.executable, "-m", "loom", "server", "--data-dir", str(blocker / "sub"),
         "--http-addr", "127.0.0.1:0"],
        capture_output=True, text=True, timeout=20,
    )  # fmt: skip
    assert out.returncode == 1
    assert out.stderr.startswith("loom: cannot open the store at")
    assert "Traceback" not in out.stderr


def test_a_taken_http_port_is_one_clear_line(loom_server) -> None:
    import subprocess
    import sys

    out = subprocess.run(
        [sys.executable, "-m", "loom", "server", "--dev", "--http-addr", loom_server.http],
        capture_output=True, text=True, timeout=20,
    )  # fmt: skip
    assert out.returncode == 1
    assert "cannot listen for HTTP on" in out.stderr and "Traceback" not in out.stderr
