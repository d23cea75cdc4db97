"""The ACL core stays pure: its modules import nothing that does I/O, waits, or reads a clock.

A contract in code rather than by discipline: each module of ``loom.acl`` and the new
``loom.ca.spiffe``/``loom.ca.csr`` is parsed, and its imports are checked against the modules
that would let it touch the network, processes, files, time or the event loop.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import loom.acl

SRC = Path(loom.acl.__file__).parent
MODULES = [*sorted(SRC.glob("*.py")), SRC.parent / "ca" / "spiffe.py", SRC.parent / "ca" / "csr.py"]
FORBIDDEN = {
    "asyncio",
    "socket",
    "subprocess",
    "os",
    "time",
    "random",
    "secrets",
    "urllib.request",
    "http",
    "aiohttp",
    "grpc",
    "ssl",
    "shutil",
    "pathlib",
    "threading",
    "loom.server",
    "loom.store",
    "loom.api",
    "loom.cli",
    "loom.xds",
    "loom.dataplane",
}


def imported(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


@pytest.mark.parametrize("path", MODULES, ids=lambda p: p.name)
def test_the_module_imports_nothing_that_does_io_or_reads_a_clock(path: Path) -> None:
    bad = {n for n in imported(path) if any(n == f or n.startswith(f + ".") for f in FORBIDDEN)}
    assert not bad, f"{path.name} imports {sorted(bad)}"
