"""The one error of the filter language: what is wrong, and where in the expression.

A parse error, a selector the data does not have, an operator its type does not support, a
value that does not convert to the field's type, a regular expression that does not compile:
each is a ``FilterError`` whose text names the problem and the column (and line, past the
first) where it starts, so a client can point at it. The HTTP layer answers it with a 400.
"""

from __future__ import annotations

from loom.errors import LoomError


class FilterError(LoomError):
    """An expression that cannot be used; ``str()`` is ``column N: problem``."""

    def __init__(self, problem: str, text: str = "", offset: int | None = None) -> None:
        self.problem = problem
        self.offset = offset
        if offset is None:
            where = ""
        else:
            line = text.count("\n", 0, offset) + 1
            column = offset - (text.rfind("\n", 0, offset) + 1) + 1
            where = f"column {column}: " if line == 1 else f"line {line}, column {column}: "
        self.line_column = where.rstrip(": ")
        super().__init__(where + problem)
