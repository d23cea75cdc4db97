"""Properties of the filter language over generated expressions, documents and hostile text.

- printing an expression and parsing it back gives an equal expression, which keeps every
  document it kept;
- ``not``, ``and`` and ``or`` mean what boolean logic says over any document (bexpr's
  "any element" and missing-key rules live in the leaves, never in the connectives);
- any text at all either parses or raises ``FilterError``: never another exception, never a
  deep recursion;
- ``matches`` agrees with Python's ``re`` on the syntax both share, and stays linear on the
  patterns that make a backtracking engine explode.
"""

from __future__ import annotations

import re
import time
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from loom.bexpr import INT, STRING, BoolOp, Expr, FilterError, ListOf, MapOf, Struct, parse
from loom.bexpr.regex import compile_regex
from loom.bexpr.schema import Filter

SCHEMA = Struct(
    {
        "Name": STRING,
        "Port": INT,
        "Tags": ListOf(STRING),
        "Meta": MapOf(STRING),
        "Checks": ListOf(Struct({"Status": STRING})),
    }
)
WORDS = st.sampled_from(["", "a", "web", "web-1", 'q"uote', "back\\slash", "é", "passing", "x y"])


def quoted(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


@st.composite
def matches(draw: st.DrawFn) -> str:
    word = quoted(draw(WORDS))
    return draw(
        st.sampled_from(
            [
                f"Name == {word}",
                f"Name != {word}",
                f"{word} in Name",
                f"Name not contains {word}",
                f"Name matches {quoted(re.escape(draw(WORDS)))}",
                f"Port == {draw(st.integers(0, 3))}",
                f"Port != {draw(st.integers(0, 3))}",
                f"{word} in Tags",
                f"{word} not in Tags",
                "Tags is empty",
                "Tags is not empty",
                f"Meta.env == {word}",
                f'Meta["env"] != {word}',
                f"{word} in Meta",
                "Meta is not empty",
                f"Checks.Status == {word}",
                f"Checks.Status != {word}",
                "Checks is empty",
            ]
        )
    )


@st.composite
def expressions(draw: st.DrawFn, depth: int = 0) -> str:
    if depth > 3 or draw(st.booleans()):
        return draw(matches())
    left, right = draw(expressions(depth + 1)), draw(expressions(depth + 1))
    return draw(st.sampled_from([f"{left} and {right}", f"({left}) or ({right})", f"not ({left})"]))


documents = st.fixed_dictionaries(
    {},
    optional={
        "Name": WORDS,
        "Port": st.integers(0, 3),
        "Tags": st.lists(WORDS, max_size=3),
        "Meta": st.dictionaries(st.sampled_from(["env", "x"]), WORDS, max_size=2),
        "Checks": st.lists(st.fixed_dictionaries({"Status": WORDS}), max_size=3),
    },
)


def run(expr: Expr, doc: dict[str, Any]) -> bool:
    return Filter.bind(expr, SCHEMA).matches(doc)


@settings(max_examples=400, deadline=None, database=None)
@given(expressions(), documents)
def test_a_printed_expression_parses_back_equal_and_keeps_the_same_documents(
    text: str, doc: dict[str, Any]
) -> None:
    expr = parse(text)
    again = parse(str(expr))
    assert again == expr
    assert run(again, doc) == run(expr, doc)


@settings(max_examples=400, deadline=None, database=None)
@given(expressions(), expressions(), documents)
def test_not_and_or_are_boolean_logic_over_any_document(
    a: str, b: str, doc: dict[str, Any]
) -> None:
    x, y = run(parse(a), doc), run(parse(b), doc)
    assert run(parse(f"not ({a})"), doc) == (not x)
    assert run(parse(f"({a}) and ({b})"), doc) == (x and y)
    assert run(parse(f"({a}) or ({b})"), doc) == (x or y)
    assert run(parse(f"not (({a}) or ({b}))"), doc) == run(parse(f"not ({a}) and not ({b})"), doc)


HOSTILE_PIECES = st.sampled_from(
    ['"', "`", "(", ")", "[", "]", "==", "!=", "and", "or", "not", "in", "is", "empty",
     "contains", "matches", "Name", "Meta.env", '["k"]', "1", "-", "0x1", "\\", "\n", "é",
     "'; DROP TABLE services; --", "${jndi:ldap://x}", "\x00", "🦄"]
)  # fmt: skip


@settings(max_examples=600, deadline=None, database=None)
@given(st.text(max_size=60) | st.lists(HOSTILE_PIECES, max_size=20).map(" ".join), documents)
def test_any_text_parses_or_raises_a_filter_error_and_never_anything_else(
    text: str, doc: dict[str, Any]
) -> None:
    try:
        expr = parse(text)
        flt = Filter.bind(expr, SCHEMA, text)
    except FilterError as exc:
        assert str(exc)
        return
    flt.matches(doc)


REGEX_ATOMS = st.sampled_from(
    ["a", "b", "ab", ".", "[ab]", "[^a]", "[a-c]", "\\d", "\\w", "\\s", "\\.", "x", "-"]
)


@st.composite
def patterns(draw: st.DrawFn) -> str:
    """A piece of pattern; a repeated group holds no repetition itself, because Python's re,
    the oracle here, backtracks exponentially on nested repetition (which is the point)."""
    if draw(st.booleans()):
        atom = draw(REGEX_ATOMS)
    else:
        branches = draw(st.lists(st.lists(REGEX_ATOMS, min_size=1, max_size=3), max_size=3))
        inner = "|".join("".join(b) for b in branches)
        atom = "(" + draw(st.sampled_from(["", "?:"])) + inner + ")"
    suffix = draw(st.sampled_from(["", "", "*", "+", "?", "{2}", "{1,2}", "*?", "{0,}"]))
    return atom + suffix


@settings(max_examples=500, deadline=None, database=None)
@given(
    st.lists(patterns(), min_size=1, max_size=4).map("".join),
    st.booleans(),
    st.booleans(),
    st.text(alphabet="abcx.- 1", max_size=8),
)
def test_matches_agrees_with_pythons_re_on_the_syntax_they_share(
    body: str, start: bool, end: bool, text: str
) -> None:
    pattern = ("^" if start else "") + body + ("$" if end else "")
    assert compile_regex(pattern).search(text) == (re.search(pattern, text) is not None)


def test_matches_stays_linear_where_backtracking_explodes() -> None:
    started = time.monotonic()
    for pattern in ["(a+)+$", "(a|aa)*b", "(.*)*x", ".*.*.*.*.*.*.*.*x", "(a*)*(b*)*c"]:
        assert compile_regex(pattern).search("a" * 2000 + "!") is False
    assert time.monotonic() - started < 20  # Python's re would take longer than the universe


def test_an_expression_many_operands_wide_still_prints_and_parses_back() -> None:
    expr = parse(" and ".join(f'Name != "n{i}"' for i in range(2000)))
    assert isinstance(expr, BoolOp) and parse(str(expr)) == expr
