"""go-bexpr's grammar: tokens, the expression tree, and printing an expression back.

As Consul documents it (API docs, "Filtering") and go-bexpr's PEG grammar defines it:

- match expressions: ``S == V``, ``S != V``, ``S contains V``, ``S not contains V``,
  ``V in S``, ``V not in S``, ``S matches V``, ``S not matches V``, ``S is empty``,
  ``S is not empty``; ``contains`` is ``in`` written the other way round, as in bexpr;
- ``and`` binds tighter than ``or``; ``not``; parentheses;
- selectors: ASCII names joined by ``.``, a map key also as ``["key"]`` (any text);
- values: a double-quoted string (Go escapes: ``\\n``, ``\\"``, ``\\u00e9``...), a backquoted
  raw string, a number (``-12``, ``1.5``), or a bare name such as ``passing``.

Lenient where bexpr's only reason to refuse is whitespace (``not(a == b)``, ``(a)and(b)``)
and for ``\\"`` inside a double-quoted string (bexpr ends the string there). ``and``/``or``
chains are kept flat (``BoolOp`` holds all operands) and nesting is bounded (``Limits``), so
no expression, however long, recurses deeper than ``max_depth``. ``str(expr)`` prints an
expression that parses back to an equal one.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from loom.bexpr.errors import FilterError

KEYWORDS = frozenset({"and", "or", "not", "in", "contains", "matches", "is", "empty"})
OPERATORS = ("==", "!=", "in", "not in", "is empty", "is not empty", "matches", "not matches")


@dataclass(frozen=True)
class Limits:
    """Bounds on an expression, so hostile input costs little and never recurses deeply."""

    max_length: int = 64 * 1024
    """Characters in the whole expression (a URL's query rarely carries more than 8 KiB)."""
    max_depth: int = 32
    """Nesting of parentheses and ``not``; Consul's own filters rarely go past 3."""


@dataclass(frozen=True)
class Match:
    """``selector <op> value``: ``op`` is one of ``OPERATORS`` (``contains`` is ``in``)."""

    selector: tuple[str, ...]
    op: str
    value: str | None = None
    offset: int = field(default=0, compare=False)
    """Where the match starts in the text it was parsed from (for errors)."""

    @property
    def path(self) -> str:
        """The selector as written in docs and errors: ``Service.Meta.env``."""
        return ".".join(self.selector)

    def __str__(self) -> str:
        selector = print_selector(self.selector)
        if self.op in ("is empty", "is not empty"):
            return f"{selector} {self.op}"
        value = quote(self.value or "")
        if self.op in ("in", "not in"):
            return f"{value} {self.op} {selector}"
        return f"{selector} {self.op} {value}"


@dataclass(frozen=True)
class Not:
    operand: Expr

    def __str__(self) -> str:
        if isinstance(self.operand, Match):
            return f"not {self.operand}"
        return f"not ({self.operand})"


@dataclass(frozen=True)
class BoolOp:
    """``and`` or ``or`` over two or more operands, flat (``a and b and c`` is one node)."""

    op: str
    operands: tuple[Expr, ...]

    def __str__(self) -> str:
        parts = []
        for operand in self.operands:
            tight = isinstance(operand, Match | Not) or (
                self.op == "or" and isinstance(operand, BoolOp) and operand.op == "and"
            )
            parts.append(str(operand) if tight else f"({operand})")
        return f" {self.op} ".join(parts)


Expr = Match | Not | BoolOp

_IDENT = re.compile(r"[A-Za-z][A-Za-z0-9_]*")
_NUMBER = re.compile(r"-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?")
_SPACE = re.compile(r"[ \t\r\n]+")
_ESCAPES = {"a": "\a", "b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t", "v": "\v"}


def quote(text: str) -> str:
    """A double-quoted literal that reads back as ``text``."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def print_selector(parts: tuple[str, ...]) -> str:
    out = parts[0]
    for part in parts[1:]:
        out += f".{part}" if _IDENT.fullmatch(part) else f"[{quote(part)}]"
    return out


@dataclass(frozen=True)
class _Tok:
    kind: str  # "path", "string", "number", "(", ")", "==", "!=", "eof"
    text: str  # the value of a string or number; the dotted form of a path
    offset: int
    parts: tuple[str, ...] = ()

    def keyword(self) -> str | None:
        if self.kind == "path" and len(self.parts) == 1 and self.parts[0] in KEYWORDS:
            return self.parts[0]
        return None


class _Lexer:
    def __init__(self, text: str, what: str) -> None:
        self.text = text
        self.what = what
        self.at = 0

    def fail(self, problem: str, offset: int) -> FilterError:
        return FilterError(problem, self.text, offset)

    def tokens(self) -> list[_Tok]:
        text, out = self.text, []
        while True:
            if m := _SPACE.match(text, self.at):
                self.at = m.end()
            if self.at >= len(text):
                out.append(_Tok("eof", "", len(text)))
                return out
            start, ch = self.at, text[self.at]
            if text.startswith(("==", "!="), start):
                out.append(_Tok(text[start : start + 2], text[start : start + 2], start))
                self.at += 2
            elif ch in "()":
                out.append(_Tok(ch, ch, start))
                self.at += 1
            elif ch in '"`':
                out.append(_Tok("string", self.string(), start))
            elif ch in "-0123456789":
                out.append(self.number())
            elif _IDENT.match(text, start):
                parts = self.path()
                out.append(_Tok("path", ".".join(parts), start, parts))
            else:
                raise self.fail(f"unexpected {ch!r}", start)

    def number(self) -> _Tok:
        start = self.at
        m = _NUMBER.match(self.text, start)
        end = m.end() if m else start
        if m is None or (end < len(self.text) and self.text[end] not in " \t\r\n)"):
            raise self.fail("invalid number literal (quote a value such as 10.0.0.1)", start)
        self.at = end
        return _Tok("number", m.group(), start)

    def path(self) -> tuple[str, ...]:
        text = self.text
        m = _IDENT.match(text, self.at)
        assert m is not None
        parts, self.at = [m.group()], m.end()
        while self.at < len(text):
            if text[self.at] == "." and (m := _IDENT.match(text, self.at + 1)):
                parts.append(m.group())
                self.at = m.end()
            elif text[self.at] == ".":
                raise self.fail("expected a name after '.'", self.at + 1)
            elif text[self.at] == "[":
                self.at += 1
                if m := _SPACE.match(text, self.at):
                    self.at = m.end()
                if self.at >= len(text) or text[self.at] not in '"`':
                    raise self.fail("invalid index: expected a quoted map key", self.at)
                parts.append(self.string())
                if m := _SPACE.match(text, self.at):
                    self.at = m.end()
                if self.at >= len(text) or text[self.at] != "]":
                    raise self.fail("unclosed index expression: expected ']'", self.at)
                self.at += 1
            else:
                break
        return tuple(parts)

    def string(self) -> str:
        text, start = self.text, self.at
        quote_char = text[start]
        if quote_char == "`":
            end = text.find("`", start + 1)
            if end < 0:
                raise self.fail("unterminated string literal", start)
            self.at = end + 1
            return text[start + 1 : end]
        out: list[str] = []
        at = start + 1
        while True:
            stop = _next_special(text, at)
            if stop < 0:
                raise self.fail("unterminated string literal", start)
            out.append(text[at:stop])
            if text[stop] == '"':
                self.at = stop + 1
                return "".join(out)
            char, at = self.escape(stop)
            out.append(char)

    def escape(self, at: int) -> tuple[str, int]:
        """The character a backslash escape at ``at`` stands for, and where the text goes on."""
        text = self.text
        if at + 1 >= len(text):
            raise self.fail("unterminated string literal", at)
        c = text[at + 1]
        if c in _ESCAPES:
            return _ESCAPES[c], at + 2
        if c in "\\\"'":
            return c, at + 2
        size = {"x": 2, "u": 4, "U": 8}.get(c)
        if size is None and c not in "01234567":
            raise self.fail(f"invalid escape sequence '\\{c}' in string", at)
        digits, base = (text[at + 2 : at + 2 + size], 16) if size else (text[at + 1 : at + 4], 8)
        end = at + 2 + size if size else at + 4
        try:
            code = int(digits, base) if len(digits) == (size or 3) else -1
        except ValueError:
            code = -1
        if code < 0 or code > 0x10FFFF or 0xD800 <= code <= 0xDFFF or (not size and code > 255):
            raise self.fail(f"invalid escape sequence {text[at:end]!r} in string", at)
        return chr(code), end


def _next_special(text: str, at: int) -> int:
    quote_at, slash_at = text.find('"', at), text.find("\\", at)
    if quote_at < 0:
        return -1
    return slash_at if 0 <= slash_at < quote_at else quote_at


class _Parser:
    def __init__(self, text: str, limits: Limits, what: str) -> None:
        self.text = text
        self.what = what
        self.limits = limits
        self.toks = _Lexer(text, what).tokens()
        self.at = 0

    def peek(self, ahead: int = 0) -> _Tok:
        return self.toks[min(self.at + ahead, len(self.toks) - 1)]

    def take(self) -> _Tok:
        tok = self.toks[self.at]
        self.at += 1
        return tok

    def fail(self, want: str, tok: _Tok | None = None) -> FilterError:
        tok = tok or self.peek()
        found = f"end of {self.what}" if tok.kind == "eof" else repr(tok.text)
        if tok.kind == "string":
            found = quote(tok.text)
        return FilterError(f"expected {want}, found {found}", self.text, tok.offset)

    def keyword(self, word: str) -> bool:
        if self.peek().keyword() == word:
            self.at += 1
            return True
        return False

    def parse(self) -> Expr:
        expr = self.any_of(0)
        if self.peek().kind != "eof":
            raise self.fail("'and', 'or' or the end")
        return expr

    def any_of(self, depth: int) -> Expr:
        items = [self.all_of(depth)]
        while self.keyword("or"):
            items.append(self.all_of(depth))
        return items[0] if len(items) == 1 else BoolOp("or", tuple(items))

    def all_of(self, depth: int) -> Expr:
        items = [self.unary(depth)]
        while self.keyword("and"):
            items.append(self.unary(depth))
        return items[0] if len(items) == 1 else BoolOp("and", tuple(items))

    def unary(self, depth: int) -> Expr:
        if depth >= self.limits.max_depth:
            raise FilterError(
                f"nested deeper than {self.limits.max_depth} levels", self.text, self.peek().offset
            )
        if self.keyword("not"):
            return Not(self.unary(depth + 1))
        if self.peek().kind == "(":
            self.take()
            expr = self.any_of(depth + 1)
            if self.peek().kind != ")":
                raise self.fail("')'")
            self.take()
            return expr
        return self.match()

    def match(self) -> Expr:
        first = self.peek()
        if first.kind not in ("path", "string", "number") or first.keyword():
            raise self.fail("a selector or a value")
        self.take()
        nxt, op = self.peek(), ""
        negated = nxt.keyword() == "not" and self.peek(1).keyword() in ("in", "contains", "matches")
        if negated:
            self.take()
        word = self.peek().keyword()
        if first.kind == "path" and not negated and self.peek().kind in ("==", "!="):
            op = self.take().kind
            return Match(first.parts, op, self.value(), first.offset)
        if word == "in":
            self.take()
            return Match(self.selector(), "not in" if negated else "in", first.text, first.offset)
        if first.kind != "path" and (
            word in ("contains", "matches", "is") or nxt.kind in ("==", "!=")
        ):
            raise self.fail("a selector", first)
        if word in ("contains", "matches"):
            self.take()
            op = "in" if word == "contains" else "matches"
            op = f"not {op}" if negated else op
            return Match(first.parts, op, self.value(), first.offset)
        if word == "is" and not negated:
            self.take()
            empty_op = "is not empty" if self.keyword("not") else "is empty"
            if not self.keyword("empty"):
                raise self.fail("'empty'")
            return Match(first.parts, empty_op, None, first.offset)
        if first.kind != "path":
            raise self.fail("'in' or 'not in'")
        raise self.fail("an operator (==, !=, contains, in, matches, is empty)")

    def selector(self) -> tuple[str, ...]:
        tok = self.peek()
        if tok.kind != "path" or tok.keyword():
            raise self.fail("a selector")
        self.take()
        return tok.parts

    def value(self) -> str:
        tok = self.peek()
        if tok.kind not in ("path", "string", "number"):
            raise self.fail("a value")
        self.take()
        return tok.text


def parse(text: str, limits: Limits | None = None, what: str = "expression") -> Expr:
    """The expression ``text`` holds; ``FilterError`` naming the problem and column if none.

    ``what`` names the text in errors ("found end of selector" for a binding rule).
    """
    limits = limits or Limits()
    if len(text) > limits.max_length:
        raise FilterError(f"longer than {limits.max_length} characters")
    if not text.strip():
        raise FilterError(f"empty {what}", text, len(text))
    return _Parser(text, limits, what).parse()
