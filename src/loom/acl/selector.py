"""Binding-rule selectors: Consul's filter language (``loom.bexpr``) over a login's variables.

A selector is a go-bexpr expression like any ``?filter=``, parsed and evaluated by the same
package; what is particular to binding rules is the data. A login offers flat variables
(``serviceaccount.name``, ``value.x``, ``list.groups``...), strings or tuples of strings;
they are read as the nested shape bexpr would see (``serviceaccount`` a struct with a
``name`` field, ``list.groups`` a list), so ``in``/``contains`` test membership in a list
variable and substrings in a string one. ``str(expr)`` prints an expression that parses back
to the same expression; a selector that cannot be evaluated against a login (unknown
variable, ``==`` on a list) does not match it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from loom.acl.errors import AclError
from loom.bexpr import STRING, Expr, Field, Filter, FilterError, ListOf, Match, Not, Struct, parse


class SelectorError(AclError):
    """A selector does not parse, or names a variable its auth method does not offer."""


Vars = Mapping[str, "str | tuple[str, ...]"]


def parse_selector(text: str) -> Expr | None:
    """The selector's expression; ``None`` for an empty selector (which matches every login)."""
    if not text.strip():
        return None
    try:
        return parse(text, what="selector")
    except FilterError as exc:
        raise SelectorError(f"selector: {exc}") from exc


def selector_fields(expr: Expr | None) -> set[str]:
    """The variables a selector names, dotted as the auth method offers them."""
    if expr is None:
        return set()
    if isinstance(expr, Match):
        return {expr.path}
    if isinstance(expr, Not):
        return selector_fields(expr.operand)
    return set().union(*(selector_fields(e) for e in expr.operands))


def _shape(vars: Vars) -> tuple[Struct, dict[str, Any]]:
    """The nested shape and document of flat variables (``a.b`` -> ``{"a": {"b": ..}}``)."""
    fields: dict[str, Any] = {}
    doc: dict[str, Any] = {}
    for name, value in vars.items():
        parts = name.split(".")
        f, d = fields, doc
        for part in parts[:-1]:
            f = f.setdefault(part, {})
            d = d.setdefault(part, {})
            if not isinstance(f, dict) or not isinstance(d, dict):
                break
        else:
            f[parts[-1]] = STRING if isinstance(value, str) else ListOf(STRING)
            d[parts[-1]] = value if isinstance(value, str) else list(value)
    return _struct(fields), doc


def _struct(tree: Mapping[str, Any]) -> Struct:
    out: dict[str, Field] = {}
    for key, sub in tree.items():
        out[key] = _struct(sub) if isinstance(sub, dict) else sub
    return Struct(out)


def matches(expr: Expr | None, vars: Vars) -> bool:
    """Does a login with these variables match? An unevaluable selector does not match."""
    if expr is None:
        return True
    schema, doc = _shape(vars)
    try:
        return Filter.bind(expr, schema).matches(doc)
    except FilterError:
        return False


__all__ = ["SelectorError", "Vars", "matches", "parse_selector", "selector_fields"]
