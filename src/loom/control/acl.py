"""ACL state as a server service: tokens, policies and roles in the store, and resolution.

The pure ACL core (``loom.acl``) knows what a token may do given the records; this module
keeps those records in the store (``acl_tokens``, ``acl_policies``, ``acl_roles``, in Consul's
JSON shape) and answers for a SecretID with an ``Authorizer``, cached until an ACL table
changes (tokens with an expiry are re-checked against the clock on every hit). At start it
writes the builtin ``global-management`` policy, the anonymous token and, when configured,
the initial management token (Consul's ``acl.tokens.initial_management``), which also counts
as the bootstrap. ``bootstrap`` hands out the first management token once; afterwards it is
refused as Consul refuses it. Writes validate links (a token's policies and roles must exist)
and the builtin records' invariants with Consul's wording.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import uuid
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from loom.acl.authorizer import Authorizer
from loom.acl.errors import PermissionDenied
from loom.acl.identities import Link
from loom.acl.records import (
    ANONYMOUS,
    ANONYMOUS_ACCESSOR_ID,
    GLOBAL_MANAGEMENT,
    GLOBAL_MANAGEMENT_ID,
    Policy,
    Role,
    Token,
    find_token,
    resolve,
)
from loom.acl.stored import Stored
from loom.control.errors import NotFound
from loom.domain.fields import ValidationError
from loom.store import Delete, Store, put
from loom.store.tables import ACL_META, ACL_POLICIES, ACL_ROLES, ACL_TABLES, ACL_TOKENS

BOOTSTRAP_KEY = "bootstrap"


@dataclass(frozen=True)
class AclSettings:
    enabled: bool = False
    """Whether ACLs are enforced at all; off, every request is allowed as before ACLs."""
    default_allow: bool = True
    """The ACL default policy: what no rule decides is allowed (``allow``) or refused."""
    initial_management: str = ""
    """SecretID of a management token made at start (Consul's ``initial_management``)."""
    datacenter: str = "dc1"
    """The datacenter policies and identities are scoped against."""


def _new_id() -> str:
    return str(uuid.uuid4())


class Acl:
    def __init__(
        self,
        store: Store,
        lock: asyncio.Lock,
        settings: AclSettings,
        clock: Callable[[], dt.datetime],
    ) -> None:
        self.store = store
        self._lock = lock
        self.settings = settings
        self._clock = clock
        self._cache_index = -1
        self._by_secret: dict[str, Token] = {}
        self._authorizers: dict[str, Authorizer] = {}

    @property
    def enabled(self) -> bool:
        return self.settings.enabled

    # -- start and bootstrap ---------------------------------------------------------------

    async def start(self) -> None:
        """Write the builtin policy, the anonymous token and the initial management token."""
        if not self.enabled:
            return
        async with self._lock:
            index = self.store.index + 1
            ops = []
            if self.store.record(ACL_POLICIES, GLOBAL_MANAGEMENT_ID) is None:
                ops.append(
                    put(ACL_POLICIES, GLOBAL_MANAGEMENT_ID, Stored(GLOBAL_MANAGEMENT, index, index))
                )
            if self.store.record(ACL_TOKENS, ANONYMOUS_ACCESSOR_ID) is None:
                anon = replace(ANONYMOUS, create_time=self._clock())
                ops.append(put(ACL_TOKENS, ANONYMOUS_ACCESSOR_ID, Stored(anon, index, index)))
            secret = self.settings.initial_management
            if secret and not any(t.record.secret_id == secret for t in self._tokens()):
                token = self._management(secret, "Initial Management Token")
                ops.append(put(ACL_TOKENS, token.accessor_id, Stored(token, index, index)))
                if self.store.get(ACL_META.name, BOOTSTRAP_KEY) is None:
                    ops.append(put(ACL_META, BOOTSTRAP_KEY, {"Index": index}))
            await self.store.apply(ops)

    def _management(self, secret: str, description: str) -> Token:
        return Token(
            accessor_id=_new_id(),
            secret_id=secret,
            description=description,
            policies=(Link(GLOBAL_MANAGEMENT_ID, GLOBAL_MANAGEMENT.name),),
            create_time=self._clock(),
        )

    async def bootstrap(self, secret: str = "") -> Stored[Token]:
        """The first management token; refused once bootstrapped (Consul's wording)."""
        if secret:
            try:
                uuid.UUID(secret)
            except ValueError:
                raise ValidationError(f"BootstrapSecret: {secret!r} is not a valid UUID") from None
        async with self._lock:
            done = self.store.get(ACL_META.name, BOOTSTRAP_KEY)
            if done is not None:
                raise PermissionDenied(
                    cause=f"ACL bootstrap no longer allowed (reset index: {done['Index']})"
                )
            index = self.store.index + 1
            stored = Stored(
                self._management(secret or _new_id(), "Bootstrap Token (Global Management)"),
                index,
                index,
            )
            await self.store.apply(
                [
                    put(ACL_TOKENS, stored.record.accessor_id, stored),
                    put(ACL_META, BOOTSTRAP_KEY, {"Index": index}),
                ]
            )
            return stored

    # -- resolution ------------------------------------------------------------------------

    def _refresh(self) -> None:
        index = self.store.table_index(ACL_TABLES)
        if index != self._cache_index:
            self._cache_index = index
            self._by_secret = {t.record.secret_id: t.record for t in self._tokens()}
            self._authorizers = {}

    def token(self, secret: str) -> Token:
        """The token with this SecretID (empty: anonymous); unknown or expired: AclNotFound."""
        self._refresh()
        found = self._by_secret.get(secret or ANONYMOUS.secret_id)
        return find_token(secret, [found] if found else [], self._clock())

    def authorizer(self, secret: str) -> Authorizer:
        """What the token with this SecretID may do; AclNotFound for unknown or expired."""
        token = self.token(secret)
        cached = self._authorizers.get(token.secret_id)
        if cached is None:
            cached = resolve(
                token,
                policies={p.record.id: p.record for p in self.store.records(ACL_POLICIES)},
                roles={r.record.id: r.record for r in self.store.records(ACL_ROLES)},
                datacenter=self.settings.datacenter,
                default_allow=self.settings.default_allow,
                now=self._clock(),
            )
            self._authorizers[token.secret_id] = cached
        return cached

    # -- tokens ----------------------------------------------------------------------------

    def _tokens(self) -> list[Stored[Token]]:
        return self.store.records(ACL_TOKENS)

    def tokens(self) -> list[Stored[Token]]:
        return self._tokens()

    def get_token(self, accessor_id: str) -> Stored[Token]:
        found = self.store.record(ACL_TOKENS, accessor_id)
        if found is None or found.record.expired(self._clock()):
            raise NotFound("Requested token does not exist")
        return found

    def _links(self, links: tuple[Link, ...], table: Any, what: str) -> tuple[Link, ...]:
        records = [s.record for s in self.store.records(table)]
        out: list[Link] = []
        for link in links:
            hit = next(
                (r for r in records if (r.id == link.id if link.id else r.name == link.name)),
                None,
            )
            if hit is None:
                raise ValidationError(f"cannot find {what} {link.id or link.name!r}")
            if all(o.id != hit.id for o in out):
                out.append(Link(hit.id, hit.name))
        return tuple(out)

    async def create_token(self, body: Any) -> Stored[Token]:
        token = Token.from_json(body)
        async with self._lock:
            now = self._clock()
            token = replace(
                token,
                accessor_id=token.accessor_id or _new_id(),
                secret_id=token.secret_id or _new_id(),
                policies=self._links(token.policies, ACL_POLICIES, "policy"),
                roles=self._links(token.roles, ACL_ROLES, "role"),
                create_time=None,
            ).with_expiration(now)
            if self.store.record(ACL_TOKENS, token.accessor_id) is not None:
                raise ValidationError("Invalid Token: AccessorID is already in use")
            if any(t.record.secret_id == token.secret_id for t in self._tokens()):
                raise ValidationError("Invalid Token: SecretID is already in use")
            index = self.store.index + 1
            stored = Stored(token, index, index)
            await self.store.apply([put(ACL_TOKENS, token.accessor_id, stored)])
            return stored

    async def update_token(self, accessor_id: str, body: Any) -> Stored[Token]:
        token = Token.from_json(body)
        async with self._lock:
            old = self.get_token(accessor_id)
            if token.accessor_id and token.accessor_id != accessor_id:
                raise ValidationError("Token Accessor ID in URL and payload do not match")
            if token.secret_id and token.secret_id != old.record.secret_id:
                raise ValidationError("Changing a token's SecretID is not permitted")
            if token.local != old.record.local:
                raise ValidationError("Cannot toggle local mode of a token")
            if token.expiration_ttl or (
                token.expiration_time and token.expiration_time != old.record.expiration_time
            ):
                raise ValidationError("Cannot change expiration time of a token")
            new = replace(
                token,
                accessor_id=accessor_id,
                secret_id=old.record.secret_id,
                policies=self._links(token.policies, ACL_POLICIES, "policy"),
                roles=self._links(token.roles, ACL_ROLES, "role"),
                expiration_time=old.record.expiration_time,
                create_time=old.record.create_time,
                auth_method=old.record.auth_method,
            )
            stored = Stored(new, old.create_index, self.store.index + 1)
            await self.store.apply([put(ACL_TOKENS, accessor_id, stored)])
            return stored

    async def delete_token(self, accessor_id: str, caller_secret: str) -> None:
        if accessor_id == ANONYMOUS_ACCESSOR_ID:
            raise ValidationError("Delete operation not permitted on the anonymous token")
        async with self._lock:
            old = self.store.record(ACL_TOKENS, accessor_id)
            if old is None:
                raise NotFound("Cannot find token to delete")
            if caller_secret and old.record.secret_id == caller_secret:
                raise ValidationError(
                    "Deletion of the request's authorization token is not permitted"
                )
            await self.store.apply([Delete(ACL_TOKENS.name, accessor_id)])

    # -- policies and roles ----------------------------------------------------------------

    def policies(self) -> list[Stored[Policy]]:
        return self.store.records(ACL_POLICIES)

    def get_policy(self, policy_id: str = "", name: str = "") -> Stored[Policy]:
        for stored in self.policies():
            if (stored.record.id == policy_id) if policy_id else (stored.record.name == name):
                return stored
        raise NotFound("Requested policy does not exist")

    async def write_policy(self, body: Any, policy_id: str = "") -> Stored[Policy]:
        policy = Policy.from_json(body)
        if policy_id and policy.id and policy.id != policy_id:
            raise ValidationError("Policy ID in URL and payload do not match")
        if not policy_id and policy.id:
            raise ValidationError("Cannot specify the ID when creating a new policy")
        async with self._lock:
            old = None
            if policy_id:
                old = self.get_policy(policy_id)
            policy = replace(policy, id=policy_id or _new_id())
            if any(
                p.record.name == policy.name and p.record.id != policy.id for p in self.policies()
            ):
                raise ValidationError(
                    f"Invalid Policy: A Policy with Name {policy.name!r} already exists"
                )
            if policy.id == GLOBAL_MANAGEMENT_ID:
                if policy.rules != GLOBAL_MANAGEMENT.rules:
                    raise ValidationError(
                        "Changing the Rules for the builtin global-management policy is "
                        "not permitted"
                    )
                if policy.datacenters:
                    raise ValidationError(
                        "Changing the Datacenters of the builtin global-management policy "
                        "is not permitted"
                    )
            index = self.store.index + 1
            stored = Stored(policy, old.create_index if old else index, index)
            await self.store.apply([put(ACL_POLICIES, policy.id, stored)])
            return stored

    async def delete_policy(self, policy_id: str) -> None:
        if policy_id == GLOBAL_MANAGEMENT_ID:
            raise ValidationError(
                "Delete operation not permitted on the builtin global-management policy"
            )
        async with self._lock:
            if self.store.record(ACL_POLICIES, policy_id) is None:
                raise NotFound("Cannot find policy to delete")
            await self.store.apply([Delete(ACL_POLICIES.name, policy_id)])

    def roles(self) -> list[Stored[Role]]:
        return self.store.records(ACL_ROLES)

    def get_role(self, role_id: str = "", name: str = "") -> Stored[Role]:
        for stored in self.roles():
            if (stored.record.id == role_id) if role_id else (stored.record.name == name):
                return stored
        raise NotFound("Requested role does not exist")

    async def write_role(self, body: Any, role_id: str = "") -> Stored[Role]:
        role = Role.from_json(body)
        if role_id and role.id and role.id != role_id:
            raise ValidationError("Role ID in URL and payload do not match")
        async with self._lock:
            old = self.get_role(role_id) if role_id else None
            role = replace(
                role,
                id=role_id or _new_id(),
                policies=self._links(role.policies, ACL_POLICIES, "policy"),
            )
            if any(r.record.name == role.name and r.record.id != role.id for r in self.roles()):
                raise ValidationError(
                    f"Invalid Role: A Role with Name {role.name!r} already exists"
                )
            index = self.store.index + 1
            stored = Stored(role, old.create_index if old else index, index)
            await self.store.apply([put(ACL_ROLES, role.id, stored)])
            return stored

    async def delete_role(self, role_id: str) -> None:
        async with self._lock:
            if self.store.record(ACL_ROLES, role_id) is None:
                raise NotFound("Cannot find role to delete")
            await self.store.apply([Delete(ACL_ROLES.name, role_id)])
