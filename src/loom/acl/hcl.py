"""A small parser for the HCL subset Consul ACL policies are written in.

Consul decodes rules with HashiCorp's HCL v1, of which policies use a small part: blocks with
labels (``service "web" { policy = "write" }``), assignments (``operator = "read"``), nested
objects written either way (``service = { "web" = { policy = "write" } }``), lists, strings
with escapes, numbers and booleans, and the three comment styles ``#``, ``//`` and
``/* */``. This module turns that text into a tree of ``Item`` (a key, its labels and a value,
with the line and column where it starts); ``rules`` gives the tree its meaning. Nothing else
of HCL (heredocs, functions) is accepted: such text is an error with its line and column,
never a silent misreading. ``${`` inside a string is kept as literal text, as Consul's decoder
keeps it (rules are never interpolated).
"""

from __future__ import annotations

from dataclasses import dataclass

from loom.acl.errors import AclError


class RuleSyntaxError(AclError):
    """The rules text is not well-formed; the message names line, column and the bad token."""

    def __init__(self, line: int, column: int, message: str) -> None:
        self.line = line
        self.column = column
        super().__init__(f"Failed to parse ACL rules: line {line}, column {column}: {message}")


@dataclass(frozen=True)
class Pos:
    line: int
    column: int

    def __str__(self) -> str:
        return f"line {self.line}, column {self.column}"


@dataclass(frozen=True)
class Scalar:
    """A string, number or boolean; ``kind`` says which (``"string"``, ``"number"``, ``"bool"``)."""

    kind: str
    value: str
    pos: Pos


@dataclass(frozen=True)
class Obj:
    items: tuple[Item, ...]
    pos: Pos


@dataclass(frozen=True)
class Seq:
    values: tuple[Value, ...]
    pos: Pos


Value = Scalar | Obj | Seq


@dataclass(frozen=True)
class Item:
    """``key label... = value`` or ``key label... { ... }``: labels nest as objects would."""

    key: str
    labels: tuple[str, ...]
    value: Value
    pos: Pos


@dataclass(frozen=True)
class _Tok:
    kind: str  # ident string number { } [ ] = , eof
    text: str
    pos: Pos


_ESCAPES = {
    '"': '"',
    "\\": "\\",
    "n": "\n",
    "t": "\t",
    "r": "\r",
    "a": "\a",
    "b": "\b",
    "f": "\f",
    "v": "\v",
}
_PUNCT = "{}[]=,"
_MAX_DEPTH = 32


def _lex(text: str) -> list[_Tok]:
    toks: list[_Tok] = []
    i, line, col = 0, 1, 1
    n = len(text)

    def advance(count: int) -> None:
        nonlocal i, line, col
        for _ in range(count):
            if text[i] == "\n":
                line, col = line + 1, 1
            else:
                col += 1
            i += 1

    while i < n:
        ch = text[i]
        start = Pos(line, col)
        if ch in " \t\r\n":
            advance(1)
        elif ch == "#" or text.startswith("//", i):
            while i < n and text[i] != "\n":
                advance(1)
        elif text.startswith("/*", i):
            end = text.find("*/", i + 2)
            if end < 0:
                raise RuleSyntaxError(start.line, start.column, "unterminated /* comment")
            advance(end + 2 - i)
        elif ch in _PUNCT:
            toks.append(_Tok(ch, ch, start))
            advance(1)
        elif ch == '"':
            advance(1)
            out: list[str] = []
            while True:
                if i >= n or text[i] == "\n":
                    raise RuleSyntaxError(start.line, start.column, "unterminated string")
                c = text[i]
                if c == '"':
                    advance(1)
                    break
                if c == "\\":
                    esc = text[i + 1] if i + 1 < n else ""
                    if esc in _ESCAPES:
                        out.append(_ESCAPES[esc])
                        advance(2)
                    elif esc in ("u", "U"):
                        width = 4 if esc == "u" else 8
                        digits = text[i + 2 : i + 2 + width]
                        try:
                            code = int(digits, 16) if len(digits) == width else -1
                            out.append(chr(code))
                        except ValueError:
                            code = -1
                        if code < 0:
                            raise RuleSyntaxError(
                                line, col, "bad escape " + repr("\\" + esc + digits)
                            )
                        advance(2 + width)
                    else:
                        raise RuleSyntaxError(line, col, "bad escape " + repr("\\" + esc))
                else:
                    out.append(c)
                    advance(1)
            toks.append(_Tok("string", "".join(out), start))
        elif ch.isascii() and (ch.isalpha() or ch == "_"):
            j = i
            while j < n and text[j].isascii() and (text[j].isalnum() or text[j] in "_-."):
                j += 1
            toks.append(_Tok("ident", text[i:j], start))
            advance(j - i)
        elif ch.isascii() and (ch.isdigit() or ch == "-"):
            j = i + 1
            while j < n and text[j].isascii() and (text[j].isalnum() or text[j] in "._+-"):
                j += 1
            word = text[i:j]
            try:
                float(word)
            except ValueError:
                raise RuleSyntaxError(start.line, start.column, f"bad number {word!r}") from None
            toks.append(_Tok("number", word, start))
            advance(j - i)
        else:
            raise RuleSyntaxError(start.line, start.column, f"unexpected character {ch!r}")
    toks.append(_Tok("eof", "", Pos(line, col)))
    return toks


class _Parser:
    def __init__(self, toks: list[_Tok]) -> None:
        self.toks = toks
        self.at = 0

    def peek(self) -> _Tok:
        return self.toks[self.at]

    def take(self) -> _Tok:
        tok = self.toks[self.at]
        self.at += 1
        return tok

    def fail(self, tok: _Tok, want: str) -> RuleSyntaxError:
        got = "end of input" if tok.kind == "eof" else repr(tok.text)
        return RuleSyntaxError(tok.pos.line, tok.pos.column, f"expected {want}, found {got}")

    def body(self, closing: str, depth: int) -> tuple[Item, ...]:
        items: list[Item] = []
        while self.peek().kind != closing:
            items.append(self.item(depth))
            if self.peek().kind == ",":
                self.take()
        return tuple(items)

    def item(self, depth: int) -> Item:
        tok = self.take()
        if tok.kind not in ("ident", "string"):
            raise self.fail(tok, "a key")
        labels: list[str] = []
        while self.peek().kind in ("ident", "string"):
            labels.append(self.take().text)
        nxt = self.peek()
        if nxt.kind == "=":
            self.take()
            value = self.value(depth)
        elif nxt.kind == "{":
            value = self.value(depth)
        else:
            raise self.fail(nxt, f"'=' or '{{' after {tok.text!r}")
        if labels and not isinstance(value, Obj):
            raise RuleSyntaxError(
                tok.pos.line, tok.pos.column, f"{tok.text!r} with a label needs a block"
            )
        return Item(tok.text, tuple(labels), value, tok.pos)

    def value(self, depth: int) -> Value:
        if depth > _MAX_DEPTH:
            tok = self.peek()
            raise RuleSyntaxError(tok.pos.line, tok.pos.column, "nested too deeply")
        tok = self.take()
        if tok.kind == "string":
            return Scalar("string", tok.text, tok.pos)
        if tok.kind == "number":
            return Scalar("number", tok.text, tok.pos)
        if tok.kind == "ident" and tok.text in ("true", "false"):
            return Scalar("bool", tok.text, tok.pos)
        if tok.kind == "{":
            items = self.body("}", depth + 1)
            self.take()
            return Obj(items, tok.pos)
        if tok.kind == "[":
            values: list[Value] = []
            while self.peek().kind != "]":
                values.append(self.value(depth + 1))
                if self.peek().kind == ",":
                    self.take()
                elif self.peek().kind != "]":
                    raise self.fail(self.peek(), "',' or ']'")
            self.take()
            return Seq(tuple(values), tok.pos)
        raise self.fail(tok, "a value")


def parse_hcl(text: str) -> tuple[Item, ...]:
    """The items of an HCL document, in order; ``RuleSyntaxError`` if it is not well-formed."""
    parser = _Parser(_lex(text))
    items = parser.body("eof", 0)
    return items
