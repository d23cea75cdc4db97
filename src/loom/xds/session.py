"""The per-stream machinery both ADS protocols share (``loom.xds.server``'s sessions).

A session knows who its proxy is, what it was served and what it depends on (``Hub.depend``),
turns the stream's requests and the hub's change notices into one ordered event stream,
records ACKs and NACKs for ``loom proxy status``, and checks the stream's ACL token; what to
answer is each protocol's (``SotwSession``, ``DeltaSession``).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
from collections.abc import AsyncIterator
from typing import Any

from loom.acl.errors import AclNotFound, PermissionDenied
from loom.acl.rules import Access
from loom.errors import LoomError
from loom.ratelog import RateLimitedLog
from loom.xds.deps import Deps, Known
from loom.xds.errors import StreamDenied
from loom.xds.hub import Hub
from loom.xds.resources import Served
from loom.xds.translate.names import ORDER

log = logging.getLogger("loom.xds")
limited = RateLimitedLog(log)
"""NACKs and unknown types: once, then rate-limited (a looping client cannot fill the log)."""
_session_ids = itertools.count(1)
_CHANGED = object()


class Session:
    """Shared per-stream machinery: who the proxy is, what it is served, change events."""

    protocol = ""
    """The xDS variant, as ``loom dataplane --xds`` names it."""

    def __init__(
        self, hub: Hub, requests: AsyncIterator[Any], secret: str = ""
    ) -> None:
        self.hub = hub
        self.requests = requests
        self.secret = secret
        self.queue: asyncio.Queue[Any] = asyncio.Queue()
        self.proxy_id = ""
        self.inputs: object = object()
        self.served: dict[str, dict[str, Served]] = {t: {} for t in ORDER}
        self.id = next(_session_ids)
        self.change_pending = False
        self.deps: Deps | None = ()
        """What this proxy's inputs read (``Hub.depend``); nothing until it is identified."""
        self.known: Known | None = None
        """The last ``Hub.read``'s dependencies, reused by the next while still true."""
        self.registered = False
        self.held: set[str] = (
            set()
        )  # types asked for while unregistered, not yet answered
        self.nacked: dict[str, str] = {}  # type -> the version (or nonce) last NACKed
        self._told_unregistered = False
        # What `loom proxy status` shows, per type: the nonce last sent, the one last ACKed,
        # and Envoy's message of the last NACK (cleared by the next ACK).
        self.sent: dict[str, str] = {}
        self.acked: dict[str, str] = {}
        self.nack_message: dict[str, str] = {}

    def answered(self, t: str, nonce: str, error: str | None) -> None:
        """Envoy answered the response of nonce ``nonce`` of type ``t``: an ACK, or a NACK
        with Envoy's ``error``. Answers to superseded responses are ignored."""
        if not nonce or nonce != self.sent.get(t):
            return
        if error is None:
            self.acked[t] = nonce
            self.nack_message.pop(t, None)
        else:
            self.nack_message[t] = error

    def status(self) -> dict[str, Any]:
        """This stream as ``GET /v1/loom/proxies`` shows it. ``Synced``: registered, served
        what the mesh says now, and every type's latest response ACKed."""
        inputs = self.hub.inputs(self.proxy_id) if self.proxy_id else None
        types = {
            t.rsplit(".", 1)[-1]: {
                "Sent": self.sent.get(t, ""),
                "Acked": self.acked.get(t, ""),
                "Nack": self.nack_message.get(t, ""),
            }
            for t in ORDER
            if t in self.sent
        }
        synced = (
            inputs is not None
            and inputs == self.inputs
            and bool(self.sent)
            and all(self.acked.get(t) == n for t, n in self.sent.items())
        )
        return {
            "ID": self.proxy_id,
            "Stream": self.id,
            "Protocol": self.protocol,
            "Service": inputs.service if inputs is not None else "",
            "Namespace": inputs.namespace if inputs is not None else "",
            "Datacenter": inputs.datacenter if inputs is not None else "",
            "Registered": self.registered,
            "Synced": synced,
            "Types": types,
        }

    def rejected(self, t: str, version: str, message: str) -> None:
        """Log a NACK: once per type and version, then only as a rate-limited line."""
        if self.nacked.get(t) == version:
            return
        self.nacked[t] = version
        limited.warning(
            "xds nack", "proxy %s rejected %s version %s: %.500s",
            self.proxy_id, t, version or "-", message,
        )  # fmt: skip

    def refresh(self) -> bool:
        """Recompute what this proxy should have; True when anything changed.

        An unregistered proxy keeps what it was served (nothing, on a new stream): an empty
        configuration would remove its listeners. Raises ``StreamDenied`` when the stream's
        token (no longer) may have this proxy's configuration.
        """
        self.authorize()
        inputs, self.known = self.hub.read(self.proxy_id, self.known)
        deps = self.known.deps
        if deps is not self.deps and deps != self.deps:
            self.deps = deps
            self.hub.depend(self.id, deps)
        if inputs is not None:
            self.authorize(inputs.service, inputs.namespace)
        if inputs is None:
            if self.registered or not self._told_unregistered:
                log.warning(
                    "proxy %s is not registered; keeping its last configuration",
                    self.proxy_id,
                )
                self._told_unregistered = True
            self.registered = False
            return False
        if not self.registered and self._told_unregistered:
            log.info("proxy %s is registered; sending its configuration", self.proxy_id)
        self.registered = True
        if inputs == self.inputs:
            return bool(self.held)
        try:
            served = self.hub.served(inputs)
        except LoomError as exc:  # a translator bug: keep serving the last good config
            log.error(
                "cannot build the configuration of proxy %s: %s", self.proxy_id, exc
            )
            return False
        self.inputs = inputs
        self.served = served
        return True

    def authorize(self, service: str = "", namespace: str = "") -> None:
        """With ACLs on: the token must exist and, given the proxy's destination ``service``
        (in ``namespace``, empty: default), may ``service:write`` it (as Consul's xDS server
        checks); ``StreamDenied`` if not."""
        acl = self.hub.state.acl
        if not acl.enabled:
            return
        try:
            authz = acl.authorizer(self.secret)
            if service:
                authz.in_namespace(namespace).check("service", Access.WRITE, service)
        except (AclNotFound, PermissionDenied) as exc:
            log.warning(
                "proxy %s: stream refused: %s", self.proxy_id or "(unnamed)", exc
            )
            raise StreamDenied(str(exc)) from exc

    async def _read(self) -> None:
        try:
            async for req in self.requests:
                # A plain ACK calls for no response: record it here rather than hop to the
                # stream's task (one hop per ACK, one ACK per response, on every stream a
                # write reaches). Only with nothing queued, so requests keep their order.
                if self.queue.empty() and self._acked(req):
                    continue
                await self.queue.put(req)
        finally:
            await self.queue.put(None)

    def _acked(self, req: Any) -> bool:
        """When ``req`` is an ACK that calls for nothing but recording, record it: True.
        False for anything else (handled by ``_on_request`` on the stream's task)."""
        return False

    def _changed(self) -> None:
        """The hub's bump (``Hub.subscribe``): queue one change event."""
        if not self.change_pending:  # one pending change event is enough
            self.change_pending = True
            self.queue.put_nowait(_CHANGED)

    async def events(self) -> AsyncIterator[Any]:
        tasks = [asyncio.create_task(self._read())]
        self.hub.subscribe(self.id, self._changed, self.deps)
        try:
            while True:
                ev = await self.queue.get()
                if ev is None:
                    return
                yield ev
        finally:
            self.hub.unsubscribe(self.id)
            for t in tasks:
                t.cancel()
            for t in tasks:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await t
            self.hub.sessions.pop(self.id, None)
            self.hub.state.proxies.remove(self.id)
            if self.proxy_id:
                log.info("proxy %s disconnected", self.proxy_id)

    def identify(self, node_id: str) -> None:
        if not self.proxy_id and node_id:
            self.proxy_id = node_id
            self.hub.sessions[self.id] = node_id
            self.hub.state.proxies.add(self.id, self.status)
            log.info("proxy %s connected", node_id)
            self.refresh()

    def _on_request(self, req: Any) -> Any:
        """The response a request calls for, or None (each protocol says)."""
        raise NotImplementedError

    def _pushes(self) -> list[Any]:
        """The responses a change of served content calls for (each protocol says)."""
        raise NotImplementedError

    async def run(self) -> AsyncIterator[Any]:
        """One loop for both protocols: requests are answered, changes pushed."""
        async for ev in self.events():
            if ev is _CHANGED:
                self.change_pending = False
                if self.proxy_id and self.refresh():
                    for resp in self._pushes():
                        yield resp
            else:
                resp = self._on_request(ev)
                if resp is not None:
                    yield resp

    def hold(self, type_url: str) -> bool:
        """True when a request of ``type_url`` must wait for the proxy's registration."""
        if self.registered:
            return False
        self.held.add(type_url)
        return True
