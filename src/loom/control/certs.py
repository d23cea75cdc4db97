"""The CA as a server service: the persisted root, and a cache of leaves per service.

The root (and the cluster ID that names the trust domain) are made on first start and stored,
so every restart signs with the same root. Leaves are cached per (namespace, service) and
re-issued once 60% of their lifetime has passed, so a proxy always has time to swap before
expiry.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Callable

from loom.ca.authority import LEAF_TTL, Leaf, Root, Signer, load_root, new_root
from loom.store import Put, Store

META = "meta"
CA = "ca"
RENEW_AT = 0.6


class Certs:
    def __init__(self, store: Store, datacenter: str, clock: Callable[[], dt.datetime]) -> None:
        self.store = store
        self.datacenter = datacenter
        self._clock = clock
        self._signer: Signer | None = None
        self._leaves: dict[tuple[str, str], Leaf] = {}
        self.leaf_ttl = LEAF_TTL

    async def start(self) -> None:
        """Load the root, or make and persist the first one."""
        cluster = self.store.get(META, "cluster")
        root_doc = self.store.get(CA, "root")
        if cluster is None or root_doc is None:
            cluster_id = cluster["ID"] if cluster else str(uuid.uuid4())
            root = new_root(f"{cluster_id}.consul", self._clock())
            await self.store.apply(
                [
                    Put(META, "cluster", {"ID": cluster_id}),
                    Put(CA, "root", {"CertPEM": root.cert_pem, "KeyPEM": root.key_pem,
                                     "TrustDomain": root.trust_domain}),
                ]
            )  # fmt: skip
        else:
            root = load_root(root_doc["CertPEM"], root_doc["KeyPEM"], root_doc["TrustDomain"])
        self._signer = Signer(root)

    @property
    def root(self) -> Root:
        assert self._signer is not None, "Certs.start() not called"
        return self._signer.root

    @property
    def trust_domain(self) -> str:
        return self.root.trust_domain

    def leaf(self, service: str, namespace: str = "default") -> Leaf:
        """The current leaf for a service; a fresh one once 60% of the old one's life passed."""
        assert self._signer is not None, "Certs.start() not called"
        now = self._clock()
        cached = self._leaves.get((namespace, service))
        if cached is not None:
            life = cached.not_after - cached.not_before
            if now < cached.not_before + life * RENEW_AT:
                return cached
        leaf = self._signer.leaf(namespace, self.datacenter, service, now, self.leaf_ttl)
        self._leaves[(namespace, service)] = leaf
        return leaf

    def sign(self, service: str, namespace: str = "default") -> Leaf:
        """A new leaf, uncached (benchmarks, explicit re-issue)."""
        assert self._signer is not None, "Certs.start() not called"
        return self._signer.leaf(namespace, self.datacenter, service, self._clock(), self.leaf_ttl)
