"""`loom local up` interrupted (Ctrl-C while it waits for its server) or failing (the server
cannot start) undoes what it made: the server process, dnsmasq and the node namespace; the next
`up` works and `down` finds everything (root: real namespaces, as the local mesh tests)."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from loom.local import processes
from tests.support.mesh import free_port, wait_for

pytestmark = [pytest.mark.root]


@pytest.fixture
def env(tmp_path: Path) -> Iterator[dict[str, str]]:
    state = Path(f"/run/loom-test-int-{os.getpid()}")
    prefix = f"li{os.getpid() % 100000}"
    values = {
        "LOOM_LOCAL_PREFIX": prefix,
        "LOOM_LOCAL_STATE_DIR": str(state),
        "LOOM_LOCAL_SUBNET": "10.246.0.0/24",
        "LOOM_LOCAL_DATA_DIR": "-",
        "LOOM_LOCAL_HTTP_ADDR": f"127.0.0.1:{free_port()}",
        "LOOM_LOCAL_GRPC_ADDR": f"127.0.0.1:{free_port()}",
    }
    yield {**os.environ, **values}
    subprocess.run([sys.executable, "-m", "loom", "local", "down"], env={**os.environ, **values},
                   capture_output=True, timeout=60)  # fmt: skip
    if state.is_dir() and not any(state.iterdir()):
        state.rmdir()


def _namespaces(prefix: str) -> list[str]:
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    return [line.split()[0] for line in out.splitlines() if line.startswith(f"{prefix}-")]


def _pid(path: Path) -> int | None:
    try:
        return int(json.loads(path.read_text())["pid"])
    except (OSError, ValueError, KeyError):
        return None


def _nothing_left(env: dict[str, str], pids: list[int]) -> None:
    state = Path(env["LOOM_LOCAL_STATE_DIR"])
    assert _namespaces(env["LOOM_LOCAL_PREFIX"]) == []
    assert not (state / "server.json").exists() and not (state / "node-dns.json").exists()
    for pid in pids:
        assert not processes.alive(pid), f"process {pid} outlived the rolled-back up"


def test_ctrl_c_while_up_waits_for_its_server_undoes_everything(env: dict[str, str]) -> None:
    state = Path(env["LOOM_LOCAL_STATE_DIR"])
    # The server's record appears the moment it is spawned: interrupt `up` while it waits.
    up = subprocess.Popen([sys.executable, "-m", "loom", "local", "up"], env=env,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
    try:
        server = wait_for(lambda: _pid(state / "server.json"), what="the server's record")
        dns = _pid(state / "node-dns.json")
        up.send_signal(signal.SIGINT)
        _, err = up.communicate(timeout=60)
    finally:
        if up.poll() is None:
            up.kill()
            up.communicate()
    assert (up.returncode, err) == (130, "loom: interrupted\n")
    _nothing_left(env, [server] + ([dns] if dns else []))
    again = subprocess.run([sys.executable, "-m", "loom", "local", "up"], env=env,
                           capture_output=True, text=True, timeout=60)  # fmt: skip
    assert again.returncode == 0, again.stderr  # no "address already in use"
    assert _namespaces(env["LOOM_LOCAL_PREFIX"]) == [f"{env['LOOM_LOCAL_PREFIX']}-node"]
    down = subprocess.run([sys.executable, "-m", "loom", "local", "down"], env=env,
                          capture_output=True, text=True, timeout=60)  # fmt: skip
    assert down.returncode == 0, down.stderr
    _nothing_left(env, [])


def test_a_server_that_cannot_start_leaves_no_namespace_or_dnsmasq(env: dict[str, str]) -> None:
    state = Path(env["LOOM_LOCAL_STATE_DIR"])
    host, port = env["LOOM_LOCAL_HTTP_ADDR"].rsplit(":", 1)
    with socket.socket() as taken:
        taken.bind((host, int(port)))
        taken.listen()
        out = subprocess.run([sys.executable, "-m", "loom", "local", "up"], env=env,
                             capture_output=True, text=True, timeout=60)  # fmt: skip
    assert out.returncode == 1 and out.stderr.count("\n") == 1, out.stderr
    assert out.stderr.startswith("loom: the local server exited")
    assert "Traceback" not in out.stderr
    dns_log = state / "node-dns.log"
    assert not dns_log.exists()
    _nothing_left(env, [])
