"""Who runs each of this node's checks (the server, a dataplane) and which may reap their
service, kept up to date write by write.

The server's check loop wakes on every write to the services or checks tables. Deciding the
owner of every check of the node on each wake (``loom.domain.checkstate.check_runner`` over
all of them) made one registration cost time in proportion to the whole catalog: 2 ms at 500
services, 28 ms at 4,000, all on one node. This tracker is fed by the store as an indexer of
both tables and remembers which instances a write touched; a wake re-decides only the checks
of those instances (and of the instance a sidecar fronts, since a sidecar takes over its
destination's checks). The same decisions serve the dataplanes' liveness (whose checks a
heartbeat speaks for, which turn critical when it stops). The owner rule itself stays the one
pure function.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from types import MappingProxyType

from loom.domain.checkstate import DATAPLANE, NOBODY, SERVER, check_runner
from loom.domain.records import Check, Instance
from loom.domain.services import instance_key
from loom.store import Store, tables

InstanceRef = tuple[str, str, str]
"""(node, namespace, service ID); the service ID is empty for a node's own checks."""


class ServerChecks:
    """Who runs each check of one node (the server, a dataplane, nobody), and the checks that
    may reap their service."""

    def __init__(self, store: Store, node: str) -> None:
        self.store = store
        self.node = node
        self._dirty: set[InstanceRef] | None = None
        """Instances whose checks need a new decision; None: every instance of the node."""
        self._runs: dict[InstanceRef, dict[str, tuple[str, str, Check]]] = {}
        """By instance, by check key: who runs the check, the runner's proxy ID, the check."""
        self._server: dict[InstanceRef, dict[str, Check]] = {}
        """The server-run ones alone (most are the dataplanes': a write must not walk them)."""
        self._sidecars: dict[InstanceRef, set[str]] = {}
        """This node's sidecar IDs by the instance they front."""
        self._by_instance: dict[InstanceRef, set[str]] = {}
        """This node's check keys by instance."""
        self.reapable: dict[str, Check] = {}
        """This node's service checks with a DeregisterCriticalServiceAfter, by check key."""
        self._dataplanes: Mapping[str, Sequence[Check]] | None = None
        """``dataplane_owned``'s answer until a write touches an instance (None: none yet)."""
        store.attach(tables.SERVICES.name, _Services(self))
        store.attach(tables.CHECKS.name, _Checks(self))

    def touch(self, ref: InstanceRef) -> None:
        if self._dirty is not None and ref[0] == self.node:
            self._dirty.add(ref)

    def _refresh(self) -> None:
        dirty, self._dirty = self._dirty, set()
        if dirty is None or dirty:
            self._dataplanes = None
        if dirty is None:
            self._runs.clear()
            self._server.clear()
            dirty = set(self._by_instance)
        for ref in dirty:
            self._decide(ref)

    def owned(self) -> list[Check]:
        """The checks of this node that the server runs (not the dataplanes'), in key order."""
        self._refresh()
        found = {key: c for runs in self._server.values() for key, c in runs.items()}
        return [found[key] for key in sorted(found)]

    def dataplane_owned(self) -> Mapping[str, Sequence[Check]]:
        """The checks of this node that dataplanes run, by the runner's proxy ID, in key order.

        Kept until a write touches an instance of the node: the liveness sweep asks every
        second, and building it walks every check (~60 ms with 5,000 sidecars)."""
        self._refresh()
        if self._dataplanes is not None:
            return self._dataplanes
        found = {
            key: (owner, c) for runs in self._runs.values()
            for key, (who, owner, c) in runs.items() if who == DATAPLANE
        }  # fmt: skip
        out: dict[str, list[Check]] = {}
        for key in sorted(found):
            owner, c = found[key]
            out.setdefault(owner, []).append(c)
        self._dataplanes = MappingProxyType({k: tuple(v) for k, v in out.items()})
        return self._dataplanes

    def run_by(self, runner: Instance) -> list[Check]:
        """The checks dataplane ``runner`` runs (its own instance's and its destination's)."""
        self._refresh()
        refs = [(runner.node, runner.namespace, runner.id)]
        if runner.proxy is not None:
            refs.append((runner.node, runner.namespace, runner.proxy.destination_service_id))
        found = {
            key: c for ref in refs for key, (who, owner, c) in self._runs.get(ref, {}).items()
            if who == DATAPLANE and owner == runner.id
        }  # fmt: skip
        return [found[key] for key in sorted(found)]

    def _decide(self, ref: InstanceRef) -> None:
        node, namespace, service_id = ref
        keys = self._by_instance.get(ref, ())
        inst = self.store.record(tables.SERVICES, instance_key(node, namespace, service_id))
        proxies: dict[str, Instance] = {}
        if inst is not None and inst.proxy is not None:
            proxies[inst.id] = inst
        sidecars = {ref: min(ids)} if (ids := self._sidecars.get(ref)) else {}
        runs: dict[str, tuple[str, str, Check]] = {}
        for key in keys:
            check = self.store.record(tables.CHECKS, key)
            if check is not None:
                who, owner = check_runner(check, proxies, sidecars)
                if who != NOBODY:
                    runs[key] = (who, owner, check)
        server = {key: c for key, (who, _, c) in runs.items() if who == SERVER}
        if runs:
            self._runs[ref] = runs
        else:
            self._runs.pop(ref, None)
        if server:
            self._server[ref] = server
        else:
            self._server.pop(ref, None)


class _Services:
    """Follows the services table: sidecars by destination; which instances a write touches."""

    def __init__(self, tracker: ServerChecks) -> None:
        self.t = tracker

    def reset(self, docs: Mapping[str, Instance]) -> None:
        self.t._sidecars.clear()
        self.t._dirty = None
        for inst in docs.values():
            self._add(inst)

    def _refs(self, inst: Instance) -> Iterable[InstanceRef]:
        yield (inst.node, inst.namespace, inst.id)
        if inst.proxy is not None:
            yield (inst.node, inst.namespace, inst.proxy.destination_service_id)

    def _add(self, inst: Instance) -> None:
        if inst.node == self.t.node and inst.proxy is not None:
            ref = (inst.node, inst.namespace, inst.proxy.destination_service_id)
            self.t._sidecars.setdefault(ref, set()).add(inst.id)
        for ref in self._refs(inst):
            self.t.touch(ref)

    def put(self, key: str, old: Instance | None, new: Instance) -> None:
        if old is not None:
            self.delete(key, old)
        self._add(new)

    def delete(self, key: str, old: Instance) -> None:
        if old.node == self.t.node and old.proxy is not None:
            ref = (old.node, old.namespace, old.proxy.destination_service_id)
            ids = self.t._sidecars.get(ref)
            if ids is not None:
                ids.discard(old.id)
                if not ids:
                    del self.t._sidecars[ref]
        for ref in self._refs(old):
            self.t.touch(ref)


class _Checks:
    """Follows the checks table: check keys by instance, the reapable ones."""

    def __init__(self, tracker: ServerChecks) -> None:
        self.t = tracker

    def reset(self, docs: Mapping[str, Check]) -> None:
        self.t._by_instance.clear()
        self.t.reapable.clear()
        self.t._dirty = None
        for key, check in docs.items():
            self.put(key, None, check)

    def put(self, key: str, old: Check | None, new: Check) -> None:
        if old is not None:
            self.delete(key, old)
        if new.node != self.t.node:
            return
        ref = (new.node, new.namespace, new.service_id)
        self.t._by_instance.setdefault(ref, set()).add(key)
        if new.definition is not None and new.definition.deregister_after_s and new.service_id:
            self.t.reapable[key] = new
        self.t.touch(ref)

    def delete(self, key: str, old: Check) -> None:
        if old.node != self.t.node:
            return
        ref = (old.node, old.namespace, old.service_id)
        keys = self.t._by_instance.get(ref)
        if keys is not None:
            keys.discard(key)
            if not keys:
                del self.t._by_instance[ref]
        self.t.reapable.pop(key, None)
        self.t.touch(ref)
