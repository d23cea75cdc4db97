"""The CA as a server service: the persisted root, and a cache of leaves per service.

The root (and the cluster ID that names the trust domain) are made on first start and stored,
so every restart signs with the same root. Leaves are cached per (namespace, service) and
re-issued once 60% of their lifetime has passed, so a proxy always has time to swap before
expiry. ``sign_csr`` signs a workload's CSR (its key never comes here), for this CA's trust
domain and this server's datacenter only, with the same lifetime and extensions: in a pool of
signing worker processes when ``sign_workers`` > 0 (``loom.control.signpool``: they hold the
mesh's signing key, the root's or a secondary's intermediate's, given over a pipe), in this
process otherwise or while none is running (the CSRs of one event-loop turn back to back,
``loom.control.signbatch``: the crypto runs faster with its caches warm).

A rotation (``rotation_ops`` then ``reload``, from ``PUT /v1/connect/ca/configuration``) makes
a new root active and keeps the old one's certificate (its key is dropped) among the roots
until the next rotation, past the life of the leaves it signed, so proxies holding such
leaves are still trusted while they swap to leaves of the new root. It also cross-signs: the
old root's key signs the new root's certificate, and every leaf of the new root carries that
certificate after it, so a peer that has not yet received the new root still verifies the new
leaves (Consul's order: the new root is trusted before anyone needs to trust it). A root
replaced in the store some other way (a snapshot restore, or another server sharing etcd) is
followed the same way, by the CA tables' index.

In a secondary datacenter (``primary`` set and not this one) the mesh's CA is federated
(``loom.control.fedca`` keeps it): the trust domain and roots are the primary's, and leaves
are signed by this datacenter's intermediate, which the primary's active root signed, and
carry it after them. Both are stored here (``intermediate``, with its key, and ``primary/NN``,
the primary's roots, active first), written together, so leaves move to a new intermediate
only with the roots it chains to. Until they exist, leaf and CSR signing and the roots raise
``CaNotInitialized`` (HTTP 503). The datacenter's own root stays, for the server's TLS only.
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
from loom.ca.csr import CheckedCsr, CsrError, read_ca_csr, read_csr
from loom.ca.errors import CAError, CaNotInitialized
from loom.ca.intermediate import INTERMEDIATE_TTL, sign_intermediate
from loom.control.signbatch import Batch
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
INTERMEDIATE = "intermediate"
"""Key, in a secondary's CA table, of its intermediate CA (certificate and key)."""
PRIMARY_ROOTS = "primary/"
"""Key prefix, in a secondary's CA table, of the primary's roots (``primary/00`` active)."""


PRIMARY_CROSS = "primary-cross"
"""Key, in a secondary's CA table, of the primary's active root cross-signed by its retired
root (present while the primary lists it)."""


class _Federated:
    """A secondary's mesh CA: the primary's roots and this datacenter's intermediate, whose
    leaves carry the intermediate and, after a rotation in the primary, the new root's
    cross-signed certificate (so a peer still trusting only the retired root verifies them)."""

    def __init__(self, roots: list[Root], intermediate: Root, cross_pem: str) -> None:
        self.roots = roots
        self.chain = [intermediate.cert_pem] + ([cross_pem] if cross_pem else [])
        self.signer = Signer(intermediate, "".join(self.chain))
        self.key = (tuple(r.cert_pem for r in roots), intermediate.cert_pem, cross_pem)


class Certs:
    def __init__(
        self,
        store: Store,
        datacenter: str,
        clock: Callable[[], dt.datetime],
        primary: str = "",
    ) -> None:
        self.store = store
        self.datacenter = datacenter
        self.primary = primary or datacenter
        """The primary datacenter; another one makes this CA a federated secondary."""
        self._federated: _Federated | None = None
        self._clock = clock
        self._signer: Signer | None = None
        self._leaves: dict[tuple[str, str], Leaf] = {}
        self._previous: Root | None = None
        self._seen_index = 0
        self.on_config: Callable[[], None] = lambda: None
        """Applies the stored CA configuration (set by ``CaConfig``); called by ``_follow``."""
        self.leaf_ttl = LEAF_TTL
        self.intermediate_ttl = INTERMEDIATE_TTL
        """Life of the intermediates this CA signs for secondaries (``IntermediateCertTTL``)."""
        self.sign_workers = 0
        """Signing worker processes to start (``--ca-sign-workers``); 0: sign in-process."""
        self._pool: SignPool | None = None
        self._pool_signer: Signer | None = None
        """The signer whose key the workers were last given (``_mesh_signer`` then)."""
        self._pool_start: asyncio.Task[None] | None = None
        self._batch: Batch[Leaf] = Batch()
        """In-process signings, a loop turn's together (``loom.control.signbatch``)."""

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
        self._load_federated()
        self._seen_index = self.store.table_index(_FOLLOWED)
        if self.sign_workers == 0 and self._pool is None:
            log.info("CA signing: in process (--ca-sign-workers 0)")
        if self.sign_workers > 0 and self._pool is None:
            # The workers hold the mesh's signing key: the root's, a secondary's intermediate's
            # (given once the primary signed it, and again whenever either changes).
            self._pool = SignPool(self.sign_workers)
            self._pool_signer = self._mesh_signer()
            active = self._pool_signer
            self._pool_start = asyncio.get_running_loop().create_task(
                self._pool.start(None if active is None else active.root)
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

    @property
    def is_secondary(self) -> bool:
        return self.primary != self.datacenter

    def _load_federated(self) -> None:
        """A secondary's stored intermediate and primary roots (None until both exist)."""
        if not self.is_secondary:
            return
        stored = self.store.record(CA, INTERMEDIATE)
        roots = [
            load_root_cert(r.cert_pem, r.trust_domain)
            for key, r in self.store.items(CA.name)
            if key.startswith(PRIMARY_ROOTS)
        ]
        if stored is None or not roots:
            self._federated = None
            return
        intermediate = load_root(stored.cert_pem, stored.key_pem, stored.trust_domain)
        cross = self.store.record(CA, PRIMARY_CROSS)
        fed = _Federated(roots, intermediate, "" if cross is None else cross.cert_pem)
        if self._federated is None or self._federated.key != fed.key:
            self._federated = fed
            self._leaves.clear()

    def federation_ops(self, roots: list[Root], intermediate: Root, cross_pem: str) -> list[Op]:
        """The writes that make ``roots`` (the primary's, active first), ``intermediate``
        (with its key) and the primary's ``cross_pem`` (or none) this secondary's CA, in one
        transaction."""
        ops: list[Op] = [
            Delete(CA.name, key)
            for key, _ in self.store.items(CA.name)
            if key.startswith(PRIMARY_ROOTS)
        ]
        ops += [
            put(CA, f"{PRIMARY_ROOTS}{n:02d}", CaRoot(r.cert_pem, "", r.trust_domain))
            for n, r in enumerate(roots)
        ]
        td = intermediate.trust_domain
        cross: Op = put(CA, PRIMARY_CROSS, CaRoot(cross_pem, "", td))
        ops.append(cross if cross_pem else Delete(CA.name, PRIMARY_CROSS))
        ops.append(
            put(
                CA,
                INTERMEDIATE,
                CaRoot(intermediate.cert_pem, intermediate.key_pem, intermediate.trust_domain),
            )
        )
        return ops

    @property
    def federated_cross(self) -> str:
        """The primary's cross-signed certificate a secondary sends after its intermediate."""
        self._follow()
        return "" if self._federated is None else "".join(self._federated.chain[1:])

    @property
    def intermediate(self) -> Root | None:
        """A secondary's signing CA (None in the primary, or before the primary signed it)."""
        self._follow()
        return None if self._federated is None else self._federated.signer.root

    def _not_ready(self) -> CaNotInitialized:
        return CaNotInitialized(
            f"CA is not yet initialized: waiting for the primary datacenter {self.primary}"
        )

    def _mesh(self) -> Signer:
        """What signs the mesh's leaves: the active root, or a secondary's intermediate."""
        self._current()
        signer = self._mesh_signer()
        if signer is None:
            raise self._not_ready()
        return signer

    def _mesh_signer(self) -> Signer | None:
        """``_mesh`` as last loaded, without following the store (None: a secondary not yet
        federated)."""
        if not self.is_secondary:
            return self._signer
        return None if self._federated is None else self._federated.signer

    def _sync_pool(self) -> None:
        """Give the workers the mesh's signing key when it is not the one they have."""
        signer = self._mesh_signer()
        if self._pool is None or signer is None or signer is self._pool_signer:
            return
        self._pool_signer = signer
        self._pool.set_root(signer.root)

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
        """What ``/v1/connect/ca/roots`` lists as the active root's ``IntermediateCerts``
        (a secondary's: its intermediate)."""
        signer = self._mesh()
        if self._federated is not None:
            return list(self._federated.chain)
        return [signer.chain_pem] if signer.chain_pem else []

    def _load_previous(self) -> None:
        old = self.store.record(CA, PREVIOUS)
        self._previous = None if old is None else load_root_cert(old.cert_pem, old.trust_domain)

    def rotation_ops(self, cert_pem: str, key_pem: str, cross: bool = True) -> list[Op]:
        """The writes that make the given root active, the current one retired and, when
        ``cross`` and the current root can sign a CA, the new root cross-signed by it
        (checked first: ``ValidationError`` names what is wrong with the new root)."""
        if self.is_secondary:
            raise ValidationError(
                f"Config: the CA of a secondary datacenter follows the primary "
                f"({self.primary}); rotate the root there"
            )
        now = self._clock()
        try:
            new = check_new_root(cert_pem, key_pem, self.root.trust_domain, now)
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
        self._load_previous()
        self._load_federated()
        self._sync_pool()
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
        rotations come faster than leaves are renewed. A secondary's are the primary's
        (``CaNotInitialized`` until it has them)."""
        self._follow()
        now = self._clock()
        if self.is_secondary:
            if self._federated is None:
                raise self._not_ready()
            roots = self._federated.roots
            return roots[:1] + [r for r in roots[1:] if now < r.not_after]
        return self.local_roots()

    def local_roots(self) -> list[Root]:
        """This datacenter's own roots (the mesh's, but in a secondary)."""
        self._follow()
        out = [self.root]
        prev = self._previous
        if prev is not None and self._clock() < prev.not_after:
            out.append(prev)
        return out

    @property
    def roots_pem(self) -> str:
        """The trusted roots as one PEM bundle (what proxies validate peers with); a
        secondary not yet federated gives its own, for a snapshot to have some."""
        try:
            roots = self.roots()
        except CaNotInitialized:
            roots = self.local_roots()
        return "".join(r.cert_pem for r in roots)

    @property
    def local_roots_pem(self) -> str:
        """This datacenter's own roots as one PEM bundle: what the server's TLS certificate
        (signed by ``root``) verifies against."""
        return "".join(r.cert_pem for r in self.local_roots())

    @property
    def root(self) -> Root:
        """This datacenter's own active root (with its key): the mesh's CA in the primary;
        in a secondary, what signs the server's TLS certificate only."""
        return self._current().root

    @property
    def trust_domain(self) -> str:
        """The mesh's trust domain: a federated secondary's is the primary's."""
        self._follow()
        fed = self._federated
        return self.root.trust_domain if fed is None else fed.signer.root.trust_domain

    def leaf(self, service: str, namespace: str = "default") -> Leaf:
        """The current leaf for a service; a fresh one once 60% of the old one's life passed.

        The names become segments of the SPIFFE ID, so they are checked here, whoever asks:
        a namespace like ``a/b`` would otherwise mint ``.../ns/a/b/dc/...``, an identity that
        intentions on ``a`` or ``b`` do not match (``ValidationError``, a 400 over HTTP)."""
        check_namespace(namespace, "ns")
        check_name(service, "service")
        signer = self._mesh()
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
        signer = self._mesh()
        return signer.leaf(namespace, self.datacenter, service, self._clock(), self.leaf_ttl)

    async def sign_csr(self, csr: str | CheckedCsr) -> Leaf:
        """A leaf for a CSR (PEM, or already read with ``read_csr``, its signature checked or
        not): ``CsrError`` unless it is valid and names a service of this trust domain and
        datacenter. Uncached, no private key. Signed by a worker when one runs (the workers
        hold the mesh's signing key: the root's, or a secondary's intermediate's)."""
        signer = self._mesh()
        checked = read_csr(csr) if isinstance(csr, str) else csr
        identity = checked.identity
        trust_domain = signer.root.trust_domain  # the mesh's: a secondary's is the primary's
        if identity.trust_domain != trust_domain:
            raise CsrError(
                f"CSR: trust domain {identity.trust_domain!r} is not this CA's ({trust_domain!r})"
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
            proof = None if checked.verified else checked.proof
            if proof is None:  # checked already, or not ECDSA: checked here, signed there
                checked = checked.verify_signature()
            draft = signer.draft(identity, checked.spki, self._clock(), self.leaf_ttl)
            try:
                leaf = signer.finish(draft, await pool.sign(signer.root, proof, draft.tbs))
            except SignWorkerError as exc:  # the worker died: sign here instead
                log.warning("signing in-process: %s", exc)
        if leaf is None:

            def sign_here() -> Leaf:
                verified = checked.verify_signature()
                return signer.sign(identity, verified.spki, self._clock(), self.leaf_ttl)

            leaf = await self._batch.run(sign_here)  # with the others of this loop turn
            by = "in-process"
        log.debug("signed a CSR for %s (serial %s, %s)", leaf.uri, leaf.serial, by)
        return leaf

    def sign_intermediate(self, csr: str) -> str:
        """The primary's answer to a secondary's CA request (Consul's
        ``ConnectCA.SignIntermediate``): its intermediate, signed by the active root;
        ``CsrError`` unless the request is for a CA of this trust domain, path length 0."""
        if self.is_secondary:
            raise ValidationError(
                f"this datacenter ({self.datacenter}) is not the primary ({self.primary}): "
                "only the primary signs intermediates"
            )
        root = self.root
        checked = read_ca_csr(csr, root.trust_domain)
        try:
            pem = sign_intermediate(root, checked, self._clock(), self.intermediate_ttl)
        except CAError as exc:
            raise ValidationError(f"cannot sign the intermediate: {exc}") from exc
        log.info("signed an intermediate CA for %s under root %s", root.trust_domain, root.id)
        return pem
