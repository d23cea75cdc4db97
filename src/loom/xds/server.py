"""The gRPC ADS server: State-of-the-World and Delta over one aggregated stream.

Sessions only speak the protocol; what to serve comes from ``Hub.inputs`` -> translate ->
``Converter``. Rules that keep Envoy and us in step:
- a response is sent for a type's first request on a stream, on a change of the requested
  names, and when the served content changes - never in answer to an ACK of what we sent
  (no push loops);
- a NACK is logged with proxy, type and Envoy's message, and the previous version stays;
  once per proxy, type and version, and rate-limited (``loom.ratelog``) so a client
  sending NACKs in a loop cannot fill the log;
- changed types go out clusters -> endpoints -> listeners (make before break); no Secret is
  ever sent: each proxy's agent serves its own leaf and roots;
- a proxy that is not (or no longer) registered is never sent anything: its requests are
  held, the stream stays open and Envoy keeps its last configuration (a server restarted with
  an empty store must not wipe its sidecars). Once per stream the server logs why; when the
  proxy registers, every held request is answered at once;
- with ACLs on, the stream's token (gRPC metadata ``x-consul-token``) must exist and may
  ``service:write`` the proxy's destination service, checked before anything is sent and
  again on every change (an ACL write, a token expiring, the hub's periodic tick): a refused
  stream ends with ``PERMISSION_DENIED`` and Consul's wording.

A write every proxy sees runs each stream's push once per stream: a type whose served dict is
the one the stream last diffed (or sent) is known unchanged by identity (``Converter.serve``
hands out one dict per distinct set of resources), with no per-resource comparison.
"""

from __future__ import annotations

import contextlib
import itertools
import os
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

import grpc
from envoy.service.discovery.v3 import ads_pb2_grpc, discovery_pb2

from loom.addrs import Address
from loom.control.state import State
from loom.filemodes import restrict_socket
from loom.xds.errors import StreamDenied, XdsStartError
from loom.xds.hub import Hub
from loom.xds.resources import Served, type_version
from loom.xds.session import Session, limited
from loom.xds.translate.names import ORDER, TYPE_CLUSTER, TYPE_LISTENER

WILDCARD_TYPES = (TYPE_LISTENER, TYPE_CLUSTER)
_nonces = itertools.count(1)
TOKEN_METADATA = "x-consul-token"
TOKEN_RECHECK_S = 10.0
"""With no store change, how often streams re-check their token (an expiry ends a stream
at most this late)."""


def _by_name(s: Served) -> str:
    return s.name


class SotwSession(Session):
    protocol = "sotw"

    def __init__(
        self, hub: Hub, requests: AsyncIterator[Any], secret: str = ""
    ) -> None:
        super().__init__(hub, requests, secret)
        self.names: dict[str, set[str] | None] = {}
        self.sent_version: dict[str, str] = {}
        self.sent_nonce: dict[str, str] = {}
        self.sent_names: dict[str, set[str] | None] = {}
        self.sent_of: dict[str, dict[str, Served]] = {}
        """The served dict each type's last response was made of (``Converter.serve``
        hands out the same dict for the same resources: unchanged, nothing to compare)."""

    def _response(self, type_url: str) -> discovery_pb2.DiscoveryResponse:
        names = self.names[type_url]
        served = self.served.get(type_url, {})
        self.sent_of[type_url] = served
        chosen = [s for n, s in sorted(served.items()) if names is None or n in names]
        version = type_version(served, names)
        nonce = str(next(_nonces))
        self.sent_version[type_url] = version
        self.sent_nonce[type_url] = nonce
        self.sent[type_url] = nonce
        self.sent_names[type_url] = names
        return discovery_pb2.DiscoveryResponse(
            version_info=version,
            resources=[s.message for s in chosen],
            type_url=type_url,
            nonce=nonce,
        )

    def _acked(self, req: Any) -> bool:
        t = req.type_url
        if (
            not req.response_nonce
            or not self.registered
            or self.held
            or t not in self.names
            or req.HasField("error_detail")
            or (req.node.id and req.node.id != self.proxy_id)
        ):
            return False
        names = None if t in WILDCARD_TYPES else set(req.resource_names)
        if names != self.names[t] or names != self.sent_names.get(t):
            return False
        self.answered(
            t, req.response_nonce, None
        )  # _on_request would send nothing either
        return True

    def _on_request(self, req: Any) -> discovery_pb2.DiscoveryResponse | None:
        self.identify(req.node.id)
        t = req.type_url
        if t not in self.served:
            limited.warning(
                "xds type", "proxy %s asked for unknown type %.100r", self.proxy_id, t
            )
            return None
        names = None if t in WILDCARD_TYPES else set(req.resource_names)
        if req.HasField("error_detail"):
            self.rejected(t, req.version_info, req.error_detail.message)
            self.answered(t, req.response_nonce, req.error_detail.message)
            self.names[t] = names
            return None
        self.answered(t, req.response_nonce, None)
        first = t not in self.names or not req.response_nonce
        self.names[t] = names
        if self.hold(t):
            return None
        if first:
            return self._response(t)
        if req.response_nonce != self.sent_nonce.get(t):
            return None  # stale: an answer to something we superseded
        if names != self.sent_names.get(t):
            return self._response(t)
        return None

    def _pushes(self) -> list[discovery_pb2.DiscoveryResponse]:
        """After a change: every held type, and every subscribed type whose version moved."""
        held, self.held = self.held, set()
        return [
            self._response(t)
            for t in ORDER
            if t in held
            or (t in self.sent_version and self._moved(t))
        ]

    def _moved(self, t: str) -> bool:
        """Whether type ``t``'s response would carry another version than the last one."""
        names = self.names[t]
        if self.served[t] is self.sent_of.get(t) and names == self.sent_names.get(t):
            return False
        return type_version(self.served[t], names) != self.sent_version[t]


class DeltaSession(Session):
    protocol = "delta"

    def __init__(
        self, hub: Hub, requests: AsyncIterator[Any], secret: str = ""
    ) -> None:
        super().__init__(hub, requests, secret)
        self.subscribed: dict[str, set[str] | None] = {}
        self.client: dict[str, dict[str, str]] = {}
        self.asked: dict[str, set[str]] = {}  # names asked for while held
        self.diffed: dict[str, dict[str, Served]] = {}
        """The served dict each type was last diffed against, until a request of that
        type: the same dict again (``Converter.serve``) has nothing new to send."""

    def _diff(
        self, t: str, force: bool, asked: set[str]
    ) -> discovery_pb2.DeltaDiscoveryResponse | None:
        names = self.subscribed[t]
        served = self.served.get(t, {})
        if not force and not asked and self.diffed.get(t) is served:
            return None
        self.diffed[t] = served
        have = self.client.setdefault(t, {})
        # Run for every stream on every write: no copy of a wildcard subscription's
        # resources, and only what changed is sorted (by name, unique within a type).
        wanted = (
            served if names is None else {n: s for n, s in served.items() if n in names}
        )
        changed = [s for n, s in wanted.items() if have.get(n) != s.version]
        removed = [n for n in have if n not in wanted]
        # Names asked for that do not exist: say so, or Envoy waits for its fetch timeout.
        missing = [n for n in asked if n not in wanted and n not in have]
        if not changed and not removed and not missing and not force:
            return None
        changed.sort(key=_by_name)
        removed.sort()
        removed += sorted(missing)
        for s in changed:
            have[s.name] = s.version
        for n in removed:
            have.pop(n, None)
        nonce = str(next(_nonces))
        self.sent[t] = nonce
        return discovery_pb2.DeltaDiscoveryResponse(
            system_version_info=str(self.hub.generation),
            type_url=t,
            resources=[
                discovery_pb2.Resource(
                    name=s.name, version=s.version, resource=s.message
                )
                for s in changed
            ],
            removed_resources=removed,
            nonce=nonce,
        )

    def _acked(self, req: Any) -> bool:
        t = req.type_url
        if (
            not req.response_nonce
            or not self.registered
            or self.held
            or t not in self.subscribed
            or req.resource_names_subscribe
            or req.resource_names_unsubscribe
            or req.HasField("error_detail")
            or (req.node.id and req.node.id != self.proxy_id)
        ):
            return False
        # _on_request would diff this type again, but what was served changed only in a
        # refresh, whose pushes sent every diff already: there is nothing to send.
        self.answered(t, req.response_nonce, None)
        return True

    def _on_request(self, req: Any) -> discovery_pb2.DeltaDiscoveryResponse | None:
        self.identify(req.node.id)
        t = req.type_url
        if t not in self.served:
            limited.warning(
                "xds type", "proxy %s asked for unknown type %.100r", self.proxy_id, t
            )
            return None
        self.diffed.pop(t, None)  # what the client has or wants may change below
        if req.HasField("error_detail"):
            self.rejected(t, f"(nonce {req.response_nonce})", req.error_detail.message)
            self.answered(t, req.response_nonce, req.error_detail.message)
            return None
        self.answered(t, req.response_nonce, None)
        first = t not in self.subscribed
        if first:
            wildcard = t in WILDCARD_TYPES and not list(req.resource_names_subscribe)
            self.subscribed[t] = None if wildcard else set()
            self.client[t] = dict(req.initial_resource_versions)
        names = self.subscribed[t]
        asked = set(req.resource_names_subscribe) - {"*"}
        if names is not None:
            names |= asked
            names -= set(req.resource_names_unsubscribe)
            for n in req.resource_names_unsubscribe:
                self.client[t].pop(n, None)
        if self.hold(t):
            self.asked.setdefault(t, set()).update(asked)
            return None
        return self._diff(t, force=first, asked=asked)

    def _pushes(self) -> list[discovery_pb2.DeltaDiscoveryResponse]:
        """After a change: every held type, and the diff of every subscribed type with one."""
        held, self.held = self.held, set()
        asked, self.asked = self.asked, {}
        diffs = (
            self._diff(t, force=t in held, asked=asked.get(t, set()))
            for t in ORDER
            if t in self.subscribed
        )
        return [d for d in diffs if d is not None]


def stream_token(context: Any) -> str:
    """The ACL token Envoy sends as gRPC metadata (its bootstrap's ``initial_metadata``)."""
    for key, value in context.invocation_metadata() or ():
        if key.lower() == TOKEN_METADATA:
            return str(value).strip()
    return ""


class AdsServicer(ads_pb2_grpc.AggregatedDiscoveryServiceServicer):  # type: ignore[misc]
    def __init__(self, hub: Hub) -> None:
        self.hub = hub

    async def _serve(self, session: Session, context: Any) -> AsyncIterator[Any]:
        try:
            async for resp in session.run():
                yield resp
        except StreamDenied as exc:
            await context.abort(grpc.StatusCode.PERMISSION_DENIED, str(exc))

    async def StreamAggregatedResources(
        self, request_iterator: AsyncIterator[Any], context: Any
    ) -> AsyncIterator[discovery_pb2.DiscoveryResponse]:
        session = SotwSession(self.hub, request_iterator, stream_token(context))
        async for resp in self._serve(session, context):
            yield resp

    async def DeltaAggregatedResources(
        self, request_iterator: AsyncIterator[Any], context: Any
    ) -> AsyncIterator[discovery_pb2.DeltaDiscoveryResponse]:
        session = DeltaSession(self.hub, request_iterator, stream_token(context))
        async for resp in self._serve(session, context):
            yield resp


async def start_xds(
    state: State,
    addrs: list[Address],
    tls_addrs: Sequence[Address] = (),
    credentials: Any = None,
) -> tuple[list[str], Callable[[], Awaitable[None]]]:
    """Serve ADS on ``addrs`` (plaintext) and ``tls_addrs`` (with ``credentials``, a
    ``grpc.ServerCredentials``); the bound addresses come back in that order."""
    hub = Hub(state, refresh_s=TOKEN_RECHECK_S)
    server = grpc.aio.server(
        options=[
            ("grpc.so_reuseport", 0),
            ("grpc.max_send_message_length", 64 * 1024 * 1024),
            ("grpc.max_receive_message_length", 16 * 1024 * 1024),
            ("grpc.keepalive_time_ms", 30_000),
            ("grpc.http2.min_ping_interval_without_data_ms", 5_000),
        ]
    )
    ads_pb2_grpc.add_AggregatedDiscoveryServiceServicer_to_server(
        AdsServicer(hub), server
    )
    bound = []
    for n, addr in enumerate([*addrs, *tls_addrs]):
        target = f"unix:{addr.path}" if addr.is_unix else str(addr)
        if addr.is_unix:
            Path(addr.path).parent.mkdir(parents=True, exist_ok=True)
            with contextlib.suppress(FileNotFoundError):
                os.unlink(addr.path)
        try:
            if n < len(addrs):
                port = server.add_insecure_port(target)
            else:
                port = server.add_secure_port(target, credentials)
        except RuntimeError as exc:
            raise XdsStartError(f"cannot listen for xDS on {addr}: {exc}") from exc
        if not addr.is_unix and port == 0:
            raise XdsStartError(
                f"cannot listen for xDS on {addr}: address in use or unavailable"
            )
        bound.append(target if addr.is_unix else str(Address(addr.host, port)))
    await server.start()
    for addr in [*addrs, *tls_addrs]:
        if (
            addr.is_unix
        ):  # the owner and the sidecars' group (--unix-socket-mode/-group)
            settings = state.settings
            restrict_socket(
                addr.path, settings.unix_socket_mode, settings.unix_socket_group
            )
    hub.start()

    async def stop() -> None:
        await hub.stop()
        await server.stop(grace=0.5)

    return bound, stop
