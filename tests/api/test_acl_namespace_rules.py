"""Namespace rule blocks against a real `loom server --acl-default-policy deny`.

The user's token holds ``namespace "team" { service_prefix "" { policy = "write" } }`` and
nothing else: it registers services in namespace ``team`` and is refused, with Consul's 403
text, in ``default``. The attacker holds that same token and tries every way of naming a
namespace: ``?ns=`` against the body's ``Namespace``, the ``X-Consul-Namespace`` header, names
with ``/`` or ``*``, an empty one, a CSR for another namespace, an intention destination in
another namespace, and ``?ns=team`` on resources Loom does not keep per namespace (keys, ACLs).
Each refusal writes nothing (checked with the management token).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from loom.ca.csr import build_csr
from loom.ca.spiffe import SpiffeId
from tests.support.server import ServerProcess, acl_server

ROOT = str(uuid.uuid4())
TEAM_RULES = 'namespace "team" { service_prefix "" { policy = "write" } }'
TEAM_RULES_JSON = '{"namespace": {"team": {"service_prefix": {"": {"policy": "write"}}}}}'


class Mesh:
    def __init__(self, server: ServerProcess) -> None:
        self.server = server
        self.secrets: dict[str, str] = {}
        self.accessors: dict[str, str] = {}
        for form, rules in (("hcl", TEAM_RULES), ("json", TEAM_RULES_JSON)):
            self.as_root("PUT", "/v1/acl/policy", {"Name": f"team-{form}", "Rules": rules})
            token = self.as_root("PUT", "/v1/acl/token", {"Policies": [{"Name": f"team-{form}"}]})
            self.secrets[form], self.accessors[form] = token["SecretID"], token["AccessorID"]

    def call(
        self, method: str, path: str, body: Any = None, token: str = "", **headers: str
    ) -> Any:
        sent = {"X-Consul-Token": token, **headers} if token else dict(headers)
        return self.server.request(method, path, body, sent)

    def as_root(self, method: str, path: str, body: Any = None) -> Any:
        status, out, _ = self.call(method, path, body, ROOT)
        assert status == 200, (path, status, out)
        return out

    def denied(self, form: str, permission: str, name: str) -> tuple[int, str]:
        who = f"token with AccessorID '{self.accessors[form]}'"
        return 403, f"Permission denied: {who} lacks permission '{permission}' on \"{name}\"\n"

    def instances(self, namespace: str) -> list[str]:
        found = self.as_root("GET", f"/v1/catalog/services?ns={namespace}")
        return sorted(found)


@pytest.fixture(scope="module")
def mesh() -> Iterator[Mesh]:
    with acl_server(ROOT) as server:
        yield Mesh(server)


FORMS = ["hcl", "json"]


@pytest.mark.parametrize("form", FORMS)
def test_a_team_token_registers_in_team_and_is_refused_in_default(mesh: Mesh, form: str) -> None:
    token = mesh.secrets[form]
    body = {"Name": f"web-{form}", "Port": 8080, "Namespace": "team"}
    status, out, _ = mesh.call("PUT", "/v1/agent/service/register", body, token)
    assert status == 200, out
    assert f"web-{form}" in mesh.instances("team")
    other = {"Name": f"api-{form}", "Port": 8080}
    reply = mesh.call("PUT", "/v1/agent/service/register", other, token)[:2]
    assert reply == mesh.denied(form, "service:write", f"api-{form}")
    assert f"api-{form}" not in mesh.instances("default")


@pytest.mark.parametrize("form", FORMS)
def test_the_body_namespace_is_checked_not_the_query_one(mesh: Mesh, form: str) -> None:
    token = mesh.secrets[form]
    for body in (
        {"Name": f"sneak-{form}", "Port": 1, "Namespace": "default"},
        {"Name": f"sneak-{form}", "Port": 1},  # the agent endpoint registers in default
    ):
        for headers in ({}, {"X-Consul-Namespace": "team"}):
            path = "/v1/agent/service/register?ns=team"
            reply = mesh.call("PUT", path, body, token, **headers)[:2]
            assert reply == mesh.denied(form, "service:write", f"sneak-{form}")
    assert f"sneak-{form}" not in mesh.instances("default")
    inside = {"Name": f"inside-{form}", "Port": 1, "Namespace": "team"}
    assert mesh.call("PUT", "/v1/agent/service/register", inside, token)[0] == 200
    assert f"inside-{form}" in mesh.instances("team")


def test_the_namespace_header_counts_like_the_query(mesh: Mesh) -> None:
    token = mesh.secrets["hcl"]
    headers = {"X-Consul-Namespace": "team"}
    status, leaf, _ = mesh.call("GET", "/v1/agent/connect/ca/leaf/hdr", None, token, **headers)
    assert status == 200 and "/ns/team/" in leaf["ServiceURI"]


@pytest.mark.parametrize("ns", ["team/x", "team/../default", "*", "tea", "teams", "Team"])
def test_odd_namespaces_get_no_team_rights(mesh: Mesh, ns: str) -> None:
    token = mesh.secrets["hcl"]
    body = {"Name": "odd", "Port": 1}
    status, _, _ = mesh.call(
        "PUT", "/v1/agent/service/register", body, token, **{"X-Consul-Namespace": ns}
    )
    assert status in (400, 403)
    status, _, _ = mesh.call("GET", f"/v1/agent/connect/ca/leaf/odd?ns={ns}", token=token)
    assert status in (400, 403)
    assert "odd" not in mesh.instances("default")


def test_an_empty_namespace_is_default(mesh: Mesh) -> None:
    token = mesh.secrets["hcl"]
    reply = mesh.call("GET", "/v1/agent/connect/ca/leaf/x?ns=", token=token)[:2]
    assert reply == mesh.denied("hcl", "service:write", "x")


def test_a_leaf_is_given_in_team_only(mesh: Mesh) -> None:
    token = mesh.secrets["hcl"]
    status, leaf, _ = mesh.call("GET", "/v1/agent/connect/ca/leaf/web?ns=team", token=token)
    assert status == 200 and "/ns/team/" in leaf["ServiceURI"]
    reply = mesh.call("GET", "/v1/agent/connect/ca/leaf/web", token=token)[:2]
    assert reply == mesh.denied("hcl", "service:write", "web")


def test_a_csr_for_default_is_refused_even_with_ns_team(mesh: Mesh) -> None:
    token = mesh.secrets["hcl"]
    key = ec.generate_private_key(ec.SECP256R1())
    roots = mesh.as_root("GET", "/v1/agent/connect/ca/roots")
    domain = roots["TrustDomain"]
    for ns, allowed in (("default", False), ("team", True)):
        csr = build_csr(SpiffeId.of(domain, ns, "dc1", "web"), key)
        status, out, _ = mesh.call("PUT", "/v1/loom/connect/ca/sign?ns=team", {"CSR": csr}, token)
        if allowed:
            assert status == 200, out
        else:
            assert (status, out) == mesh.denied("hcl", "service:write", "web")


def test_an_intention_into_default_is_refused_even_with_ns_team(mesh: Mesh) -> None:
    rules = 'namespace "team" { service_prefix "" { policy = "write" intentions = "write" } }'
    mesh.as_root("PUT", "/v1/acl/policy", {"Name": "team-intentions", "Rules": rules})
    token = mesh.as_root("PUT", "/v1/acl/token", {"Policies": [{"Name": "team-intentions"}]})
    secret, accessor = token["SecretID"], token["AccessorID"]
    path = "/v1/connect/intentions/exact?source=evil&destination={}&ns=team"
    body = {"Action": "allow"}
    for destination in ("default/web", "web", "*/web"):
        status, text, _ = mesh.call("PUT", path.format(destination), body, secret)
        assert (status, text) == (
            403,
            f"Permission denied: token with AccessorID '{accessor}' lacks permission "
            "'intention:write' on \"web\"\n",
        )
    status, out, _ = mesh.call("PUT", path.format("team/web"), body, secret)
    assert status == 200, out
    # the team token with service:write alone may read but not write team's intentions
    reply = mesh.call("PUT", path.format("team/api"), body, mesh.secrets["hcl"])[:2]
    assert reply == mesh.denied("hcl", "intention:write", "api")


def test_ns_team_grants_nothing_on_keys_or_acls(mesh: Mesh) -> None:
    mesh.as_root("PUT", "/v1/acl/policy", {
        "Name": "team-all",
        "Rules": 'namespace "team" { key_prefix "" { policy = "write" } acl = "write" }',
    })  # fmt: skip
    token = mesh.as_root("PUT", "/v1/acl/token", {"Policies": [{"Name": "team-all"}]})
    secret, accessor = token["SecretID"], token["AccessorID"]
    status, text, _ = mesh.call("PUT", "/v1/kv/k?ns=team", b"v", secret)
    assert (status, text) == (
        403,
        f"Permission denied: token with AccessorID '{accessor}' lacks permission "
        "'key:write' on \"k\"\n",
    )
    assert mesh.call("GET", "/v1/kv/k", token=ROOT)[0] == 404
    assert mesh.call("GET", "/v1/acl/tokens?ns=team", token=secret)[0] == 403


@pytest.mark.parametrize(
    ("rules", "problem"),
    [
        ('namespace "a" { namespace "b" { } }', "a namespace block is not allowed"),
        ('namespace "a" { operator = "write" }', "operator rules are not allowed"),
        ('{"namespace": {"a": {"acl": "write", "keyring": "read"}}}', "keyring rules are not"),
    ],
)
def test_invalid_nesting_is_a_400_naming_the_problem(mesh: Mesh, rules: str, problem: str) -> None:
    body = {"Name": f"bad-{uuid.uuid4().hex[:8]}", "Rules": rules}
    status, text, _ = mesh.call("PUT", "/v1/acl/policy", body, ROOT)
    assert status == 400 and problem in text
    names = [p["Name"] for p in mesh.as_root("GET", "/v1/acl/policies")]
    assert body["Name"] not in names


def _team_intentions_token(mesh: Mesh) -> tuple[str, str]:
    rules = 'namespace "team" { service_prefix "" { policy = "write" intentions = "write" } }'
    status, _, _ = mesh.call("PUT", "/v1/acl/policy", {"Name": "team-ix", "Rules": rules}, ROOT)
    assert status in (200, 400)  # 400: made by an earlier test already
    token = mesh.as_root("PUT", "/v1/acl/token", {"Policies": [{"Name": "team-ix"}]})
    return token["SecretID"], token["AccessorID"]


def test_a_config_entry_is_checked_in_its_body_namespace(mesh: Mesh) -> None:
    secret, accessor = _team_intentions_token(mesh)
    entry = {"Kind": "service-defaults", "Name": "cfg", "Protocol": "http"}
    status, text, _ = mesh.call("PUT", "/v1/config?ns=team", entry, secret)
    assert (status, text) == (
        403,
        f"Permission denied: token with AccessorID '{accessor}' lacks permission "
        "'service:write' on \"cfg\"\n",
    )
    assert mesh.call("GET", "/v1/config/service-defaults/cfg", token=ROOT)[0] == 404
    inside = {**entry, "Namespace": "team"}
    status, out, _ = mesh.call("PUT", "/v1/config", inside, secret)
    assert status == 200, out
    ixn = {"Kind": "service-intentions", "Name": "cfg",
           "Sources": [{"Name": "evil", "Action": "allow"}]}  # fmt: skip
    assert mesh.call("PUT", "/v1/config?ns=team", ixn, secret)[0] == 403
    assert mesh.call("GET", "/v1/config/service-intentions/cfg", token=ROOT)[0] == 404


def test_an_intention_by_id_is_checked_in_its_destination_namespace(mesh: Mesh) -> None:
    secret, _ = _team_intentions_token(mesh)
    made = mesh.as_root("POST", "/v1/connect/intentions", {
        "SourceName": "x", "DestinationName": "byid", "Action": "deny",
    })  # fmt: skip
    path = f"/v1/connect/intentions/{made['ID']}?ns=team"
    assert mesh.call("DELETE", path, None, secret)[0] == 403
    moved = {"SourceName": "x", "DestinationName": "byid", "DestinationNS": "team",
             "Action": "allow"}  # fmt: skip
    assert mesh.call("PUT", path, moved, secret)[0] == 403
    assert mesh.as_root("GET", f"/v1/connect/intentions/{made['ID']}")["Action"] == "deny"


def test_a_catalog_deregistration_is_checked_in_its_body_namespace(mesh: Mesh) -> None:
    secret, _ = _team_intentions_token(mesh)
    node = mesh.as_root("GET", "/v1/agent/self")["Config"]["NodeName"]
    mesh.as_root("PUT", "/v1/agent/service/register", {"Name": "keep", "Port": 1})
    body = {"Node": node, "ServiceID": "keep"}
    assert mesh.call("PUT", "/v1/catalog/deregister?ns=team", body, secret)[0] == 403
    assert "keep" in mesh.instances("default")
