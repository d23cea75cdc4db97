"""Config entries and intentions (which are ``service-intentions`` entries).

The legacy intention endpoints (``/v1/connect/intentions/exact`` ...) edit the source list of
the destination's ``service-intentions`` entry, as Consul >= 1.9 does, so both views always
agree. Writing an ``external-service`` entry allocates a stable virtual IP (IPv4 from
240.240.0.0/16 and IPv6 from fd00:f0f0::/96) for each of its non-wildcard hosts; the DNS proxy
answers the host with them and the outbound listener routes them.
"""

from __future__ import annotations

import asyncio
import ipaddress
from dataclasses import replace
from typing import Any

from loom.ca.spiffe import service_identity_in
from loom.control.errors import NotFound
from loom.domain.config_entries import validate_entry, validate_source
from loom.domain.entries import (
    SERVICE_INTENTIONS,
    ConfigEntry,
    ExternalService,
    IntentionSource,
    ServiceIntentions,
    ServiceResolver,
    entry_key,
)
from loom.domain.fields import ValidationError, check_name, check_namespace
from loom.domain.intentions import ALLOW, DENY, Decision, Intention, decide, from_entries
from loom.domain.records import ExternalVips
from loom.domain.resolver import check_graph
from loom.store import Delete, Op, Store, put, tables

CONFIG = tables.CONFIG.name
EXTERNAL_VIPS = tables.EXTERNAL_VIPS.name
EXTERNAL_V4 = ipaddress.ip_network("240.240.0.0/16")
EXTERNAL_V6 = ipaddress.ip_network("fd00:f0f0::/96")


def split_ref(ref: str, where: str) -> tuple[str, str]:
    """'ns/name' or 'name' (namespace default); '*' allowed for either part."""
    ns, _, name = ref.rpartition("/")
    ns = check_namespace(ns or "default", where, wildcard=True)
    return ns, check_name(name, where, wildcard=True)


def keep_legacy_ids(old: ServiceIntentions, new: ServiceIntentions) -> ServiceIntentions:
    """``new`` with the legacy IDs of ``old``'s sources of the same name: rewriting an entry
    (through ``/v1/config`` or by name) keeps each intention's ID, as its source is the same."""
    ids = {(s.namespace, s.name): s.legacy_id for s in old.sources if s.legacy_id}
    if not ids:
        return new
    sources = tuple(
        s if s.legacy_id else replace(s, legacy_id=ids.get((s.namespace, s.name), ""))
        for s in new.sources
    )
    return replace(new, sources=sources)


def _check_resolvers(entries: dict[str, ConfigEntry]) -> None:
    """Refuse (400, nothing written) a set of entries whose service-resolvers loop or name
    subsets that do not exist (``loom.domain.resolver.check_graph``)."""
    resolvers = {
        (e.namespace, e.name): e for e in entries.values() if isinstance(e, ServiceResolver)
    }
    if resolvers:
        check_graph(resolvers)


class Configs:
    def __init__(self, store: Store, lock: asyncio.Lock, default_allow: bool) -> None:
        self.store = store
        self._lock = lock
        self.default_allow = default_allow

    # -- config entries ----------------------------------------------------------------------

    def get(self, kind: str, name: str, namespace: str = "default") -> ConfigEntry | None:
        return self.store.record(tables.CONFIG, entry_key(kind, namespace, name))

    def entries(self, kind: str | None = None) -> list[ConfigEntry]:
        return [e for e in self.store.records(tables.CONFIG) if kind is None or e.kind == kind]

    def intention_entries(self) -> list[ServiceIntentions]:
        return [e for e in self.store.records(tables.CONFIG) if isinstance(e, ServiceIntentions)]

    def external_services(self) -> list[ExternalService]:
        return [e for e in self.store.records(tables.CONFIG) if isinstance(e, ExternalService)]

    async def write(self, body: Any, cas: int | None = None) -> bool:
        return await self.write_entry(validate_entry(body), cas)

    async def write_entry(self, entry: ConfigEntry, cas: int | None = None) -> bool:
        """Write a decoded entry (its indexes are set here); False when ``cas`` is not the
        stored entry's ModifyIndex (0: there must be none)."""
        async with self._lock:
            key = entry.key
            old = self.store.record(tables.CONFIG, key)
            if isinstance(entry, ServiceIntentions) and isinstance(old, ServiceIntentions):
                entry = keep_legacy_ids(old, entry)
            if cas is not None:
                current = old.modify_index if old else 0
                if current != cas:
                    return False
            if old is not None and replace(old, create_index=0, modify_index=0) == replace(
                entry, create_index=0, modify_index=0
            ):
                return True
            index = self.store.index + 1
            created = old.create_index if old else index
            entry = replace(entry, create_index=created, modify_index=index)
            entries = {k: v for k, v in self.store.items(CONFIG) if k != key}
            entries[key] = entry
            if isinstance(entry, ServiceResolver):  # other kinds cannot break resolvers
                _check_resolvers(entries)
            ops = [put(tables.CONFIG, key, entry), *self._external_vip_ops(entries)]
            await self.store.apply(ops)
            return True

    async def delete(
        self, kind: str, name: str, namespace: str = "default", cas: int | None = None
    ) -> bool:
        """Delete an entry; with ``cas``, only if it exists with that ModifyIndex (False:
        nothing was deleted, as Consul's check-and-set delete answers)."""
        async with self._lock:
            key = entry_key(kind, namespace, name)
            old = self.store.record(tables.CONFIG, key)
            if cas is not None and (old is None or old.modify_index != cas):
                return False
            if old is None:
                return True  # Consul's delete is idempotent
            entries = {k: v for k, v in self.store.items(CONFIG) if k != key}
            if isinstance(old, ServiceResolver):
                _check_resolvers(entries)
            await self.store.apply([Delete(CONFIG, key), *self._external_vip_ops(entries)])
            return True

    def external_vip_ops(self, entries: dict[str, ConfigEntry]) -> list[Op]:
        """The writes that give the external-service hosts of ``entries`` (every entry, by
        key, after a change) their VIPs and free those of hosts gone (replication)."""
        return self._external_vip_ops(entries)

    def _external_vip_ops(self, entries: dict[str, ConfigEntry]) -> list[Op]:
        hosts = {
            h
            for e in entries.values()
            if isinstance(e, ExternalService)
            for h in e.hosts
            if not h.startswith("*")
        }
        current = self.external_vips()
        ops: list[Op] = [Delete(EXTERNAL_VIPS, h) for h in current if h not in hosts]
        used = {v.address for h, v in current.items() if h in hosts}
        n = 1
        for host in sorted(hosts - current.keys()):
            while str(EXTERNAL_V4.network_address + n) in used or n % 256 in (0, 255):
                n += 1
            v4 = EXTERNAL_V4.network_address + n
            used.add(str(v4))
            v6 = EXTERNAL_V6.network_address + n
            ops.append(put(tables.EXTERNAL_VIPS, host, ExternalVips(str(v4), str(v6))))
        return ops

    def external_vips(self) -> dict[str, ExternalVips]:
        return dict(self.store.items(EXTERNAL_VIPS))

    # -- intentions ----------------------------------------------------------------------------

    def intentions(self) -> list[Intention]:
        return from_entries(self.intention_entries())

    def find_exact(self, source: str, destination: str) -> Intention | None:
        sns, sname = split_ref(source, "source")
        dns, dname = split_ref(destination, "destination")
        for i in self.intentions():
            if (i.source_ns, i.source, i.destination_ns, i.destination) == (sns, sname, dns, dname):
                return i
        return None

    async def upsert_exact(self, source: str, destination: str, body: Any) -> None:
        sns, sname = split_ref(source, "source")
        dns, dname = split_ref(destination, "destination")
        if not isinstance(body, dict):
            raise ValidationError("body: expected an object with Action")
        src: dict[str, Any] = {"Name": sname, "Namespace": sns}
        for key in ("Action", "Description", "Permissions"):
            if body.get(key) not in (None, ""):
                src[key] = body[key]
        if "Action" in src and isinstance(src["Action"], str):
            src["Action"] = src["Action"].lower()
            if src["Action"] not in (ALLOW, DENY):
                raise ValidationError(f"Action: {body['Action']!r} is not one of 'allow', 'deny'")
        # Decoded as the whole entry would be by /v1/config: the same errors, the same form.
        validate_entry({"Kind": SERVICE_INTENTIONS, "Name": dname, "Namespace": dns})
        entry = self._intentions_of(dname, dns)
        kept = tuple(s for s in entry.sources if (s.namespace, s.name) != (sns, sname))
        new = validate_source(src, f"Sources[{len(kept)}]")
        await self.write_entry(replace(entry, sources=(*kept, new)))

    async def delete_exact(self, source: str, destination: str) -> None:
        sns, sname = split_ref(source, "source")
        dns, dname = split_ref(destination, "destination")
        entry = self.get(SERVICE_INTENTIONS, dname, dns)
        sources: tuple[IntentionSource, ...] = (
            entry.sources if isinstance(entry, ServiceIntentions) else ()
        )
        remaining = tuple(s for s in sources if (s.namespace, s.name) != (sns, sname))
        if not isinstance(entry, ServiceIntentions) or len(remaining) == len(sources):
            raise NotFound(f"no intention from {source} to {destination}")
        if remaining:
            await self.write_entry(replace(entry, sources=remaining))
        else:
            await self.delete(SERVICE_INTENTIONS, dname, dns)

    def _intentions_of(self, name: str, namespace: str) -> ServiceIntentions:
        entry = self.get(SERVICE_INTENTIONS, name, namespace)
        if isinstance(entry, ServiceIntentions):
            return entry
        return ServiceIntentions(name=name, namespace=namespace)

    def match(self, by: str, names: list[str]) -> dict[str, list[Intention]]:
        """Intentions whose source (``by="source"``) or destination matches each ``ns/name``
        (wildcard intentions match every name), as ``GET /v1/connect/intentions/match``."""
        if by not in ("source", "destination"):
            raise ValidationError("by: must be 'source' or 'destination'")
        if not names:
            raise ValidationError("name: at least one name is required")
        intentions = self.intentions()
        out: dict[str, list[Intention]] = {}
        for ref in names:
            ns, _, name = ref.rpartition("/")
            ns = ns or "default"
            check_name(name, "name", wildcard=True)
            if by == "source":
                out[ref] = [
                    i for i in intentions if i.source_ns in ("*", ns) and i.source in ("*", name)
                ]
            else:
                out[ref] = [
                    i
                    for i in intentions
                    if i.destination_ns in ("*", ns) and i.destination in ("*", name)
                ]
        return out

    def authorize(
        self, client_uri: str, trust_domain: str, namespace: str, target: str
    ) -> Decision | None:
        """May the holder of certificate URI ``client_uri`` reach ``namespace/target``?
        None when the URI is not a service identity of this mesh."""
        identity = service_identity_in(client_uri, trust_domain)
        if identity is None:
            return None
        return self.check(f"{identity.namespace}/{identity.service}", f"{namespace}/{target}")

    def check(self, source: str, destination: str) -> Decision:
        sns, sname = split_ref(source, "source")
        dns, dname = split_ref(destination, "destination")
        return decide(self.intentions(), sns, sname, dns, dname, self.default_allow)
