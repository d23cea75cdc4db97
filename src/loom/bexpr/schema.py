"""What an expression runs against: the data's shape, checking against it, and evaluating.

go-bexpr (the v0.1 line Consul builds on) derives from the Go type being filtered which
selectors exist and which operators each supports; here the same is written as a ``Field``
tree (``Struct``, ``MapOf``, ``ListOf``, ``Scalar``) over the JSON a Loom endpoint answers,
so selectors are the response's own field names (``Service.Tags``, ``Checks.Status``,
``ServiceMeta.env``). ``compile_filter`` checks an expression once, as bexpr's validation
does, and refuses with a ``FilterError``:

- a selector the shape does not have (``Selector "Service.Tagz" is not valid``);
- an operator its type does not support: strings take ``==``/``!=``/``in``/``matches``
  (``in`` a string is a substring test), numbers and bools ``==``/``!=``, lists of scalars
  ``in``/``is empty`` (membership), other lists ``is empty``, maps ``in`` (a key) and
  ``is empty``, structs nothing;
- a value that does not convert to the field's type (``Port == web``; bools and integers
  as Go's ``strconv`` reads them: ``true``/``T``/``1``, ``0x1F``), or a bad regex.

Evaluation follows bexpr: a selector through a list matches when any element matches (so
``Checks.Status != passing`` holds when some check is not passing); a field a document lacks
is its zero value (``""``, ``0``, ``false``, empty); a map key that is absent makes ``==``,
``in``, ``is not empty`` and ``matches`` false and their negations true.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

from loom.bexpr.errors import FilterError
from loom.bexpr.grammar import Expr, Limits, Match, Not, parse
from loom.bexpr.nfa import Regex
from loom.bexpr.regex import compile_regex

T = TypeVar("T")


@dataclass(frozen=True)
class Scalar:
    kind: str  # "string" | "int" | "float" | "bool" | "opaque" (any JSON, no operators)


@dataclass(frozen=True)
class ListOf:
    item: Field


@dataclass(frozen=True)
class MapOf:
    """A map with string keys (``Meta``, ``TaggedAddresses``); ``value`` is every value's shape."""

    value: Field


@dataclass(frozen=True, eq=False)
class Struct:
    fields: Mapping[str, Field]


Field = Scalar | ListOf | MapOf | Struct
STRING, INT, FLOAT, BOOL = Scalar("string"), Scalar("int"), Scalar("float"), Scalar("bool")

_STRING_OPS = ("==", "!=", "in", "not in", "matches", "not matches")
_EQ_OPS = ("==", "!=")
_LIST_OPS = ("in", "not in", "is empty", "is not empty")
_EMPTY_OPS = ("is empty", "is not empty")
_MAP_OPS = ("is empty", "is not empty", "in", "not in")
_TRUE_WHEN_MISSING = frozenset({"!=", "not in", "is empty", "not matches"})
_GO_BOOL = {"1": True, "t": True, "T": True, "TRUE": True, "true": True, "True": True}
_GO_BOOL |= {"0": False, "f": False, "F": False, "FALSE": False, "false": False, "False": False}
_GO_INT = re.compile(r"[+-]?(?:0[xX][0-9a-fA-F_]+|0[bB][01_]+|0[oO][0-7_]+|[0-9][0-9_]*)")
_GO_FLOAT = re.compile(
    r"[+-]?(?:(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?|inf|infinity|nan)", re.I
)


def _ops(field: Field) -> tuple[str, ...]:
    if isinstance(field, Scalar):
        if field.kind == "opaque":  # any JSON value: nothing to compare it with
            return ()
        return _STRING_OPS if field.kind == "string" else _EQ_OPS
    if isinstance(field, ListOf):
        return _LIST_OPS if isinstance(field.item, Scalar) else _EMPTY_OPS
    if isinstance(field, MapOf):
        return _MAP_OPS
    return ()


def _coerce(raw: str, kind: str) -> Any:
    """``raw`` as a value of ``kind``, the way Go's strconv parses it; ValueError if it isn't."""
    if kind == "string":
        return raw
    if kind == "bool":
        if raw not in _GO_BOOL:
            raise ValueError("not a boolean (true, false, 1, 0, t, f)")
        return _GO_BOOL[raw]
    if kind == "int":
        if not _GO_INT.fullmatch(raw):
            raise ValueError("not an integer")
        digits = raw.lstrip("+-")
        octal = len(digits) > 1 and digits[0] == "0" and digits[1] not in "xXbBoO"
        number = int(raw.replace("0", "0o", 1) if octal else raw, 0)
        if not -(2**63) <= number < 2**63:
            raise ValueError("out of range")
        return number
    if not _GO_FLOAT.fullmatch(raw):
        raise ValueError("not a number")
    return float(raw)


@dataclass(frozen=True)
class _Check:
    """One match expression, checked: the fields along its selector, its value converted."""

    match: Match
    fields: tuple[Field, ...]  # the field reached after each selector part
    root: Field
    value: Any
    regex: Regex | None


def _check(match: Match, root: Struct, text: str) -> _Check:
    node: Field = root
    fields: list[Field] = []
    for i, part in enumerate(match.selector):
        while isinstance(node, ListOf):
            node = node.item
        if isinstance(node, Struct) and part in node.fields:
            node = node.fields[part]
        elif isinstance(node, MapOf):
            node = node.value
        else:
            bad = ".".join(match.selector[: i + 1])
            raise FilterError(f'Selector "{bad}" is not valid', text, match.offset)
        fields.append(node)
    supported = _ops(node)
    if match.op not in supported:
        can = ", ".join(supported) if supported else "no operator (select one of its fields)"
        raise FilterError(
            f'Invalid match operator "{match.op}" for selector "{match.path}" (it takes {can})',
            text,
            match.offset,
        )
    value: Any = None
    regex: Regex | None = None
    if match.value is not None:
        target = node.item if isinstance(node, ListOf) else node
        kind = target.kind if isinstance(target, Scalar) and match.op in _EQ_OPS + _LIST_OPS else ""
        try:
            value = _coerce(match.value, kind or "string")
        except ValueError as exc:
            raise FilterError(
                f'Failed to coerce value "{match.value}" for selector "{match.path}": {exc}',
                text,
                match.offset,
            ) from None
        if match.op in ("matches", "not matches"):
            try:
                regex = compile_regex(match.value)
            except FilterError as exc:
                raise FilterError(exc.problem, text, match.offset) from None
    return _Check(match, tuple(fields), root, value, regex)


def _zero(field: Field) -> Any:
    if isinstance(field, Scalar):
        return {"string": "", "int": 0, "float": 0.0, "bool": False}.get(field.kind)
    if isinstance(field, ListOf):
        return []
    return {}


def _leaf(check: _Check, field: Field, got: Any) -> bool:
    op, want = check.match.op, check.value
    if got is None:
        got = _zero(field)
    negate = op.startswith("not ") or op == "!=" or op == "is not empty"
    if op in ("is empty", "is not empty"):
        result = len(got) == 0 if isinstance(got, list | dict | str) else False
    elif op in ("==", "!="):
        result = got == want if isinstance(want, str) is isinstance(got, str) else False
        if isinstance(want, bool) is not isinstance(got, bool):
            result = False
    elif op in ("in", "not in"):
        if isinstance(got, str):
            result = isinstance(want, str) and want in got
        elif isinstance(got, dict):
            result = want in got
        elif isinstance(got, list):
            result = any(
                item == want and isinstance(item, bool) is isinstance(want, bool) for item in got
            )
        else:
            result = False
    else:  # matches
        assert check.regex is not None
        result = isinstance(got, str) and check.regex.search(got)
    return result != negate


def _walk(check: _Check, got: Any, field: Field, depth: int) -> bool:
    path = check.match.selector
    if depth == len(path):
        return _leaf(check, field, got)
    if isinstance(field, ListOf):
        items = got if isinstance(got, list) else []
        return any(_walk(check, item, field.item, depth) for item in items)
    part, sub = path[depth], check.fields[depth]
    if isinstance(field, MapOf):
        if not isinstance(got, dict) or part not in got:
            return check.match.op in _TRUE_WHEN_MISSING
        return _walk(check, got[part], sub, depth + 1)
    value = got.get(part) if isinstance(got, dict) else None
    return _walk(check, value, sub, depth + 1)


def _bind(expr: Expr, root: Struct, text: str) -> _Bound:
    if isinstance(expr, Match):
        return _check(expr, root, text)
    if isinstance(expr, Not):
        return _Negation(_bind(expr.operand, root, text))
    return _Junction(expr.op == "and", tuple(_bind(e, root, text) for e in expr.operands))


@dataclass(frozen=True)
class _Negation:
    operand: _Bound


@dataclass(frozen=True)
class _Junction:
    all: bool
    operands: tuple[_Bound, ...]


_Bound = _Check | _Negation | _Junction


def _evaluate(bound: _Bound, doc: Any) -> bool:
    if isinstance(bound, _Check):
        return _walk(bound, doc, bound.root, 0)
    if isinstance(bound, _Negation):
        return not _evaluate(bound.operand, doc)
    if bound.all:
        return all(_evaluate(b, doc) for b in bound.operands)
    return any(_evaluate(b, doc) for b in bound.operands)


@dataclass(frozen=True)
class Filter:
    """An expression checked against a shape, ready to run against documents of it."""

    expr: Expr
    schema: Struct
    _bound: _Bound

    @classmethod
    def bind(cls, expr: Expr, schema: Struct, text: str = "") -> Filter:
        """Check ``expr`` against ``schema`` (``text`` it was parsed from, for positions)."""
        return cls(expr, schema, _bind(expr, schema, text or str(expr)))

    def matches(self, doc: Mapping[str, Any]) -> bool:
        return _evaluate(self._bound, doc)

    def select(self, items: Iterable[T], doc: Callable[[T], Mapping[str, Any]]) -> list[T]:
        """The items whose document (``doc(item)``, as the endpoint answers it) matches."""
        return [item for item in items if self.matches(doc(item))]


def compile_filter(text: str, schema: Struct, limits: Limits | None = None) -> Filter | None:
    """A ``?filter=`` expression checked against ``schema``; ``None`` when it is blank."""
    if not text.strip():
        return None
    return Filter.bind(parse(text, limits), schema, text)


__all__ = [
    "BOOL",
    "FLOAT",
    "INT",
    "STRING",
    "Field",
    "Filter",
    "ListOf",
    "MapOf",
    "Scalar",
    "Struct",
    "compile_filter",
]
