"""The ``~`` operator's regexes, compiled with RE2 (the ``google-re2`` package, as Prometheus
and Envoy do): RE2 matches in time linear in the text, whatever the pattern, so one filter
such as ``topic ~ "(a+)+$"`` cannot stall the proxy's event loop or the TUI on a long
value, as a backtracking engine (Python's ``re``) does.

The syntax is Python's for everything RE2 has (classes, ``(?i)``, ``(?P<name>...)``,
``\\d``, ``{m,n}``, ...).  RE2 has no backreferences and no lookaround: those are a
:class:`FilterError` "unsupported in filters (RE2)".  ``~`` is still a search
(``"rd"`` matches ``order``) and case-sensitive.  Small differences from Python's ``re``:
``$`` is the very end of the value (not also before a final newline), ``\\d`` / ``\\w``
/ ``\\s`` are ASCII classes, and a repeat count is at most 1000.
"""
from __future__ import annotations

from collections.abc import Callable

import re2

from .lexer import FilterError, Token

_OPTIONS = re2.Options()
_OPTIONS.log_errors = False  # (else RE2 prints every bad pattern to stderr, under the TUI too)

# Values whose answer a compiled ``~`` remembers: the binding's search costs some
# microseconds a call (it encodes the text to UTF-8), ~20 times re's on short values, and
# the values a filter runs over (tags, addresses, groups) mostly repeat.
_MEMO_SIZE = 4096

_LOOKAROUND = {"(?=": "lookahead", "(?!": "negative lookahead",
               "(?<=": "lookbehind", "(?<!": "negative lookbehind"}


def compile_regex(tok: Token, expr: str) -> re2._Regexp[str]:
    """``tok``'s text compiled with RE2; a :class:`FilterError` at ``tok`` when it cannot be."""
    try:
        return re2.compile(tok.text, _OPTIONS)
    except re2.error as e:
        why = _reason(e)
    length = max(1, tok.end - tok.pos)
    unsupported = _unsupported(why, tok.text)
    if unsupported:
        raise FilterError(f"unsupported in filters (RE2): {unsupported}", tok.pos, expr, length)
    raise FilterError(f"bad regular expression: {why}", tok.pos, expr, length)


def compile_search(tok: Token, expr: str) -> Callable[[str], bool]:
    """Does ``tok``'s regex match somewhere in a value?  (:func:`compile_regex`, with the
    answers for the last few thousand distinct values remembered.)"""
    search = compile_regex(tok, expr).search
    memo: dict[str, bool] = {}

    def matches(text: str) -> bool:
        hit = memo.get(text)
        if hit is None:
            if len(memo) >= _MEMO_SIZE:
                memo.clear()
            hit = memo[text] = search(text) is not None
        return hit

    return matches


def _reason(e: Exception) -> str:
    """RE2's message (the binding gives it as bytes)."""
    arg = e.args[0] if e.args else ""
    return arg.decode("utf-8", "replace") if isinstance(arg, bytes) else str(arg)


def _unsupported(why: str, pattern: str) -> str:
    """What Python's ``re`` has and RE2 has not, named ("backreference \\1"), or ""."""
    what, _, op = why.partition(": ")
    if what == "invalid escape sequence" and op[1:2].isdigit():
        return f"backreference {op}"
    if what == "invalid perl operator":
        if op in _LOOKAROUND:
            return f"{_LOOKAROUND[op]} {op}"
        if op == "(?P" and "(?P=" in pattern:
            return "backreference (?P=...)"
    return ""
