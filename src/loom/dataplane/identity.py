"""The workload's identity, kept by the agent: its private key is made here and never sent.

``WorkloadIdentity`` has a P-256 key made (by the agent's own short-lived child, ``keygen``),
sends only a CSR naming the proxy's SPIFFE ID to ``PUT /v1/loom/connect/ca/sign`` (with the
dataplane's token: the server signs only for a service the token may ``service:write``), and
hands leaf, key and roots to the ``SecretStore`` that the agent's SDS server serves to Envoy.
It then keeps them fresh:

- a new key and leaf at about half of the leaf's remaining life (the server's leaf TTL);
- a new leaf, and the new roots, as soon as the roots change (``/v1/agent/connect/ca/roots``
  watched with a blocking query, read afresh after any failure: a restarted server may
  reuse the index numbers of the one before), so a CA rotation reaches Envoy before old
  leaves expire. While the proxy is not registered (a ``--dev`` server restarted empty, with
  a new CA) the switch waits for the registration: the server holds the proxy's
  configuration meanwhile, and a leaf of the new CA would not match it;
- a failure (the server away, a token revoked) is logged and retried with backoff while
  Envoy keeps serving the last good secrets.

The first leaf may have to wait too: a secondary datacenter's CA answers 503 until the primary
has signed its intermediate; ``start`` retries that (with backoff) rather than giving up. The
leaf the server returns is the whole chain (``CertPEM``: the leaf, then any intermediate), and
it goes to Envoy as the certificate chain unchanged.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
from dataclasses import dataclass
from typing import Any

from loom.aio import first_set
from loom.api import AsyncClient, ClientError, HTTPStatusError
from loom.ca.spiffe import SpiffeError, SpiffeId
from loom.dataplane.errors import DataplaneError
from loom.dataplane.keygen import make_key_and_csr
from loom.dataplane.sds import SecretStore

log = logging.getLogger("loom.dataplane.identity")
SIGN_PATH = "/v1/loom/connect/ca/sign"
ROOTS_PATH = "/v1/agent/connect/ca/roots"
RENEW_AT = 0.5
"""Renew once this share of a leaf's remaining life has passed."""
MIN_RENEW_S = 1.0
RETRY_MIN_S, RETRY_MAX_S = 0.5, 30.0
ROOTS_WAIT = "5m"
ROOTS_TIMEOUT_S = 5 * 60 * (1 + 1 / 16) + 10
REGISTRATION_POLL_S = 1.0


@dataclass(frozen=True)
class Roots:
    trust_domain: str
    active_id: str
    pem: str

    @classmethod
    def from_json(cls, body: Any) -> Roots:
        try:
            pems = [r["RootCert"] for r in body["Roots"]]
            return cls(str(body["TrustDomain"]), str(body["ActiveRootID"]), "".join(pems))
        except (KeyError, TypeError) as exc:
            raise DataplaneError(f"the server's CA roots are malformed: {exc!r}") from exc


@dataclass(frozen=True)
class Issued:
    serial: str
    cert_pem: str
    valid_before: dt.datetime


class WorkloadIdentity:
    def __init__(
        self,
        client: AsyncClient,
        service: str,
        namespace: str,
        datacenter: str,
        store: SecretStore,
        proxy_id: str = "",
    ) -> None:
        self.client = client
        self.proxy_id = proxy_id
        self.service = service
        self.namespace = namespace
        self.datacenter = datacenter
        self.store = store
        self.roots: Roots | None = None
        self.leaf: Issued | None = None
        self._roots_changed = asyncio.Event()
        self._pending: Roots | None = None

    def _identity(self, roots: Roots) -> SpiffeId:
        try:
            return SpiffeId.of(roots.trust_domain, self.namespace, self.datacenter, self.service)
        except SpiffeError as exc:
            raise DataplaneError(f"cannot name this proxy's identity: {exc}") from exc

    async def _sign(self, roots: Roots) -> None:
        """A new key, its CSR signed, and the store updated; the key stays in this process
        (made by its short-lived child, ``keygen``, and handed over a pipe)."""
        key, csr = await make_key_and_csr(self._identity(roots).uri)
        body = await self.client.put(SIGN_PATH, {"CSR": csr})
        try:
            issued = Issued(
                str(body["SerialNumber"]),
                str(body["CertPEM"]),
                dt.datetime.fromisoformat(body["ValidBefore"]),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise DataplaneError(f"the server's signed certificate is malformed: {exc!r}") from exc
        self.store.set(issued.cert_pem, key, roots.pem)
        self.roots, self.leaf = roots, issued
        log.info("leaf for %s signed (serial %s, valid until %s)",
                 self.service, issued.serial, issued.valid_before.isoformat())  # fmt: skip

    async def start(self, stop: asyncio.Event | None = None) -> bool:
        """The first roots and leaf, before Envoy starts; a refusal is fatal here (a token
        that may not have this identity will not gain it by waiting). A CA that is not ready
        (503: a secondary datacenter's CA waiting for the primary) is waited for, with
        backoff; False when ``stop`` came first."""
        retry = RETRY_MIN_S
        while True:
            try:
                roots = Roots.from_json(await self.client.get(ROOTS_PATH))
                await self._sign(roots)
                return True
            except HTTPStatusError as exc:
                if exc.status in (400, 403):
                    raise DataplaneError(
                        f"cannot get a certificate for {self.service}: {exc} (HTTP {exc.status})"
                    ) from exc
                if exc.status != 503:
                    raise
                log.warning("cannot get a certificate for %s yet: %s (retry in %g s)",
                            self.service, exc, retry)  # fmt: skip
            if stop is None:
                await asyncio.sleep(retry)
            elif await first_set(stop, None, retry):
                return False
            retry = min(retry * 2, RETRY_MAX_S)

    def renew_in(self, now: dt.datetime) -> float:
        """Seconds until the current leaf is due for renewal."""
        if self.leaf is None:
            return 0.0
        left = (self.leaf.valid_before - now).total_seconds()
        return max(MIN_RENEW_S, left * RENEW_AT)

    async def _watch_roots(self) -> None:
        index, retry = 0, RETRY_MIN_S
        while True:
            params = {"index": str(index), "wait": ROOTS_WAIT} if index else None
            try:
                answer = await self.client.request("GET", ROOTS_PATH, params=params,
                                                   timeout=ROOTS_TIMEOUT_S)  # fmt: skip
                roots = Roots.from_json(answer.body)
            except (ClientError, DataplaneError) as exc:
                log.warning("CA roots: %s (retry in %g s)", exc, retry)
                await asyncio.sleep(retry)
                index, retry = 0, min(retry * 2, RETRY_MAX_S)  # afresh: see the docstring
                continue
            retry = RETRY_MIN_S
            if answer.index == index:
                await asyncio.sleep(0.05)  # a server that answers at once cannot spin us
            index = answer.index
            if self.roots is not None and roots != self.roots and roots != self._pending:
                log.info("CA roots changed (active %s); renewing the leaf", roots.active_id)
                self._pending = roots
                self._roots_changed.set()

    async def run(self, stop: asyncio.Event) -> None:
        """Keep the leaf and roots fresh until ``stop`` is set."""
        watcher = asyncio.create_task(self._watch_roots())
        retry = RETRY_MIN_S
        try:
            while not stop.is_set():
                wait = self.renew_in(dt.datetime.now(dt.UTC))
                if await first_set(stop, self._roots_changed, wait):
                    return
                self._roots_changed.clear()
                if self._pending is not None and await self._wait_registered(stop):
                    return
                roots = self._pending or self.roots
                assert roots is not None, "start() not called"
                try:
                    await self._sign(roots)
                    self._pending = None
                    retry = RETRY_MIN_S
                except (ClientError, DataplaneError) as exc:
                    log.warning("cannot renew the leaf of %s: %s (retry in %g s)",
                                self.service, exc, retry)  # fmt: skip
                    if await first_set(stop, None, retry):
                        return
                    retry = min(retry * 2, RETRY_MAX_S)
                    self._roots_changed.set()  # try again at once after the pause
        finally:
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watcher

    async def _registered(self) -> bool:
        if not self.proxy_id:
            return True
        try:
            await self.client.get(f"/v1/agent/service/{self.proxy_id}")
        except ClientError:
            return False
        return True

    async def _wait_registered(self, stop: asyncio.Event) -> bool:
        """Wait until the proxy is registered; True when ``stop`` came first."""
        told = False
        while not await self._registered():
            if not told:
                log.info("CA roots changed while proxy %s is not registered; keeping the "
                         "current leaf until it is", self.proxy_id)  # fmt: skip
                told = True
            if await first_set(stop, None, REGISTRATION_POLL_S):
                return True
        return stop.is_set()
