"""Auth methods, binding rules, login and logout as a server service, kept in the store.

The pure core decides (``loom.acl.kubernetes`` and ``loom.acl.jwt`` verify a bearer token
into binding variables, ``loom.acl.binding`` turns variables and rules into identities and a
token); this module keeps the records (``acl_auth_methods``, ``acl_binding_rules``, Consul's
JSON plus indexes, as ``control/acl.py`` keeps tokens) and does the two pieces of I/O a login
needs: the Kubernetes TokenReview and ServiceAccount read (``control/tokenreview.py``, behind
a small protocol) and reading a ``jwt`` method's JWKS file. Consul's behaviour, facts from its
``acl_endpoint.go`` and ``auth/login.go``:

- writing a method checks its ``Config`` for its type (a bad one is 400 naming the field);
  its ``Type`` cannot change; deleting it deletes its binding rules and the tokens made by it;
- a binding rule names an existing method, and may refer only to the variables that method
  offers (``serviceaccount.*``; ``value.*``/``list.*`` of the jwt claim mappings);
- login needs no token; an unknown method is ``ACL not found`` (403, as Consul answers); a
  bearer token the method does not vouch for, and a login no rule binds, are
  ``Permission denied`` (403) and write nothing (Consul answers the first with a 500
  ``lookup failed``; here a refusal of the caller is a 403, a fault of the server a 500); a
  success writes one local token, its ``Description`` ``token created via login:
  {"pod":"ns/name"}`` from ``Meta``;
- logout deletes the request's own token, only if a login made it (else 403).

A ``jwt`` method's keys may also come from Consul's ``JWKSURL`` or ``OIDCDiscoveryURL``
(fetched and cached by ``control/jwks.py``; a token no cached key verifies makes one more
fetch, so keys rotated at the source are picked up), or, a Loom extension, ``JWKSFile``: a
JWKS document on the server's disk, read at every login (rotating it needs no API call).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any, Protocol

from loom.acl.binding import BindingRule, bind, login_token
from loom.acl.errors import AclError, AclNotFound, PermissionDenied
from loom.acl.identities import Link
from loom.acl.jwt import (
    JwtAlgorithmRefused,
    JwtConfig,
    JwtConfigError,
    JwtError,
    JwtSignatureInvalid,
    PublicKey,
    load_jwks,
    verify,
)
from loom.acl.jwtremote import RemoteKeys, check_issuer, split_remote
from loom.acl.kubernetes import VARIABLES as KUBERNETES_VARIABLES
from loom.acl.kubernetes import (
    KubernetesConfig,
    KubernetesLoginRefused,
    login_variables,
    with_service_name,
)
from loom.acl.records import TOKEN_MAX_TTL, TOKEN_MIN_TTL, AuthMethod, Token
from loom.acl.selector import Vars
from loom.acl.stored import Stored
from loom.acl.wire import Fields
from loom.control.errors import ControlError, NotFound
from loom.control.jwks import FetchedKeys, RemoteKeyCache
from loom.control.tokenreview import KubernetesApi
from loom.domain.fields import ValidationError
from loom.store import Delete, Store, put
from loom.store.tables import (
    ACL_AUTH_METHODS,
    ACL_BINDING_RULES,
    ACL_POLICIES,
    ACL_ROLES,
    ACL_TOKENS,
)


class KubernetesCalls(Protocol):
    """What a ``kubernetes`` login asks the API server (``tokenreview.KubernetesApi``)."""

    async def review(self, config: KubernetesConfig, pod_jwt: str) -> Mapping[str, Any]: ...

    async def service_account(
        self, config: KubernetesConfig, namespace: str, name: str
    ) -> Mapping[str, Any]: ...


JWKS_FILE = "JWKSFile"
MAX_BEARER_BYTES = 16 * 1024


class AuthMethodBroken(ControlError):
    """A stored method cannot be used (its JWKS file went missing): the operator's to fix."""


def jwt_config(config: Mapping[str, Any], fetched: Sequence[PublicKey] = ()) -> JwtConfig:
    """A ``jwt`` method's config, with the keys of its ``JWKSFile`` when it names one, or
    ``fetched`` from its ``JWKSURL`` / OIDC provider (none yet when only checking it)."""
    remote, doc = split_remote(config)
    path = next((k for k in doc if k.lower() == JWKS_FILE.lower()), None)
    keys: tuple[PublicKey, ...] = tuple(fetched)
    if path is not None:
        name = doc.pop(path)
        if not isinstance(name, str) or not name:
            raise JwtConfigError(f"AuthMethod.Config: field '{JWKS_FILE}': must be a file path")
        try:
            text = Path(name).read_text()
        except OSError as exc:
            raise JwtConfigError(
                f"AuthMethod.Config: field '{JWKS_FILE}': cannot read {name}: {exc.strerror}"
            ) from None
        keys = load_jwks(text)
    return JwtConfig.from_json(doc, keys, remote=remote is not None)


def method_variables(method: AuthMethod) -> list[str]:
    """The binding-rule variables a login through ``method`` offers (config checked)."""
    if method.type == "kubernetes":
        KubernetesConfig.from_json(method.config)
        return list(KUBERNETES_VARIABLES)
    return jwt_config(method.config).variables()


def _new_id() -> str:
    return str(uuid.uuid4())


class Logins:
    def __init__(
        self,
        store: Store,
        lock: asyncio.Lock,
        clock: Callable[[], dt.datetime],
        *,
        datacenter: str,
        kubernetes: KubernetesCalls | None = None,
    ) -> None:
        self.store = store
        self._lock = lock
        self._clock = clock
        self.datacenter = datacenter
        self.kubernetes: KubernetesCalls = kubernetes or KubernetesApi()
        self.remote_keys = RemoteKeyCache()
        """The keys of ``jwt`` methods with a ``JWKSURL`` or ``OIDCDiscoveryURL``."""

    # -- auth methods ------------------------------------------------------------------------

    def methods(self) -> list[Stored[AuthMethod]]:
        return self.store.records(ACL_AUTH_METHODS)

    def get_method(self, name: str) -> Stored[AuthMethod]:
        found = self.store.record(ACL_AUTH_METHODS, name)
        if found is None:
            raise NotFound("Requested auth method does not exist")
        return found

    async def write_method(self, body: Any, name: str = "") -> Stored[AuthMethod]:
        if name and isinstance(body, dict) and not any(k.lower() == "name" for k in body):
            body = {**body, "Name": name}
        method = AuthMethod.from_json(body)
        if name and method.name != name:
            raise ValidationError("AuthMethod Name in URL and payload do not match")
        ttl = method.max_token_ttl
        if ttl and not TOKEN_MIN_TTL <= ttl <= TOKEN_MAX_TTL:
            raise ValidationError(
                f"MaxTokenTTL {ttl} must be between {TOKEN_MIN_TTL} and {TOKEN_MAX_TTL}"
            )
        method_variables(method)  # a Config that does not fit its type: 400 naming the field
        async with self._lock:
            old = self.store.record(ACL_AUTH_METHODS, method.name)
            if old is not None and old.record.type != method.type:
                raise ValidationError("the Type field is immutable")
            index = self.store.index + 1
            stored = Stored(method, old.create_index if old else index, index)
            await self.store.apply([put(ACL_AUTH_METHODS, method.name, stored)])
            return stored

    async def delete_method(self, name: str) -> None:
        """The method, its binding rules and every token a login through it made."""
        async with self._lock:
            if self.store.record(ACL_AUTH_METHODS, name) is None:
                raise NotFound("Cannot find auth method to delete")
            ops: list[Any] = [Delete(ACL_AUTH_METHODS.name, name)]
            ops += [
                Delete(ACL_BINDING_RULES.name, r.record.id)
                for r in self.rules()
                if r.record.auth_method == name
            ]
            ops += [
                Delete(ACL_TOKENS.name, t.record.accessor_id)
                for t in self.store.records(ACL_TOKENS)
                if t.record.auth_method == name
            ]
            await self.store.apply(ops)

    # -- binding rules -----------------------------------------------------------------------

    def rules(self, method: str = "") -> list[Stored[BindingRule]]:
        found = self.store.records(ACL_BINDING_RULES)
        return [r for r in found if not method or r.record.auth_method == method]

    def get_rule(self, rule_id: str) -> Stored[BindingRule]:
        found = self.store.record(ACL_BINDING_RULES, rule_id)
        if found is None:
            raise NotFound("Requested binding rule does not exist")
        return found

    async def write_rule(self, body: Any, rule_id: str = "") -> Stored[BindingRule]:
        rule = BindingRule.from_json(body)
        if rule.id and rule.id != rule_id:
            raise ValidationError("BindingRule ID in URL and payload do not match")
        async with self._lock:
            old = None
            if rule_id:
                old = self.store.record(ACL_BINDING_RULES, rule_id)
                if old is None:
                    raise ValidationError(f"Cannot find binding rule {rule_id}")
                if old.record.auth_method != rule.auth_method:
                    raise ValidationError(
                        "Invalid Binding Rule: Binding Rule cannot be moved to another auth method"
                    )
            method = self.store.record(ACL_AUTH_METHODS, rule.auth_method)
            if method is None:
                raise ValidationError(
                    f"Invalid Binding Rule: auth method {rule.auth_method!r} not found"
                )
            # Checked again with the method's variables: unknown selectors, bad bind names.
            checked = BindingRule.from_json(rule.to_json(), method_variables(method.record))
            checked = replace(checked, id=rule_id or _new_id())
            index = self.store.index + 1
            stored = Stored(checked, old.create_index if old else index, index)
            await self.store.apply([put(ACL_BINDING_RULES, checked.id, stored)])
            return stored

    async def delete_rule(self, rule_id: str) -> None:
        async with self._lock:
            if self.store.record(ACL_BINDING_RULES, rule_id) is None:
                raise NotFound("Cannot find binding rule to delete")
            await self.store.apply([Delete(ACL_BINDING_RULES.name, rule_id)])

    # -- login and logout --------------------------------------------------------------------

    async def verified(self, method: AuthMethod, bearer: str) -> Vars:
        """The binding variables ``bearer`` proves, or ``Permission denied`` saying why not."""
        if not bearer or len(bearer) > MAX_BEARER_BYTES:
            raise PermissionDenied(cause="invalid bearer token: empty or too large")
        if method.type == "kubernetes":
            try:
                config = KubernetesConfig.from_json(method.config)
            except AclError as exc:
                raise AuthMethodBroken(f"auth method {method.name!r}: {exc}") from exc
            review = await self.kubernetes.review(config, bearer)
            try:
                vars = login_variables(review)
            except KubernetesLoginRefused as exc:
                raise PermissionDenied(cause=f"invalid bearer token: {exc}") from exc
            account = await self.kubernetes.service_account(
                config, vars["serviceaccount.namespace"], vars["serviceaccount.name"]
            )
            try:
                return with_service_name(vars, account)
            except KubernetesLoginRefused as exc:
                raise PermissionDenied(cause=str(exc)) from exc
        try:
            remote, _ = split_remote(method.config)
            jwt = jwt_config(method.config)
        except AclError as exc:
            raise AuthMethodBroken(f"auth method {method.name!r}: {exc}") from exc
        try:
            if remote is not None:
                return await self._verify_remote(method, remote, bearer)
            return verify(bearer, jwt, self._clock()).vars
        except JwtError as exc:
            raise PermissionDenied(cause=f"invalid bearer token: {exc}") from exc

    async def _verify_remote(self, method: AuthMethod, remote: RemoteKeys, bearer: str) -> Vars:
        """Verify with the keys fetched from the method's URL; when none verifies the token,
        fetch once more (the keys may have been rotated) and try again."""
        fetched = await self.remote_keys.keys(remote)
        try:
            return self._verify_fetched(method, fetched, bearer)
        except (JwtSignatureInvalid, JwtAlgorithmRefused):
            again = await self.remote_keys.keys(remote, stale=fetched)
            if again is fetched:
                raise
            return self._verify_fetched(method, again, bearer)

    def _verify_fetched(self, method: AuthMethod, fetched: FetchedKeys, bearer: str) -> Vars:
        config = jwt_config(method.config, fetched.keys)
        verified = verify(bearer, config, self._clock())
        if fetched.issuer:
            check_issuer(verified.claims, fetched.issuer)
        return verified.vars

    async def login(self, body: Any) -> Stored[Token]:
        f = Fields("Login", body)
        name, bearer, meta = f.text("AuthMethod"), f.text("BearerToken"), f.mapping("Meta")
        f.done()
        if not all(isinstance(v, str) for v in meta.values()):
            raise ValidationError("Meta: values must be strings")
        found = self.store.record(ACL_AUTH_METHODS, name)
        if found is None:
            raise AclNotFound(f'auth method "{name}" not found')
        method = found.record
        vars = await self.verified(method, bearer)  # before the lock: it may take a while
        async with self._lock:
            found = self.store.record(ACL_AUTH_METHODS, name)
            if found is None or found.record != method:
                raise PermissionDenied(cause="the auth method changed during the login")
            roles = {r.record.name: r.record.id for r in self.store.records(ACL_ROLES)}
            policies = {p.record.name: p.record.id for p in self.store.records(ACL_POLICIES)}
            bindings = bind(
                [r.record for r in self.rules(name)],
                method=name,
                vars=vars,
                datacenter=self.datacenter,
                known_roles=roles,
                known_policies=policies,
            )
            token = login_token(
                bindings,
                method,
                accessor_id=_new_id(),
                secret_id=_new_id(),
                now=self._clock(),
                meta=meta,
            )
            token = replace(
                token,
                roles=tuple(Link(roles[link.name], link.name) for link in token.roles),
                policies=tuple(Link(policies[link.name], link.name) for link in token.policies),
            )
            index = self.store.index + 1
            stored = Stored(token, index, index)
            await self.store.apply([put(ACL_TOKENS, token.accessor_id, stored)])
            return stored

    async def logout(self, secret: str) -> None:
        """Delete the login token with this SecretID; any other token is refused."""
        async with self._lock:
            found = next(
                (t for t in self.store.records(ACL_TOKENS) if t.record.secret_id == secret), None
            )
            if found is None:
                raise AclNotFound()
            if not found.record.auth_method:
                raise PermissionDenied()
            await self.store.apply([Delete(ACL_TOKENS.name, found.record.accessor_id)])


__all__ = ["AuthMethodBroken", "Logins", "jwt_config", "method_variables"]
