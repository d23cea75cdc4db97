"""Per-entry CreateIndex/ModifyIndex of services, checks and nodes: an entry's indexes move
only when that entry changes (Consul's raft indexes per row), they are stored with the entry
(so they survive a restart), and an entry stored before they were kept shows its table's
index at load until it changes."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

from loom.control.state import ServerSettings, State
from loom.server import views
from loom.store import Store
from loom.store.sqlite import SqliteStore
from loom.store.tables import CHECKS, NODES, SERVICES
from tests.unit.control.test_stored_format import old_data_dir

TTL = {"TTL": "30s"}


def _reg(node: str, sid: str, **service: Any) -> dict[str, Any]:
    return {
        "Node": node,
        "Address": "10.0.0.1",
        "Service": {"Service": "api", "ID": sid, "Port": 80, **service},
        "Checks": [{"CheckID": f"{sid}-up", "Name": "up", "Status": "passing", "ServiceID": sid}],
    }


def _indexes(state: State, node: str, sid: str) -> dict[str, tuple[int, int]]:
    """(CreateIndex, ModifyIndex) of the instance, its check and its node, as the API shows them."""
    cat = state.catalog
    inst = next(i for i in cat.instances_on(node) if i.id == sid)
    [check] = [c for c in cat.checks_on(node) if c.service_id == sid]
    node_rec = next(n for n in cat.nodes() if n.node == node)
    shown = {
        "service": views.catalog_service(cat, inst),
        "check": views.health_check(check, state.store.legacy_index("checks")),
        "node": views.indexed_node(cat, node_rec),
    }
    return {k: (d["CreateIndex"], d["ModifyIndex"]) for k, d in shown.items()}


async def _state(store: Store | None = None) -> State:
    state = State(ServerSettings(), store or Store())
    await state.store.open()
    return state


async def test_a_write_to_one_entry_moves_no_other_entrys_indexes() -> None:
    state = await _state()
    first = await state.catalog.catalog_register(_reg("n1", "api-1"))
    assert _indexes(state, "n1", "api-1") == {k: (first, first) for k in ("service", "check", "node")}
    second = await state.catalog.catalog_register(_reg("n2", "api-2"))
    assert second > first
    assert _indexes(state, "n1", "api-1") == {k: (first, first) for k in ("service", "check", "node")}
    assert _indexes(state, "n2", "api-2")["service"] == (second, second)


async def test_re_registering_an_unchanged_entry_keeps_its_indexes() -> None:
    state = await _state()
    first = await state.catalog.catalog_register(_reg("n1", "api-1"))
    again = await state.catalog.catalog_register(_reg("n1", "api-1"))
    assert again > first  # a write happened (the table's index moved)...
    # ...but nothing in it changed, so no entry's index did
    assert _indexes(state, "n1", "api-1") == {k: (first, first) for k in ("service", "check", "node")}


async def test_a_changed_entry_keeps_its_create_index_and_moves_its_modify_index() -> None:
    state = await _state()
    first = await state.catalog.catalog_register(_reg("n1", "api-1"))
    changed = await state.catalog.catalog_register(_reg("n1", "api-1", Tags=["v2"]))
    shown = _indexes(state, "n1", "api-1")
    assert shown["service"] == (first, changed)
    assert shown["check"] == (first, first) and shown["node"] == (first, first)


async def test_a_check_status_change_moves_only_that_checks_modify_index() -> None:
    state = await _state()
    first = await state.catalog.agent_register({"Name": "web", "Check": TTL})
    passed = await state.catalog.update_check("service:web", "passing", "fine")
    check = state.store.record(CHECKS, "loom-server/default/service:web")
    inst = state.store.record(SERVICES, "loom-server/default/web")
    assert check is not None and inst is not None
    assert (check.create_index, check.modify_index) == (first, passed)
    assert (inst.create_index, inst.modify_index) == (first, first)
    # the same status and output again writes nothing and moves nothing
    assert await state.catalog.update_check("service:web", "passing", "fine") == passed


async def test_a_deleted_and_re_created_entry_starts_over_at_its_new_index() -> None:
    state = await _state()
    await state.catalog.catalog_register(_reg("n1", "api-1"))
    await state.catalog.deregister("n1", "default", "api-1")
    again = await state.catalog.catalog_register(_reg("n1", "api-1"))
    assert _indexes(state, "n1", "api-1")["service"] == (again, again)


async def test_indexes_are_stored_with_the_entry_and_survive_a_restart(tmp_path: Path) -> None:
    state = await _state(SqliteStore(tmp_path))
    first = await state.catalog.catalog_register(_reg("n1", "api-1"))
    await state.catalog.catalog_register(_reg("n2", "api-2"))
    before = _indexes(state, "n1", "api-1")
    await state.close()
    db = sqlite3.connect(str(tmp_path / "state.db"))
    [(raw,)] = db.execute("SELECT value FROM docs WHERE tbl = 'services' AND key = 'n1/default/api-1'")
    db.close()
    assert (json.loads(raw)["CreateIndex"], json.loads(raw)["ModifyIndex"]) == (first, first)
    state = await _state(SqliteStore(tmp_path))
    try:
        assert _indexes(state, "n1", "api-1") == before
    finally:
        await state.close()


async def test_an_entry_stored_without_indexes_shows_its_tables_index_at_load(
    tmp_path: Path,
) -> None:
    """The fixture's ``services`` table was last written at 4, ``nodes`` at 4, ``checks`` at 4:
    its records (no indexes in their documents) show that, whatever is written later, until
    they change; a change keeps that CreateIndex and stores both indexes."""
    state = State(ServerSettings(), store=SqliteStore(old_data_dir(tmp_path)))
    await state.start()
    try:
        store, cat = state.store, state.catalog
        web = store.record(SERVICES, "loom-server/default/web")
        assert web is not None and (web.create_index, web.modify_index) == (0, 0)
        assert store.legacy_index("services") == 4
        shown = views.catalog_service(cat, web)
        assert (shown["CreateIndex"], shown["ModifyIndex"]) == (4, 4)
        n2 = store.record(NODES, "n2")
        assert n2 is not None
        assert views.indexed_node(cat, n2)["ModifyIndex"] == 4
        later = await cat.catalog_register(_reg("n9", "api-9"))
        assert later > 4
        assert views.catalog_service(cat, web)["ModifyIndex"] == 4  # another entry's write
        changed = await cat.update_check("service:web", "critical", "down")
        check = store.record(CHECKS, "loom-server/default/service:web")
        assert check is not None and (check.create_index, check.modify_index) == (4, changed)
    finally:
        await state.close()
