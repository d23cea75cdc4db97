"""The TCP probe's refusal reads as Consul's (Go's) whatever event loop runs it: the standard
asyncio loop words a refused connection "Connect call failed (addr)", uvloop differently."""

from __future__ import annotations

import asyncio
import socket

from loom.domain.checks import TCP, CheckDefinition
from loom.health.probes import CRITICAL, probe_tcp


def test_a_refused_tcp_check_says_connection_refused_on_the_standard_event_loop() -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        port = holder.getsockname()[1]
        d = CheckDefinition(TCP, tcp=f"127.0.0.1:{port}", timeout_s=2)
        result = asyncio.run(probe_tcp(d))
    assert result.status == CRITICAL
    assert result.output == f"dial tcp 127.0.0.1:{port}: connect: connection refused"
