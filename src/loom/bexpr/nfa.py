r"""The program a pattern compiles to, and searching with it in time linear in the text.

``loom.bexpr.regex`` parses RE2 syntax into a tree of ``Node``\s; ``Compiler`` turns the tree
into a Thompson NFA (character, split, assertion and match states, built back to front), and
``Regex.search`` advances every live state one character at a time, so no input makes it
backtrack. Each step (live states, what assertions can see, the character) is remembered, a
lazily built DFA: a pattern run over many documents soon costs one lookup per character.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from loom.bexpr.errors import FilterError

MAX_STATES = 20_000  # a pattern whose program is bigger is refused (RE2 also caps its size)
MEMO_SIZE = 4096  # steps a compiled pattern remembers (then starts afresh)

Pred = Callable[[str], bool]
WORD = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_")


@dataclass(frozen=True)
class Char:
    pred: Pred


@dataclass(frozen=True)
class Assert:
    kind: str  # "A" \A, "z" \z, "^m"/"$m" line ends, "b"/"B" word boundary


@dataclass(frozen=True)
class Cat:
    items: tuple[Node, ...]


@dataclass(frozen=True)
class Alt:
    branches: tuple[Node, ...]


@dataclass(frozen=True)
class Rep:
    body: Node
    lo: int
    hi: int  # -1: no upper bound


Node = Char | Assert | Cat | Alt | Rep


@dataclass(frozen=True)
class _State:
    """One instruction: ``char`` (consume a character ``pred`` accepts, go to ``out``),
    ``split`` (go to ``out`` and ``alt``), ``assert`` (go to ``out`` if ``kind`` holds here)
    or ``match``."""

    op: str
    out: int = 0
    alt: int = 0
    pred: Pred | None = None
    kind: str = ""


@dataclass(frozen=True)
class Regex:
    """A compiled pattern: a program of states, searched by advancing all of them at once."""

    pattern: str
    program: tuple[_State, ...]
    start: int

    _memo: dict[tuple[frozenset[int], _Context, str], tuple[bool, frozenset[int]]] = field(
        default_factory=dict, compare=False, repr=False
    )
    """Steps already taken (states, context, character) -> (matched, next states): a lazily
    built DFA, so a pattern run over many documents costs a lookup per character."""

    def search(self, text: str) -> bool:
        prog, n, memo = self.program, len(text), self._memo
        current: frozenset[int] = frozenset()
        for pos in range(n + 1):
            ctx = _context(text, pos)
            ch = text[pos] if pos < n else ""
            key = (current, ctx, ch)
            step = memo.get(key)
            if step is None:
                closed = self._closure([*current, self.start], ctx)
                matched = any(prog[s].op == "match" for s in closed)
                nxt = frozenset(prog[s].out for s in closed if ch and _accepts(prog[s], ch))
                if len(memo) >= MEMO_SIZE:
                    memo.clear()
                step = memo[key] = (matched, nxt)
            if step[0]:
                return True
            current = step[1]
        return False

    def _closure(self, states: list[int], ctx: _Context) -> list[int]:
        """The states reachable from ``states`` without consuming a character, in ``ctx``."""
        prog, seen, out, stack = self.program, set(), [], list(reversed(states))
        while stack:
            s = stack.pop()
            if s in seen:
                continue
            seen.add(s)
            state = prog[s]
            if state.op == "split":
                stack.extend((state.alt, state.out))
            elif state.op == "assert":
                if _holds(state.kind, ctx):
                    stack.append(state.out)
            else:
                out.append(s)
        return out


def _accepts(state: _State, ch: str) -> bool:
    return state.pred is not None and state.pred(ch)


_Context = tuple[bool, bool, bool, bool, bool, bool]
"""What assertions can see at a position: at the start, at the end, a word character before,
one after, a newline before, one after."""


def _context(text: str, pos: int) -> _Context:
    before = text[pos - 1] if pos > 0 else ""
    after = text[pos] if pos < len(text) else ""
    return (
        pos == 0,
        pos == len(text),
        before != "" and before in WORD,
        after != "" and after in WORD,
        before == "\n",
        after == "\n",
    )


def _holds(kind: str, ctx: _Context) -> bool:
    at_start, at_end, word_before, word_after, nl_before, nl_after = ctx
    if kind == "A":
        return at_start
    if kind == "z":
        return at_end
    if kind == "^m":
        return at_start or nl_before
    if kind == "$m":
        return at_end or nl_after
    return (word_before != word_after) == (kind == "b")


class Compiler:
    def __init__(self, pattern: str) -> None:
        self.pattern = pattern
        self.prog: list[_State] = [_State("match")]

    def new(self, state: _State) -> int:
        if len(self.prog) >= MAX_STATES:
            raise FilterError(
                f"Failed to compile regular expression {self.pattern!r}: expression too large"
            )
        self.prog.append(state)
        return len(self.prog) - 1

    def emit(self, node: Node, nxt: int) -> int:
        """The state that matches ``node`` and then goes on to ``nxt`` (built back to front)."""
        if isinstance(node, Char):
            return self.new(_State("char", nxt, pred=node.pred))
        if isinstance(node, Assert):
            return self.new(_State("assert", nxt, kind=node.kind))
        if isinstance(node, Cat):
            for item in reversed(node.items):
                nxt = self.emit(item, nxt)
            return nxt
        if isinstance(node, Alt):
            entries = [self.emit(b, nxt) for b in node.branches]
            entry = entries[-1]
            for e in reversed(entries[:-1]):
                entry = self.new(_State("split", e, entry))
            return entry
        if node.hi < 0:
            loop = self.new(_State("split", 0, nxt))
            self.prog[loop] = _State("split", self.emit(node.body, loop), nxt)
            entry = loop
        else:
            entry = nxt
            for _ in range(node.hi - node.lo):
                entry = self.new(_State("split", self.emit(node.body, entry), nxt))
        for _ in range(node.lo):
            entry = self.emit(node.body, entry)
        return entry
