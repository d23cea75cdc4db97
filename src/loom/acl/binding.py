"""Binding rules: which identities a login gets, from the claims its auth method verified.

A binding rule has a ``Selector`` (``loom.acl.selector``: the go-bexpr subset Consul documents
for binding rules), a ``BindType``
(``service``, ``node``, ``role``, ``policy``) and a ``BindName`` template whose ``${var}``
references are filled from the login's variables, lowercased, as Consul's HIL interpolation
does. A computed name is checked the strict way for its type (a service name must be a valid
service identity), so a claim cannot smuggle ``web/../db`` or ``Web`` into an identity.

Variables: the Kubernetes method offers ``serviceaccount.namespace``, ``serviceaccount.name``
and ``serviceaccount.uid``; the JWT method ``value.<name>`` for each claim mapping and
``list.<name>`` for each list claim mapping. A selector naming any other variable is refused
when the rule is written; at login a selector that cannot be evaluated does not match.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from loom.acl.errors import AclError, PermissionDenied
from loom.acl.identities import (
    Link,
    NodeIdentity,
    ServiceIdentity,
    valid_identity_name,
    valid_policy_name,
    valid_role_name,
)
from loom.acl.records import AuthMethod, Token
from loom.acl.selector import SelectorError, Vars, matches, parse_selector, selector_fields
from loom.acl.wire import Fields

LOGIN_PREFIX = "token created via login"
"""How a login token's ``Description`` starts (Consul's), before ``: {meta as JSON}``."""


class BindNameError(AclError):
    """A bind name template is malformed, or computes a name invalid for its bind type."""


# -- bind names -------------------------------------------------------------------------------

_HIL = re.compile(r"\$\$\{|\$\{([^}]*)\}|\$\{")


def interpolate(template: str, vars: Mapping[str, str]) -> str:
    """``${name}`` replaced by the lowercased variable; ``$${`` is a literal ``${``."""

    def one(m: re.Match[str]) -> str:
        if m.group(0) == "$${":
            return "${"
        if m.group(1) is None:
            raise BindNameError(f"bind name {template!r}: unterminated '${{'")
        name = m.group(1).strip()
        if name not in vars:
            raise BindNameError(f"bind name {template!r}: unknown variable accessed: {name}")
        return vars[name].lower()

    return _HIL.sub(one, template)


BIND_TYPES = ("service", "node", "role", "policy")
_VALID = {
    "service": valid_identity_name,
    "node": valid_identity_name,
    "role": valid_role_name,
    "policy": valid_policy_name,
}


def compute_bind_name(bind_type: str, template: str, vars: Mapping[str, str]) -> str:
    name = interpolate(template, vars)
    if not _VALID[bind_type](name):
        raise BindNameError(f"computed bind name {name!r} is an invalid bind name for {bind_type}")
    return name


@dataclass(frozen=True)
class BindingRule:
    id: str
    auth_method: str
    bind_type: str
    bind_name: str
    selector: str = ""
    description: str = ""

    @classmethod
    def from_json(cls, doc: object, available: Iterable[str] | None = None) -> BindingRule:
        """Read a rule; with ``available`` (the method's variables) check what it refers to."""
        f = Fields(
            "BindingRule",
            doc,
            ignored=frozenset({"CreateIndex", "ModifyIndex", "Namespace", "Partition"}),
        )
        rule = cls(
            f.text("ID"),
            f.text("AuthMethod"),
            f.text("BindType"),
            f.text("BindName"),
            f.text("Selector"),
            f.text("Description"),
        )
        if f.mapping("BindVars"):
            raise f.error("BindVars", "templated policies are not supported")
        f.done()
        if not rule.auth_method:
            raise f.error("AuthMethod", "Invalid Binding Rule: no AuthMethod is set")
        if rule.bind_type not in BIND_TYPES:
            raise f.error("BindType", f"Invalid Binding Rule: unknown BindType {rule.bind_type!r}")
        if not rule.bind_name:
            raise f.error("BindName", "Invalid Binding Rule: no BindName is set")
        try:
            expr = parse_selector(rule.selector)
        except SelectorError as exc:
            raise f.error("Selector", str(exc)) from exc
        if available is not None:
            known = set(available)
            for name in sorted(selector_fields(expr) - known):
                raise f.error("Selector", f"unknown selector {name!r}")
            try:
                compute_bind_name(rule.bind_type, rule.bind_name, dict.fromkeys(known, "fake"))
            except BindNameError as exc:
                raise f.error("BindName", str(exc)) from exc
        return rule

    def to_json(self) -> dict[str, str]:
        return {
            "ID": self.id,
            "Description": self.description,
            "AuthMethod": self.auth_method,
            "Selector": self.selector,
            "BindType": self.bind_type,
            "BindName": self.bind_name,
        }


@dataclass(frozen=True)
class Bindings:
    """What a login gets: identities to put on the token, and roles/policies by name."""

    service_identities: tuple[ServiceIdentity, ...] = ()
    node_identities: tuple[NodeIdentity, ...] = ()
    roles: tuple[str, ...] = ()
    policies: tuple[str, ...] = ()
    rules: tuple[str, ...] = field(default=(), compare=False)  # IDs of the rules that matched

    def empty(self) -> bool:
        return not (self.service_identities or self.node_identities or self.roles or self.policies)


def bind(
    rules: Iterable[BindingRule],
    *,
    method: str,
    vars: Vars,
    datacenter: str,
    known_roles: Iterable[str] = (),
    known_policies: Iterable[str] = (),
) -> Bindings:
    """Consul's binder: every matching rule of ``method`` adds its computed identity.

    A role or policy that does not exist is skipped; a computed name invalid for its type is
    an error (``BindNameError``). A login that binds nothing is refused with Consul's
    ``Permission denied``, so an unmatched workload never holds an empty token.
    """
    flat = {k: v for k, v in vars.items() if isinstance(v, str)}
    roles, policies = set(known_roles), set(known_policies)
    services: list[ServiceIdentity] = []
    nodes: list[NodeIdentity] = []
    bound_roles: list[str] = []
    bound_policies: list[str] = []
    matched: list[str] = []
    for rule in rules:
        if rule.auth_method != method:
            continue
        try:
            expr = parse_selector(rule.selector)
        except SelectorError:
            continue
        if not matches(expr, vars):
            continue
        name = compute_bind_name(rule.bind_type, rule.bind_name, flat)
        matched.append(rule.id)
        if rule.bind_type == "service" and ServiceIdentity(name) not in services:
            services.append(ServiceIdentity(name))
        elif rule.bind_type == "node" and NodeIdentity(name, datacenter) not in nodes:
            nodes.append(NodeIdentity(name, datacenter))
        elif rule.bind_type == "role" and name in roles and name not in bound_roles:
            bound_roles.append(name)
        elif rule.bind_type == "policy" and name in policies and name not in bound_policies:
            bound_policies.append(name)
    result = Bindings(
        tuple(services), tuple(nodes), tuple(bound_roles), tuple(bound_policies), tuple(matched)
    )
    if result.empty():
        raise PermissionDenied()
    return result


def login_token(
    bindings: Bindings,
    method: AuthMethod,
    *,
    accessor_id: str,
    secret_id: str,
    now: dt.datetime,
    meta: Mapping[str, str] | None = None,
) -> Token:
    """The token a successful login creates, shaped as Consul's (``token created via login``).

    It carries exactly the bound identities, roles and policies; it is local unless the
    method's ``TokenLocality`` is ``global``; it expires after the method's ``MaxTokenTTL``.
    """
    description = LOGIN_PREFIX
    if meta:
        description += ": " + go_json(meta)
    expires = now + method.max_token_ttl if method.max_token_ttl else None
    return Token(
        accessor_id=accessor_id,
        secret_id=secret_id,
        description=description,
        policies=tuple(Link(name=name) for name in bindings.policies),
        roles=tuple(Link(name=name) for name in bindings.roles),
        service_identities=bindings.service_identities,
        node_identities=bindings.node_identities,
        local=method.token_locality != "global",
        expiration_time=expires,
        create_time=now,
        auth_method=method.name,
    )


_GO_ESCAPES = {
    "<": "\\u003c",
    ">": "\\u003e",
    "&": "\\u0026",
    "\u2028": "\\u2028",
    "\u2029": "\\u2029",
}


def go_json(meta: Mapping[str, str]) -> str:
    """``meta`` as Go's ``json.Marshal`` writes a ``map[string]string`` (what Consul puts in
    the description): keys sorted, no spaces, UTF-8 kept, ``<``, ``>``, ``&``, U+2028 and
    U+2029 escaped."""
    text = json.dumps(dict(meta), sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return "".join(_GO_ESCAPES.get(c, c) for c in text)


def login_meta(description: str) -> dict[str, str]:
    """The ``Meta`` a login token was made with, read back from its ``Description`` (how
    consul-k8s finds a pod's tokens); ``{}`` for any other description."""
    head, sep, tail = description.partition(": ")
    if head != LOGIN_PREFIX or not sep:
        return {}
    try:
        meta = json.loads(tail)
    except ValueError:
        return {}
    if not isinstance(meta, dict):
        return {}
    return {k: v for k, v in meta.items() if isinstance(v, str)}


__all__ = [
    "LOGIN_PREFIX",
    "BindNameError",
    "BindingRule",
    "Bindings",
    "bind",
    "compute_bind_name",
    "interpolate",
    "login_meta",
    "login_token",
]
