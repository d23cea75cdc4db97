"""The catalog's indexes and VIP cursor give the answers a full scan of the store would."""

from __future__ import annotations

import asyncio
import ipaddress
import random
from pathlib import Path
from typing import Any

from loom.control import indexes
from loom.control.catalog import CHECKS, SERVICES, VIPS, Catalog, CatalogSettings
from loom.control.indexes import (
    EXTERNAL_VIP_NET,
    REMOTE_VIP_NET,
    CheckIndex,
    ServiceIndex,
    VipAllocator,
)
from loom.domain.records import VirtualIp
from loom.store import Delete, Put, Store
from loom.store.sqlite import SqliteStore
from loom.store.tables import encode

SETTINGS = CatalogSettings("agent", "127.0.0.1", "dc1")


def catalog(store: Store) -> Catalog:
    return Catalog(store, SETTINGS, asyncio.Lock(), lambda: 0.0)


def node_body(node: str, name: str, sid: str = "", **extra: Any) -> dict[str, Any]:
    service = {"Service": name, "ID": sid or name, "Port": 80, **extra}
    return {"Node": node, "Address": "10.0.0.1", "Service": service}


def vips(store: Store) -> dict[str, str]:
    return {k: v.address for k, v in store.items(VIPS)}


def lowest_free_reference(store: Store, before: dict[str, str]) -> dict[str, str]:
    """Today's rule, by brute force: a service with instances keeps its VIP; a new one gets
    the lowest address of 240.0.0.0/4 no remaining service holds (skipping the external and
    remote-datacenter blocks and .0/.255), in name order."""
    wanted = {f"{d.namespace}/{d.service}" for d in store.values(SERVICES) if not d.is_proxy}
    out = {k: a for k, a in before.items() if k in wanted}
    used = set(out.values())
    n = int(ipaddress.IPv4Address("240.0.0.1"))
    for key in sorted(wanted - out.keys()):
        while (str(ipaddress.IPv4Address(n)) in used or n & 0xFF in (0, 255)
               or ipaddress.IPv4Address(n) in EXTERNAL_VIP_NET
               or ipaddress.IPv4Address(n) in REMOTE_VIP_NET):  # fmt: skip
            n += 1
        out[key] = str(ipaddress.IPv4Address(n))
        used.add(out[key])
    return out


def assert_indexes_match_a_rebuild(store: Store, cat: Catalog) -> None:
    services, checks = ServiceIndex(), CheckIndex()
    services.reset(dict(store.items(SERVICES)))
    checks.reset(dict(store.items(CHECKS)))
    as_sets = lambda index: {k: set(v) for k, v in index.items()}  # noqa: E731
    assert as_sets(cat.services.by_name) == as_sets(services.by_name)
    assert as_sets(cat.services.by_node) == as_sets(services.by_node)
    assert as_sets(cat.services.by_id) == as_sets(services.by_id)
    assert cat.services.vip_users == services.vip_users
    assert cat.services.sidecar_ports == services.sidecar_ports
    assert as_sets(cat.services.ports) == as_sets(services.ports)
    assert as_sets(cat.checks.by_instance) == as_sets(checks.by_instance)
    assert as_sets(cat.checks.by_node) == as_sets(checks.by_node)
    assert as_sets(cat.checks.by_check_id) == as_sets(checks.by_check_id)
    assert set(cat.checks.ttl) == set(checks.ttl)


async def test_a_freed_vip_is_reused_by_the_next_new_service_lowest_first() -> None:
    store = Store()
    cat = catalog(store)
    for name in ("a", "b", "c"):
        await cat.agent_register({"Name": name, "Port": 80})
    assert vips(store) == {"default/a": "240.0.0.1", "default/b": "240.0.0.2",
                           "default/c": "240.0.0.3"}  # fmt: skip
    await cat.agent_register({"Name": "b", "ID": "b2", "Port": 81})
    await cat.agent_deregister("b")
    assert vips(store)["default/b"] == "240.0.0.2"  # kept while an instance remains
    await cat.agent_deregister("b2")
    assert "default/b" not in vips(store)
    await cat.agent_register({"Name": "d", "Port": 80})
    await cat.agent_register({"Name": "e", "Port": 80})
    assert vips(store)["default/d"] == "240.0.0.2"
    assert vips(store)["default/e"] == "240.0.0.4"


def test_the_vip_cursor_skips_network_and_broadcast_addresses_and_the_external_block() -> None:
    alloc = VipAllocator()
    alloc.reset({"x": VirtualIp("240.0.0.254")})
    assert alloc.pick(1) == ["240.0.0.1"]
    alloc.reset({f"k{n}": VirtualIp(f"240.0.0.{n}") for n in range(1, 255)})
    assert alloc.pick(2) == ["240.0.1.1", "240.0.1.2"]
    alloc.reset({"x": VirtualIp("240.239.255.254")})
    alloc.put("y", None, VirtualIp("240.0.0.1"))
    taken = alloc.pick(3, releasing=["240.239.255.254"])
    assert taken == ["240.0.0.2", "240.0.0.3", "240.0.0.4"]
    alloc.give_back(taken)
    assert alloc.pick(1) == ["240.0.0.2"]


def test_the_local_allocator_skips_the_blocks_of_externals_and_other_datacenters() -> None:
    # The cursor's own rule, checked at the blocks' edges (walking the allocator up to
    # 240.240.0.0 would push 15 million gaps).
    def allocatable(address: str) -> bool:
        return indexes._valid(int(ipaddress.IPv4Address(address)))

    for net in (EXTERNAL_VIP_NET, REMOTE_VIP_NET):
        first, last = net.network_address + 1, net.broadcast_address - 1
        assert not allocatable(str(first)) and not allocatable(str(last)), net
    assert allocatable("240.239.255.254") and allocatable("240.242.0.1")
    assert str(REMOTE_VIP_NET) == "240.241.0.0/16"


def test_an_address_released_by_the_same_write_counts_as_free() -> None:
    alloc = VipAllocator()
    alloc.reset({"a": VirtualIp("240.0.0.1"), "b": VirtualIp("240.0.0.2")})
    assert alloc.pick(2, releasing=["240.0.0.1"]) == ["240.0.0.1", "240.0.0.3"]


async def test_random_registrations_allocate_vips_as_a_full_scan_would() -> None:
    store = Store()
    cat = catalog(store)
    rng = random.Random(7)
    nodes = ("agent", "n1", "n2")
    for _ in range(400):
        before = vips(store)
        name = f"s{rng.randrange(30)}"
        node = rng.choice(nodes)
        sid = f"{name}-{rng.randrange(3)}"
        action = rng.random()
        if action < 0.5:
            if node == "agent":
                await cat.agent_register({"Name": name, "ID": sid, "Port": 80,
                                          "Check": {"TTL": "10s"},
                                          "Connect": {"SidecarService": {}}})  # fmt: skip
            else:
                await cat.catalog_register(
                    {**node_body(node, name, sid), "Check": {"Name": "c", "ServiceID": sid}}
                )
        elif action < 0.85:
            if store.peek(SERVICES, f"{node}/default/{sid}") is not None:
                await cat.deregister(node, "default", sid, sidecars=True)
        elif node != "agent" and store.peek("nodes", node) is not None:
            await cat.catalog_deregister({"Node": node})
        assert vips(store) == lowest_free_reference(store, before)
        assert_indexes_match_a_rebuild(store, cat)


async def test_a_sidecar_keeps_its_auto_assigned_port_and_others_skip_it() -> None:
    cat = catalog(Store())
    await cat.agent_register({"Name": "a", "Port": 80, "Connect": {"SidecarService": {}}})
    await cat.agent_register({"Name": "b", "Port": 80, "Connect": {"SidecarService": {}}})
    await cat.agent_register({"Name": "a", "Port": 81, "Connect": {"SidecarService": {}}})
    ports = {d.id: d.port for d in cat.instances() if d.kind}
    assert ports == {"a-sidecar-proxy": 21000, "b-sidecar-proxy": 21001}


async def test_indexes_are_rebuilt_from_a_reopened_sqlite_store(tmp_path: Path) -> None:
    first = SqliteStore(tmp_path)
    cat = catalog(first)
    await cat.agent_register({"Name": "a", "Port": 80, "Check": {"TTL": "5s"}})
    await cat.agent_register({"Name": "b", "Port": 80})
    await cat.agent_deregister("a")
    await first.close()
    again = SqliteStore(tmp_path)
    try:
        cat = catalog(again)
        assert_indexes_match_a_rebuild(again, cat)
        await cat.agent_register({"Name": "c", "Port": 80})
        await cat.agent_register({"Name": "d", "Port": 80})
        assert vips(again) == {"default/b": "240.0.0.2", "default/c": "240.0.0.1",
                               "default/d": "240.0.0.3"}  # fmt: skip
    finally:
        await again.close()


async def test_an_index_follows_writes_that_bypass_the_catalog() -> None:
    store = Store()
    cat = catalog(store)
    await cat.agent_register({"Name": "a", "Port": 80})
    doc = encode(SERVICES, store.get(SERVICES, "agent/default/a"))
    # As another server's write arrives through the etcd watch: a stored document, straight
    # into the view.
    await store.apply([Put(SERVICES, "agent/default/a", {**doc, "Service": "renamed"})])
    assert [d.id for d in cat.instances_of("default", "renamed")] == ["a"]
    assert cat.instances_of("default", "a") == []
    assert_indexes_match_a_rebuild(store, cat)


def test_items_are_sorted_and_safe_to_mutate_as_a_list() -> None:
    store = Store()
    store._apply_in_memory([Put("t", "b", {}), Put("t", "a", {})], 1)
    first = store.items("t")
    first.clear()
    assert [k for k, _ in store.items("t")] == ["a", "b"]


async def test_the_tag_union_keeps_first_seen_order_and_follows_every_write() -> None:
    cat = catalog(Store())
    await cat.agent_register({"Name": "web", "ID": "w1", "Port": 80, "Tags": ["b", "a"]})
    await cat.agent_register({"Name": "web", "ID": "w2", "Port": 80, "Tags": ["c", "a", "b"]})
    assert cat.service_tags("default") == {"web": ("b", "a", "c")}
    assert cat.service_tags("default") is cat.service_tags("default")  # shared until a write
    await cat.agent_register({"Name": "web", "ID": "w1", "Port": 80, "Tags": ["z"]})
    assert cat.service_tags("default") == {"web": ("z", "c", "a", "b")}
    assert cat.service_tags("other") == {}


def test_items_stay_in_key_order_through_random_puts_and_deletes() -> None:
    store = Store()
    rng = random.Random(3)
    model: dict[str, dict[str, int]] = {}
    for index in range(1, 600):
        key = f"k{rng.randrange(80)}"
        if rng.random() < 0.6:
            model[key] = {"n": index}
            op: Any = Put("t", key, {"n": index})
        else:
            model.pop(key, None)
            op = Delete("t", key)
        store._apply_in_memory([op], index)
        if index % 7 == 0:
            assert store.items("t") == sorted(model.items())
    assert store.items("t") == sorted(model.items())
