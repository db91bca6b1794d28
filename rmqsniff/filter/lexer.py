"""The filter language's tokens (:func:`tokenize`) and the error every stage of compiling
a filter raises, with the position of the problem (:class:`FilterError`)."""
from __future__ import annotations

import re
from dataclasses import dataclass


class FilterError(ValueError):
    """A filter expression that cannot be compiled; ``position`` is where the problem is."""

    def __init__(self, message: str, position: int, expression: str = "", length: int = 1) -> None:
        super().__init__(message)
        self.message = message
        self.position = position
        self.expression = expression
        self.length = max(1, length)

    def caret(self) -> str:
        """The expression (on one line), and a caret line under the offending token."""
        shown = "".join(c if c.isprintable() else " " for c in self.expression)
        return f"{shown}\n{' ' * self.position}^{'~' * (self.length - 1)}"

    def __str__(self) -> str:
        return f"{self.message} (at column {self.position + 1})"


@dataclass(frozen=True, slots=True)
class Token:
    kind: str  # "op", "word", "str", "punct", "end"
    text: str
    pos: int
    end: int


_OPS = ("==", "!=", "<=", ">=", "&&", "||", "<", ">", "~", "!", "=")
_PUNCT = "(){},"
_WORD = re.compile(r"[A-Za-z0-9_.:\-@%/*+$#\[\]]+")


def tokenize(expr: str) -> list[Token]:
    """Split ``expr`` into tokens; raises FilterError on a stray character or open quote."""
    out: list[Token] = []
    i, n = 0, len(expr)
    while i < n:
        ch = expr[i]
        if ch.isspace():
            i += 1
            continue
        if ch in "\"'":
            j = i + 1
            buf = []
            while j < n and expr[j] != ch:
                if expr[j] == "\\" and j + 1 < n and expr[j + 1] in (ch, "\\"):
                    j += 1
                buf.append(expr[j])
                j += 1
            if j >= n:
                raise FilterError("unterminated string", i, expr, n - i)
            out.append(Token("str", "".join(buf), i, j + 1))
            i = j + 1
            continue
        if ch in _PUNCT:
            out.append(Token("punct", ch, i, i + 1))
            i += 1
            continue
        for op in _OPS:
            if expr.startswith(op, i):
                if op == "=":
                    raise FilterError("use == to compare", i, expr)
                out.append(Token("op", op, i, i + len(op)))
                i += len(op)
                break
        else:
            m = _WORD.match(expr, i)
            if not m:
                raise FilterError(f"unexpected character {ch!r}", i, expr)
            out.append(Token("word", m.group(), i, m.end()))
            i = m.end()
    out.append(Token("end", "", n, n))
    return out
