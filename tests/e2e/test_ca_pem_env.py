"""The CA of an https server given only as ``CONSUL_CACERT_PEM`` (as the webhook injects it,
so a pod in any namespace needs no Secret): a real ``loom k8s connect-init`` verifies the
server with it and writes the proxy ID, and a real dataplane's Envoy verifies the TLS xDS
listener with it (inlined in its bootstrap, no CA file anywhere) and gets its listeners;
without the variable connect-init refuses the server's certificate."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from tests.support.leaks import hand_over
from tests.support.mesh import Proc, envoy_admin, free_port, loom_argv, wait_for
from tests.support.server import start_server

pytestmark = pytest.mark.envoy


def _clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CONSUL_", "LOOM_"))}
    return {**env, **extra}


def test_connect_init_and_the_dataplane_verify_the_server_with_only_the_pem_variable(
    tmp_path: Path,
) -> None:
    server = start_server("--https-addr", "127.0.0.1:0", "--grpc-tls-addr", "127.0.0.1:0")
    dataplane: Proc | None = None
    try:
        pem = Path(server.ca_file).read_text()
        server.put("/v1/agent/service/register", {
            "Name": "web", "ID": "web-pod-1", "Port": free_port(),
            "Meta": {"pod-name": "web-pod-1", "k8s-namespace": "far-away"},
            "Connect": {"SidecarService": {"Port": free_port()}}})  # fmt: skip
        init_argv = loom_argv("k8s", "connect-init", f"--http-addr=https://{server.https}",
                              f"--output-dir={tmp_path}", "--skip-redirect", "--timeout=20")  # fmt: skip
        pod = {"POD_NAME": "web-pod-1", "POD_NAMESPACE": "far-away"}

        refused = subprocess.run(init_argv, capture_output=True, text=True, timeout=60,
                                 env=_clean_env(**pod))  # fmt: skip
        assert refused.returncode != 0
        assert "certificate verify failed" in refused.stdout + refused.stderr
        assert not (tmp_path / "proxyid").exists()

        done = subprocess.run(init_argv, capture_output=True, text=True, timeout=60,
                              env=_clean_env(CONSUL_CACERT_PEM=pem, **pod))  # fmt: skip
        assert done.returncode == 0, done.stdout + done.stderr
        proxy_id = (tmp_path / "proxyid").read_text().strip()
        assert proxy_id == "web-pod-1-sidecar-proxy"

        work = tmp_path / "dp"
        dataplane = Proc(
            loom_argv("dataplane", f"--proxy-id-file={tmp_path / 'proxyid'}",
                      f"--http-addr=https://{server.https}",
                      f"--grpc-addr=https://{server.grpc_tls}", "--work-dir", str(work),
                      "--drain-seconds", "0.2"),
            tmp_path / "dp.log",
            env={"CONSUL_CACERT_PEM": pem},
        )  # fmt: skip
        hand_over(dataplane.p.pid)
        wait_for(lambda: (work / "admin-address").exists() or None, 30, "Envoy's admin address")

        def public_listener() -> bool:
            return "public_listener" in envoy_admin(work, "/listeners")

        wait_for(public_listener, 30, "the public listener over TLS xDS")
        bootstrap = next(work.glob("bootstrap*.json")).read_text()
        assert "BEGIN CERTIFICATE" in bootstrap and server.ca_file not in bootstrap
    finally:
        if dataplane is not None:
            dataplane.stop()
        server.stop()
