"""`loom dataplane` for a proxy the server does not have: a bounded wait and a useful message.

Real `loom server --dev` and real `loom` processes; Envoy never starts in these cases.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time

from tests.support.mesh import free_port


def _loom(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "loom", *args], capture_output=True, text=True, timeout=60
    )


def _dataplane(
    http: str, grpc: str, proxy_id: str, *extra: str
) -> subprocess.CompletedProcess[str]:
    return _loom(
        "dataplane", "--proxy-id", proxy_id, "--http-addr", http, "--grpc-addr", grpc, *extra
    )


def _register_two_sidecars(server) -> None:  # type: ignore[no-untyped-def]
    for name in ("web", "api"):
        server.put(
            "/v1/agent/service/register",
            {"Name": name, "Port": free_port(), "Connect": {"SidecarService": {}}},
        )


def test_an_unknown_proxy_id_exits_after_the_timeout_naming_the_nodes_proxies(loom_server) -> None:
    _register_two_sidecars(loom_server)
    started = time.monotonic()
    out = _dataplane(loom_server.http, loom_server.grpc, "unknown", "--registration-timeout", "1.5")
    took = time.monotonic() - started

    assert out.returncode == 1, out.stderr
    assert out.stderr.strip().splitlines()[-1] == (
        "loom: proxy 'unknown' is not registered after 1.5 s; proxies registered on node "
        "'loom-server': api-sidecar-proxy, web-sidecar-proxy"
    )
    assert "Traceback" not in out.stderr
    assert 1.5 <= took < 30
    # The waiting line says the same while it waits.
    assert "waiting: proxy 'unknown' is not registered yet (proxies registered on" in out.stderr


def test_a_node_without_proxies_says_so(loom_server) -> None:
    loom_server.put("/v1/agent/service/register", {"Name": "plain", "Port": 80})
    out = _dataplane(loom_server.http, loom_server.grpc, "web-sidecar-proxy",
                     "--registration-timeout", "0")  # fmt: skip
    assert out.returncode == 1
    assert out.stderr.strip().splitlines()[-1] == (
        "loom: proxy 'web-sidecar-proxy' is not registered after 0 s; "
        "node 'loom-server' has no proxies registered"
    )


def test_a_server_that_does_not_answer_is_a_timeout_too() -> None:
    port = free_port()
    out = _dataplane(f"127.0.0.1:{port}", f"127.0.0.1:{free_port()}", "web-sidecar-proxy",
                     "--registration-timeout", "1")  # fmt: skip
    assert out.returncode == 1
    last = out.stderr.strip().splitlines()[-1]
    assert last.startswith("loom: no answer from the server after 1 s: ")
    assert "Traceback" not in out.stderr


def test_a_bad_timeout_is_a_usage_error() -> None:
    out = _dataplane("127.0.0.1:1", "127.0.0.1:1", "x", "--registration-timeout", "soon")
    assert out.returncode == 2
    assert "'soon' is not a number of seconds" in out.stderr


def test_connect_envoy_bootstrap_for_an_unknown_proxy_names_the_nodes_proxies(
    loom_server,
) -> None:
    _register_two_sidecars(loom_server)
    out = _loom("connect", "envoy", "--bootstrap", "--proxy-id", "unknown",
                "--http-addr", loom_server.http, "--grpc-addr", loom_server.grpc,
                "--sds-socket", "/run/agent/sds.sock")  # fmt: skip
    assert out.returncode == 1
    assert out.stderr.strip() == (
        "loom: proxy 'unknown' is not registered; proxies registered on node 'loom-server': "
        "api-sidecar-proxy, web-sidecar-proxy"
    )


def test_connect_envoy_sidecar_for_finds_the_services_proxy_as_consul_does(loom_server) -> None:
    _register_two_sidecars(loom_server)
    common = ("-http-addr", loom_server.http, "-grpc-addr", loom_server.grpc,
              "-sds-socket", "/run/agent/sds.sock")  # fmt: skip
    out = _loom("connect", "envoy", "-bootstrap", "-sidecar-for", "web", *common)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["node"]["id"] == "web-sidecar-proxy"
    missing = _loom("connect", "envoy", "-bootstrap", "-sidecar-for", "db", *common)
    assert (missing.returncode, missing.stderr) == (
        1, "loom: no sidecar proxy registered for 'db'\n",
    )  # fmt: skip
    without = _loom("connect", "envoy", "-sidecar-for", "web", *common)
    assert without.returncode == 2
    assert "give -bootstrap" in without.stderr
