"""The README's quick start, pasted as one block into bash, does what its comments say.

The block is taken from README.md as written (the first ``sh`` fence under "Quick start")
and run by bash from the checkout's root, as a user pastes it. The only help it gets is a
``loom`` on PATH behind the ``.venv/bin`` the block puts first: where this checkout has no
``.venv`` (a worktree), that ``loom`` runs this checkout's code, as ``.venv/bin/loom`` would.
The block's own last line tears everything down; the test also ends the block's process group
whatever happened, so a failure leaves nothing running. It needs the block's fixed ports free.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PORTS = (8500, 8502, 8080, 1234)


def quick_start_block() -> str:
    text = (ROOT / "README.md").read_text()
    section = text[text.index("## Quick start") :]
    match = re.search(r"```sh\n(.*?)```", section, re.S)
    assert match is not None, "README quick start has no ```sh block"
    return match.group(1)


def _busy(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def test_the_readme_quick_start_block_runs_as_written(tmp_path: Path) -> None:
    busy = [p for p in PORTS if _busy(p)]
    if busy:
        pytest.skip(f"the quick start's ports are in use here: {busy}")
    shim = tmp_path / "bin"
    shim.mkdir()
    (shim / "loom").write_text(f'#!/bin/sh\nexec {sys.executable} -m loom "$@"\n')
    (shim / "loom").chmod(0o755)
    env = {**os.environ, "PATH": f"{shim}:{os.environ['PATH']}",
           "PYTHONPATH": str(ROOT / "src")}  # fmt: skip
    for name in [k for k in env if k.startswith(("LOOM_HTTP", "CONSUL_HTTP"))]:
        del env[name]
    proc = subprocess.Popen(
        ["bash", "-c", quick_start_block()],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        start_new_session=True,
    )  # fmt: skip
    try:
        out, _ = proc.communicate(timeout=240)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    lines = out.splitlines()
    assert "server 127.0.0.1:8500 is ready" in lines, out
    assert "proxy static-client-sidecar-proxy is synced" in lines, out
    first, second = lines.index("hello world"), lines.index("exit code 52")
    assert first < lines.index("Created: static-client => static-server (deny)") < second, out
    status = [line.split() for line in lines if line.startswith("static-")]
    assert [(row[0], row[-1]) for row in status] == [
        ("static-client-sidecar-proxy", "synced"), ("static-server-sidecar-proxy", "synced"),
    ], out  # fmt: skip
    assert proc.returncode == 0, out
    assert "Traceback" not in out, out
    assert not [p for p in PORTS if _busy(p)], "the teardown line left something listening"
