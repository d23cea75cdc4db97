"""``matches``: Go's RE2 regular expressions, run in time linear in the text.

Consul compiles a filter's pattern with Go's ``regexp`` (RE2): no backreferences, no
lookaround, and matching that never backtracks. A filter is untrusted input, and Python's
``re`` backtracks (``(a+)+$`` against forty ``a``\\s would hold the event loop for minutes),
so patterns are parsed here in RE2's syntax and run as a Thompson NFA: every state is
advanced one character at a time, so a search costs at most (states x characters).

The syntax: literals and ``\\``-escapes (``\\.``, ``\\n``, ``\\x41``, ``\\x{263a}``, ``\\Q..\\E``),
``.``, classes (``[a-z]``, ``[^,]``, ``[[:alpha:]]``, ``\\d \\w \\s`` and their negations,
``\\pL``/``\\p{Lu}`` by Unicode category), groups (``(..)``, ``(?:..)``, ``(?P<n>..)``), flags
``i``, ``m``, ``s`` (``(?i)``, ``(?i:..)``), ``|``, ``* + ? {n} {n,} {n,m}`` (lazy forms
too: they change what is captured, never whether it matches), anchors ``^ $ \\A \\z \\b \\B``.
Anything else (``\\1``, ``(?=``, ``a**``) is refused as Go refuses it. Like Go's
``MatchString``, ``search`` finds a match anywhere unless the pattern anchors it.
"""

from __future__ import annotations

import unicodedata

from loom.bexpr.errors import FilterError
from loom.bexpr.nfa import WORD, Alt, Assert, Cat, Char, Compiler, Node, Pred, Regex, Rep

MAX_REPEAT = 1000  # RE2's limit on {n,m}
MAX_NESTING = 100  # groups inside groups


_PERL: dict[str, Pred] = {
    "d": lambda c: "0" <= c <= "9",
    "w": lambda c: c in WORD,
    "s": lambda c: c in "\t\n\f\r ",
}
_POSIX: dict[str, Pred] = {
    "alnum": lambda c: c.isascii() and c.isalnum(),
    "alpha": lambda c: c.isascii() and c.isalpha(),
    "ascii": lambda c: c.isascii(),
    "blank": lambda c: c in " \t",
    "cntrl": lambda c: c < " " or c == "\x7f",
    "digit": lambda c: "0" <= c <= "9",
    "graph": lambda c: "!" <= c <= "~",
    "lower": lambda c: "a" <= c <= "z",
    "print": lambda c: " " <= c <= "~",
    "punct": lambda c: "!" <= c <= "~" and not c.isalnum(),
    "space": lambda c: c in " \t\n\r\f\v",
    "upper": lambda c: "A" <= c <= "Z",
    "word": lambda c: c in WORD,
    "xdigit": lambda c: c in "0123456789abcdefABCDEF",
}
_ESCAPED = {"a": "\a", "f": "\f", "n": "\n", "r": "\r", "t": "\t", "v": "\v"}
_CATEGORIES = {"L", "Lu", "Ll", "Lt", "Lm", "Lo", "M", "N", "Nd", "Nl", "No", "P", "S", "Z", "C"}


def _literal(x: str) -> Pred:
    return lambda c: c == x


def _between(lo: str, hi: str) -> Pred:
    return lambda c: lo <= c <= hi


def _union(preds: tuple[Pred, ...]) -> Pred:
    return lambda c: any(p(c) for p in preds)


def _any_char(c: str) -> bool:
    return True


def _not_newline(c: str) -> bool:
    return c != "\n"


def _negate(p: Pred) -> Pred:
    return lambda c: not p(c)


def _fold(p: Pred) -> Pred:
    return lambda c: p(c) or p(c.lower()) or p(c.upper())


def _category(name: str) -> Pred | None:
    if name == "Any":
        return lambda c: True
    if name not in _CATEGORIES:
        return None
    return lambda c: unicodedata.category(c).startswith(name)


class _Parser:
    def __init__(self, pattern: str) -> None:
        self.p = pattern
        self.i = 0
        self.flags = {"i": False, "m": False, "s": False}

    def fail(self, problem: str) -> FilterError:
        return FilterError(f"Failed to compile regular expression {self.p!r}: {problem}")

    def more(self) -> bool:
        return self.i < len(self.p)

    def alternation(self, depth: int) -> Node:
        if depth > MAX_NESTING:
            raise self.fail("nesting too deep")
        saved = dict(self.flags)
        branches = [self.concat(depth)]
        while self.more() and self.p[self.i] == "|":
            self.i += 1
            branches.append(self.concat(depth))
        self.flags = saved
        return branches[0] if len(branches) == 1 else Alt(tuple(branches))

    def concat(self, depth: int) -> Node:
        items: list[Node] = []
        while self.more() and self.p[self.i] not in "|)":
            atom = self.atom(depth)
            if atom is None:
                continue
            items.append(self.repeat(atom))
        return Cat(tuple(items))

    def repeat(self, atom: Node) -> Node:
        if not self.more() or self.p[self.i] not in "*+?{":
            return atom
        start, c = self.i, self.p[self.i]
        if c == "{":
            bounds = self.braces()
            if bounds is None:
                return atom
            lo, hi = bounds
        else:
            self.i += 1
            lo, hi = {"*": (0, -1), "+": (1, -1), "?": (0, 1)}[c]
        if self.more() and self.p[self.i] == "?":
            self.i += 1  # lazy: same language
        if (self.more() and self.p[self.i] in "*+?") or (
            self.more() and self.p[self.i] == "{" and self.peek_braces()
        ):
            raise self.fail(f"invalid nested repetition operator: {self.p[start : self.i + 1]}")
        return Rep(atom, lo, hi)

    def peek_braces(self) -> bool:
        saved = self.i
        try:
            return self.braces() is not None
        finally:
            self.i = saved

    def braces(self) -> tuple[int, int] | None:
        """``{n}``, ``{n,}``, ``{n,m}``; ``None`` (a literal ``{``) if it is none of them."""
        end = self.p.find("}", self.i)
        body = self.p[self.i + 1 : end] if end > 0 else ""
        lo_text, comma, hi_text = body.partition(",")
        if end < 0 or not lo_text.isdigit() or not (hi_text.isdigit() or not hi_text):
            return None
        lo = int(lo_text)
        hi = lo if not comma else (int(hi_text) if hi_text else -1)
        if lo > MAX_REPEAT or hi > MAX_REPEAT or (hi >= 0 and hi < lo):
            raise self.fail(f"invalid repeat count: {{{body}}}")
        self.i = end + 1
        return lo, hi

    def char(self, pred: Pred) -> Node:
        return Char(_fold(pred) if self.flags["i"] else pred)

    def atom(self, depth: int) -> Node | None:
        c = self.p[self.i]
        self.i += 1
        if c == "(":
            return self.group(depth)
        if c == "[":
            return self.char(self.char_class())
        if c == ".":
            return Char(_any_char if self.flags["s"] else _not_newline)
        if c == "^":
            return Assert("^m" if self.flags["m"] else "A")
        if c == "$":
            return Assert("$m" if self.flags["m"] else "z")
        if c in "*+?":
            raise self.fail(f"missing argument to repetition operator: {c}")
        if c == "\\":
            return self.escape_atom()
        return self.char(_literal(c))

    def group(self, depth: int) -> Node | None:
        p, saved = self.p, dict(self.flags)
        if p.startswith("?", self.i):
            for prefix in ("?P<", "?<"):
                if p.startswith(prefix, self.i):
                    end = p.find(">", self.i)
                    if end < 0 or not p[self.i + len(prefix) : end].isidentifier():
                        raise self.fail("invalid named capture")
                    self.i = end + 1
                    break
            else:
                end = self.i + 1
                while end < len(p) and p[end] in "imsU-":
                    end += 1
                if end >= len(p) or p[end] not in ":)" or (end == self.i + 1 and p[end] == ")"):
                    raise self.fail(
                        f"invalid or unsupported Perl syntax: (?{p[self.i + 1 : end + 1]}"
                    )
                on = True
                for f in p[self.i + 1 : end]:
                    if f == "-":
                        on = False
                    elif f in self.flags:
                        self.flags[f] = on
                self.i = end + 1
                if p[end] == ")":
                    return None  # flags for the rest of the enclosing group
        inner = self.alternation(depth + 1)
        self.flags = saved
        if not self.more() or p[self.i] != ")":
            raise self.fail("missing closing )")
        self.i += 1
        return inner

    def escape_atom(self) -> Node:
        if not self.more():
            raise self.fail("trailing backslash at end of expression")
        c = self.p[self.i]
        assertions = {"A": "A", "z": "z", "b": "b", "B": "B"}
        if c in assertions:
            self.i += 1
            return Assert(assertions[c])
        if c == "Q":
            end = self.p.find("\\E", self.i + 1)
            literal = self.p[self.i + 1 :] if end < 0 else self.p[self.i + 1 : end]
            self.i = len(self.p) if end < 0 else end + 2
            return Cat(tuple(self.char(_literal(x)) for x in literal))
        return self.char(self.escape())

    def escape(self) -> Pred:
        """The class a ``\\x`` escape stands for; ``self.i`` is just past the backslash."""
        p, c = self.p, self.p[self.i]
        self.i += 1
        if c.lower() in _PERL:
            pred = _PERL[c.lower()]
            return _negate(pred) if c.isupper() else pred
        if c in "pP":
            if p.startswith("{", self.i):
                end = p.find("}", self.i)
                if end < 0:
                    raise self.fail("invalid character class range")
                name, self.i = p[self.i + 1 : end], end + 1
            elif self.more():
                name, self.i = p[self.i], self.i + 1
            else:
                raise self.fail("invalid character class range")
            negated = (c == "P") != name.startswith("^")
            found = _category(name.lstrip("^"))
            if found is None:
                raise self.fail(f"invalid character class range: \\p{{{name}}}")
            pred = found
            return _negate(pred) if negated else pred
        if c in _ESCAPED:
            return _literal(_ESCAPED[c])
        if c == "x":
            if p.startswith("{", self.i):
                end = p.find("}", self.i)
                digits, self.i = p[self.i + 1 : end] if end > 0 else "", end + 1
            else:
                digits, self.i = p[self.i : self.i + 2], self.i + 2
            try:
                return _literal(chr(int(digits, 16)))
            except (ValueError, OverflowError):
                raise self.fail(f"invalid escape sequence: \\x{digits}") from None
        if c in "01234567" and (c == "0" or p[self.i : self.i + 1] in tuple("01234567")):
            digits = c
            while len(digits) < 3 and self.more() and p[self.i] in "01234567":
                digits, self.i = digits + p[self.i], self.i + 1
            return _literal(chr(int(digits, 8)))
        if c.isascii() and not c.isalnum():
            return _literal(c)
        raise self.fail(f"invalid escape sequence: \\{c}")

    def char_class(self) -> Pred:
        p, negated, preds = self.p, False, list[Pred]()
        if self.more() and p[self.i] == "^":
            negated, self.i = True, self.i + 1
        first = True
        while True:
            if not self.more():
                raise self.fail("missing closing ]")
            c = p[self.i]
            if c == "]" and not first:
                self.i += 1
                break
            first = False
            if p.startswith("[:", self.i):
                end = p.find(":]", self.i + 2)
                name = p[self.i + 2 : end] if end > 0 else ""
                pred = _POSIX.get(name.lstrip("^"))
                if pred is None:
                    raise self.fail(f"invalid character class range: [:{name}:]")
                preds.append(_negate(pred) if name.startswith("^") else pred)
                self.i = end + 2
                continue
            low = self.class_char()
            ranged = p.startswith("-", self.i) and p[self.i + 1 : self.i + 2] not in ("]", "")
            if isinstance(low, str) and ranged:
                self.i += 1
                high = self.class_char()
                if not isinstance(high, str) or high < low:
                    raise self.fail(f"invalid character class range: {low}-{high}")
                preds.append(_between(low, high))
            else:
                preds.append(_literal(low) if isinstance(low, str) else low)
        union = _union(tuple(preds))
        if self.flags["i"]:
            union = _fold(union)
        return _negate(union) if negated else union

    def class_char(self) -> str | Pred:
        c = self.p[self.i]
        self.i += 1
        if c != "\\":
            return c
        if not self.more():
            raise self.fail("missing closing ]")
        nxt = self.p[self.i]
        pred = self.escape()
        if nxt.isascii() and not nxt.isalnum():
            return nxt
        if nxt in _ESCAPED:
            return _ESCAPED[nxt]
        return pred


def compile_regex(pattern: str) -> Regex:
    """``pattern`` compiled as Go would; ``FilterError`` naming the problem otherwise."""
    parser = _Parser(pattern)
    tree = parser.alternation(0)
    if parser.more():
        raise parser.fail("unexpected )")
    compiler = Compiler(pattern)
    start = compiler.emit(tree, 0)
    return Regex(pattern, tuple(compiler.prog), start)


__all__ = ["Regex", "compile_regex"]
