"""The server's application state: one store, one write lock, the services over them, and
the mesh snapshot they derive (cached per store index)."""

from __future__ import annotations

import asyncio
import datetime as dt
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from loom.ca.servertls import ServerTls
from loom.control import selfreg
from loom.control.acl import Acl, AclSettings
from loom.control.agentchecks import AgentChecks
from loom.control.caconfig import CaConfig
from loom.control.catalog import Catalog, CatalogSettings
from loom.control.certs import Certs
from loom.control.configs import Configs
from loom.control.federation import Federation, reachable_addrs
from loom.control.kv import Kv
from loom.control.login import Logins
from loom.control.loginlimit import LoginLimiter, LoginRate
from loom.control.proxies import ProxyStreams
from loom.control.queries import Queries
from loom.control.remotevips import RemoteVips
from loom.control.replication import ACL_SET, CONFIG_SET, Replicator
from loom.control.sessions import Sessions, SessionSettings
from loom.control.snapshot import MESH_TABLES, build_snapshot
from loom.control.txn import Txn
from loom.domain.mesh import MeshSnapshot
from loom.store import Store, StoreConflict, open_store
from loom.store.tables import CATALOG_TABLES, KV_TABLES, QUERIES, TABLES


@dataclass(frozen=True)
class ServerSettings:
    http_addrs: tuple[str, ...] = ("127.0.0.1:8500",)
    """Where the HTTP API listens: ``HOST:PORT`` (port 0 picks a free one) or ``unix:PATH``."""
    grpc_addrs: tuple[str, ...] = ("127.0.0.1:8502",)
    """Where the xDS (ADS) gRPC server listens; same forms as ``http_addrs``."""
    https_addrs: tuple[str, ...] = ()
    """Where the HTTP API listens over TLS (Consul's ``ports.https``, 8501); none by default."""
    grpc_tls_addrs: tuple[str, ...] = ()
    """Where xDS listens over TLS (Consul's ``ports.grpc_tls``, 8503); none by default."""
    tls: ServerTls = field(default_factory=ServerTls)
    """Certificates of the TLS listeners (built-in CA unless files are given)."""
    unix_socket_mode: int = 0o660
    """Mode of the unix sockets the server listens on (Consul's ``unix_sockets.mode``): 0660
    lets the owner and the socket's group connect, nobody else."""
    unix_socket_group: int | None = None
    """GID given to those sockets (Consul's ``unix_sockets.group``); None: the server's."""
    data_dir: Path | None = None
    """SQLite store directory; None means the in-memory store (``--dev``) unless etcd is set."""
    etcd_endpoints: tuple[str, ...] = ()
    """etcd ``HOST:PORT`` endpoints of a store shared by several servers; empty: not etcd."""
    etcd_prefix: str = "/loom/"
    """Key prefix of this cluster's state in etcd."""
    datacenter: str = "dc1"
    """Datacenter name, part of every SPIFFE ID and catalog entry."""
    node: str = "loom-server"
    """Node name of agent-API registrations (this server acts as their agent)."""
    node_address: str = "127.0.0.1"
    """Address of that node, used for instances registered without an Address."""
    default_allow: bool = True
    """Intention default policy: allow (Consul with ACLs off) or deny."""
    leaf_ttl_s: float = 72 * 3600.0
    """Lifetime of leaf certificates, in seconds (72h as Consul); renewed at 60% of it."""
    ttl_sweep_s: float = 1.0
    """How often TTL checks are swept for expiry, in seconds."""
    dataplane_deadline_s: float = 15.0
    """A dataplane that has sent no heartbeat for this long is gone: the checks it runs turn
    critical, saying so, until it reports again (``loom.domain.liveness``). Dataplanes beat
    every third of it; the server's start counts as a heartbeat (a restart's grace). 0: off."""
    kv_tombstone_ttl_s: float = 900.0
    """How long a deleted KV key's tombstone is kept, in seconds (Consul's ``tombstone_ttl``,
    15 min): long enough for a blocking query on it to see the deletion; reaped in batches
    of up to 30 s (Consul's ``tombstone_ttl_granularity``)."""
    enable_script_checks: bool = False
    """Accept script checks (``Args``) and run them (Consul's ``enable_script_checks``): off,
    since anyone who may register a check could then run commands as the server."""
    acl_default_policy: str | None = None
    """ACL default policy, ``"allow"`` or ``"deny"``; None: ACLs off (nothing is checked)."""
    acl_initial_management_token: str = ""
    """SecretID of a management token created at start; empty: none (bootstrap instead)."""
    acl_login_rate: LoginRate = field(default_factory=LoginRate)
    """Login attempts per client address (``--acl-login-rate``, ``--acl-login-burst``);
    ``per_second`` 0: no limit (a bare ``State``); ``loom server`` defaults to 10/s, burst 20."""
    ca_sign_workers: int = 0
    """Worker processes that check and sign CSRs (``loom.control.signpool``), so signing is
    not bound to this process's GIL; 0: sign in-process (what a bare ``State`` in tests
    does). ``loom server`` defaults to ``signpool.default_workers()`` (from the CPU count)."""
    http_max_conns_per_client: int = 200
    """Open HTTP connections allowed per client IP (Consul's ``http_max_conns_per_client``);
    over it a new connection gets a 429 and is closed. 0: no limit. Unix sockets: no limit."""
    http_idle_timeout_s: float = 75.0
    """Seconds an HTTP keep-alive connection may sit idle (no request in progress) before the
    server closes it (> 0: aiohttp would read 0 as "close after every response")."""
    ui: bool = True
    """Serve the web UI at ``/ui/`` (and redirect ``/`` there), as Consul's ``ui_config``
    does; False (``--no-ui``) leaves both paths out of the API (a 404, as any unknown path)."""
    ui_metrics_provider: str | None = None
    """Where the UI's request rate, error rate and p99 come from (``prometheus``, as Consul's
    ``ui_config.metrics_provider``); None: the UI shows no metrics."""
    ui_metrics_url: str | None = None
    """The provider's base URL (``http://127.0.0.1:9090``), queried by the server only
    (``server/metrics_http.py``), as Consul's ``ui_config.metrics_proxy.base_url``."""
    primary_datacenter: str = ""
    """The federation's primary datacenter (Consul's ``primary_datacenter``): where config
    entries, intentions and ACLs are written and replicated from; empty: this datacenter."""
    join_wan: tuple[str, ...] = ()
    """HTTP API addresses of servers in other datacenters to federate with (Consul's
    ``retry_join_wan``), ``HOST:PORT`` or ``https://HOST:PORT`` (over TLS), tried until
    reachable; empty: none."""
    advertise_addr_wan: str = ""
    """The ``HOST:PORT`` (or ``https://HOST:PORT``) other datacenters reach this server's
    HTTP API at (Consul's ``advertise_addr_wan``); empty: its first non-unix HTTP address,
    else its first HTTPS one."""
    replication_token: str = ""
    """The token this server presents to other datacenters (Consul's
    ``acl.tokens.replication``); empty: none (the anonymous token)."""
    http_shutdown_grace_s: float = 1.0
    """At shutdown, seconds in-progress HTTP requests get to finish before they are cut off
    (blocking queries are answered at once, so this bounds writes only)."""

    def acl(self) -> AclSettings:
        return AclSettings(
            enabled=self.acl_default_policy is not None,
            default_allow=self.acl_default_policy != "deny",
            initial_management=self.acl_initial_management_token,
            datacenter=self.datacenter,
        )


MESH_READ_TABLES = tuple(t for t in TABLES if t not in KV_TABLES)
"""Every table but KV's: what a mesh snapshot may depend on (CA and ACL tables included)."""


class WriteLock(asyncio.Lock):
    """The write lock; holding it also means the store's view has seen every write already
    acknowledged by another server sharing the store (etcd), so validation is not stale."""

    def __init__(self, store: Store) -> None:
        super().__init__()
        self._store = store

    async def acquire(self) -> Literal[True]:
        await super().acquire()
        try:
            await self._store.sync()
        except BaseException:
            self.release()
            raise
        return True


class State:
    def __init__(self, settings: ServerSettings, store: Store | None = None) -> None:
        self.settings = settings
        if store is None:
            etcd = None
            if settings.etcd_endpoints:
                from loom.store.etcd import EtcdSettings

                etcd = EtcdSettings(settings.etcd_endpoints, settings.etcd_prefix)
            store = open_store(settings.data_dir, etcd)
        self.store = store
        self.lock = WriteLock(self.store)
        self.catalog = Catalog(
            self.store,
            CatalogSettings(
                settings.node,
                settings.node_address,
                settings.datacenter,
                settings.enable_script_checks,
            ),
            self.lock,
            time.monotonic,
        )
        self.agent_checks = AgentChecks(
            self.store,
            self.lock,
            self.catalog,
            settings.enable_script_checks,
            settings.dataplane_deadline_s,
        )
        self.configs = Configs(self.store, self.lock, settings.default_allow)
        self.certs = Certs(
            self.store,
            settings.datacenter,
            lambda: dt.datetime.now(dt.UTC),
            primary=settings.primary_datacenter,
        )
        self.certs.leaf_ttl = dt.timedelta(seconds=settings.leaf_ttl_s)
        self.certs.sign_workers = settings.ca_sign_workers
        self.ca_config = CaConfig(self.store, self.lock, self.certs)
        self.acl = Acl(self.store, self.lock, settings.acl(), lambda: dt.datetime.now(dt.UTC))
        self.logins = Logins(
            self.store,
            self.lock,
            lambda: dt.datetime.now(dt.UTC),
            datacenter=settings.datacenter,
        )
        self.kv = Kv(self.store, self.lock, time.monotonic, settings.kv_tombstone_ttl_s)
        self.txn = Txn(self.kv, self.catalog, self.lock)
        self.sessions = Sessions(
            self.store, self.lock, self.kv, self.catalog, SessionSettings(settings.node),
            time.monotonic,
        )  # fmt: skip
        self.queries = Queries(
            self.store, self.lock, self.catalog, lambda sid: self.sessions.get(sid) is not None
        )
        self.federation = Federation(
            self.store,
            self.lock,
            settings.datacenter,
            settings.primary_datacenter,
            reachable_addrs(settings.http_addrs, settings.node_address),
        )
        """The datacenters this server knows (``loom.control.federation``)."""
        self.remote_vips = RemoteVips(self.store, self.lock)
        """Local VIPs of the other datacenters' services (``loom.control.remotevips``)."""
        self.replicators: dict[str, Replicator] = {}
        """A secondary's replication from the primary, by set (``loom.control.replication``):
        config entries always, ACLs when they are on; none in the primary."""
        if not self.federation.is_primary:
            sets = (CONFIG_SET, ACL_SET) if self.acl.enabled else (CONFIG_SET,)
            for which in sets:
                self.replicators[which] = Replicator(
                    which, self.store, self.lock, self.configs, self.federation.primary
                )
        self.login_limit = LoginLimiter(settings.acl_login_rate, time.monotonic)
        """The login rate limit and counters (``POST /v1/acl/login``)."""
        self.proxies = ProxyStreams()
        """The proxies' live xDS streams, as the xDS server reports them."""
        self._snapshot: MeshSnapshot | None = None

    def snapshot(self) -> MeshSnapshot:
        """The mesh at the store's current index, built once per index and shared (KV and
        session writes move the index but change nothing here: the snapshot is kept)."""
        index = self.store.index
        snap = self._snapshot
        if snap is not None and snap.index == index:
            return snap
        if snap is None or self.store.table_index(MESH_READ_TABLES) > snap.index:
            mesh_index = self.store.table_index(MESH_TABLES)
            snap = self._snapshot = build_snapshot(
                index,
                mesh_index,
                self.catalog,
                self.configs,
                self.certs,
                self.queries,
                self.federation,
                self.remote_vips,
                previous=snap,
                catalog_index=self.store.table_index(CATALOG_TABLES),
                queries_index=self.store.table_index((QUERIES.name,)),
            )
        return snap

    async def start(self) -> None:
        await self.store.open()
        try:
            await self.certs.start()
        except StoreConflict:
            # Servers sharing an empty etcd race to make the CA: the loser's view now has the
            # winner's root, which a second start loads.
            await self.store.sync()
            await self.certs.start()
        self.ca_config.apply_stored()
        try:
            await self.acl.start()
        except StoreConflict:  # another server sharing etcd wrote the builtins first
            await self.store.sync()
            await self.acl.start()

    async def register_self(self) -> None:
        """The server's node and ``consul`` service in the catalog (``control.selfreg``);
        ``loom server`` calls it after ``start`` (a bare ``State``, as tests build one, has
        only what it is given)."""
        for attempt in range(3):
            async with self.lock:
                ops = selfreg.registration_ops(self.store, self.catalog.settings)
                if not ops:
                    return
                try:
                    await self.store.apply(ops)
                    return
                except StoreConflict:  # another server sharing etcd wrote meanwhile
                    if attempt == 2:
                        raise

    async def close(self) -> None:
        await self.certs.close()
        await self.store.close()
