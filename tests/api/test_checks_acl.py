"""The check endpoints under ACLs (default deny), attacked with a token of another service.

The token is what a sidecar's dataplane holds: a service identity for ``a`` (write on ``a``
and ``a-sidecar-proxy``). It reports ``a``'s checks and its sidecar's, as the dataplane does
with ``PUT /v1/agent/check/update/:id``; every write on ``b``'s checks, ``b``'s maintenance,
the node's checks or maintenance is a 403 in Consul's words, and nothing changes.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from tests.support.server import ServerProcess, acl_server

ROOT = str(uuid.uuid4())


class Cluster:
    def __init__(self, server: ServerProcess) -> None:
        self.server = server
        status, token, _ = self.call("PUT", "/v1/acl/token",
                                     {"ServiceIdentities": [{"ServiceName": "a"}]}, ROOT)  # fmt: skip
        assert status == 200
        self.a, self.accessor = token["SecretID"], token["AccessorID"]
        for name in ("a", "b"):
            body = {"Name": name, "Port": 8080, "Check": {"TTL": "60s", "Status": "passing"},
                    "Connect": {"SidecarService": {}}}  # fmt: skip
            assert self.call("PUT", "/v1/agent/service/register", body, ROOT)[0] == 200

    def call(self, method: str, path: str, body: Any = None, token: str | None = None) -> Any:
        headers = {"X-Consul-Token": token} if token is not None else {}
        if body is None and method == "PUT":
            body = b""
        return self.server.request(method, path, body, headers)

    def checks(self) -> dict[str, Any]:
        status, checks, _ = self.call("GET", "/v1/agent/checks", token=ROOT)
        assert status == 200
        return dict(checks)

    def denied(self, permission: str, name: str) -> str:
        return (f"Permission denied: token with AccessorID '{self.accessor}' lacks permission "
                f"'{permission}' on \"{name}\"\n")  # fmt: skip


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    with acl_server(ROOT) as server:
        yield Cluster(server)


def test_the_dataplanes_token_reports_its_service_and_sidecar_checks(cluster: Cluster) -> None:
    for cid in ("service:a", "service:a-sidecar-proxy:1", "service:a-sidecar-proxy:2"):
        body = {"Status": "passing", "Output": "from the dataplane"}
        status, text, _ = cluster.call("PUT", f"/v1/agent/check/update/{cid}", body, cluster.a)
        assert status == 200, text
        assert cluster.checks()[cid]["Output"] == "from the dataplane"


@pytest.mark.parametrize(
    "cid", ["service:b", "service:b-sidecar-proxy:1", "service:b-sidecar-proxy:2"]
)
def test_another_services_checks_cannot_be_reported_with_a_token_for_a(
    cluster: Cluster, cid: str
) -> None:
    before = cluster.checks()
    body = {"Status": "critical", "Output": "forged"}
    status, text, _ = cluster.call("PUT", f"/v1/agent/check/update/{cid}", body, cluster.a)
    service = before[cid]["ServiceName"]
    assert (status, text) == (403, cluster.denied("service:write", service))
    for verb in ("fail", "pass", "warn"):
        assert cluster.call("PUT", f"/v1/agent/check/{verb}/{cid}", None, cluster.a)[0] == 403
    assert cluster.call("PUT", f"/v1/agent/check/deregister/{cid}", None, cluster.a)[0] == 403
    assert cluster.checks() == before


def test_registering_a_check_on_b_or_on_the_node_is_refused(cluster: Cluster) -> None:
    before = cluster.checks()
    on_b = {"Name": "evil", "ServiceID": "b", "TTL": "10s"}
    status, text, _ = cluster.call("PUT", "/v1/agent/check/register", on_b, cluster.a)
    assert (status, text) == (403, cluster.denied("service:write", "b"))
    node_check = {"Name": "evil", "TTL": "10s"}
    status, text, _ = cluster.call("PUT", "/v1/agent/check/register", node_check, cluster.a)
    assert (status, text) == (403, cluster.denied("node:write", "loom-server"))
    assert cluster.call("PUT", "/v1/agent/check/register", on_b)[0] == 403  # anonymous
    assert cluster.checks() == before
    on_a = {"Name": "mine", "ServiceID": "a", "TTL": "10s"}
    assert cluster.call("PUT", "/v1/agent/check/register", on_a, cluster.a)[0] == 200
    assert cluster.call("PUT", "/v1/agent/check/deregister/mine", None, cluster.a)[0] == 200


def test_maintenance_of_b_or_of_the_node_is_refused(cluster: Cluster) -> None:
    before = cluster.checks()
    path = "/v1/agent/service/maintenance/b?enable=true"
    assert cluster.call("PUT", path, None, cluster.a)[:2] == (
        403, cluster.denied("service:write", "b"))  # fmt: skip
    assert cluster.call("PUT", "/v1/agent/maintenance?enable=true", None, cluster.a)[:2] == (
        403, cluster.denied("node:write", "loom-server"))  # fmt: skip
    assert cluster.checks() == before
    mine = "/v1/agent/service/maintenance/a?enable="
    assert cluster.call("PUT", mine + "true", None, cluster.a)[0] == 200
    assert cluster.call("PUT", mine + "false", None, cluster.a)[0] == 200


ANONYMOUS = "00000000-0000-0000-0000-000000000002"


def test_agent_health_needs_service_read(cluster: Cluster) -> None:
    # A service identity reads every service (Consul's rule), so the anonymous token asks.
    denied = (f"Permission denied: token with AccessorID '{ANONYMOUS}' lacks permission "
              "'service:read' on \"b\"\n")  # fmt: skip
    assert cluster.call("GET", "/v1/agent/health/service/id/b")[:2] == (403, denied)
    assert cluster.call("GET", "/v1/agent/health/service/name/b")[:2] == (403, denied)
    status, body, _ = cluster.call("GET", "/v1/agent/health/service/id/a", token=cluster.a)
    assert status in (200, 503) and body["Service"]["ID"] == "a"
