"""What config entries decide in one proxy's inputs (``collect_inputs`` over the snapshot).

The core runs on an in-memory store and every entry is written as ``PUT /v1/config`` would;
the sidecar's own settings beat ``service-defaults``, which beat ``proxy-defaults``, which
beat the built-in defaults (tcp, strict, direct, 15001).
"""

from __future__ import annotations

from typing import Any

from loom.control.state import State
from loom.domain.entries import HttpMatch
from loom.xds.inputs import Permission, ProxyInputs
from loom.xds.view import collect_inputs


async def _inputs(state: State, sidecar: dict[str, Any] | None = None) -> ProxyInputs:
    await state.catalog.agent_register(
        {"Name": "web", "Port": 8080, "Connect": {"SidecarService": sidecar or {}}}
    )
    found = collect_inputs(state.snapshot(), "web-sidecar-proxy")
    assert found is not None
    return found


async def test_without_entries_a_proxy_is_tcp_strict_direct_on_15001(state: State) -> None:
    got = await _inputs(state)
    assert (got.protocol, got.mtls_mode, got.transparent) == ("tcp", "strict", False)
    assert (got.outbound_port, got.mesh_destinations_only) == (15001, False)


async def test_proxy_defaults_decide_what_service_defaults_leave_empty(state: State) -> None:
    await state.configs.write(
        {"Kind": "proxy-defaults", "Name": "global", "Config": {"protocol": "http"},
         "MutualTLSMode": "permissive", "Mode": "transparent"}
    )  # fmt: skip
    await state.configs.write({"Kind": "service-defaults", "Name": "web"})
    got = await _inputs(state)
    assert (got.protocol, got.mtls_mode, got.transparent) == ("http", "permissive", True)


async def test_service_defaults_beat_proxy_defaults(state: State) -> None:
    await state.configs.write(
        {"Kind": "proxy-defaults", "Name": "global", "Config": {"protocol": "http"},
         "MutualTLSMode": "permissive", "Mode": "transparent"}
    )  # fmt: skip
    await state.configs.write(
        {"Kind": "service-defaults", "Name": "web", "Protocol": "grpc", "MutualTLSMode": "strict",
         "Mode": "direct", "TransparentProxy": {"OutboundListenerPort": 15009}}
    )  # fmt: skip
    got = await _inputs(state)
    assert (got.protocol, got.mtls_mode, got.transparent) == ("grpc", "strict", False)
    assert got.outbound_port == 15009


async def test_the_sidecars_own_mode_and_port_beat_service_defaults(state: State) -> None:
    await state.configs.write(
        {"Kind": "service-defaults", "Name": "web", "Mode": "direct",
         "TransparentProxy": {"OutboundListenerPort": 15009}}
    )  # fmt: skip
    proxy = {"Mode": "transparent", "TransparentProxy": {"OutboundListenerPort": 15100}}
    got = await _inputs(state, {"Proxy": proxy})
    assert (got.transparent, got.outbound_port) == (True, 15100)


async def test_service_defaults_of_another_namespace_do_not_apply(state: State) -> None:
    await state.configs.write(
        {"Kind": "service-defaults", "Name": "web", "Namespace": "team", "Protocol": "http"}
    )
    assert (await _inputs(state)).protocol == "tcp"


async def test_the_mesh_entry_turns_off_passthrough(state: State) -> None:
    await state.configs.write(
        {"Kind": "mesh", "Name": "mesh", "TransparentProxy": {"MeshDestinationsOnly": True}}
    )
    assert (await _inputs(state)).mesh_destinations_only


async def test_l7_intentions_reach_the_proxy_as_typed_permissions(state: State) -> None:
    await state.configs.write(
        {"Kind": "service-intentions", "Name": "web", "Sources": [
            {"Name": "api", "Permissions": [
                {"Action": "deny", "HTTP": {"PathPrefix": "/admin"}},
                {"Action": "allow", "HTTP": {"Methods": ["get"]}}]},
            {"Name": "*", "Action": "deny"}]}
    )  # fmt: skip
    rules = (await _inputs(state)).rules
    assert [(r.source.name, r.allow) for r in rules] == [("api", True), ("*", False)]
    assert rules[0].permissions == (
        Permission(False, HttpMatch(path_prefix="/admin")),
        Permission(True, HttpMatch(methods=("GET",))),
    )


async def test_proxies_dialing_one_upstream_share_it_within_a_snapshot_and_see_a_write(
    state: State,
) -> None:
    """One ``Upstream`` (and access rule) per snapshot, whatever the number of proxies that
    dial it; the next snapshot derives its own, with the write's effect."""
    for port, name in enumerate(("web", "admin"), 21001):
        await state.catalog.agent_register({"Name": name, "Port": 8080, "Connect": {
            "SidecarService": {"Port": port, "Proxy": {"Upstreams": [
                {"DestinationName": "api", "LocalBindPort": 9000}]}}}})  # fmt: skip
    await state.configs.upsert_exact("*", "*", {"Action": "deny"})
    view = state.snapshot()
    web, admin = (collect_inputs(view, f"{n}-sidecar-proxy") for n in ("web", "admin"))
    assert isinstance(web, ProxyInputs) and isinstance(admin, ProxyInputs)
    assert web.upstreams[0] is admin.upstreams[0] and web.rules[0] is admin.rules[0]
    assert web.upstreams[0].endpoints == () and not web.rules[0].allow
    assert view.defaults_of("default", "web") is view.defaults_of("default", "web")

    await state.catalog.agent_register(
        {"Name": "api", "Port": 7000, "Connect": {"SidecarService": {"Port": 21000}}}
    )
    for n in (1, 2):  # the sidecar's default checks: critical until its Envoy listens
        await state.catalog.update_check(f"service:api-sidecar-proxy:{n}", "passing", "")
    await state.configs.upsert_exact("*", "*", {"Action": "allow"})
    after = collect_inputs(state.snapshot(), "web-sidecar-proxy")
    assert isinstance(after, ProxyInputs)
    assert [e.port for e in after.upstreams[0].endpoints] == [21000] and after.rules[0].allow
