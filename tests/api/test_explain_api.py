"""``GET /v1/loom/intentions/explain`` and ``loom intention explain`` against a real server.

The server runs with ACLs on and the default policy deny. A user holding intention read on
``a`` only may explain pairs whose destination is ``a``; without a token, with a garbage
token, or for destination ``b``, the attempt is a 403 with Consul's wording and no answer.
"""

from __future__ import annotations

import subprocess
import sys
import uuid
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlencode

import pytest

from tests.support.server import ServerProcess, acl_server

ROOT = str(uuid.uuid4())
RULES = 'service "a" { policy = "read" intentions = "read" }'
ANONYMOUS = "00000000-0000-0000-0000-000000000002"


class Api:
    def __init__(self, server: ServerProcess) -> None:
        self.server = server
        self.root = {"X-Consul-Token": ROOT}
        assert self.request("PUT", "/v1/acl/policy", {"Name": "a", "Rules": RULES})[0] == 200
        status, token, _ = self.request("PUT", "/v1/acl/token", {"Policies": [{"Name": "a"}]})
        assert status == 200
        self.secret, self.accessor = token["SecretID"], token["AccessorID"]
        for name, port in (("a", 21000), ("b", 21001)):
            body = {"Name": name, "Port": 8080 + port % 10,
                    "Connect": {"SidecarService": {"Port": port}}}  # fmt: skip
            assert self.request("PUT", "/v1/agent/service/register", body)[0] == 200

    def request(self, method: str, path: str, body: Any = None) -> tuple[int, Any, Any]:
        return self.server.request(method, path, body, self.root)

    def explain(self, token: str | None, **query: str) -> tuple[int, Any]:
        headers = {} if token is None else {"X-Consul-Token": token}
        path = "/v1/loom/intentions/explain?" + urlencode(query)
        status, body, _ = self.server.request("GET", path, None, headers)
        return status, body


@pytest.fixture(scope="module")
def api() -> Iterator[Api]:
    with acl_server(ROOT) as server:
        yield Api(server)


def test_without_intentions_the_default_deny_decides(api: Api) -> None:
    status, doc = api.explain(api.secret, source="b", destination="a")
    assert status == 200, doc
    assert (doc["Allowed"], doc["Intention"], doc["DefaultPolicy"]) == (False, None, "deny")
    assert [(v["Proxy"], v["Filter"], v["Allowed"], v["Agrees"]) for v in doc["Rbac"]] == [
        ("a-sidecar-proxy", "network", False, True)
    ]
    assert [u["Kind"] for u in doc["Upstreams"]] == [""]


def test_an_allow_intention_is_named_with_its_precedence_and_rbac_policy(api: Api) -> None:
    path = "/v1/connect/intentions/exact?source=b&destination=a"
    assert api.request("PUT", path, {"Action": "allow"})[0] == 200
    try:
        status, doc = api.explain(api.secret, source="b", destination="a")
        assert status == 200 and doc["Allowed"] and doc["Layer"] == "L4"
        assert doc["Intention"]["SourceName"] == "b" and doc["Intention"]["Precedence"] == 9
        assert doc["Rbac"][0]["Policy"] == "intention-0-allow-default-b"
    finally:
        api.request("DELETE", path)


@pytest.mark.parametrize("token", [None, "garbage", "mine"])
def test_an_attacker_cannot_explain_a_destination_it_may_not_read(api: Api, token: Any) -> None:
    secret = api.secret if token == "mine" else token
    status, text = api.explain(secret, source="a", destination="b")
    assert status == 403
    if token is None:
        assert text == (
            f"Permission denied: token with AccessorID '{ANONYMOUS}' lacks permission "
            "'intention:read' on \"b\"\n"
        )
    elif token == "garbage":
        assert text == "ACL not found\n"
    else:
        assert "lacks permission 'intention:read' on \"b\"" in text


@pytest.mark.parametrize(
    ("query", "wording"),
    [
        ({"source": "a"}, "source and destination query parameters are required"),
        ({"source": "*", "destination": "a"}, "no wildcards"),
        ({"source": "b", "destination": "a", "method": "FETCH"}, "is not an HTTP method"),
        ({"source": "b", "destination": "a", "path": "admin"}, "must start with /"),
    ],
)
def test_a_malformed_question_is_a_400_naming_the_problem(
    api: Api, query: dict[str, str], wording: str
) -> None:
    status, text = api.explain(ROOT, **query)
    assert status == 400 and wording in text


def test_the_cli_prints_the_explanation_and_exits_2_when_denied(api: Api) -> None:
    cmd = [sys.executable, "-m", "loom", "intention", "explain", "b", "a",
           "--http-addr", api.server.http, "--token", api.secret]  # fmt: skip
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2, done.stderr
    assert done.stdout.splitlines()[:3] == [
        "default/b => default/a: DENIED",
        "  reason: no intention matched; default policy is deny",
        "  decided by: the default policy (deny)",
    ]
    assert "  rbac: a-sidecar-proxy (network): no policy admits the source" in done.stdout
