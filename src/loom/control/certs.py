"""The CA as a server service: the persisted root, and a cache of leaves per service.

The root (and the cluster ID that names the trust domain) are made on first start and stored,
so every restart signs with the same root. Leaves are cached per (namespace, service) and
re-issued once 60% of their lifetime has passed, so a proxy always has time to swap before
expiry. ``sign_csr`` signs a workload's CSR (its key never comes here), for this CA's trust
domain and this server's datacenter only, with the same lifetime and extensions: in a pool of
signing worker processes when ``sign_workers`` > 0 (``loom.control.signpool``: they hold the
root key, given over a pipe), in this process otherwise or while none is running.

A rotation (``rotation_ops`` then ``reload``, from ``PUT /v1/connect/ca/configuration``) makes
a new root active and keeps the old one's certificate (its key is dropped) among the roots
until the next rotation, past the life of the leaves it signed, so proxies holding such
leaves are still trusted while they swap to leaves of the new root. It also cross-signs: the
old root's key signs the new root's certificate, and every leaf of the new root carries that
certificate after it, so a peer that has not yet received the new root still verifies the new
leaves (Consul's order: the new root is trusted before anyone needs to trust it). A root
replaced in the store some other way (a snapshot restore, or another server sharing etcd) is
followed the same way, by the CA tables' index.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import uuid
from collections.abc import Callable

from loom.ca.authority import (
    LEAF_TTL,
    Leaf,
    Root,
    Signer,
    can_cross_sign,
    check_new_root,
    cross_sign,
    load_root,
    load_root_cert,
    new_root,
)
from loom.ca.csr import CheckedCsr, CsrError, read_csr
from loom.ca.errors import CAError
from loom.control.signpool import SignPool, SignWorkerError
from loom.domain.fields import ValidationError, check_name, check_namespace
from loom.domain.records import CaRoot, Cluster
from loom.store import Delete, Op, Store, put
from loom.store.tables import CA, CA_CONFIG, META

RENEW_AT = 0.6
log = logging.getLogger("loom.ca")
_FOLLOWED = (CA.name, CA_CONFIG.name)
PREVIOUS = "previous"
"""Key, in the CA table, of the root a rotation retired (certificate only)."""
CROSS = "cross"
"""Key, in the CA table, of the active root's certificate cross-signed by the retired root."""


class Certs:
    def __init__(self, store: Store, datacenter: str, clock: Callable[[], dt.datetime]) -> None:
        self.store = store
        self.datacenter = datacenter
        self._clock = clock
        self._signer: Signer | None = None
        self._leaves: dict[tuple[str, str], Leaf] = {}
        self._previous: Root | None = None
        self._seen_index = 0
        self.on_config: Callable[[], None] = lambda: None
        """Applies the stored CA configuration (set by ``CaConfig``); called by ``_follow``."""
        self.leaf_ttl = LEAF_TTL
        self.sign_workers = 0
        """Signing worker processes to start (``--ca-sign-workers``); 0: sign in-process."""
        self._pool: SignPool | None = None
        self._pool_start: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Load the root, or make and persist the first one."""
        cluster = self.store.record(META, "cluster")
        stored = self.store.record(CA, "root")
        if cluster is None or stored is None:
            cluster = cluster or Cluster(str(uuid.uuid4()))
            root = new_root(f"{cluster.id}.consul", self._clock())
            await self.store.apply(
                [
                    put(META, "cluster", cluster),
                    put(CA, "root", CaRoot(root.cert_pem, root.key_pem, root.trust_domain)),
                ]
            )
        else:
            root = load_root(stored.cert_pem, stored.key_pem, stored.trust_domain)
        self._signer = Signer(root, self._chain())
        self._load_previous()
        self._seen_index = self.store.table_index(_FOLLOWED)
        if self.sign_workers > 0 and self._pool is None:
            self._pool = SignPool(self.sign_workers)
            self._pool_start = asyncio.get_running_loop().create_task(
                self._pool.start(self._signer.root, self._signer.chain_pem)
            )

    async def workers_started(self) -> int:
        """Wait until the signing workers have started; how many are running."""
        if self._pool_start is not None:
            await asyncio.shield(self._pool_start)
        return 0 if self._pool is None else self._pool.running

    async def close(self) -> None:
        """Stop the signing workers (if any were started)."""
        pool, self._pool = self._pool, None
        if pool is None:
            return
        await pool.close()
        if self._pool_start is not None:
            await self._pool_start

    def _chain(self) -> str:
        """The cross-signed certificate of the active root, while the root that signed it is
        still trusted (empty otherwise, and before any rotation)."""
        cross = self.store.record(CA, CROSS)
        previous = self.store.record(CA, PREVIOUS)
        if cross is None or previous is None:
            return ""
        if self._clock() >= load_root_cert(previous.cert_pem, previous.trust_domain).not_after:
            return ""
        return cross.cert_pem

    @property
    def intermediates(self) -> list[str]:
        """What ``/v1/connect/ca/roots`` lists as the active root's ``IntermediateCerts``."""
        chain = self._current().chain_pem
        return [chain] if chain else []

    def _load_previous(self) -> None:
        old = self.store.record(CA, PREVIOUS)
        self._previous = None if old is None else load_root_cert(old.cert_pem, old.trust_domain)

    def rotation_ops(self, cert_pem: str, key_pem: str, cross: bool = True) -> list[Op]:
        """The writes that make the given root active, the current one retired and, when
        ``cross`` and the current root can sign a CA, the new root cross-signed by it
        (checked first: ``ValidationError`` names what is wrong with the new root)."""
        now = self._clock()
        try:
            new = check_new_root(cert_pem, key_pem, self.trust_domain, now)
        except CAError as exc:
            raise ValidationError(f"Config.{exc}") from exc
        current = self.root
        if new.id == current.id:
            return []
        ops: list[Op] = [
            put(CA, "root", CaRoot(new.cert_pem, new.key_pem, new.trust_domain)),
            put(CA, PREVIOUS, CaRoot(current.cert_pem, "", current.trust_domain)),
        ]
        if cross and can_cross_sign(current):
            ops.append(put(CA, CROSS, CaRoot(cross_sign(new, current, now), "", new.trust_domain)))
        else:
            log.warning("root rotation without cross-signing: peers trust new leaves only once "
                        "they have the new root")  # fmt: skip
            ops.append(Delete(CA.name, CROSS))
        return ops

    def reload(self) -> None:
        """Follow the stored roots: after a rotation, sign with the new root (fresh leaves)."""
        stored = self.store.record(CA, "root")
        if stored is None:
            return
        chain = self._chain()
        signer = self._signer
        if signer is None or (stored.cert_pem, chain) != (signer.root.cert_pem, signer.chain_pem):
            root = load_root(stored.cert_pem, stored.key_pem, stored.trust_domain)
            self._signer = Signer(root, chain)
            self._leaves.clear()
            if self._pool is not None:
                self._pool.set_root(root, chain)
        self._load_previous()
        self._seen_index = self.store.table_index(_FOLLOWED)

    def _follow(self) -> None:
        """Reload when the CA or its configuration moved: written by another server (etcd)."""
        if self._signer is not None and self.store.table_index(_FOLLOWED) != self._seen_index:
            self.reload()
            self.on_config()

    def _current(self) -> Signer:
        """The signer of the stored root, after following what changed in the store."""
        self._follow()
        assert self._signer is not None, "Certs.start() not called"
        return self._signer

    def roots(self) -> list[Root]:
        """The roots to trust: the active one first, then the retired one until the next
        rotation replaces it (or it expires), which outlives every leaf it signed unless
        rotations come faster than leaves are renewed."""
        self._follow()
        out = [self.root]
        prev = self._previous
        if prev is not None and self._clock() < prev.not_after:
            out.append(prev)
        return out

    @property
    def roots_pem(self) -> str:
        """The trusted roots as one PEM bundle (what proxies validate peers with)."""
        return "".join(r.cert_pem for r in self.roots())

    @property
    def root(self) -> Root:
        return self._current().root

    @property
    def trust_domain(self) -> str:
        return self.root.trust_domain

    def leaf(self, service: str, namespace: str = "default") -> Leaf:
        """The current leaf for a service; a fresh one once 60% of the old one's life passed.

        The names become segments of the SPIFFE ID, so they are checked here, whoever asks:
        a namespace like ``a/b`` would otherwise mint ``.../ns/a/b/dc/...``, an identity that
        intentions on ``a`` or ``b`` do not match (``ValidationError``, a 400 over HTTP)."""
        check_namespace(namespace, "ns")
        check_name(service, "service")
        signer = self._current()
        now = self._clock()
        cached = self._leaves.get((namespace, service))
        if cached is not None:
            life = cached.not_after - cached.not_before
            if now < cached.not_before + life * RENEW_AT:
                return cached
        leaf = signer.leaf(namespace, self.datacenter, service, now, self.leaf_ttl)
        self._leaves[(namespace, service)] = leaf
        return leaf

    def sign(self, service: str, namespace: str = "default") -> Leaf:
        """A new leaf, uncached (benchmarks, explicit re-issue)."""
        signer = self._current()
        return signer.leaf(namespace, self.datacenter, service, self._clock(), self.leaf_ttl)

    async def sign_csr(self, csr: str | CheckedCsr) -> Leaf:
        """A leaf for a CSR (PEM, or already read with ``read_csr``, its signature checked or
        not): ``CsrError`` unless it is valid and names a service of this trust domain and
        datacenter. Uncached, no private key. Signed by a worker when one runs."""
        signer = self._current()
        checked = read_csr(csr) if isinstance(csr, str) else csr
        identity = checked.identity
        if identity.trust_domain != self.trust_domain:
            raise CsrError(
                f"CSR: trust domain {identity.trust_domain!r} is not this CA's "
                f"({self.trust_domain!r})"
            )
        if identity.datacenter != self.datacenter:
            raise CsrError(
                f"CSR: datacenter {identity.datacenter!r} is not this server's "
                f"({self.datacenter!r})"
            )
        pool = self._pool
        leaf: Leaf | None = None
        by = "a worker"
        if pool is not None and pool.ready:
            try:
                leaf = await pool.sign(checked, self._clock(), self.leaf_ttl)
            except SignWorkerError as exc:  # the worker died: sign here instead
                log.warning("signing in-process: %s", exc)
        if leaf is None:
            checked = checked.verify_signature()
            leaf = signer.sign(identity, checked.public_key(), self._clock(), self.leaf_ttl)
            by = "in-process"
        log.debug("signed a CSR for %s (serial %s, %s)", leaf.uri, leaf.serial, by)
        return leaf
