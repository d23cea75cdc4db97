"""An attacker against the KV, session and txn API of a real `loom server
--acl-default-policy deny`, beside a user whose token may write ``app/`` and read ``shared/``
and hold sessions on the server's node.

No token, a garbage token, or the user's token outside its prefix: a 403 in Consul's words
and nothing written (checked with the management token). Lists are filtered and marked.
Hostile keys and bodies get a 400 or 413 and never reach another route or table.
"""

from __future__ import annotations

import base64
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from tests.support.server import ServerProcess, acl_server

ROOT = str(uuid.uuid4())
ANONYMOUS = "00000000-0000-0000-0000-000000000002"
RULES = """
key_prefix "app/" { policy = "write" }
key_prefix "shared/" { policy = "read" }
key "app/secret" { policy = "deny" }
session_prefix "" { policy = "write" }
"""
FILTERED = "X-Consul-Results-Filtered-By-ACLs"


class Setup:
    def __init__(self, server: ServerProcess) -> None:
        self.server = server
        self.as_root("PUT", "/v1/acl/policy", {"Name": "app", "Rules": RULES})
        token = self.as_root("PUT", "/v1/acl/token", {"Policies": [{"Name": "app"}]})
        self.secret, self.accessor = token["SecretID"], token["AccessorID"]
        for key in ("shared/a", "shared/b", "other/x", "app/secret"):
            self.as_root("PUT", f"/v1/kv/{key}", b"root")

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

    def value(self, key: str) -> bytes | None:
        status, out, _ = self.call("GET", f"/v1/kv/{key}", token=ROOT)
        return base64.b64decode(out[0]["Value"] or "") if status == 200 else None


@pytest.fixture(scope="module")
def setup() -> Iterator[Setup]:
    with acl_server(ROOT) as server:
        yield Setup(server)


def test_no_token_reads_and_writes_nothing(setup: Setup) -> None:
    status, text, _ = setup.call("GET", "/v1/kv/shared/a")
    assert (status, text) == (403, setup.denied("key:read", "shared/a", ANONYMOUS))
    status, text, _ = setup.call("PUT", "/v1/kv/app/x", b"evil")
    assert (status, text) == (403, setup.denied("key:write", "app/x", ANONYMOUS))
    assert setup.value("app/x") is None


def test_a_garbage_token_is_not_found(setup: Setup) -> None:
    garbage = str(uuid.uuid4())
    assert setup.call("GET", "/v1/kv/shared/a", token=garbage)[:2] == (403, "ACL not found\n")
    assert setup.call("PUT", "/v1/kv/app/x", b"x", token=garbage)[:2] == (403, "ACL not found\n")


def test_the_user_writes_its_prefix_and_reads_what_it_may(setup: Setup) -> None:
    assert setup.user("PUT", "/v1/kv/app/mine", b"ok")[:2] == (200, True)
    assert setup.user("GET", "/v1/kv/shared/a")[0] == 200
    assert setup.value("app/mine") == b"ok"


def test_the_user_cannot_write_outside_its_prefix_or_read_a_denied_key(setup: Setup) -> None:
    status, text, _ = setup.user("PUT", "/v1/kv/shared/a", b"evil")
    assert (status, text) == (403, setup.denied("key:write", "shared/a"))
    status, text, _ = setup.user("GET", "/v1/kv/app/secret")
    assert (status, text) == (403, setup.denied("key:read", "app/secret"))
    status, text, _ = setup.user("DELETE", "/v1/kv/other/x")
    assert status == 403
    assert setup.value("shared/a") == b"root" and setup.value("other/x") == b"root"


def test_a_recursive_delete_needs_write_on_the_whole_prefix(setup: Setup) -> None:
    # app/ holds app/secret, which the user may not write: the tree delete is refused whole
    status, text, _ = setup.user("DELETE", "/v1/kv/app/?recurse")
    assert (status, text) == (403, setup.denied("key:write", "app/"))
    assert setup.value("app/secret") == b"root"
    assert setup.user("DELETE", "/v1/kv/?recurse")[0] == 403
    assert setup.value("other/x") == b"root"


def test_lists_are_filtered_by_key_read_and_marked(setup: Setup) -> None:
    status, entries, headers = setup.user("GET", "/v1/kv/?recurse")
    assert status == 200 and headers.get(FILTERED) == "true"
    keys = {e["Key"] for e in entries}
    assert {"shared/a", "shared/b"} <= keys and "other/x" not in keys
    assert "app/secret" not in keys
    status, listed, headers = setup.user("GET", "/v1/kv/?keys")
    assert status == 200 and "other/x" not in listed and headers.get(FILTERED) == "true"


def test_a_transaction_with_one_forbidden_op_writes_nothing(setup: Setup) -> None:
    value = base64.b64encode(b"evil").decode()
    ops = [
        {"KV": {"Verb": "set", "Key": "app/txn-ok", "Value": value}},
        {"KV": {"Verb": "set", "Key": "other/x", "Value": value}},
    ]
    status, out, _ = setup.user("PUT", "/v1/txn", ops)
    assert status == 409 and out["Errors"] == [{"OpIndex": 1, "What": "Permission denied"}]
    assert setup.value("app/txn-ok") is None and setup.value("other/x") == b"root"
    status, out, _ = setup.user("PUT", "/v1/txn", [{"KV": {"Verb": "get-tree", "Key": ""}}])
    assert status == 200
    assert "other/x" not in {r["KV"]["Key"] for r in out["Results"]}
    status, out, _ = setup.user("PUT", "/v1/txn", [{"KV": {"Verb": "delete-tree", "Key": ""}}])
    assert status == 409 and setup.value("other/x") == b"root"


def test_sessions_need_session_acls(setup: Setup) -> None:
    status, text, _ = setup.call("PUT", "/v1/session/create", {"Name": "evil"})
    assert (status, text) == (403, setup.denied("session:write", "loom-server", ANONYMOUS))
    status, out, _ = setup.user("PUT", "/v1/session/create", {"Name": "mine"})
    assert status == 200
    sid = out["ID"]
    assert setup.call("PUT", f"/v1/session/destroy/{sid}")[0] == 403
    assert setup.call("GET", f"/v1/session/info/{sid}")[0] == 403
    status, listed, headers = setup.call("GET", "/v1/session/list")
    assert status == 200 and listed == [] and headers.get(FILTERED) == "true"
    assert setup.user("PUT", f"/v1/kv/app/lock?acquire={sid}", b"")[:2] == (200, True)
    assert setup.user("PUT", f"/v1/session/destroy/{sid}")[:2] == (200, True)


@pytest.mark.parametrize(
    ("path", "reason"),
    [
        ("/v1/kv/app/nul%00byte", "NUL"),
        ("/v1/kv/app/bad%ff%fe", "UTF-8"),
        ("/v1/kv/app/" + "k" * 5000, "longer than 4096 bytes"),
    ],
)
def test_hostile_keys_are_refused(setup: Setup, path: str, reason: str) -> None:
    status, text, _ = setup.user("PUT", path, b"x")
    assert status == 400 and reason in text
    status, text, _ = setup.call("PUT", path, b"x", token=ROOT)
    assert status == 400 and reason in text


def test_dot_dot_in_a_key_stays_a_key_and_reaches_no_other_route(setup: Setup) -> None:
    # the key is checked and kept as written, never normalised: shared/../app/x is under
    # shared/ (read only), not app/x
    status, text, _ = setup.user("PUT", "/v1/kv/shared/../app/x", b"x")
    assert (status, text) == (403, setup.denied("key:write", "shared/../app/x"))
    assert setup.value("app/x") is None
    tokens = setup.as_root("GET", "/v1/acl/tokens")
    status, out, _ = setup.user("PUT", "/v1/kv/app/../acl/tokens", b"dots")
    assert (status, out) == (200, True)  # a key under app/, nothing else
    assert setup.value("app/../acl/tokens") == b"dots"
    assert setup.as_root("GET", "/v1/acl/tokens") == tokens


def test_huge_bodies_are_refused_and_write_nothing(setup: Setup) -> None:
    status, _, _ = setup.user("PUT", "/v1/kv/app/huge", b"x" * (5 * 1024 * 1024))
    assert status == 413
    status, _, _ = setup.user("PUT", "/v1/kv/app/huge", b"x" * (600 * 1024))
    assert status == 413
    assert setup.value("app/huge") is None
    too_big = base64.b64encode(b"x" * (513 * 1024)).decode()
    status, text, _ = setup.user(
        "PUT", "/v1/txn", [{"KV": {"Verb": "set", "Key": "app/huge", "Value": too_big}}]
    )
    assert status == 400 and "larger than" in text
    assert setup.value("app/huge") is None
