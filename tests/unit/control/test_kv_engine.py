"""The KV transaction engine is all or nothing (hypothesis): a transaction succeeds exactly
when its ops, run one by one as single-op transactions on the same start, all succeed, and
then leaves the same keys, values, flags and locks; when it fails it leaves the store as it
was, index included."""

from __future__ import annotations

import asyncio
from dataclasses import replace

from hypothesis import given, settings
from hypothesis import strategies as st

from loom.control.kv import Kv
from loom.domain.kv import VERBS, KvEntry, KvOp, Session
from loom.store import Store, put, tables

SESSIONS = ("11111111-1111-1111-1111-111111111111", "22222222-2222-2222-2222-222222222222")
KEYS = ("a", "a/b", "a/c", "b")

ops = st.builds(
    KvOp,
    verb=st.sampled_from(VERBS),
    key=st.sampled_from((*KEYS, "a/")),
    value=st.sampled_from((None, b"x", b"y")),
    flags=st.integers(0, 2),
    index=st.just(0),  # indexes differ between one transaction and many: only 0 compares
    session=st.sampled_from(SESSIONS),
)
starts = st.lists(st.sampled_from(KEYS), unique=True)


async def _world(start: list[str]) -> Kv:
    store = Store()
    kv = Kv(store, asyncio.Lock(), lambda: 0.0)
    writes = [put(tables.SESSIONS, s, Session(s, "n")) for s in SESSIONS]
    writes += [put(tables.KV, k, KvEntry(k, b"0", create_index=1, modify_index=1)) for k in start]
    await store.apply(writes)
    return kv


def _view(kv: Kv) -> list[KvEntry]:
    return [replace(e, create_index=0, modify_index=0) for e in kv.tree("")]


async def _compare(start: list[str], txn: list[KvOp]) -> None:
    whole, stepwise = await _world(start), await _world(start)
    before, index = _view(whole), whole.store.index
    outcome = await whole.apply(txn)
    every_op_ok = True
    for op in txn:
        every_op_ok = (await stepwise.apply([op])).ok and every_op_ok
        if not every_op_ok:
            break
    assert outcome.ok == every_op_ok
    if outcome.ok:
        assert _view(whole) == _view(stepwise)
    else:
        assert _view(whole) == before and whole.store.index == index
        assert outcome.results == [] and outcome.errors


@settings(max_examples=200, deadline=None)
@given(starts, st.lists(ops, min_size=1, max_size=6))
def test_a_transaction_is_all_its_ops_or_none_of_them(start: list[str], txn: list[KvOp]) -> None:
    asyncio.run(_compare(start, txn))
