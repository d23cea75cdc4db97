"""``service-resolver`` under ACLs (a real ``loom server --acl-default-policy deny``), as
Consul rules it: writing a service's resolver needs ``service:write`` on it, and sending its
traffic elsewhere (redirect, failover) needs ``service:read`` on each target; a refusal is a
403 with Consul's text and nothing is written."""

from __future__ import annotations

from tests.api.test_acl_attacker import Mesh, mesh  # noqa: F401  (the module's server)

R = "service-resolver"


def _resolvers(m: Mesh) -> list[str]:
    return [e["Name"] for e in m.as_root("GET", f"/v1/config/{R}")]


def test_a_resolver_of_anothers_service_needs_write_on_it(mesh: Mesh) -> None:  # noqa: F811
    entry = {"Kind": R, "Name": "b", "ConnectTimeout": "1s"}
    status, text, _ = mesh.call("PUT", "/v1/config", entry, mesh.a_secret)
    assert (status, text) == (403, mesh.denied("service:write", "b"))
    assert "b" not in _resolvers(mesh)


def test_redirecting_or_failing_over_to_an_unreadable_service_is_refused(mesh: Mesh) -> None:  # noqa: F811
    for entry in (
        {"Kind": R, "Name": "a", "Redirect": {"Service": "b"}},
        {"Kind": R, "Name": "a", "Failover": {"*": {"Service": "b"}}},
        {"Kind": R, "Name": "a", "Failover": {"*": {"Targets": [{"Service": "b"}]}}},
    ):
        status, text, _ = mesh.call("PUT", "/v1/config", entry, mesh.a_secret)
        assert (status, text) == (403, mesh.denied("service:read", "b")), entry
    assert "a" not in _resolvers(mesh)


def test_the_owner_writes_a_resolver_of_its_own_service(mesh: Mesh) -> None:  # noqa: F811
    entry = {"Kind": R, "Name": "a", "DefaultSubset": "v1", "Subsets": {"v1": {}},
             "Failover": {"*": {"Datacenters": ["dc2"]}}}  # fmt: skip
    status, out, _ = mesh.call("PUT", "/v1/config", entry, mesh.a_secret)
    assert status == 200, out
    try:
        assert "a" in _resolvers(mesh)
    finally:
        assert mesh.call("DELETE", f"/v1/config/{R}/a", None, mesh.a_secret)[0] == 200
