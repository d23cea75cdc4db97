"""The CA as a server service: the persisted root, and a cache of leaves per service.

The root (and the cluster ID that names the trust domain) are made on first start and stored,
so every restart signs with the same root. Leaves are cached per (namespace, service) and
re-issued once 60% of their lifetime has passed, so a proxy always has time to swap before
expiry. ``sign_csr`` signs a workload's CSR (its key never comes here), for this CA's trust
domain and this server's datacenter only, with the same lifetime and extensions.
"""

from __future__ import annotations

import datetime as dt
import logging
import uuid
from collections.abc import Callable

from loom.ca.authority import LEAF_TTL, Leaf, Root, Signer, load_root, new_root
from loom.ca.csr import CheckedCsr, CsrError, read_csr
from loom.domain.fields import check_name, check_namespace
from loom.domain.records import CaRoot, Cluster
from loom.store import Store, put
from loom.store.tables import CA, META

RENEW_AT = 0.6
log = logging.getLogger("loom.ca")


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

    @property
    def root(self) -> Root:
        assert self._signer is not None, "Certs.start() not called"
        return self._signer.root

    @property
    def trust_domain(self) -> str:
        return self.root.trust_domain

    def leaf(self, service: str, namespace: str = "default") -> Leaf:
        """The current leaf for a service; a fresh one once 60% of the old one's life passed.

        The names become segments of the SPIFFE ID, so they are checked here, whoever asks:
        a namespace like ``a/b`` would otherwise mint ``.../ns/a/b/dc/...``, an identity that
        intentions on ``a`` or ``b`` do not match (``ValidationError``, a 400 over HTTP)."""
        assert self._signer is not None, "Certs.start() not called"
        check_namespace(namespace, "ns")
        check_name(service, "service")
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

    def sign_csr(self, csr: str | CheckedCsr) -> Leaf:
        """A leaf for a CSR (PEM, or already read with ``read_csr``): ``CsrError`` unless it
        names a service of this trust domain and datacenter. Uncached, no private key."""
        assert self._signer is not None, "Certs.start() not called"
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
        leaf = self._signer.sign(identity, checked.public_key(), self._clock(), self.leaf_ttl)
        log.debug("signed a CSR for %s (serial %s)", leaf.uri, leaf.serial)
        return leaf
