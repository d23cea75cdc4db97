"""One mesh snapshot per store index, shared by its consumers."""

from __future__ import annotations

from loom.control.nametable import name_table_text
from loom.control.state import ServerSettings, State
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
