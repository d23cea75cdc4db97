"""A secondary's replication round: the primary's dump becomes this store's records in one
transaction, with the primary's keys and this store's indexes; local tokens stay."""

from __future__ import annotations

import uuid

from loom.acl.records import ANONYMOUS_ACCESSOR_ID, GLOBAL_MANAGEMENT_ID, Policy, Token
from loom.acl.stored import Stored
from loom.control.replication import ACL_SET, CONFIG_SET
from loom.control.state import ServerSettings, State
from loom.store import Store, put
from loom.store.tables import ACL_POLICIES, ACL_TOKENS, CONFIG, encode


def _secondary(acl: bool = False) -> State:
    return State(
        ServerSettings(
            datacenter="dc2",
            primary_datacenter="dc1",
            acl_default_policy="deny" if acl else None,
        ),
        store=Store(),
    )


async def _entries_of_a_primary(*bodies: dict[str, object]) -> list[dict[str, object]]:
    primary = State(ServerSettings(), store=Store())
    await primary.start()
    try:
        for body in bodies:
            await primary.configs.write(body)
        return [encode(CONFIG.name, e) for e in primary.store.records(CONFIG)]
    finally:
        await primary.close()


async def test_a_config_round_applies_the_difference_in_one_transaction() -> None:
    state = _secondary()
    await state.start()
    try:
        rep = state.replicators[CONFIG_SET]
        assert sorted(state.replicators) == [CONFIG_SET]  # ACLs off: no ACL replication
        first = await _entries_of_a_primary(
            {"Kind": "service-defaults", "Name": "a", "Protocol": "http"},
            {"Kind": "service-intentions", "Name": "db",
             "Sources": [{"Name": "web", "Action": "deny"}]},
            {"Kind": "external-service", "Name": "x", "Hosts": ["x.example.com"],
             "Ports": [{"Number": 443}]},
        )  # fmt: skip
        before = state.store.index
        assert await rep.apply({"Entries": first}, 40) == 3 + 1  # three entries and a VIP
        assert state.store.index == before + 1
        assert [i.action for i in state.configs.intentions()] == ["deny"]
        assert state.snapshot().externals[0].virtual_ips != ()
        assert rep.status.replicated_index == 40 and rep.status.running
        assert await rep.apply({"Entries": first}, 41) == 0  # nothing new: no write
        assert state.store.index == before + 1
        second = await _entries_of_a_primary(
            {"Kind": "service-defaults", "Name": "a", "Protocol": "grpc"}
        )
        assert await rep.apply({"Entries": second}, 42) > 0
        assert [e.name for e in state.configs.entries()] == ["a"]
        assert state.store.index == before + 2
        assert state.configs.external_vips() == {}
    finally:
        await state.close()


async def test_an_acl_round_keeps_the_primarys_ids_and_this_datacenters_local_tokens() -> None:
    state = _secondary(acl=True)
    await state.start()
    try:
        rep = state.replicators[ACL_SET]
        local = Token(accessor_id=str(uuid.uuid4()), secret_id=str(uuid.uuid4()), local=True)
        stale = Token(accessor_id=str(uuid.uuid4()), secret_id=str(uuid.uuid4()))
        await state.store.apply([
            put(ACL_TOKENS, local.accessor_id, Stored(local, 1, 1)),
            put(ACL_TOKENS, stale.accessor_id, Stored(stale, 1, 1)),
        ])  # fmt: skip
        policy = Policy(id=str(uuid.uuid4()), name="p", rules='service "web" { policy = "read" }')
        token = Token(accessor_id=str(uuid.uuid4()), secret_id=str(uuid.uuid4()))
        dump = {
            "Policies": [Stored(policy, 7, 7).to_json()],
            "Roles": [],
            "Tokens": [Stored(token, 8, 8).to_json()],
            "TokenIndex": 8,
            "RoleIndex": 0,
        }
        await rep.apply(dump, 9)
        tokens = {t.record.accessor_id for t in state.store.records(ACL_TOKENS)}
        assert tokens == {local.accessor_id, token.accessor_id, ANONYMOUS_ACCESSOR_ID}
        policies = {p.record.id for p in state.store.records(ACL_POLICIES)}
        assert policies == {policy.id, GLOBAL_MANAGEMENT_ID}  # builtins are never deleted
        assert state.acl.token(token.secret_id).accessor_id == token.accessor_id
        assert rep.status.replicated_token_index == 8
    finally:
        await state.close()


async def test_a_caught_up_wait_ends_when_the_round_arrives_or_at_its_timeout() -> None:
    state = _secondary()
    await state.start()
    try:
        rep = state.replicators[CONFIG_SET]
        assert not await rep.caught_up(5, 0.05)
        await rep.apply({"Entries": []}, 5)
        assert await rep.caught_up(5, 0.05)
    finally:
        await state.close()
