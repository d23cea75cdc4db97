"""The ``/v1/txn`` engine over a real in-memory store: catalog ops planned in order beside KV
ops, committed together or not at all, with the catalog's cascades and VIPs."""

from __future__ import annotations

from loom.control.state import ServerSettings, State
from loom.domain.catalog_txn import CatalogOp
from loom.domain.kv import KvOp, parse_txn
from loom.store import Store
from loom.store.tables import VIPS


async def _state() -> State:
    state = State(ServerSettings(), Store())
    await state.store.open()
    return state


def _ops(*raw: dict[str, object]) -> list[KvOp | CatalogOp]:
    return parse_txn(list(raw))


NODE = {"Node": {"Verb": "set", "Node": {"Node": "t1", "Address": "10.1.1.1"}}}
SVC = {"Service": {"Verb": "set", "Node": "t1", "Service": {"ID": "a1", "Service": "a", "Port": 1}}}
CHECK = {"Check": {"Verb": "set", "Check": {"Node": "t1", "CheckID": "c1", "Name": "c",
                                            "Status": "passing", "ServiceID": "a1"}}}  # fmt: skip


async def test_a_service_written_in_a_transaction_gets_its_vip_and_loses_it_with_its_node() -> None:
    state = await _state()
    outcome = await state.txn.apply(_ops(NODE, SVC, CHECK))
    assert outcome.ok and state.store.record(VIPS, "default/a") is not None
    assert [c.service_name for c in state.catalog.checks_on("t1")] == ["a"]
    gone = await state.txn.apply(_ops({"Node": {"Verb": "delete", "Node": {"Node": "t1"}}}))
    assert gone.ok and gone.index > outcome.index
    assert state.catalog.instances_on("t1") == [] and state.catalog.checks_on("t1") == []
    assert state.store.record(VIPS, "default/a") is None


async def test_later_ops_see_earlier_ones_and_a_failure_writes_nothing() -> None:
    state = await _state()
    await state.txn.apply(_ops(NODE, SVC, CHECK))
    before = state.store.index
    outcome = await state.txn.apply(_ops(
        {"Service": {"Verb": "delete", "Node": "t1", "Service": {"ID": "a1"}}},
        {"Check": {"Verb": "get", "Check": {"Node": "t1", "CheckID": "c1"}}},
        {"KV": {"Verb": "set", "Key": "k", "Value": "eA=="}},
    ))
    assert not outcome.ok
    assert [(e.op_index, e.what) for e in outcome.errors] == [
        (1, 'check "c1" on node "t1" doesn\'t exist')  # deleted with its service, op 0
    ]
    assert state.store.index == before and state.kv.get("k") is None
    assert [i.id for i in state.catalog.instances_on("t1")] == ["a1"]
