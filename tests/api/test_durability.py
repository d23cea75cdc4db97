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


def test_every_acknowledged_write_of_a_concurrent_stream_survives_repeated_sigkills(
    tmp_path: Path,
) -> None:
    """Writers register services flat out; the server is SIGKILLed after a random number of
    acknowledged writes (a different point each time), restarted on the same data dir, and
    must hold every write it acknowledged, across all the kills."""
    import http.client
    import json
    import random
    import sqlite3
    import threading

    rng = random.Random(11)
    acked: set[str] = set()
    lock = threading.Lock()
    enough = threading.Event()
    failures: list[str] = []

    def write(addr: str, prefix: str, stop: threading.Event, target: int) -> None:
        host, port = addr.rsplit(":", 1)
        conn = http.client.HTTPConnection(host, int(port), timeout=10)
        n = 0
        try:
            while not stop.is_set():
                name = f"{prefix}-{n}"
                body = json.dumps({"Name": name, "Port": 1000 + n % 5000})
                try:
                    conn.request("PUT", "/v1/agent/service/register", body)
                    resp = conn.getresponse()
                    resp.read()
                    status = resp.status
                except (OSError, http.client.HTTPException):
                    return  # killed: whatever was not answered was not acknowledged
                if status != 200:
                    failures.append(f"{name}: HTTP {status}")
                    return
                with lock:
                    acked.add(name)
                    if len(acked) >= target:
                        enough.set()
                n += 1
        finally:
            conn.close()

    kills = 10
    for round_ in range(kills):
        server = start_server(data_dir=tmp_path)
        stop = threading.Event()
        writers: list[threading.Thread] = []
        try:
            services = set(server.get("/v1/agent/services"))
            missing = acked - services
            assert not missing, f"round {round_}: {len(missing)} acknowledged writes lost"
            target = len(acked) + rng.randint(10, 150)
            enough.clear()
            writers = [
                threading.Thread(target=write, args=(server.http, f"r{round_}w{w}", stop, target))
                for w in range(4)
            ]
            for t in writers:
                t.start()
            assert enough.wait(60), f"the writers stalled: {failures}"
        finally:
            server.kill()  # SIGKILL mid-stream: writes in flight are cut off
            stop.set()
            for t in writers:
                t.join(20)
    assert not failures
    final = start_server(data_dir=tmp_path)
    try:
        services = set(final.get("/v1/agent/services"))
        assert acked <= services and len(acked) > kills * 10
        # Any write the server applied is there; some were applied but not yet acknowledged.
        assert len(services - acked) <= kills * 4
    finally:
        final.stop()
    db = sqlite3.connect(tmp_path / "state.db")
    try:
        assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    finally:
        db.close()
