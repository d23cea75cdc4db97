"""Ctrl-C at any point of a command's start-up, its imports included, is one line and exit 130
(or, once the server handles signals itself, a clean stop): never a traceback (issue 11)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

# Raises KeyboardInterrupt when MODULE is imported (as Ctrl-C would at that instant), then runs
# `python -m loom ARGS...` exactly as the shell does.
HOOK = """
import runpy, sys
target = sys.argv.pop(1)
class Interrupt:
    def find_spec(self, name, path=None, target_module=None):
        if name == target:
            raise KeyboardInterrupt
sys.meta_path.insert(0, Interrupt())
sys.argv[0] = "loom"
runpy.run_module("loom", run_name="__main__", alter_sys=True)
"""

SERVER = ["server", "--dev", "--http-addr", "127.0.0.1:0", "--grpc-addr", "127.0.0.1:0"]


@pytest.mark.parametrize(("module", "args"), [
    ("loom.cli", SERVER),
    ("loom.cli.toplevel", SERVER),
    ("loom.cli.server", SERVER),  # the command module its parser is built from
    ("aiohttp", SERVER),
    ("grpc", SERVER),
    ("loom.control.state", SERVER),
    ("loom.api.client", ["catalog", "services", "--http-addr", "127.0.0.1:1"]),
])  # fmt: skip
def test_ctrl_c_while_a_command_imports_is_one_line_and_exit_130(
    tmp_path: Path, module: str, args: list[str]
) -> None:
    hook = tmp_path / "hook.py"
    hook.write_text(HOOK)
    out = subprocess.run([sys.executable, str(hook), module, *args],
                         capture_output=True, text=True, timeout=30)  # fmt: skip
    assert (out.returncode, out.stderr) == (130, "loom: interrupted\n")


@pytest.mark.parametrize("after_s", [0.15, 0.3, 0.45, 0.6, 0.9])
def test_a_real_sigint_early_in_server_start_up_never_prints_a_traceback(after_s: float) -> None:
    proc = subprocess.Popen([sys.executable, "-m", "loom", *SERVER], stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True, env={**os.environ})  # fmt: skip
    try:
        time.sleep(after_s)  # the point of interruption, not a wait for something to happen
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert "Traceback" not in err, err
    assert proc.returncode in (0, 130), (proc.returncode, err)
    if proc.returncode == 130:
        assert err.endswith("loom: interrupted\n") and err.count("loom: interrupted") == 1
