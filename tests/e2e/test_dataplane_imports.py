"""What a serving ``loom dataplane`` agent has imported (issue 17: the agent beside every
Envoy <= 30 MB RSS; ``bench/dataplane_rss.py`` measures it).

A real agent against a real server, with a real Envoy, run until Envoy is ready (so the agent
has had its key made, its CSR signed, served both secrets over SDS and started its checks),
then stopped with SIGTERM; on its way out it writes its ``sys.modules``. The test names what
must not be there: grpcio, protobuf and Envoy's generated modules (SDS is spoken by
``h2grpc``/``sdswire``), ``cryptography`` (the key is made by a short-lived child,
``keygen``), uvloop, and the other commands' packages. No timing here.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from tests.support.mesh import Proc, free_port, wait_for

pytestmark = pytest.mark.envoy

HEAVY = ("grpc", "google", "envoy", "cryptography", "uvloop", "aiohttp", "dns", "yaml",
         "lightkube")  # fmt: skip
"""Third-party packages the serving agent must not hold (top-level names)."""

INTERNALS = ("loom.server", "loom.control", "loom.store", "loom.xds.serve", "loom.dns.server",
             "loom.k8s", "loom.local", "loom.ca.csr", "loom.ca.authority")  # fmt: skip
"""Loom modules of other commands, or that would bring ``cryptography`` back."""

_AGENT = """
import json, sys
from loom.cli import main
code = main(ARGV)
with open(OUT, "w") as out:
    json.dump(sorted(sys.modules), out)
sys.exit(code)
"""


def _loaded(modules: list[str], names: tuple[str, ...]) -> list[str]:
    return sorted(m for m in modules if any(m == n or m.startswith(n + ".") for n in names))


def test_a_serving_agent_holds_no_grpc_protobuf_cryptography_uvloop_or_other_commands_code(
    loom_server, tmp_path: Path  # type: ignore[no-untyped-def]
) -> None:
    loom_server.put("/v1/agent/service/register", {"Name": "web", "Port": free_port(),
                    "Connect": {"SidecarService": {"Port": free_port()}}})  # fmt: skip
    work, out = tmp_path / "work", tmp_path / "modules.json"
    argv = ["dataplane", "--proxy-id", "web-sidecar-proxy", "--http-addr", loom_server.http,
            "--grpc-addr", loom_server.grpc, "--work-dir", str(work), "--drain-seconds", "0.2"]
    script = _AGENT.replace("ARGV", repr(argv)).replace("OUT", repr(str(out)))
    agent = Proc([sys.executable, "-c", script], tmp_path / "agent.log")
    try:
        wait_for(lambda: (work / "ready").exists() or not agent.alive(), 90, "Envoy ready")
        assert agent.alive(), agent.output()
    finally:
        status = agent.stop()
    assert status == 0, agent.output()
    modules = json.loads(out.read_text())
    for serving in ("loom.dataplane.h2grpc", "loom.dataplane.sdswire", "loom.dataplane.keygen",
                    "loom.dataplane.checks"):  # fmt: skip
        assert serving in modules  # it did serve SDS and run its checks
    assert _loaded(modules, HEAVY) == []
    assert _loaded(modules, INTERNALS) == []
