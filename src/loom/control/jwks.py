"""Fetching a ``jwt`` method's keys from its ``JWKSURL`` or OIDC provider, with a cache.

A login through a method whose keys are remote (``loom.acl.jwtremote``) needs them: the
first login fetches them (the JWKS, or the discovery document and then its ``jwks_uri``),
later ones use the cache until it is ``refresh_s`` old. Keys rotated at the source are picked
up without waiting for that: a token no cached key verifies makes one more fetch (at most
one per ``min_refetch_s`` per source, so forged tokens cannot make the server hammer the
provider), and the login is tried again with what came back. Concurrent logins share one
fetch.

Each fetch trusts the method's CA bundle (``JWKSCACert`` / ``OIDCDiscoveryCACert``) when it
has one, the system's otherwise; answers must be 200, JSON and at most ``MAX_BYTES``; a
redirect is not followed. Every failure is a ``JwksFetchError`` naming the URL and the cause
(the operator's to fix: a 500, as a broken method is), the aiohttp error kept as its cause.
"""

from __future__ import annotations

import asyncio
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass

import aiohttp

from loom.acl.errors import AclError
from loom.acl.jwt import PublicKey, load_jwks
from loom.acl.jwtremote import RemoteKeys, read_discovery
from loom.control.errors import ControlError

MAX_BYTES = 1024 * 1024
"""Largest JWKS or discovery document read (a real one is a few kB)."""


class JwksFetchError(ControlError):
    """A method's remote keys could not be fetched or read."""


@dataclass(frozen=True)
class FetchedKeys:
    keys: tuple[PublicKey, ...]
    issuer: str
    """The discovered provider's issuer (OIDC discovery); empty for a plain JWKS URL."""
    at: float
    """When they were fetched (the cache's clock)."""


@dataclass(frozen=True)
class JwksSettings:
    """How remote keys are fetched and kept."""

    refresh_s: float = 300.0
    """Age after which cached keys are fetched again (Consul's go-oidc keeps them until a
    token names an unknown key; a refresh bounds how long a removed key stays trusted)."""
    min_refetch_s: float = 2.0
    """Least time between two fetches of one source forced by an unverifiable token."""
    timeout_s: float = 10.0
    """Whole time one fetch may take."""


def _ssl_context(ca_pem: str) -> ssl.SSLContext:
    if ca_pem:
        return ssl.create_default_context(cadata=ca_pem)
    return ssl.create_default_context()


class RemoteKeyCache:
    def __init__(
        self,
        settings: JwksSettings | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.settings = settings or JwksSettings()
        self._clock = clock
        self._cache: dict[RemoteKeys, FetchedKeys] = {}
        self._locks: dict[RemoteKeys, asyncio.Lock] = {}
        self.fetches = 0
        """Fetches made (each document counts once)."""

    async def keys(self, remote: RemoteKeys, *, stale: FetchedKeys | None = None) -> FetchedKeys:
        """The source's keys: cached while fresh. ``stale``: the keys a token could not be
        verified with; fetch again unless that was done less than ``min_refetch_s`` ago."""
        lock = self._locks.setdefault(remote, asyncio.Lock())
        async with lock:
            cached = self._cache.get(remote)
            now = self._clock()
            if cached is not None:
                fresh = now - cached.at < self.settings.refresh_s
                if stale is None and fresh:
                    return cached
                if stale is not None and (
                    cached is not stale or now - cached.at < self.settings.min_refetch_s
                ):
                    return cached  # another login fetched meanwhile, or we just did
            fetched = await self._fetch(remote)
            self._cache[remote] = fetched
            return fetched

    async def _fetch(self, remote: RemoteKeys) -> FetchedKeys:
        timeout = aiohttp.ClientTimeout(total=self.settings.timeout_s)
        try:
            context = _ssl_context(remote.ca_pem)
        except ssl.SSLError as exc:
            raise JwksFetchError(f"jwt: {remote.first_url}: the CA certificate: {exc}") from exc
        try:
            async with aiohttp.ClientSession(timeout=timeout) as session:
                issuer = ""
                jwks_url = remote.url
                if remote.kind == "oidc":
                    body = await self._get(session, remote.first_url, context)
                    issuer, jwks_url = read_discovery(body, remote)
                body = await self._get(session, jwks_url, context)
        except AclError as exc:
            raise JwksFetchError(f"jwt: {remote.first_url}: {exc}") from exc
        try:
            keys = load_jwks(body.decode("utf-8", errors="replace"))
        except AclError as exc:
            raise JwksFetchError(f"jwt: JWKS at {jwks_url}: {exc}") from exc
        return FetchedKeys(keys, issuer, self._clock())

    async def _get(
        self, session: aiohttp.ClientSession, url: str, context: ssl.SSLContext
    ) -> bytes:
        self.fetches += 1
        use: ssl.SSLContext | bool = context if url.startswith("https://") else True
        try:
            async with session.get(url, ssl=use, allow_redirects=False) as resp:
                if resp.status != 200:
                    raise JwksFetchError(f"jwt: fetching {url}: HTTP {resp.status}")
                chunks: list[bytes] = []
                size = 0
                while size <= MAX_BYTES and (chunk := await resp.content.read(64 * 1024)):
                    chunks.append(chunk)
                    size += len(chunk)
                body = b"".join(chunks)
        except (aiohttp.ClientError, TimeoutError, ssl.SSLError, OSError) as exc:
            raise JwksFetchError(f"jwt: fetching {url}: {exc}") from exc
        if len(body) > MAX_BYTES:
            raise JwksFetchError(f"jwt: fetching {url}: larger than {MAX_BYTES} bytes")
        return body


__all__ = ["FetchedKeys", "JwksFetchError", "JwksSettings", "RemoteKeyCache"]
