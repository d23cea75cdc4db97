"""The WAN link between two datacenters comes and goes: a join retried until the other side
is up, local work untouched while it is down, learned states kept across a restart."""

from __future__ import annotations

import socket
import time
from pathlib import Path

from tests.support.federation import names_all, until_states
from tests.support.server import start_server


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def test_a_join_is_retried_until_the_other_datacenter_comes_up() -> None:
    port = _free_port()
    dc2 = start_server("--datacenter", "dc2", "--join-wan", f"127.0.0.1:{port}")
    try:
        assert dc2.get("/v1/catalog/datacenters") == ["dc2"]  # started without waiting
        dc1 = start_server("--datacenter", "dc1", "--http-addr", f"127.0.0.1:{port}")
        try:
            until_states(dc1, names_all("dc1", "dc2"))
            until_states(dc2, names_all("dc1", "dc2"))
        finally:
            dc1.stop()
    finally:
        dc2.stop()


def test_losing_the_wan_never_blocks_local_work_and_a_restart_keeps_what_was_learned(
    tmp_path: Path,
) -> None:
    dc1 = start_server("--datacenter", "dc1")
    dc2 = None
    try:
        dc2 = start_server("--datacenter", "dc2", "--join-wan", dc1.http, data_dir=tmp_path)
        until_states(dc2, names_all("dc1", "dc2"))
        dc2.stop()
        # restarted without --join-wan: it still knows dc1 (sqlite data dir)
        dc2 = start_server("--datacenter", "dc2", data_dir=tmp_path)
        assert dc2.get("/v1/catalog/datacenters") == ["dc2", "dc1"]
        assert dc2.get("/v1/catalog/services?dc=dc1") == {"consul": []}
        dc1.stop()
        started = time.monotonic()
        dc2.put("/v1/agent/service/register", {"Name": "local-web", "Port": 80})
        assert [i["ServiceID"] for i in dc2.get("/v1/catalog/service/local-web")] == ["local-web"]
        dc2.put("/v1/config", {"Kind": "service-defaults", "Name": "local-web"})
        assert dc2.put("/v1/kv/k", b"v") is True
        assert time.monotonic() - started < 2.0
        started = time.monotonic()
        status, body, _ = dc2.request("GET", "/v1/catalog/services?dc=dc1")
        assert (status, body) == (500, "No path to datacenter")
        assert time.monotonic() - started < 3.0
        assert dc2.get("/v1/catalog/datacenters") == ["dc2", "dc1"]  # still known
    finally:
        if dc2 is not None:
            dc2.stop()
        dc1.stop()
