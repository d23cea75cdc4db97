"""An attacker against the prepared query API of a real `loom server --acl-default-policy
deny`, beside a user whose token may write queries named ``team-*``, read the query
``shared`` and read the service ``redis`` (and every node).

Consul's rules: writing a named query (or a template, by its prefix) needs ``query:write``
on the name, on the stored name too for an update or delete; reading one ``query:read``;
unnamed queries are shown to management only; a query's Token is ``<hidden>`` from anyone
but management; execute answers only what the executing token may read (``service:read``,
``node:read``), the query's own Token when it has one. Each refusal writes nothing (checked
with the management token).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from tests.support.server import ServerProcess, acl_server

ROOT = str(uuid.uuid4())
ANONYMOUS = "00000000-0000-0000-0000-000000000002"
RULES = """
query_prefix "team-" { policy = "write" }
query "shared" { policy = "read" }
service "redis" { policy = "read" }
node_prefix "" { policy = "read" }
"""
FILTERED = "X-Consul-Results-Filtered-By-ACLs"


class Setup:
    def __init__(self, server: ServerProcess) -> None:
        self.server = server
        self.as_root("PUT", "/v1/acl/policy", {"Name": "q", "Rules": RULES})
        token = self.as_root("PUT", "/v1/acl/token", {"Policies": [{"Name": "q"}]})
        self.secret, self.accessor = token["SecretID"], token["AccessorID"]
        for svc in ("redis", "db"):
            self.as_root("PUT", "/v1/catalog/register", {
                "Node": "n1", "Address": "10.2.0.1",
                "Service": {"Service": svc, "ID": svc, "Port": 1},
            })  # fmt: skip
        self.shared = self.as_root("POST", "/v1/query", {"Name": "shared", "Token": ROOT,
                                   "Service": {"Service": "db"}})["ID"]  # fmt: skip
        self.secret_q = self.as_root("POST", "/v1/query", {"Name": "secret",
                                     "Service": {"Service": "db"}})["ID"]  # fmt: skip
        self.unnamed = self.as_root("POST", "/v1/query", {"Service": {"Service": "db"}})["ID"]

    def call(self, method: str, path: str, body: Any = None, token: str | None = None) -> Any:
        headers = {"X-Consul-Token": token} if token is not None else {}
        return self.server.request(method, path, body, headers)

    def as_root(self, method: str, path: str, body: Any = None) -> Any:
        status, out, _ = self.call(method, path, body, ROOT)
        assert status == 200, (path, status, out)
        return out

    def user(self, method: str, path: str, body: Any = None) -> Any:
        return self.call(method, path, body, self.secret)

    def denied(self, permission: str, name: str, accessor: str | None = None) -> str:
        who = f"token with AccessorID '{accessor or self.accessor}'"
        return f"Permission denied: {who} lacks permission '{permission}' on \"{name}\"\n"

    def names(self) -> list[str]:
        return sorted(q["Name"] for q in self.as_root("GET", "/v1/query"))


@pytest.fixture(scope="module")
def setup() -> Iterator[Setup]:
    with acl_server(ROOT) as server:
        yield Setup(server)


def test_no_token_creates_no_named_query(setup: Setup) -> None:
    status, text, _ = setup.call("POST", "/v1/query", {"Name": "x", "Service": {"Service": "a"}})
    assert (status, text) == (403, setup.denied("query:write", "x", ANONYMOUS))
    assert "x" not in setup.names()


def test_the_user_writes_only_under_its_prefix(setup: Setup) -> None:
    status, out, _ = setup.user(
        "POST", "/v1/query", {"Name": "team-a", "Service": {"Service": "redis"}}
    )
    assert status == 200, out
    status, text, _ = setup.user("POST", "/v1/query", {"Name": "evil", "Service": {"Service": "a"}})
    assert (status, text) == (403, setup.denied("query:write", "evil"))
    catch_all = {"Name": "", "Template": {"Type": "name_prefix_match"}, "Service": {"Service": "a"}}
    status, text, _ = setup.user("POST", "/v1/query", catch_all)
    who = f"token with AccessorID '{setup.accessor}'"
    assert (status, text) == (403, f"Permission denied: {who} lacks permission 'query:write'\n")
    assert "evil" not in setup.names() and len(setup.names()) == 4  # shared secret unnamed team-a


def test_the_user_can_neither_change_nor_delete_nor_rename_into_others_names(setup: Setup) -> None:
    status, text, _ = setup.user(
        "PUT", f"/v1/query/{setup.shared}", {"Name": "shared", "Service": {"Service": "x"}}
    )
    assert (status, text) == (403, setup.denied("query:write", "shared"))
    status, text, _ = setup.user("DELETE", f"/v1/query/{setup.secret_q}")
    assert (status, text) == (403, setup.denied("query:write", "secret"))
    mine = setup.user("POST", "/v1/query", {"Name": "team-b", "Service": {"Service": "redis"}})[1][
        "ID"
    ]
    status, text, _ = setup.user(
        "PUT", f"/v1/query/{mine}", {"Name": "stolen", "Service": {"Service": "x"}}
    )
    assert (status, text) == (403, setup.denied("query:write", "stolen"))
    assert setup.as_root("GET", f"/v1/query/{setup.shared}")[0]["Service"]["Service"] == "db"
    assert "stolen" not in setup.names() and "team-b" in setup.names()


def test_reads_show_only_readable_named_queries_and_hide_tokens(setup: Setup) -> None:
    status, out, headers = setup.user("GET", "/v1/query")
    assert status == 200 and headers.get(FILTERED) == "true"
    names = {q["Name"] for q in out}
    assert "shared" in names and "secret" not in names and "" not in names
    [shared] = [q for q in out if q["Name"] == "shared"]
    assert shared["Token"] == "<hidden>"
    assert setup.as_root("GET", f"/v1/query/{setup.shared}")[0]["Token"] == ROOT
    status, text, _ = setup.user("GET", f"/v1/query/{setup.secret_q}")
    assert (status, text) == (403, setup.denied("query:read", "secret"))
    assert setup.user("GET", f"/v1/query/{setup.unnamed}")[0] == 403
    assert setup.user("GET", f"/v1/query/{setup.secret_q}/explain")[0] == 403
    assert setup.user("GET", "/v1/query/shared/explain")[1]["Query"]["Token"] == "<hidden>"


def test_execute_answers_only_what_the_executing_token_may_read(setup: Setup) -> None:
    status, out, headers = setup.user("GET", f"/v1/query/{setup.secret_q}/execute")
    assert status == 200 and out["Nodes"] == [] and headers.get(FILTERED) == "true"
    status, out, _ = setup.call("GET", "/v1/query/team-a/execute")  # anonymous: no redis
    assert status == 200 and out["Nodes"] == []
    status, out, _ = setup.user("GET", "/v1/query/team-a/execute")
    assert [n["Service"]["ID"] for n in out["Nodes"]] == ["redis"]
    # "shared" carries the management token, which reads db: Consul executes with it.
    status, out, _ = setup.user("GET", "/v1/query/shared/execute")
    assert [n["Service"]["ID"] for n in out["Nodes"]] == ["db"]


def test_a_garbage_token_is_refused(setup: Setup) -> None:
    status, text, _ = setup.call("GET", "/v1/query", token=str(uuid.uuid4()))
    assert (status, text) == (403, "ACL not found\n")


def test_a_catch_all_template_is_guarded_by_rules_on_the_empty_prefix(setup: Setup) -> None:
    catch_all = {"Name": "", "Template": {"Type": "name_prefix_match"},
                 "Service": {"Service": "${name.full}"}}  # fmt: skip
    qid = setup.as_root("POST", "/v1/query", catch_all)["ID"]
    status, text, _ = setup.user("GET", "/v1/query/db/explain")
    who = f"token with AccessorID '{setup.accessor}'"
    assert (status, text) == (403, f"Permission denied: {who} lacks permission 'query:read'\n")
    assert qid not in [q["ID"] for q in setup.user("GET", "/v1/query")[1]]
    status, _, _ = setup.user("PUT", f"/v1/query/{qid}", {**catch_all, "Name": "team-x"})
    assert status == 403  # query:write on the stored "" prefix
    assert setup.as_root("GET", f"/v1/query/{qid}")[0]["Name"] == ""
    status, out, _ = setup.user("GET", "/v1/query/redis/execute")  # execute checks no query rule
    assert status == 200 and [n["Service"]["ID"] for n in out["Nodes"]] == ["redis"]
