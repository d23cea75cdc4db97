"""Consul's blocking-query rules, once, in ``AsyncClient.watch``: against a real aiohttp
server on loopback that holds ``?index=N`` until its index moves, and can fail, go backwards,
ignore the index or answer late on demand. Tests wait for the requests they need (an event
per request), then check what the loop did."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import web

from loom.api import AsyncClient, ClientError, WatchPolicy
from loom.api.watching import next_index, request_timeout, wait_seconds

FAST = WatchPolicy(backoff_min=0.05, backoff_max=0.2, min_interval=0.01, margin=1.0)
SLACK = 0.6
"""Gaps are measured where requests arrive, so each carries its own connect latency (a few ms
on a loaded machine): a gap is checked against this share of the pause, which still tells a
paused loop from a busy one (sub-millisecond gaps)."""


class BlockingServer:
    """GET /v1/thing as a blocking query; ``fail``/``ignore_index``/``no_index`` misbehave."""

    def __init__(self) -> None:
        self.index = 5
        self.value = "a"
        self.fail = 0
        """Answer this many next requests with 500."""
        self.ignore_index = False
        self.no_index = False
        self.hold: float | None = None
        """Hold blocking queries this long whatever their ``wait`` says (a late server)."""
        self.queries: list[dict[str, str]] = []
        self.times: list[float] = []
        self.arrived = asyncio.Condition()
        self._changed = asyncio.Event()

    def publish(self, value: str, index: int | None = None) -> None:
        self.value = value
        self.index = self.index + 1 if index is None else index
        self._changed.set()
        self._changed = asyncio.Event()

    async def requests(self, count: int, seconds: float = 5.0) -> None:
        """Wait until at least ``count`` requests arrived."""
        async with asyncio.timeout(seconds), self.arrived:
            await self.arrived.wait_for(lambda: len(self.queries) >= count)

    async def handle(self, request: web.Request) -> web.Response:
        async with self.arrived:
            self.queries.append(dict(request.query))
            self.times.append(asyncio.get_running_loop().time())
            self.arrived.notify_all()
        if self.fail:
            self.fail -= 1
            return web.Response(status=500, text="boom\nsecond line")
        asked = int(request.query.get("index", "0"))
        if asked and asked == self.index and not self.ignore_index:
            changed = self._changed
            try:
                wait = wait_seconds(request.query.get("wait", "0s"))
                async with asyncio.timeout(self.hold if self.hold is not None else wait):
                    await changed.wait()
            except TimeoutError:
                pass
        headers = {} if self.no_index else {"X-Consul-Index": str(self.index)}
        return web.json_response({"Value": self.value}, headers=headers)


@pytest.fixture
async def server() -> AsyncIterator[tuple[BlockingServer, str]]:
    things = BlockingServer()
    app = web.Application()
    app.router.add_get("/v1/thing", things.handle)
    runner = web.AppRunner(app, shutdown_timeout=0.5)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    yield things, f"127.0.0.1:{runner.addresses[0][1]}"
    things.publish("bye")  # releases any held request
    await runner.cleanup()


async def collect(
    client: AsyncClient, seen: list[tuple[Any, int]], **kwargs: Any
) -> None:
    async for value, index in client.watch("/v1/thing", **kwargs):
        seen.append((value, index))


async def until(check: Any, seconds: float = 5.0) -> None:
    async with asyncio.timeout(seconds):
        while not check():
            await asyncio.sleep(0.01)


async def stop(task: asyncio.Task[None]) -> None:
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


async def test_the_first_answer_comes_at_once_and_each_next_one_when_the_index_moves(
    server: tuple[BlockingServer, str],
) -> None:
    things, addr = server
    seen: list[tuple[Any, int]] = []
    task = asyncio.create_task(collect(AsyncClient(addr), seen, wait="30s"))
    await things.requests(2)  # the second one is held by the server
    assert seen == [({"Value": "a"}, 5)]
    assert things.queries == [{}, {"index": "5", "wait": "30s"}]
    things.publish("b")
    await until(lambda: len(seen) == 2)
    assert seen[1] == ({"Value": "b"}, 6)
    await stop(task)


async def test_a_500_backs_off_doubling_then_a_success_resets_the_backoff(
    server: tuple[BlockingServer, str],
) -> None:
    things, addr = server
    things.fail = 4
    failures: list[tuple[str, float]] = []
    seen: list[tuple[Any, int]] = []
    task = asyncio.create_task(collect(
        AsyncClient(addr), seen, policy=FAST,
        on_error=lambda exc, retry: failures.append((exc.reason, retry))))
    await until(lambda: len(seen) == 1)
    assert failures == [("HTTP 500: boom", 0.05), ("HTTP 500: boom", 0.1),
                        ("HTTP 500: boom", 0.2), ("HTTP 500: boom", 0.2)]
    gaps = [b - a for a, b in zip(things.times, things.times[1:], strict=False)]
    assert all(gap >= want * SLACK for gap, want in zip(gaps, (0.05, 0.1, 0.2, 0.2), strict=False))
    things.fail = 1
    things.publish("b")  # the held request answers; the next one fails once
    await until(lambda: len(failures) == 5)
    assert failures[-1] == ("HTTP 500: boom", 0.05)
    await until(lambda: len(seen) == 2)
    await stop(task)


async def test_each_failure_is_one_log_line_naming_what_was_watched(
    server: tuple[BlockingServer, str], caplog: pytest.LogCaptureFixture,
) -> None:
    things, addr = server
    things.fail = 2
    seen: list[tuple[Any, int]] = []
    with caplog.at_level(logging.WARNING, logger="loom.api.watch"):
        task = asyncio.create_task(collect(AsyncClient(addr), seen, policy=FAST, label="things"))
        await until(lambda: len(seen) == 1)
        await stop(task)
    assert [r.getMessage() for r in caplog.records] == [
        f"things from {addr}: HTTP 500: boom (retry in 0.05 s)",
        f"things from {addr}: HTTP 500: boom (retry in 0.1 s)",
    ]


async def test_an_index_that_goes_backwards_starts_over_from_zero(
    server: tuple[BlockingServer, str],
) -> None:
    things, addr = server
    seen: list[tuple[Any, int]] = []
    task = asyncio.create_task(collect(AsyncClient(addr), seen, policy=FAST))
    await things.requests(2)
    things.publish("restored", index=2)  # e.g. the server restored an older snapshot
    await until(lambda: len(seen) == 3)
    assert seen == [({"Value": "a"}, 5), ({"Value": "restored"}, 0), ({"Value": "restored"}, 2)]
    await things.requests(4)
    assert things.queries[2] == {}  # started over: no index
    assert things.queries[3]["index"] == "2"
    await stop(task)


async def test_a_server_that_ignores_the_index_cannot_make_the_loop_busy(
    server: tuple[BlockingServer, str],
) -> None:
    things, addr = server
    things.ignore_index = True
    policy = WatchPolicy(min_interval=0.1)
    seen: list[tuple[Any, int]] = []
    task = asyncio.create_task(collect(AsyncClient(addr), seen, policy=policy))
    await things.requests(5)
    await stop(task)
    gaps = [b - a for a, b in zip(things.times, things.times[1:], strict=False)]
    assert min(gaps) >= 0.1 * SLACK
    assert seen == [({"Value": "a"}, 5)]  # answers whose index did not move are not news


async def test_without_an_index_the_loop_polls_and_yields_every_answer(
    server: tuple[BlockingServer, str],
) -> None:
    things, addr = server
    things.no_index = True
    seen: list[tuple[Any, int]] = []
    task = asyncio.create_task(collect(AsyncClient(addr), seen, policy=FAST))
    await things.requests(4)
    await stop(task)
    assert all(q == {} for q in things.queries)
    gaps = [b - a for a, b in zip(things.times, things.times[1:], strict=False)]
    assert min(gaps) >= FAST.backoff_min * SLACK
    assert len(seen) >= 3 and all(index == 0 for _, index in seen)


async def test_a_held_request_that_outlives_its_timeout_is_a_failure_and_retried(
    server: tuple[BlockingServer, str],
) -> None:
    things, addr = server
    things.hold = 30.0
    failures: list[str] = []
    policy = WatchPolicy(backoff_min=0.05, margin=0.1)
    seen: list[tuple[Any, int]] = []
    # The server holds for 30 s; the client gives up after 0.1 s + 0.1 / 16 + 0.1 s margin.
    task = asyncio.create_task(collect(
        AsyncClient(addr), seen, wait="100ms", policy=policy,
        on_error=lambda exc, _: failures.append(exc.reason)))
    await until(lambda: len(failures) >= 2)  # and it asks again after the failure
    await stop(task)
    assert failures[0] == "no answer within 0.20625 s"
    assert seen == [({"Value": "a"}, 5)]


async def test_a_body_the_caller_cannot_decode_counts_as_a_failure(
    server: tuple[BlockingServer, str],
) -> None:
    _, addr = server
    failures: list[str] = []

    def decode(body: Any) -> str:
        raise ValueError(f"no thing in {body}")

    seen: list[tuple[Any, int]] = []
    task = asyncio.create_task(collect(
        AsyncClient(addr), seen, policy=FAST, decode=decode,
        on_error=lambda exc, _: failures.append(str(exc))))
    await until(lambda: len(failures) >= 2)
    await stop(task)
    assert failures[0] == "no thing in {'Value': 'a'}" and seen == []


async def test_leaving_the_loop_closes_the_held_request_at_once(
    server: tuple[BlockingServer, str],
) -> None:
    things, addr = server
    answers = AsyncClient(addr).watch("/v1/thing")
    first = await anext(answers)
    assert first == ({"Value": "a"}, 5)
    pending = asyncio.ensure_future(anext(answers))
    await things.requests(2)
    async with asyncio.timeout(1):
        pending.cancel()
        await asyncio.gather(pending, return_exceptions=True)
        await answers.aclose()  # type: ignore[attr-defined]


@pytest.mark.parametrize(("text", "seconds"), [
    ("30s", 30.0), ("500ms", 0.5), ("5m", 300.0), ("1h", 3600.0), ("2", 2.0)])
def test_waits_are_consul_durations(text: str, seconds: float) -> None:
    assert wait_seconds(text) == seconds


def test_a_bad_wait_is_refused_with_an_example() -> None:
    with pytest.raises(ClientError, match="expected a duration such as 30s"):
        wait_seconds("soon")


def test_a_request_may_take_the_wait_plus_the_servers_jitter_plus_a_margin() -> None:
    assert request_timeout("32s", WatchPolicy(margin=10)) == 32 + 2 + 10


@pytest.mark.parametrize(("previous", "answered", "expected"), [
    (0, 7, 7), (7, 7, 7), (7, 9, 9), (9, 3, 0)])
def test_the_next_index_is_the_answer_unless_it_went_backwards(
    previous: int, answered: int, expected: int
) -> None:
    assert next_index(previous, answered) == expected
