"""Consul's filter expression language (go-bexpr), as one pure package.

Consul filters list endpoints with ``?filter=`` and matches ACL binding rules with selectors;
both are go-bexpr expressions, and here both are parsed and evaluated by the same code:
``grammar`` (tokens, the expression tree, and printing it back), ``schema`` (the shape of
what an expression runs against, checking an expression against it, and evaluating it the
way bexpr does: any element of a list, zero values for absent fields, missing map keys),
``regex`` and ``nfa`` (``matches`` in RE2's syntax with its linear-time guarantee, since a
filter is untrusted input). Nothing here does I/O; every error is a ``FilterError`` naming
the problem and its position.
"""

from loom.bexpr.errors import FilterError
from loom.bexpr.grammar import BoolOp, Expr, Limits, Match, Not, parse
from loom.bexpr.schema import (
    BOOL,
    FLOAT,
    INT,
    STRING,
    Field,
    Filter,
    ListOf,
    MapOf,
    Scalar,
    Struct,
    compile_filter,
)

__all__ = [
    "BOOL",
    "FLOAT",
    "INT",
    "STRING",
    "BoolOp",
    "Expr",
    "Field",
    "Filter",
    "FilterError",
    "Limits",
    "ListOf",
    "MapOf",
    "Match",
    "Not",
    "Scalar",
    "Struct",
    "compile_filter",
    "parse",
]
