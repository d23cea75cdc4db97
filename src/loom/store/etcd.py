"""etcd backend: several servers share one state, for HA (ARCHITECTURE.md "Store").

Layout under a prefix (default ``/loom/``)::

    <prefix>docs/<table>/<key>  -> the document, JSON
    <prefix>tables/<table>      -> index of the table's last change
    <prefix>index               -> the global index (of the last transaction)

Every ``apply`` is one etcd transaction guarded by the mod revision of ``<prefix>index``: it
commits only if no other server wrote since this server's view last changed, so transactions
from all servers are serialized, each under the index its caller computed against (callers put
``store.index + 1`` into documents). A transaction that loses that race is not retried: its
operations were computed from a view that is now stale, so the view catches up and
``StoreConflict`` is raised for the caller to re-run its validation. To make that rare, the
server's write lock calls ``sync()`` first, which waits until the view has seen etcd's current
index (one linearizable read), so a write never validates against a state older than a write
already acknowledged by another server.

A background task watches the prefix from the revision the view was loaded at and applies
other servers' transactions, one etcd revision at a time, under their own index (waking
blocking queries and the xDS hub as a local write does). Own writes come back through the
watch too; the revision the view already reflects is skipped, so nothing is applied twice.

aetcd is used for its generated gRPC stubs only: its ``Client`` connects to one host, its
range reads have no limit/revision (needed for a paged, consistent load) and its watcher hands
out events one by one, losing the transaction boundaries the view must apply atomically.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
import logging
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Any

from aetcd import rpc

from loom.store.base import Delete, Op, Put, Store, StoreConflict, StoreError
from loom.store.tables import decode, encode

log = logging.getLogger("loom.store.etcd")
PAGE = 1000


@dataclass(frozen=True)
class EtcdSettings:
    endpoints: tuple[str, ...]
    """etcd client endpoints, ``HOST:PORT`` (several must be IP addresses: gRPC fails over)."""
    prefix: str = "/loom/"
    """Key prefix of this Loom cluster's state; servers sharing a prefix share the state."""
    timeout_s: float = 5.0
    """Deadline of each etcd request, and of catching up with etcd before a write."""


def grpc_target(endpoints: Sequence[str]) -> str:
    """The gRPC target naming ``endpoints`` (``ipv4:a:p,b:p`` for several)."""
    hosts: list[tuple[str, str]] = []
    for raw in endpoints:
        ep = raw.strip().removeprefix("http://")
        if ep.startswith("https://"):
            raise StoreError(f"etcd endpoint {raw}: TLS is not supported, use http:// or HOST:PORT")
        host, sep, port = ep.rpartition(":")
        if not sep or not host or not port.isdigit():
            raise StoreError(f"etcd endpoint {raw!r}: expected HOST:PORT")
        hosts.append((host.strip("[]"), port))
    if not hosts:
        raise StoreError("etcd: no endpoint given")
    if len(hosts) == 1:
        host, port = hosts[0]
        return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    try:
        versions = {ipaddress.ip_address(h).version for h, _ in hosts}
    except ValueError:
        raise StoreError("etcd: several endpoints must be IP addresses (HOST:PORT)") from None
    if versions == {4}:
        return "ipv4:" + ",".join(f"{h}:{p}" for h, p in hosts)
    if versions == {6}:
        return "ipv6:" + ",".join(f"[{h}]:{p}" for h, p in hosts)
    raise StoreError("etcd: several endpoints must be all IPv4 or all IPv6")


def _range_end(prefix: bytes) -> bytes:
    """The first key after every key starting with ``prefix``."""
    end = bytearray(prefix)
    while end and end[-1] == 0xFF:
        end.pop()
    if not end:
        return b"\0"
    end[-1] += 1
    return bytes(end)


class EtcdStore(Store):
    kind = "etcd"

    def __init__(self, settings: EtcdSettings) -> None:
        super().__init__()
        self.settings = settings
        prefix = settings.prefix if settings.prefix.endswith("/") else settings.prefix + "/"
        self.prefix = prefix.encode()
        self._docs = self.prefix + b"docs/"
        self._tables_key = self.prefix + b"tables/"
        self._index_key = self.prefix + b"index"
        self._where = ",".join(settings.endpoints)
        self._target = grpc_target(settings.endpoints)
        self._channel: Any = None
        self._kv: Any = None
        self._rev = 0  # mod revision of <prefix>index in the view (0: no transaction yet)
        self._watch_from = 0  # next etcd revision the watch must deliver
        self._watch_task: asyncio.Task[None] | None = None
        self._io = asyncio.Lock()  # one own transaction or reload at a time

    # -- lifecycle -------------------------------------------------------------------------

    async def open(self) -> None:
        """Connect, load everything under the prefix and start following other servers."""
        self._channel = rpc.insecure_channel(self._target)
        self._kv = rpc.KVStub(self._channel)
        try:
            async with self._io:
                await self._load()
        except BaseException:
            await self.close()
            raise
        self._watch_task = asyncio.create_task(self._follow(), name="etcd-watch")

    async def close(self) -> None:
        if self._watch_task is not None:
            self._watch_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watch_task
            self._watch_task = None
        if self._channel is not None:
            await self._channel.close()
            self._channel = None

    # -- reading etcd ----------------------------------------------------------------------

    async def _load(self) -> None:
        """Replace the view by everything under the prefix, read at one revision, page by page."""
        tables: dict[str, dict[str, Any]] = {}
        table_index: dict[str, int] = {}
        index, index_rev, revision = 0, 0, 0
        start, end = self.prefix, _range_end(self.prefix)
        while True:
            req = rpc.RangeRequest(key=start, range_end=end, limit=PAGE, revision=revision)
            resp = await self._call("read", self._kv.Range(req, timeout=self.settings.timeout_s))
            revision = revision or resp.header.revision
            for kv in resp.kvs:
                if kv.key == self._index_key:
                    index, index_rev = int(kv.value), kv.mod_revision
                elif kv.key.startswith(self._tables_key):
                    table_index[kv.key[len(self._tables_key) :].decode()] = int(kv.value)
                elif kv.key.startswith(self._docs):
                    table, key = self._doc_name(kv.key)
                    tables.setdefault(table, {})[key] = decode(table, json.loads(kv.value))
            if not resp.more or not resp.kvs:
                break
            start = resp.kvs[-1].key + b"\0"
        self._tables, self._table_index = tables, table_index
        self._index, self._rev, self._watch_from = index, index_rev, revision + 1
        self._loaded()
        self._reset_indexers()
        self._notify()

    async def sync(self) -> None:
        """Wait until the view has seen the last transaction etcd committed (any server's)."""
        req = rpc.RangeRequest(key=self._index_key)
        resp = await self._call("read", self._kv.Range(req, timeout=self.settings.timeout_s))
        await self._catch_up(resp.kvs[0].mod_revision if resp.kvs else 0)

    async def _catch_up(self, revision: int) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.settings.timeout_s
        while self._rev < revision:
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise StoreError(
                    f"the watch on etcd at {self._where} is behind (view at revision "
                    f"{self._rev}, etcd at {revision})"
                )
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), remaining)

    # -- writes ----------------------------------------------------------------------------

    async def apply(self, ops: Sequence[Op]) -> int:
        """Commit ``ops`` in one etcd transaction; acknowledged only once etcd committed it."""
        if not ops:
            return self._index
        async with self._io:
            index = self._index + 1
            ops = self._stamp(ops, index)
            final: dict[tuple[str, str], Op] = {(op.table, op.key): op for op in ops}
            writes = [self._request(op) for op in final.values()]
            writes += [
                _put(self._tables_key + t.encode(), str(index).encode())
                for t in sorted({op.table for op in ops})
            ]
            writes.append(_put(self._index_key, str(index).encode()))
            guard = rpc.Compare(
                key=self._index_key,
                target=rpc.Compare.MOD,
                result=rpc.Compare.EQUAL,
                mod_revision=self._rev,
            )
            failure = [rpc.RequestOp(request_range=rpc.RangeRequest(key=self._index_key))]
            txn = rpc.TxnRequest(compare=[guard], success=writes, failure=failure)
            resp = await self._call("write", self._kv.Txn(txn, timeout=self.settings.timeout_s))
            if not resp.succeeded:
                kvs = resp.responses[0].response_range.kvs
                await self._catch_up(kvs[0].mod_revision if kvs else 0)
                raise StoreConflict(
                    "another server wrote to etcd at the same time; retry the request"
                )
            if self._rev < resp.header.revision:  # else the watch already applied it
                self._rev = resp.header.revision
                self._apply_in_memory(ops, index)
            return index

    def _request(self, op: Op) -> Any:
        key = self._docs + op.table.encode() + b"/" + op.key.encode()
        if isinstance(op, Put):
            doc = encode(op.table, op.value)
            return _put(key, json.dumps(doc, sort_keys=True, separators=(",", ":")).encode())
        return rpc.RequestOp(request_delete_range=rpc.DeleteRangeRequest(key=key))

    # -- following other servers -----------------------------------------------------------

    async def _follow(self) -> None:
        """Apply every transaction under the prefix to the view; resume after failures."""
        while True:
            try:
                await self._watch()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # any failure: log, back off, resume
                log.warning("etcd watch at %s interrupted: %s", self._where, _one_line(exc))
                await asyncio.sleep(1.0)

    async def _watch(self) -> None:
        create = rpc.WatchCreateRequest(
            key=self.prefix, range_end=_range_end(self.prefix), start_revision=self._watch_from
        )
        stop = asyncio.Event()

        async def requests() -> AsyncIterator[Any]:
            yield rpc.WatchRequest(create_request=create)
            await stop.wait()

        call = rpc.WatchStub(self._channel).Watch(requests())
        try:
            async for resp in call:
                if resp.compact_revision:
                    log.warning("etcd compacted past the watch: reloading the whole state")
                    async with self._io:
                        await self._load()
                    return
                if resp.canceled:
                    raise StoreError(f"etcd cancelled the watch: {resp.cancel_reason}")
                self._apply_events(resp.events)
        finally:
            stop.set()
            call.cancel()

    def _apply_events(self, events: Sequence[Any]) -> None:
        """Apply one watch response: whole revisions, in order, each as one transaction."""
        revisions: dict[int, list[Any]] = {}
        for ev in events:
            revisions.setdefault(ev.kv.mod_revision, []).append(ev)
        for revision, group in sorted(revisions.items()):
            self._watch_from = revision + 1
            if revision <= self._rev:
                continue  # our own transaction, already in the view
            self._apply_revision(revision, group)

    def _apply_revision(self, revision: int, events: Sequence[Any]) -> None:
        ops: list[Op] = []
        tables: dict[str, int] = {}
        index: int | None = None
        for ev in events:
            key = ev.kv.key
            if key == self._index_key and ev.type == rpc.Event.PUT:
                index = int(ev.kv.value)
            elif key.startswith(self._tables_key) and ev.type == rpc.Event.PUT:
                tables[key[len(self._tables_key) :].decode()] = int(ev.kv.value)
            elif key.startswith(self._docs):
                table, name = self._doc_name(key)
                if ev.type == rpc.Event.PUT:
                    ops.append(Put(table, name, json.loads(ev.kv.value)))
                else:
                    ops.append(Delete(table, name))
        if index is None:
            log.warning("etcd revision %d changed %s without a Loom index: ignored", revision,
                        self.prefix.decode())  # fmt: skip
            return
        self._rev = revision
        self._table_index.update(tables)
        self._apply_in_memory(ops, index)

    # -- helpers ---------------------------------------------------------------------------

    def _doc_name(self, key: bytes) -> tuple[str, str]:
        table, _, name = key[len(self._docs) :].decode().partition("/")
        return table, name

    def _notify(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    async def _call(self, what: str, call: Any) -> Any:
        try:
            return await call
        except rpc.AioRpcError as exc:
            code = exc.code()
            if code in (rpc.StatusCode.UNAVAILABLE, rpc.StatusCode.DEADLINE_EXCEEDED):
                msg = f"cannot reach etcd at {self._where}: {_one_line(exc.details() or code)}"
            else:
                msg = f"etcd at {self._where} failed a {what}: {_one_line(exc.details() or code)}"
            if "too many operations" in str(exc.details()):
                msg += " (raise etcd's --max-txn-ops)"
            raise StoreError(msg) from exc


def _put(key: bytes, value: bytes) -> Any:
    return rpc.RequestOp(request_put=rpc.PutRequest(key=key, value=value))


def _one_line(text: object) -> str:
    return " ".join(str(text).split())
