"""What the CLI imports: the parser of every command without the code that runs them.

``loom --help`` (issue 17: <= 150 ms) and ``loom dataplane`` (the agent beside every Envoy,
issue 17: small RSS) must not pay for dnspython, aiohttp, yaml, the Kubernetes client or the
server. Each case runs in a fresh interpreter, since this one has imported everything already,
and reads that interpreter's ``sys.modules``. No timing here: the bench
``bench/cli_startup.py`` measures the time.
"""

from __future__ import annotations

import json
import subprocess
import sys

from loom.cli import toplevel

HEAVY = ("aiohttp", "dns", "yaml", "grpc", "cryptography", "lightkube", "uvloop")
"""Third-party packages no command's parser needs (top-level names in ``sys.modules``)."""

INTERNALS = ("loom.server", "loom.xds", "loom.dns.server", "loom.dataplane", "loom.k8s",
             "loom.local", "loom.api", "loom.control", "loom.store")  # fmt: skip
"""Loom packages whose code runs a command, never needed to describe one."""

COMMAND_MODULES = (*(f"loom.cli.{m}" for m in toplevel.MODULES), "loom.dns", "loom.redirect")
"""What describes one command (its parser): ``loom --help`` lists every command from
``loom.cli.toplevel`` without them."""

STDLIB_UNNEEDED = ("dataclasses", "inspect", "json", "pathlib", "urllib", "ipaddress", "base64")
"""Standard modules the parsers of some commands use (settings dataclasses, paths, JSON),
none of them ``loom --help``'s (several milliseconds of a slow machine's start-up)."""

_REPORT = """
import contextlib, io, sys
from loom.cli import main
out = io.StringIO()
with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
    try:
        code = main(ARGV)
    except SystemExit as exc:
        code = exc.code
modules = sorted(sys.modules)
import json  # after the count: the command's imports alone
print(json.dumps({"code": code, "out": out.getvalue(), "modules": modules}))
"""


def _run_in_fresh_interpreter(argv: list[str]) -> dict[str, object]:
    script = _REPORT.replace("ARGV", repr(argv))
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=True
    )
    report: dict[str, object] = json.loads(done.stdout.splitlines()[-1])
    return report


def _loaded(modules: object, names: tuple[str, ...]) -> list[str]:
    assert isinstance(modules, list)
    return sorted(m for m in modules if any(m == n or m.startswith(n + ".") for n in names))


def test_loom_help_lists_every_command_without_importing_heavy_packages() -> None:
    report = _run_in_fresh_interpreter(["--help"])
    assert report["code"] == 0
    for command in ("server", "dataplane", "dns-proxy", "connect", "k8s", "local", "demo"):
        assert command in str(report["out"])
    assert _loaded(report["modules"], HEAVY) == []
    assert _loaded(report["modules"], INTERNALS) == []
    assert _loaded(report["modules"], COMMAND_MODULES) == []
    assert _loaded(report["modules"], STDLIB_UNNEEDED) == []


def test_the_help_of_the_heaviest_commands_imports_none_of_their_code() -> None:
    for argv in (["dns-proxy", "--help"], ["k8s", "webhook", "--help"], ["local", "--help"],
                 ["members", "--help"], ["catalog", "nodes", "--help"],
                 ["connect", "ca", "set-config", "--help"]):  # fmt: skip
        report = _run_in_fresh_interpreter(argv)
        assert report["code"] == 0, argv
        assert "usage: loom " + argv[0] in str(report["out"]), argv
        assert _loaded(report["modules"], HEAVY) == [], argv
        assert _loaded(report["modules"], INTERNALS) == [], argv


def test_the_dataplane_agent_runs_without_yaml_aiohttp_dnspython_or_other_commands_code() -> None:
    # A real run up to the wait for the server (nothing listens on port 9), where the agent
    # has imported all it needs before starting Envoy; no DNS proxy or metrics asked for.
    report = _run_in_fresh_interpreter(
        ["dataplane", "--proxy-id", "web-sidecar-proxy", "--http-addr", "127.0.0.1:9",
         "--grpc-addr", "127.0.0.1:9", "--registration-timeout", "0.2"]
    )  # fmt: skip
    assert report["code"] == 1
    assert "no answer from the server after 0.2 s" in str(report["out"])
    modules = report["modules"]
    assert isinstance(modules, list)
    assert "loom.dataplane.agent" in modules  # it did run the agent, up to its event loop
    assert _loaded(modules, ("aiohttp", "dns", "yaml", "lightkube", "uvloop", "grpc", "google",
                             "cryptography")) == []  # fmt: skip
    assert _loaded(modules, ("loom.server", "loom.dns.server", "loom.k8s", "loom.local")) == []
    others = [m for m in COMMAND_MODULES if m not in ("loom.cli.dataplane", "loom.cli.api")]
    assert _loaded(modules, tuple(others)) == []  # the parsers of the other commands neither
