"""A secondary datacenter's CA, kept federated: the primary's roots and an intermediate it signed.

One trust domain spans the federation (the primary's). A secondary server follows the
primary's ``/v1/connect/ca/roots`` with a blocking query; at the first answer, whenever the
primary's active root changes, and when half the intermediate's life has passed, it makes a
new key (kept in its own store, like the primary's root key; never sent), sends a CA request
for it to the primary (``POST /v1/internal/connect/ca/sign-intermediate``, with the
replication token) and stores the certificate that comes back together with the roots it
chains to, in one write. ``loom.control.certs.Certs`` then signs leaves with it and sends it
after them, so a leaf of this datacenter verifies against the roots every datacenter holds.

Order at a rotation in the primary: the new intermediate, under the new root, is stored with
the new roots (the new and the retired one) before any leaf moves; the dataplanes see the
roots change and renew their leaves; the retired root stays among the roots until the
primary drops it, past the life of the leaves it signed (the single-datacenter rules).

The requests to the primary go through the function the server wiring gives (``PrimaryCall``,
``loom.server.wan.call`` bound to the primary and the token): this module does no I/O itself.
A failure (the primary away, a refusal) is logged and retried with backoff; the CA keeps what
it has meanwhile (before the first intermediate: ``CaNotInitialized``, HTTP 503).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from loom.ca.authority import Root, load_root_cert
from loom.ca.csr import build_ca_csr, key_pem, new_key
from loom.ca.errors import CAError
from loom.ca.intermediate import check_intermediate, due_for_renewal, issued_by
from loom.ca.spiffe import check_trust_domain
from loom.control.certs import Certs
from loom.control.errors import ControlError
from loom.errors import LoomError
from loom.store import Store

log = logging.getLogger("loom.ca.federation")

ROOTS_PATH = "/v1/connect/ca/roots"
SIGN_PATH = "/v1/internal/connect/ca/sign-intermediate"
ROOTS_WAIT = "5m"
ROOTS_TIMEOUT_S = 5 * 60 * (1 + 1 / 16) + 10
"""A blocking query's wait (and Consul's jitter of up to wait/16) plus a margin."""
SIGN_TIMEOUT_S = 30.0
RETRY_MIN_S, RETRY_MAX_S = 0.5, 10.0

PrimaryCall = Callable[
    [str, str, dict[str, str] | None, bytes | None, float],
    Awaitable[tuple[int, Mapping[str, str], bytes]],
]
"""``(method, path, query, body, timeout_s) -> (status, headers, body)``: one request to a
server of the primary datacenter with the replication token (raises ``LoomError`` when no
server of it can be reached)."""


class FederatedCaError(ControlError):
    """The primary's answer is unusable or a refusal (kept, logged and retried)."""


@dataclass(frozen=True)
class PrimaryRoots:
    """The primary's ``/v1/connect/ca/roots``, checked: active root first."""

    trust_domain: str
    roots: tuple[Root, ...]
    cross_pem: str = ""
    """The active root cross-signed by the retired one (its ``IntermediateCerts``), if any."""

    @property
    def active(self) -> Root:
        return self.roots[0]

    @classmethod
    def from_json(cls, body: Any) -> PrimaryRoots:
        """Strictly: a trust domain Loom would issue for, every root a readable certificate
        whose ``ID`` is its fingerprint, the active one among them."""
        try:
            trust_domain = check_trust_domain(body["TrustDomain"])
            active_id = str(body["ActiveRootID"])
            roots = []
            for entry in body["Roots"]:
                root = load_root_cert(str(entry["RootCert"]), trust_domain)
                if root.id != entry["ID"]:
                    raise FederatedCaError(f"root {entry['ID']!r} is not its certificate's")
                roots.append(root)
        except (KeyError, TypeError) as exc:
            raise FederatedCaError(f"the primary's CA roots are malformed: {exc!r}") from exc
        except CAError as exc:
            raise FederatedCaError(f"the primary's CA roots are unusable: {exc}") from exc
        active = [r for r in roots if r.id == active_id]
        if not active:
            raise FederatedCaError(f"the primary's active root {active_id!r} is not listed")
        rest = tuple(r for r in roots if r.id != active_id)
        try:
            listed = next(e for e in body["Roots"] if e["ID"] == active_id)
            crosses = [str(c) for c in listed.get("IntermediateCerts") or []]
        except (KeyError, TypeError) as exc:
            raise FederatedCaError(f"the primary's CA roots are malformed: {exc!r}") from exc
        cross = "".join(c for c in crosses if _cross_of(c, active[0], rest))
        return cls(trust_domain, (active[0], *rest), cross)


def _cross_of(pem: str, active: Root, others: tuple[Root, ...]) -> bool:
    """Whether ``pem`` is ``active``'s key certified by one of the ``others`` (a cross-signed
    certificate of the active root), which a secondary may send after its intermediate."""
    try:
        cert = x509.load_pem_x509_certificate(pem.encode())
        root = x509.load_pem_x509_certificate(active.cert_pem.encode())
    except ValueError:
        return False
    spki, der = serialization.PublicFormat.SubjectPublicKeyInfo, serialization.Encoding.DER
    if cert.public_key().public_bytes(der, spki) != root.public_key().public_bytes(der, spki):
        return False
    return any(issued_by(pem, other.cert_pem) for other in others)


def _index(headers: Mapping[str, str]) -> int:
    for name, value in headers.items():
        if name.lower() == "x-consul-index":
            try:
                return max(0, int(value))
            except ValueError:
                return 0
    return 0


class FederatedCa:
    """Keeps a secondary's stored CA in step with the primary (``run`` until cancelled)."""

    def __init__(
        self,
        certs: Certs,
        store: Store,
        lock: asyncio.Lock,
        call: PrimaryCall,
        clock: Callable[[], dt.datetime],
    ) -> None:
        self.certs = certs
        self.store = store
        self.lock = lock
        self.call = call
        self._clock = clock

    async def roots(self, index: int = 0) -> tuple[PrimaryRoots, int]:
        """The primary's roots, once its index passes ``index`` (at once when 0)."""
        query = {"index": str(index), "wait": ROOTS_WAIT} if index else None
        timeout = ROOTS_TIMEOUT_S if index else SIGN_TIMEOUT_S
        status, headers, body = await self.call("GET", ROOTS_PATH, query, None, timeout)
        if status != 200:
            raise FederatedCaError(f"the primary's CA roots: HTTP {status}: {_text(body)}")
        return PrimaryRoots.from_json(_json(body)), _index(headers)

    def _stale(self, roots: PrimaryRoots) -> bool:
        """Whether this datacenter needs a new intermediate under ``roots``."""
        intermediate = self.certs.intermediate
        return (
            intermediate is None
            or intermediate.trust_domain != roots.trust_domain
            or not issued_by(intermediate.cert_pem, roots.active.cert_pem)
            or due_for_renewal(intermediate, self._clock())
        )

    async def sync(self, roots: PrimaryRoots) -> bool:
        """Store ``roots`` and, when due, a new intermediate signed under them; True when
        anything was written."""
        intermediate = self.certs.intermediate
        if self._stale(roots):
            roots, intermediate = await self._new_intermediate(roots)
        elif self._stored_roots() == [r.cert_pem for r in roots.roots] and (
            self.certs.federated_cross == roots.cross_pem
        ):
            return False
        assert intermediate is not None
        ops = self.certs.federation_ops(list(roots.roots), intermediate, roots.cross_pem)
        async with self.lock:
            await self.store.apply(ops)
            self.certs.reload()
        return True

    def _stored_roots(self) -> list[str]:
        try:
            return [r.cert_pem for r in self.certs.roots()]
        except CAError:
            return []

    async def _new_intermediate(self, roots: PrimaryRoots) -> tuple[PrimaryRoots, Root]:
        """A new key and its CA request signed by the primary; the primary's answer carries
        the roots at signing time, which the intermediate is checked against."""
        key = new_key()
        csr = build_ca_csr(roots.trust_domain, key).encode()
        status, _, body = await self.call("POST", SIGN_PATH, None, csr, SIGN_TIMEOUT_S)
        if status != 200:
            raise FederatedCaError(f"the primary refused the intermediate: HTTP {status}: "
                                   f"{_text(body)}")  # fmt: skip
        doc = _json(body)
        answered = PrimaryRoots.from_json(doc)
        try:
            pem = str(doc["IntermediatePEM"])
            intermediate = check_intermediate(
                pem, key_pem(key), answered.active.cert_pem, answered.trust_domain, self._clock()
            )
        except (KeyError, TypeError) as exc:
            raise FederatedCaError(f"the primary's intermediate is malformed: {exc!r}") from exc
        except CAError as exc:
            raise FederatedCaError(f"the primary's intermediate is unusable: {exc}") from exc
        log.info("intermediate CA signed by the primary's root %s (valid until %s)",
                 answered.active.id, intermediate.not_after.isoformat())  # fmt: skip
        return answered, intermediate

    async def run(self) -> None:
        """Follow the primary's roots until cancelled; failures are logged and retried
        afresh (a restarted primary may reuse index numbers)."""
        index, retry = 0, RETRY_MIN_S
        while True:
            try:
                roots, new_index = await self.roots(index)
                await self.sync(roots)
            except (LoomError, OSError) as exc:
                log.warning("federated CA: %s (retry in %g s)", exc, retry)
                await asyncio.sleep(retry)
                index, retry = 0, min(retry * 2, RETRY_MAX_S)
                continue
            retry = RETRY_MIN_S
            if new_index == index:
                await asyncio.sleep(0.05)  # a primary that answers at once cannot spin us
            index = new_index


def _text(body: bytes) -> str:
    return body[:200].decode(errors="replace").strip()


def _json(body: bytes) -> Any:
    try:
        return json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise FederatedCaError(f"the primary's answer is not JSON: {exc}") from exc
