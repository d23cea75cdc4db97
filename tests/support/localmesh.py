"""Helpers for end-to-end tests of ``loom local`` (root, real Envoy): a mesh of the test's own
(its own prefix, subnet and state directory), the seed's pair of pods in it, and curl from a pod."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from loom.local.mesh import LocalMesh, LocalSettings
from loom.local.netns import LocalNetSettings
from tests.support.mesh import free_port

ECHO = [sys.executable, "-m", "loom", "http-echo"]
"""Loom's HTTP echo app, the seeds' static-server."""


def local_settings(tag: str, subnet: str, **fields: Any) -> LocalSettings:
    """Settings of a mesh that touches nothing another test or a user's mesh uses: interface
    prefix and state directory by ``tag`` and this process, addresses in ``subnet``, the server
    on free loopback ports, no data directory; ``fields`` set the rest."""
    state = Path(f"/run/loom-{tag}-test-{os.getpid()}")
    return LocalSettings(
        net=LocalNetSettings(prefix=f"{tag}{os.getpid() % 100000}", subnet=subnet, state_dir=state),
        http_addr=f"127.0.0.1:{free_port()}",
        grpc_addr=f"127.0.0.1:{free_port()}",
        data_dir=None,
        **fields,
    )


@contextlib.contextmanager
def seed_pair(
    settings: LocalSettings, before: Callable[[LocalMesh], None] | None = None
) -> Iterator[LocalMesh]:
    """The mesh up with the seeds' static-server (says "hello world" on 8080) and
    static-client pods (``before`` runs once the mesh is up, before the pods); afterwards
    ``down``, which must leave the state directory empty, and the directory removed."""
    m = LocalMesh(settings)
    state = settings.net.state_dir
    try:
        m.up()
        if before is not None:
            before(m)
        m.run("static-server", [8080], {}, [*ECHO, "-text", "hello world", "-listen", ":8080"])
        m.run("static-client", [], {}, ["sleep", "3600"])
        yield m
    finally:
        m.down()
        assert not state.exists() or not any(state.iterdir())
        if state.exists():
            state.rmdir()


def exec_in(
    mesh: LocalMesh, pod: str, *cmd: str, timeout: float = 20
) -> subprocess.CompletedProcess[str]:
    """``cmd`` run in ``pod`` as the pod's app runs (its namespace and user)."""
    return subprocess.run(
        mesh.exec_argv(pod, list(cmd)), capture_output=True, text=True, timeout=timeout
    )


def curl(mesh: LocalMesh, pod: str, url: str, seconds: int = 3) -> tuple[int, str]:
    """curl's exit code and body for ``url`` from ``pod`` (``-m seconds``)."""
    out = exec_in(mesh, pod, "curl", "-s", "-m", str(seconds), url)
    return out.returncode, out.stdout
