"""Hostile xDS requests (issue 11, "fuzzing as part of the suite"): random SotW and Delta
request sequences on a real gRPC ADS server. Whatever a client sends, its stream ends cleanly
(OK, or a deliberate refusal code) when it stops sending, the server logs no traceback, and a
well-behaved proxy is still served afterwards.

Each example opens one stream: a valid first request for a registered proxy (so the session is
a real one), then fuzzed requests (hostile type URLs, versions, nonces, resource names, node
ids, NACK details, Delta subscriptions and initial versions), then the client half-closes; the
server's end of the stream is the event waited on (bounded by a timeout that only a hang hits).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Iterator

import grpc
import pytest
from envoy.config.core.v3 import base_pb2
from envoy.service.discovery.v3 import ads_pb2_grpc, discovery_pb2
from google.rpc import status_pb2
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from loom.xds.translate.names import ORDER, TYPE_LISTENER
from tests.api.test_ads_protocol import PROXY, SotwClient, _setup, _stop

ALLOWED = {grpc.StatusCode.OK, grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.PERMISSION_DENIED}
"""How a fuzzed stream may end; UNKNOWN or INTERNAL would be a handler that raised."""

_text = st.one_of(
    st.text(max_size=40),
    st.sampled_from(["", "*", "\x00", "\ud7ff", "../../etc", "a" * 2000, "%00", "😀"]),
)
_type_url = st.one_of(st.sampled_from(ORDER), _text, st.just("type.googleapis.com/x.y.Z"))
_node = st.one_of(st.none(), st.builds(base_pb2.Node, id=_text, cluster=_text))
_error = st.one_of(
    st.none(), st.builds(status_pb2.Status, code=st.integers(-(2**31), 2**31 - 1), message=_text)
)


@st.composite
def _sotw(draw: st.DrawFn) -> discovery_pb2.DiscoveryRequest:
    req = discovery_pb2.DiscoveryRequest(
        type_url=draw(_type_url),
        version_info=draw(_text),
        response_nonce=draw(_text),
        resource_names=draw(st.lists(_text, max_size=5)),
    )
    node, error = draw(_node), draw(_error)
    if node is not None:
        req.node.CopyFrom(node)
    if error is not None:
        req.error_detail.CopyFrom(error)
    return req


@st.composite
def _delta(draw: st.DrawFn) -> discovery_pb2.DeltaDiscoveryRequest:
    req = discovery_pb2.DeltaDiscoveryRequest(
        type_url=draw(_type_url),
        response_nonce=draw(_text),
        resource_names_subscribe=draw(st.lists(_text, max_size=5)),
        resource_names_unsubscribe=draw(st.lists(_text, max_size=5)),
        initial_resource_versions=draw(st.dictionaries(_text, _text, max_size=3)),
    )
    node, error = draw(_node), draw(_error)
    if node is not None:
        req.node.CopyFrom(node)
    if error is not None:
        req.error_detail.CopyFrom(error)
    return req


class _Tracebacks(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.exc_info is not None:
            self.records.append(record)


@pytest.fixture(scope="module")
def ads() -> Iterator[tuple[asyncio.AbstractEventLoop, str]]:
    """One in-process server for every example (an event loop of its own)."""
    loop = asyncio.new_event_loop()
    state, target, stop = loop.run_until_complete(_setup())
    try:
        yield loop, target
    finally:
        loop.run_until_complete(stop())  # type: ignore[operator]
        loop.run_until_complete(state.close())
        loop.close()


@pytest.fixture
def tracebacks() -> Iterator[_Tracebacks]:
    handler = _Tracebacks()
    logger = logging.getLogger("loom")
    logger.addHandler(handler)
    try:
        yield handler
    finally:
        logger.removeHandler(handler)


async def _stream(target: str, delta: bool, fuzzed: list[object]) -> grpc.StatusCode:
    node = base_pb2.Node(id=PROXY)
    if delta:
        first: object = discovery_pb2.DeltaDiscoveryRequest(node=node, type_url=TYPE_LISTENER)
    else:
        first = discovery_pb2.DiscoveryRequest(node=node, type_url=TYPE_LISTENER)

    async def requests() -> AsyncIterator[object]:
        yield first
        for req in fuzzed:
            yield req

    async with grpc.aio.insecure_channel(target) as channel:
        stub = ads_pb2_grpc.AggregatedDiscoveryServiceStub(channel)
        rpc = stub.DeltaAggregatedResources if delta else stub.StreamAggregatedResources
        call = rpc(requests())
        async with asyncio.timeout(20):  # only a hang reaches this
            try:
                async for _ in call:
                    pass
            except grpc.aio.AioRpcError as exc:
                return exc.code()
        return await call.code()


@settings(max_examples=120, deadline=None, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])  # fmt: skip
@given(
    delta=st.booleans(), sotw=st.lists(_sotw(), max_size=6), deltas=st.lists(_delta(), max_size=6)
)
def test_no_hostile_request_sequence_breaks_a_stream_or_logs_a_traceback(
    ads: tuple[asyncio.AbstractEventLoop, str],
    tracebacks: _Tracebacks,
    delta: bool,
    sotw: list[discovery_pb2.DiscoveryRequest],
    deltas: list[discovery_pb2.DeltaDiscoveryRequest],
) -> None:
    loop, target = ads
    fuzzed: list[object] = list(deltas) if delta else list(sotw)
    code = loop.run_until_complete(_stream(target, delta, fuzzed))
    assert code in ALLOWED, code
    assert not tracebacks.records, [r.getMessage() for r in tracebacks.records]


def test_a_well_behaved_proxy_is_served_after_the_fuzz(
    ads: tuple[asyncio.AbstractEventLoop, str],
) -> None:
    loop, target = ads

    async def served() -> set[str]:
        client = SotwClient(target)
        task = asyncio.create_task(client.run())
        try:
            responses = await client.received(len(ORDER))
        finally:
            await _stop(task, client)
        return {r.type_url for r in responses}

    assert TYPE_LISTENER in loop.run_until_complete(served())
