"""Binding rules: which identities a login gets, from the claims its auth method verified.

A binding rule has a ``Selector`` (the subset of HashiCorp's go-bexpr Consul documents for
binding rules: ``==``, ``!=``, ``in``, ``not in``, ``contains``, ``not contains``,
``is empty``, ``is not empty``, ``and``, ``or``, ``not`` and parentheses), a ``BindType``
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

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from loom.acl.errors import AclError, PermissionDenied
from loom.acl.records import (
    NodeIdentity,
    ServiceIdentity,
    valid_identity_name,
    valid_policy_name,
    valid_role_name,
)
from loom.acl.wire import Fields, RecordError


class SelectorError(AclError):
    """A selector does not parse, or names a variable its auth method does not offer."""


class BindNameError(AclError):
    """A bind name template is malformed, or computes a name invalid for its bind type."""


Vars = Mapping[str, "str | tuple[str, ...]"]


@dataclass(frozen=True)
class Match:
    """``selector <op> value`` (``==``, ``!=``, ``contains``, ``in``, ``is empty``...)."""

    selector: str
    op: str
    value: str = ""

    def evaluate(self, vars: Vars) -> bool:
        if self.selector not in vars:
            raise SelectorError(f"unknown selector {self.selector!r}")
        got = vars[self.selector]
        if self.op in ("==", "!="):
            if not isinstance(got, str):
                raise SelectorError(f"{self.selector} is a list; use 'in' or 'contains'")
            return (got == self.value) == (self.op == "==")
        if self.op in ("in", "not in", "contains", "not contains"):
            found = self.value in got
            return found == (not self.op.startswith("not"))
        empty = len(got) == 0
        return empty == (self.op == "is empty")

    def __str__(self) -> str:
        value = _quote(self.value)
        if self.op in ("in", "not in"):
            return f"{value} {self.op} {self.selector}"
        if self.op in ("is empty", "is not empty"):
            return f"{self.selector} {self.op}"
        return f"{self.selector} {self.op} {value}"


@dataclass(frozen=True)
class Not:
    operand: Expr

    def evaluate(self, vars: Vars) -> bool:
        return not self.operand.evaluate(vars)

    def __str__(self) -> str:
        return f"not {_wrap(self.operand, Not)}"


@dataclass(frozen=True)
class BoolOp:
    op: str  # "and" | "or"
    left: Expr
    right: Expr

    def evaluate(self, vars: Vars) -> bool:
        if self.op == "and":
            return self.left.evaluate(vars) and self.right.evaluate(vars)
        return self.left.evaluate(vars) or self.right.evaluate(vars)

    def __str__(self) -> str:
        return f"{_wrap(self.left, self)} {self.op} {_wrap(self.right, self)}"


Expr = Match | Not | BoolOp


def _wrap(expr: Expr, parent: object) -> str:
    """Parenthesise a sub-expression unless it binds tighter than its parent."""
    if isinstance(expr, Match | Not):
        return str(expr)
    if isinstance(parent, BoolOp) and parent.op == "or" and expr.op == "and":
        return str(expr)
    return f"({expr})"


def _quote(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


_TOKEN = re.compile(
    r"""\s*(?:(?P<str>"(?:[^"\\]|\\.)*")|(?P<raw>`[^`]*`)|(?P<op>==|!=|\(|\))"""
    r"""|(?P<word>[A-Za-z0-9_][A-Za-z0-9_.\-/:]*))"""
)
_KEYWORDS = {"and", "or", "not", "in", "contains", "is", "empty"}


def _tokens(text: str) -> list[tuple[str, str, int]]:
    out: list[tuple[str, str, int]] = []
    at = 0
    while at < len(text):
        if text[at:].strip() == "":
            break
        m = _TOKEN.match(text, at)
        if m is None or m.end() == at:
            col = len(text) - len(text[at:].lstrip()) + 1
            raise SelectorError(f"selector: column {col}: unexpected {text[col - 1]!r}")
        kind = m.lastgroup or ""
        raw = m.group(kind)
        start = m.start(kind) + 1
        if kind == "str":
            value = re.sub(r"\\(.)", r"\1", raw[1:-1])
            out.append(("value", value, start))
        elif kind == "raw":
            out.append(("value", raw[1:-1], start))
        elif kind == "op":
            out.append((raw, raw, start))
        else:
            out.append(("kw" if raw in _KEYWORDS else "word", raw, start))
        at = m.end()
    out.append(("eof", "", len(text) + 1))
    return out


class _SelectorParser:
    def __init__(self, text: str) -> None:
        self.toks = _tokens(text)
        self.at = 0

    def peek(self, ahead: int = 0) -> tuple[str, str, int]:
        return self.toks[min(self.at + ahead, len(self.toks) - 1)]

    def take(self) -> tuple[str, str, int]:
        tok = self.toks[self.at]
        self.at += 1
        return tok

    def fail(self, want: str) -> SelectorError:
        kind, text, col = self.peek()
        got = "end of selector" if kind == "eof" else repr(text)
        return SelectorError(f"selector: column {col}: expected {want}, found {got}")

    def keyword(self, word: str) -> bool:
        kind, text, _ = self.peek()
        if kind == "kw" and text == word:
            self.take()
            return True
        return False

    def parse(self) -> Expr:
        expr = self.or_expr(0)
        if self.peek()[0] != "eof":
            raise self.fail("'and', 'or' or the end")
        return expr

    def or_expr(self, depth: int) -> Expr:
        expr = self.and_expr(depth)
        while self.keyword("or"):
            expr = BoolOp("or", expr, self.and_expr(depth))
        return expr

    def and_expr(self, depth: int) -> Expr:
        expr = self.not_expr(depth)
        while self.keyword("and"):
            expr = BoolOp("and", expr, self.not_expr(depth))
        return expr

    def not_expr(self, depth: int) -> Expr:
        if depth > 64:
            raise self.fail("a shallower expression")
        if self.keyword("not"):
            return Not(self.not_expr(depth + 1))
        if self.peek()[0] == "(":
            self.take()
            expr = self.or_expr(depth + 1)
            if self.take()[0] != ")":
                self.at -= 1
                raise self.fail("')'")
            return expr
        return self.match()

    def match(self) -> Expr:
        kind, text, _ = self.peek()
        if kind not in ("word", "value"):
            raise self.fail("a selector or a value")
        start = self.at
        self.take()
        nxt_kind, nxt, _ = self.peek()
        if nxt_kind in ("==", "!="):
            self.take()
            return Match(self._selector(kind, text, start), nxt, self.value())
        if self.keyword("in"):
            return Match(self.selector(), "in", text)
        if nxt_kind == "kw" and nxt == "not" and self.peek(1)[1] in ("in", "contains"):
            self.take()
            op = self.take()[1]
            if op == "in":
                return Match(self.selector(), "not in", text)
            return Match(self._selector(kind, text, start), "not contains", self.value())
        if self.keyword("contains"):
            return Match(self._selector(kind, text, start), "contains", self.value())
        if self.keyword("is"):
            negated = self.keyword("not")
            if not self.keyword("empty"):
                raise self.fail("'empty'")
            return Match(
                self._selector(kind, text, start), "is not empty" if negated else "is empty"
            )
        raise self.fail("an operator (==, !=, in, contains, is empty)")

    def _selector(self, kind: str, text: str, start: int) -> str:
        if kind != "word":
            self.at = start
            raise self.fail("a selector such as serviceaccount.name")
        return text

    def selector(self) -> str:
        kind, text, _ = self.peek()
        if kind != "word":
            raise self.fail("a selector such as serviceaccount.name")
        self.take()
        return text

    def value(self) -> str:
        kind, text, _ = self.peek()
        if kind not in ("word", "value"):
            raise self.fail("a value")
        self.take()
        return text


def parse_selector(text: str) -> Expr | None:
    """The selector's expression; ``None`` for an empty selector (which matches every login)."""
    if not text.strip():
        return None
    return _SelectorParser(text).parse()


def selector_fields(expr: Expr | None) -> set[str]:
    if expr is None:
        return set()
    if isinstance(expr, Match):
        return {expr.selector}
    if isinstance(expr, Not):
        return selector_fields(expr.operand)
    return selector_fields(expr.left) | selector_fields(expr.right)


def matches(expr: Expr | None, vars: Vars) -> bool:
    """Does a login with these variables match? An unevaluable selector does not match."""
    if expr is None:
        return True
    try:
        return expr.evaluate(vars)
    except SelectorError:
        return False


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


__all__ = [
    "BindNameError",
    "BindingRule",
    "Bindings",
    "RecordError",
    "SelectorError",
    "bind",
    "compute_bind_name",
    "interpolate",
    "matches",
    "parse_selector",
    "selector_fields",
]
