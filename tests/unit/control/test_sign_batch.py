"""The in-process signing batch: the calls of one loop turn run together, in order, each its own.

``Certs.sign_csr`` hands each in-process signing to ``loom.control.signbatch.Batch`` so that
the CSRs reaching it in one turn of the event loop are verified and signed back to back.
What must hold for its callers: every call runs exactly once and answers its own caller, in
the order they came; an exception reaches only the caller whose call raised it; a caller that
went away is skipped; calls queued in one turn run in one later turn, not one per turn.
"""

from __future__ import annotations

import asyncio

import pytest

from loom.control.signbatch import Batch


async def test_calls_queued_in_one_turn_run_together_in_order_each_answering_its_caller() -> (
    None
):
    batch: Batch[int] = Batch()
    ran: list[tuple[int, int]] = []
    turn = 0

    async def ticker() -> None:
        nonlocal turn
        while True:
            await asyncio.sleep(0)
            turn += 1

    def call(n: int) -> int:
        ran.append((n, turn))
        return n * 10

    ticking = asyncio.create_task(ticker())
    try:
        results = await asyncio.gather(*(batch.run(lambda n=n: call(n)) for n in range(5)))
    finally:
        ticking.cancel()
    assert results == [0, 10, 20, 30, 40]
    assert [n for n, _ in ran] == [0, 1, 2, 3, 4]
    assert len({t for _, t in ran}) == 1  # one turn ran all five


async def test_an_exception_reaches_only_the_caller_whose_call_raised_it() -> None:
    batch: Batch[int] = Batch()

    def boom() -> int:
        raise ValueError("this CSR only")

    good, bad, after = await asyncio.gather(
        batch.run(lambda: 1), batch.run(boom), batch.run(lambda: 3), return_exceptions=True
    )
    assert (good, after) == (1, 3)
    assert isinstance(bad, ValueError) and str(bad) == "this CSR only"


async def test_a_caller_cancelled_before_its_turn_is_skipped_and_later_calls_still_run() -> None:
    batch: Batch[str] = Batch()
    ran: list[str] = []

    def call(name: str) -> str:
        ran.append(name)
        return name

    gone = asyncio.ensure_future(batch.run(lambda: call("gone")))
    kept = asyncio.ensure_future(batch.run(lambda: call("kept")))
    await asyncio.sleep(0)  # both queued
    gone.cancel()
    assert await kept == "kept"
    with pytest.raises(asyncio.CancelledError):
        await gone
    assert ran == ["kept"]
    assert await batch.run(lambda: call("next")) == "next"  # a new turn, a new batch
    assert ran == ["kept", "next"]
