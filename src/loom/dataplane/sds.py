"""The agent's SDS server: Envoy reads its leaf and roots from ``loom dataplane``, not the server.

The private key is made by the agent (``identity``) and handed to Envoy only here, on a unix
socket in the agent's work directory (socket 0600, directory 0700, so only the sidecar's UID
can connect), as istio-agent does. The protocol is v3 ``SecretDiscoveryService`` in its
State-of-the-World streaming form:

- a request without a nonce, or naming other secrets, is answered with the current version;
- an ACK (the nonce we sent) is not answered; a NACK is logged and the version kept;
- when the identity renews (a new leaf, new roots), every open stream that asked for a secret
  gets the new version at once, so Envoy swaps certificates without dropping a connection.

Envoy opens one stream per secret name; each is answered with just the names it asked for.

Spoken without grpcio or protobuf (issue 17: the agent's RSS): the call over ``h2grpc``, the
messages by ``sdswire``.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
import tempfile
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from loom.dataplane import sdswire
from loom.dataplane.errors import DataplaneError
from loom.dataplane.h2grpc import Handler, Server
from loom.xds.translate.names import TYPE_SECRET
from loom.xds.translate.tls import secrets

log = logging.getLogger("loom.dataplane.sds")
_nonces = itertools.count(1)
SOCKET_NAME = "sds.sock"
MAX_SOCKET_PATH = 100  # sun_path holds 108 bytes; keep a margin


@dataclass(frozen=True)
class Secrets:
    """What the agent serves: one version of the leaf (with its key) and the roots."""

    version: int
    resources: dict[str, bytes]
    """Each secret's name and its encoded ``Any``-packed ``Secret``."""


def pack(cert_pem: str, key_pem: str, roots_pem: str) -> dict[str, bytes]:
    """The two secrets as Envoy's ``Secret`` messages (the translator's canonical shape)."""
    return {
        name: sdswire.pack_any(TYPE_SECRET, sdswire.encode(doc, sdswire.SECRET))
        for name, doc in secrets(cert_pem, key_pem, roots_pem).items()
    }


class SecretStore:
    """The current secrets and a wake-up for every stream when they change."""

    def __init__(self) -> None:
        self.current: Secrets | None = None
        self._changed = asyncio.Event()

    def set(self, cert_pem: str, key_pem: str, roots_pem: str) -> None:
        version = self.current.version + 1 if self.current else 1
        self.current = Secrets(version, pack(cert_pem, key_pem, roots_pem))
        self._changed.set()
        self._changed = asyncio.Event()

    async def changed(self) -> None:
        await self._changed.wait()


class _Stream:
    def __init__(self, store: SecretStore, requests: AsyncIterator[bytes]) -> None:
        self.store = store
        self.requests = requests
        self.names: set[str] | None = None
        self.sent_version = ""
        self.sent_nonce = ""

    def _response(self) -> bytes | None:
        current = self.store.current
        if current is None or self.names is None:
            return None
        self.sent_version = str(current.version)
        self.sent_nonce = str(next(_nonces))
        return sdswire.discovery_response(
            self.sent_version,
            [current.resources[n] for n in sorted(self.names) if n in current.resources],
            TYPE_SECRET,
            self.sent_nonce,
        )

    def on_request(self, req: sdswire.DiscoveryRequest) -> bytes | None:
        if req.error_message is not None:
            log.warning("Envoy rejected secrets version %s: %s", req.version_info or "-",
                        req.error_message)  # fmt: skip
            return None
        names = set(req.resource_names)
        first = self.names is None or not req.response_nonce
        changed = names != self.names
        self.names = names
        if first or changed:
            return self._response()
        if req.response_nonce != self.sent_nonce:
            return None  # stale: an answer to something we superseded
        current = self.store.current
        if current is not None and str(current.version) != self.sent_version:
            return self._response()  # renewed between our push and this ACK
        return None

    def on_change(self) -> bytes | None:
        current = self.store.current
        if self.names is None or current is None or str(current.version) == self.sent_version:
            return None
        return self._response()

    async def run(self) -> AsyncGenerator[bytes, None]:
        queue: asyncio.Queue[Any] = asyncio.Queue()
        changed = object()

        malformed: list[sdswire.WireError] = []

        async def read() -> None:
            try:
                async for req in self.requests:
                    await queue.put(sdswire.decode_request(req))
            except sdswire.WireError as exc:
                malformed.append(exc)
            finally:
                await queue.put(None)

        async def watch() -> None:
            while True:
                await self.store.changed()
                await queue.put(changed)

        tasks = [asyncio.create_task(read()), asyncio.create_task(watch())]
        try:
            while (ev := await queue.get()) is not None:
                resp = self.on_change() if ev is changed else self.on_request(ev)
                if resp is not None:
                    yield resp
            if malformed:  # the call fails (grpc-status INTERNAL), the server goes on
                raise malformed[0]
        finally:
            for t in tasks:
                t.cancel()
            for t in tasks:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await t


def sds_handler(store: SecretStore) -> Handler:
    """One SDS call (``StreamSecrets``, or ``FetchSecrets``: one request) on ``store``."""

    def handle(requests: AsyncIterator[bytes]) -> AsyncGenerator[bytes, None]:
        return _Stream(store, requests).run()

    return handle


def socket_path(work: Path) -> tuple[Path, Path | None]:
    """``work/sds.sock``, or, when that path is too long for a unix socket, one in a fresh
    private temporary directory (returned second, for the caller to remove)."""
    path = work / SOCKET_NAME
    if len(str(path)) <= MAX_SOCKET_PATH:
        return path, None
    short = Path(tempfile.mkdtemp(prefix="loom-sds-"))
    log.info("work dir path too long for a unix socket; SDS socket in %s", short)
    return short / SOCKET_NAME, short


async def serve_sds(store: SecretStore, path: Path) -> Callable[[], Awaitable[None]]:
    """Serve ``store`` on the unix socket ``path`` (0600; its directory made 0700); returns
    the function that stops it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.parent.chmod(0o700)
    path.unlink(missing_ok=True)
    server = Server(sds_handler(store))
    old = os.umask(0o177)  # the socket is created 0600, never briefly wider
    try:
        await server.start(path)
    except OSError as exc:
        raise DataplaneError(f"cannot serve SDS on {path}: {exc}") from exc
    finally:
        os.umask(old)
    path.chmod(0o600)

    async def stop() -> None:
        await server.stop()
        path.unlink(missing_ok=True)

    return stop
