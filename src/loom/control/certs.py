"""The CA as a server service: the persisted root, and a cache of leaves per service.

The root (and the cluster ID that names the trust domain) are made on first start and stored,
so every restart signs with the same root. Leaves are cached per (namespace, service) and
re-issued once 60% of their lifetime has passed, so a proxy always has time to swap before
expiry. A root replaced in the store (a snapshot restore, here or through another server
sharing etcd) is picked up at the next use, and the leaves signed by the old one are dropped.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Callable

from loom.ca.authority import LEAF_TTL, Leaf, Root, Signer, load_root, new_root
from loom.domain.fields import check_name, check_namespace
from loom.domain.records import CaRoot, Cluster
from loom.store import Store, put
from loom.store.tables import CA, META

RENEW_AT = 0.6


class Certs:
    def __init__(self, store: Store, datacenter: str, clock: Callable[[], dt.datetime]) -> None:
        self.store = store
        self.datacenter = datacenter
        self._clock = clock
        self._signer: Signer | None = None
        self._loaded: CaRoot | None = None
        self._leaves: dict[tuple[str, str], Leaf] = {}
        self.leaf_ttl = LEAF_TTL

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
        self._signer = Signer(root)
        self._loaded = self.store.record(CA, "root")

    def _current(self) -> Signer:
        """The signer of the stored root, reloaded when the stored root changed."""
        assert self._signer is not None, "Certs.start() not called"
        stored = self.store.record(CA, "root")
        if stored is not None and stored is not self._loaded and stored != self._loaded:
            root = load_root(stored.cert_pem, stored.key_pem, stored.trust_domain)
            self._signer, self._loaded = Signer(root), stored
            self._leaves.clear()
        return self._signer

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
        signer = self._current()
        check_namespace(namespace, "ns")
        check_name(service, "service")
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
        return self._current().leaf(
            namespace, self.datacenter, service, self._clock(), self.leaf_ttl
        )
