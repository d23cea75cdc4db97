"""Consul's leniency for service names that are no DNS label (``api.v1``), on a real server.

Consul registers such a name with a logged warning and leaves it out of DNS; Loom does the
same for a catalog-only service and refuses the name, with a 400 saying why, for anything in
the mesh (its name would be a label of an SNI split on dots). Names an attacker would try
(``/``, ``..``, NUL, a newline, non-ASCII, very long) stay refused everywhere. The pairs are
in ``tests/golden/api/names.txt`` (refreshed with ``--update-golden``).
"""

from __future__ import annotations

from typing import Any

import consul
import pytest

from loom.dns.table import NameTable
from tests.api.test_kv_golden import Recorder
from tests.support.server import ServerProcess

WARNING = (
    "Service name 'api.v1' will not be discoverable via DNS due to invalid characters. "
    "Valid characters include all alpha-numerics and dashes."
)


def test_dotted_names_answer_as_the_golden_pairs_show(
    loom_server: ServerProcess, golden: Any
) -> None:
    r = Recorder(loom_server)
    _, _, headers = loom_server.request("GET", "/v1/catalog/nodes")
    r.base = int(headers["X-Consul-Index"])
    r.call("PUT", "/v1/catalog/register", {
        "Node": "n1", "Address": "10.9.1.1",
        "Service": {"Service": "api.v1", "ID": "api.v1-1", "Port": 8080, "Tags": ["v1"]},
    })  # fmt: skip
    r.call("GET", "/v1/catalog/service/api.v1")
    r.call("GET", "/v1/health/service/api.v1")
    r.call("PUT", "/v1/agent/service/register", {"Name": "api.v1", "ID": "local", "Port": 81,
           "Connect": {"SidecarService": {}}})  # fmt: skip
    r.call("PUT", "/v1/agent/service/register", {"Name": "api.v1", "ID": "native", "Port": 82,
           "Connect": {"Native": True}})  # fmt: skip
    r.call("PUT", "/v1/agent/service/register", {"Name": "p", "Kind": "connect-proxy",
           "Port": 21000, "Proxy": {"DestinationServiceName": "api.v1"}})  # fmt: skip
    r.call("PUT", "/v1/agent/service/register", {"Name": "gw.v1", "Kind": "mesh-gateway",
           "Port": 8443})  # fmt: skip
    r.call("PUT", "/v1/agent/service/register", {"Name": "web", "Port": 80, "Connect": {
           "SidecarService": {"Proxy": {"Upstreams": [
               {"DestinationName": "api.v1", "LocalBindPort": 9191}]}}}})  # fmt: skip
    r.call("PUT", "/v1/connect/intentions/exact?source=web&destination=api.v1",
           {"Action": "allow"})  # fmt: skip
    golden.check("api/names.txt", "\n".join(r.lines) + "\n")


@pytest.mark.parametrize(
    "name",
    ["a/b", "..", "a..b", ".api", "api.", "a\x00b", "api\n", "é", "api v1", "a:b", "x" * 129],
)
def test_names_an_attacker_would_try_are_still_refused(
    loom_server: ServerProcess, name: str
) -> None:
    for path, body in (
        ("/v1/agent/service/register", {"Name": name, "Port": 80}),
        ("/v1/catalog/register", {"Node": "n1", "Address": "10.9.1.1",
                                  "Service": {"Service": name, "ID": "x1", "Port": 80}}),
    ):  # fmt: skip
        status, text, _ = loom_server.request("PUT", path, body)
        assert status == 400, (path, name, status, text)
        assert "is not a valid name" in text
    assert "x1" not in str(loom_server.get("/v1/catalog/services"))
    assert name not in loom_server.get("/v1/catalog/services")


def test_the_server_logs_consuls_warning_once_per_registration(
    loom_server: ServerProcess,
) -> None:
    loom_server.put("/v1/agent/service/register", {"Name": "api.v1", "Port": 80})
    loom_server.put("/v1/catalog/register", {"Node": "n1", "Address": "10.9.1.1",
                    "Service": {"Service": "api.v1", "ID": "api.v1-2", "Port": 80}})  # fmt: skip
    long_name = "a" * 64
    loom_server.put("/v1/agent/service/register", {"Name": long_name, "Port": 80})
    loom_server.put("/v1/agent/service/register", {"Name": "fine", "Port": 80})
    log = loom_server.log_text()
    assert log.count(WARNING) == 2
    assert log.count(f"Service name {long_name!r} will not be discoverable via DNS due to it") == 1
    assert "'fine' will not" not in log


def test_a_dotted_name_stays_out_of_a_dns_table_that_every_proxy_can_read(
    loom_server: ServerProcess,
) -> None:
    host, port = loom_server.http.rsplit(":", 1)
    c = consul.Consul(host=host, port=int(port))
    assert c.agent.service.register("api.v1", service_id="api-v1-a", port=8080,
                                    address="10.244.1.5")  # fmt: skip
    assert c.agent.service.register("api", port=8080, address="10.244.1.6")
    assert c.agent.services()["api-v1-a"]["Service"] == "api.v1"
    _, nodes = c.catalog.service("api.v1")
    assert [n["ServiceAddress"] for n in nodes] == ["10.244.1.5"]
    _, entries = c.health.service("api.v1")
    assert entries[0]["Service"]["ID"] == "api-v1-a"
    raw = loom_server.get("/v1/loom/dns-table")
    table = NameTable.from_json(raw)  # one bad name would make the whole table unreadable
    assert [s["Name"] for s in raw["Services"]] == ["api"]
    assert table.lookup(table.consul_name("api", "service", "default", "dc1")) is not None
    assert not any("api.v1" in name for name in table.names)
    assert c.agent.service.deregister("api-v1-a")
    assert "api-v1-a" not in c.agent.services()
