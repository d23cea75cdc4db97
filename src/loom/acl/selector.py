"""Binding-rule selectors: the go-bexpr subset Consul documents for binding rules.

``==``, ``!=``, ``in``, ``not in``, ``contains``, ``not contains``, ``is empty``,
``is not empty``, ``and``, ``or``, ``not`` and parentheses, over the variables a login offers
(``serviceaccount.name``, ``value.x``, ``list.groups``...). Values are double-quoted strings
(with backslash escapes), backquoted raw strings, or bare words, as bexpr accepts. ``in``
and ``contains`` test membership in a list variable and substrings in a string one.
``str(expr)`` prints an expression that parses back to the same expression; a selector that
cannot be evaluated against a login (unknown variable, ``==`` on a list) does not match it.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

from loom.acl.errors import AclError


class SelectorError(AclError):
    """A selector does not parse, or names a variable its auth method does not offer."""


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
