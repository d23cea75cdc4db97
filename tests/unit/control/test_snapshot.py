"""One mesh snapshot per store index, shared by its consumers."""

from __future__ import annotations

from loom.control.nametable import name_table_text
from loom.control.snapshot import build_snapshot
from loom.control.state import ServerSettings, State
from loom.domain.mesh import MeshSnapshot
from loom.store import Store


async def test_the_snapshot_is_built_once_per_store_index_and_shared() -> None:
    state = State(ServerSettings(), store=Store())
    await state.start()
    try:
        await state.catalog.agent_register({"Name": "web", "Port": 80})
        first = state.snapshot()
        assert state.snapshot() is first
        assert name_table_text(first) is name_table_text(state.snapshot())
        await state.catalog.agent_register({"Name": "api", "Port": 81})
        second = state.snapshot()
        assert second is not first and second.index == state.store.index
        assert sorted(second.services) == [("default", "api"), ("default", "web")]
        assert '"api"' in name_table_text(second) and '"api"' not in name_table_text(first)
    finally:
        await state.close()


async def test_external_hosts_without_a_vip_stay_in_the_snapshot_for_dns_only() -> None:
    state = State(ServerSettings(), store=Store())
    await state.start()
    try:
        await state.configs.write({"Kind": "external-service", "Name": "db",
                                   "Hosts": ["*.example.com", "db.example.com"],
                                   "Ports": [{"Number": 5432}]})  # fmt: skip
        hosts = {e.host: e for e in state.snapshot().externals}
        assert hosts["*.example.com"].virtual_ips == ()
        assert hosts["db.example.com"].virtual_ips == ("240.240.0.1", "fd00:f0f0::1")
        assert hosts["db.example.com"].ports == (5432,)
    finally:
        await state.close()


def _fresh(state: State) -> MeshSnapshot:
    """The snapshot as built from nothing (no previous one to keep parts of)."""
    st = state
    return build_snapshot(
        st.store.index, 0, st.catalog, st.configs, st.certs, st.queries, st.federation,
        st.remote_vips,
    )  # fmt: skip


CATALOG_PARTS = ("services", "proxies", "endpoints", "meshed", "subset_endpoints")


async def test_a_config_write_keeps_the_catalog_parts_and_a_catalog_write_rebuilds_them() -> None:
    """A snapshot after an intention keeps the catalog's parts (the same objects: nothing
    walks every instance again), equal to a fresh build's; a resolver with subsets, or a
    catalog write, derives them again."""
    state = State(ServerSettings(), store=Store())
    await state.start()
    try:
        await state.catalog.agent_register({"Name": "web", "Port": 80, "Meta": {"v": "1"},
                                            "Connect": {"SidecarService": {"Port": 21000}}})  # fmt: skip
        for n in (1, 2):
            await state.catalog.update_check(f"service:web-sidecar-proxy:{n}", "passing", "")
        first = state.snapshot()
        await state.configs.upsert_exact("*", "*", {"Action": "deny"})
        second = state.snapshot()
        assert second is not first and [i.action for i in second.intentions] == ["deny"]
        for part in CATALOG_PARTS:
            assert getattr(second, part) is getattr(first, part)
            assert getattr(second, part) == getattr(_fresh(state), part)
        await state.configs.write({"Kind": "service-resolver", "Name": "web",
                                   "Subsets": {"v1": {"Filter": "Service.Meta.v == 1"}}})  # fmt: skip
        third = state.snapshot()
        assert third.subset_endpoints is not second.subset_endpoints
        assert third.subset_endpoints == _fresh(state).subset_endpoints
        assert [e.port for e in third.subset_endpoints[("default", "web", "v1")]] == [21000]
        await state.catalog.agent_register({"Name": "api", "Port": 81})
        fourth = state.snapshot()
        assert fourth.services is not third.services and ("default", "api") in fourth.services
    finally:
        await state.close()
