"""The ACL service over a real in-memory store: bootstrap, resolution and its cache, expiry,
links and the builtin records' guards."""

from __future__ import annotations

import asyncio
import datetime as dt

import pytest

from loom.acl.errors import AclNotFound, PermissionDenied
from loom.acl.records import ANONYMOUS_ACCESSOR_ID, GLOBAL_MANAGEMENT_ID
from loom.control.acl import Acl, AclSettings
from loom.control.errors import NotFound
from loom.domain.fields import ValidationError
from loom.store import Store

ROOT = "3f1e2a4b-5c6d-4e7f-8091-a2b3c4d5e6f7"


class Clock:
    def __init__(self) -> None:
        self.now = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)

    def __call__(self) -> dt.datetime:
        return self.now


async def _acl(clock: Clock | None = None, **settings: object) -> Acl:
    acl = Acl(
        Store(),
        asyncio.Lock(),
        AclSettings(enabled=True, default_allow=False, **settings),
        clock or Clock(),
    )  # type: ignore[arg-type]
    await acl.start()
    return acl


async def test_bootstrap_gives_a_management_token_once() -> None:
    acl = await _acl()
    token = await acl.bootstrap()
    assert acl.authorizer(token.record.secret_id).acl_write()
    with pytest.raises(PermissionDenied) as caught:
        await acl.bootstrap()
    assert str(caught.value) == (
        f"Permission denied: ACL bootstrap no longer allowed (reset index: {token.create_index})"
    )


async def test_the_initial_management_token_is_made_once_and_bootstrap_is_then_refused() -> None:
    acl = await _acl(initial_management=ROOT)
    await acl.start()  # a restart does not make a second one
    assert [t.record.description for t in acl.tokens()].count("Initial Management Token") == 1
    assert acl.authorizer(ROOT).operator_write()
    with pytest.raises(PermissionDenied):
        await acl.bootstrap()


async def test_the_anonymous_token_follows_the_default_policy_until_given_a_policy() -> None:
    acl = await _acl(initial_management=ROOT)
    assert not acl.authorizer("").service_read("web")
    policy = await acl.write_policy(
        {"Name": "read-all", "Rules": 'service_prefix "" { policy = "read" }'}
    )
    await acl.update_token(ANONYMOUS_ACCESSOR_ID, {"Policies": [{"ID": policy.record.id}]})
    assert acl.authorizer("").service_read("web")  # the cache saw the change
    assert not acl.authorizer("").service_write("web")


async def test_changing_a_policy_changes_what_its_tokens_may_do_at_once() -> None:
    acl = await _acl()
    policy = await acl.write_policy({"Name": "web", "Rules": 'service "web" { policy = "write" }'})
    token = await acl.create_token({"Policies": [{"Name": "web"}]})
    secret = token.record.secret_id
    assert acl.authorizer(secret).service_write("web")
    await acl.write_policy(
        {"Name": "web", "Rules": 'service "web" { policy = "read" }'}, policy.record.id
    )
    assert not acl.authorizer(secret).service_write("web")
    await acl.delete_token(token.record.accessor_id, caller_secret=ROOT)
    with pytest.raises(AclNotFound):
        acl.authorizer(secret)


async def test_an_expired_token_is_not_found_even_from_the_cache() -> None:
    clock = Clock()
    acl = await _acl(clock)
    token = await acl.create_token({"ExpirationTTL": "10m"})
    secret = token.record.secret_id
    assert token.record.expiration_time == clock.now + dt.timedelta(minutes=10)
    acl.authorizer(secret)
    clock.now += dt.timedelta(minutes=11)
    with pytest.raises(AclNotFound):
        acl.authorizer(secret)


async def test_links_must_name_existing_records_and_come_back_with_id_and_name() -> None:
    acl = await _acl()
    with pytest.raises(ValidationError, match="cannot find policy 'nope'"):
        await acl.create_token({"Policies": [{"Name": "nope"}]})
    token = await acl.create_token({"Policies": [{"ID": GLOBAL_MANAGEMENT_ID}]})
    assert [p.to_json() for p in token.record.policies] == [
        {"ID": GLOBAL_MANAGEMENT_ID, "Name": "global-management"}
    ]


async def test_the_builtin_records_are_guarded() -> None:
    acl = await _acl()
    with pytest.raises(ValidationError, match="global-management"):
        await acl.delete_policy(GLOBAL_MANAGEMENT_ID)
    with pytest.raises(ValidationError, match="Rules"):
        await acl.write_policy({"Name": "global-management", "Rules": ""}, GLOBAL_MANAGEMENT_ID)
    with pytest.raises(ValidationError, match="anonymous"):
        await acl.delete_token(ANONYMOUS_ACCESSOR_ID, caller_secret="")
    await acl.write_policy({"Name": "p"})
    with pytest.raises(ValidationError, match="already exists"):
        await acl.write_policy({"Name": "p"})
    with pytest.raises(NotFound):
        acl.get_policy(name="q")


async def test_a_token_cannot_delete_itself_or_change_its_secret() -> None:
    acl = await _acl()
    token = await acl.create_token({})
    with pytest.raises(ValidationError, match="authorization token"):
        await acl.delete_token(token.record.accessor_id, caller_secret=token.record.secret_id)
    with pytest.raises(ValidationError, match="SecretID"):
        await acl.update_token(token.record.accessor_id, {"SecretID": ROOT})


async def test_with_acls_off_start_writes_nothing() -> None:
    store = Store()
    await Acl(store, asyncio.Lock(), AclSettings(), Clock()).start()
    assert store.index == 0
