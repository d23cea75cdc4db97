"""The DNS table's prepared queries under ACLs, on a real `loom server --acl-default-policy
deny`: a token sees only the query answers of services it may read, as it sees only those
services, and no token ever sees a query's ID in the table."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.api.test_acl_attacker import FILTERED, ROOT, Mesh
from tests.support.server import acl_server


@pytest.fixture
def mesh() -> Iterator[Mesh]:
    with acl_server(ROOT) as server:
        yield Mesh(server)


def test_the_dns_table_lists_only_the_queries_of_readable_services(mesh: Mesh) -> None:
    ids = [mesh.as_root("POST", "/v1/query", {"Name": f"q-{svc}", "Service": {"Service": svc}})["ID"]
           for svc in ("a", "b")]  # fmt: skip
    everything = mesh.as_root("GET", "/v1/loom/dns-table")
    assert sorted(q.get("Name", "#") for q in everything["Queries"]) == ["#", "#", "q-a", "q-b"]
    status, table, headers = mesh.call("GET", "/v1/loom/dns-table", token=mesh.a_secret)
    assert status == 200 and headers.get(FILTERED) == "true"
    assert sorted(q.get("Name", "#") for q in table["Queries"]) == ["#", "q-a"]
    assert {q["Service"] for q in table["Queries"]} == {"a"}
    assert not any(i in str(everything) for i in ids)
