"""Tolerant reader for the JSON that fastjson (RocketMQ's serializer) writes.

``loads`` tries ``orjson`` first, then the stdlib scanner with control characters
allowed, then a small hand-written parser that accepts fastjson's quirks
(reference section 5):

* unquoted integer keys ``{0:"a"}`` -> key ``"0"`` (the number's text);
* object keys ``{{"brokerName":"b","queueId":0,"topic":"t"}:1}`` -> key ``ObjectKey``
  (array keys become tuples); the Gson form ``[[{...},v],...]`` is plain JSON and
  is returned unchanged;
* single-quoted strings, raw control characters inside strings, unquoted
  identifier keys, trailing commas, integers of any size, ``true/false/null``.

The parser is iterative with a nesting cap (``MAX_DEPTH``) and an input-size cap
(``MAX_LENGTH``); every failure raises ``JsonError`` carrying the offset.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

import orjson

__all__ = ["JsonError", "ObjectKey", "loads", "MAX_DEPTH", "MAX_LENGTH"]

MAX_DEPTH = 512
MAX_LENGTH = 32 * 1024 * 1024


class JsonError(ValueError):
    """Malformed JSON: ``reason`` and the character ``offset`` where it was noticed."""

    def __init__(self, reason: str, offset: int) -> None:
        super().__init__(f"{reason} at offset {offset}")
        self.reason = reason
        self.offset = offset


@dataclass(frozen=True, slots=True)
class ObjectKey:
    """A JSON object used as a map key (fastjson's ``Map<MessageQueue, V>``).

    ``items`` holds the object's ``(key, value)`` pairs sorted by key, with nested
    objects frozen to ``ObjectKey`` and arrays to tuples, so it is hashable.
    """

    items: tuple[tuple[Any, Any], ...]

    def as_dict(self) -> dict[Any, Any]:
        """The key as an ordinary (mutable) dict, nested values thawed."""
        return {k: _thaw(v) for k, v in self.items}

    def get(self, key: Any, default: Any = None) -> Any:
        for k, v in self.items:
            if k == key:
                return _thaw(v)
        return default


def _sort_key(kv: tuple[Any, Any]) -> tuple[bool, str]:
    return (not isinstance(kv[0], str), str(kv[0]))


def _freeze(v: Any) -> Any:
    if isinstance(v, dict):
        return ObjectKey(tuple(sorted(((k, _freeze(x)) for k, x in v.items()), key=_sort_key)))
    if isinstance(v, list):
        return tuple(_freeze(x) for x in v)
    return v


def _thaw(v: Any) -> Any:
    if isinstance(v, ObjectKey):
        return v.as_dict()
    if isinstance(v, tuple):
        return [_thaw(x) for x in v]
    return v


def _reject_constant(name: str) -> Any:
    raise ValueError(name)


_BIG_INT = re.compile(r"\d{19,}")
_BIG_INT_B = re.compile(rb"\d{19,}")


def loads(text: bytes | bytearray | memoryview | str) -> Any:
    """Parse fastjson output; raise ``JsonError`` (a ``ValueError``) when it is not JSON."""
    if len(text) > MAX_LENGTH:
        raise JsonError(f"input longer than {MAX_LENGTH} bytes", MAX_LENGTH)
    if isinstance(text, (bytearray, memoryview)):
        text = bytes(text)
    s: str | None = None
    if _nesting(text) > MAX_DEPTH:
        # Too deep for us, and orjson 3.8 can crash on such input: let the
        # iterative parser find and report the exact position.
        s = text.decode("utf-8", "replace") if isinstance(text, bytes) else text
        return _Parser(s).parse()
    # orjson turns integers beyond 64 bits into floats; such input takes the exact path
    big = _BIG_INT_B.search(text) if isinstance(text, bytes) else _BIG_INT.search(text)
    if big is None:
        try:
            return orjson.loads(text)
        except (orjson.JSONDecodeError, TypeError):
            pass
    s = text.decode("utf-8", "replace") if isinstance(text, bytes) else text
    try:
        # C scanner: raw control characters (strict=False) and big ints, no NaN/Infinity.
        return json.loads(s, strict=False, parse_constant=_reject_constant)
    except (ValueError, RecursionError):
        pass
    return _Parser(s).parse()


_STRING_B = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"', re.S)
_STRING_S = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"', re.S)
_NOT_BRACKET_S = re.compile(r"[^\[\]{}]+")
_BRACKET_STEP = {ord("["): 1, ord("{"): 1, ord("]"): -1, ord("}"): -1}


def _nesting(text: bytes | str) -> int:
    """Upper estimate of the container nesting of ``text`` (exact for valid JSON)."""
    if isinstance(text, bytes):
        if text.count(b"[") + text.count(b"{") <= MAX_DEPTH:
            return 0
        text = _STRING_B.sub(b"", text).decode("latin-1")
    else:
        if text.count("[") + text.count("{") <= MAX_DEPTH:
            return 0
        text = _STRING_S.sub("", text)
    depth = deepest = 0
    for ch in _NOT_BRACKET_S.sub("", text):
        depth += _BRACKET_STEP[ord(ch)]
        if depth > deepest:
            deepest = depth
    return deepest


_WS = re.compile(r"[ \t\n\r\f\v]*")
_NUM = re.compile(r"-?\d+(\.\d+)?([eE][+-]?\d+)?")
_IDENT = re.compile(r"[A-Za-z_$][A-Za-z0-9_$]*")
_CHUNK = {'"': re.compile(r'[^"\\]*'), "'": re.compile(r"[^'\\]*")}
_ESCAPES = {'"': '"', "'": "'", "\\": "\\", "/": "/", "b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t"}
_LITERALS = {"true": True, "false": False, "null": None}
_HEX4 = re.compile(r"[0-9a-fA-F]{4}")
_HEX2 = re.compile(r"[0-9a-fA-F]{2}")

# parser modes
_VALUE, _KEY, _AFTER = 0, 1, 2
_MISSING = object()
_PENDING = object()  # a parser step that completed no value


class _Parser:
    """Iterative tolerant parser; frames are ``[container, pending_key, used_as_key]``."""

    __slots__ = ("s", "n")

    def __init__(self, s: str) -> None:
        self.s = s
        self.n = len(s)

    def _ws(self, pos: int) -> int:
        return _WS.match(self.s, pos).end()  # type: ignore[union-attr]

    def _eof(self, pos: int) -> JsonError:
        return JsonError("unexpected end of input", pos)

    def parse(self) -> Any:
        s, n = self.s, self.n
        stack: list[list[Any]] = []
        mode = _VALUE
        pos = 0
        while True:
            pos = self._ws(pos)
            if pos >= n:
                raise self._eof(pos)
            c = s[pos]
            if mode == _AFTER:
                value, pos, mode = self._after(stack, c, pos)
            elif mode == _KEY:
                value, pos, mode = self._key(stack, c, pos)
            else:
                value, pos, mode = self._value(stack, c, pos)
            if value is _PENDING:
                continue
            # place a completed value
            if not stack:
                end = self._ws(pos)
                if end != n:
                    raise JsonError("trailing data after JSON value", end)
                return value
            top = stack[-1]
            if isinstance(top[0], dict):
                top[0][top[1]] = value
                top[1] = _MISSING
            else:
                top[0].append(value)
            mode = _AFTER

    # Each step reads the token at ``pos`` (``c`` = its first character) and returns
    # ``(value, pos, mode)``: the completed value to place in the enclosing container, or
    # ``_PENDING`` when nothing was completed, the position after the token and the next mode.

    def _after(self, stack: list[list[Any]], c: str, pos: int) -> tuple[Any, int, int]:
        """After a value inside a container: a separator or the container's end."""
        top = stack[-1]
        is_obj = isinstance(top[0], dict)
        if c == ",":
            return _PENDING, pos + 1, _KEY if is_obj else _VALUE
        if (c == "}" and is_obj) or (c == "]" and not is_obj):
            if is_obj and top[1] is not _MISSING:
                raise JsonError("key without value", pos)
            return self._close(stack, pos + 1)
        raise JsonError(f"expected ',' or {'}' if is_obj else ']'!r}, found {c!r}", pos)

    def _key(self, stack: list[list[Any]], c: str, pos: int) -> tuple[Any, int, int]:
        """Where an object key is expected (or the object's end)."""
        if c == "}":
            return self._close(stack, pos + 1)
        if c in "{[":
            return self._open(stack, c, pos, True)
        if c == '"' or c == "'":
            key, pos = self._string(pos)
        elif c == "-" or c.isdigit():
            m = _NUM.match(self.s, pos)
            if m is None:
                raise JsonError("bad number key", pos)
            key, pos = m.group(), m.end()
        else:
            m = _IDENT.match(self.s, pos)
            if m is None:
                raise JsonError(f"expected a key, found {c!r}", pos)
            key, pos = m.group(), m.end()
        pos = self._colon(pos)
        stack[-1][1] = key
        return _PENDING, pos, _VALUE

    def _value(self, stack: list[list[Any]], c: str, pos: int) -> tuple[Any, int, int]:
        """Where a value is expected (or, in an array, the array's end)."""
        if c == "{" or c == "[":
            return self._open(stack, c, pos, False)
        if c == "]" and stack and isinstance(stack[-1][0], list):
            return self._close(stack, pos + 1)
        value: Any
        if c == '"' or c == "'":
            value, pos = self._string(pos)
        elif c == "-" or c.isdigit():
            value, pos = self._number(pos)
        else:
            m = _IDENT.match(self.s, pos)
            if m is None or m.group() not in _LITERALS:
                raise JsonError(f"unexpected {(m.group() if m else c)!r}", pos)
            value = _LITERALS[m.group()]
            pos = m.end()
        return value, pos, _AFTER

    def _number(self, pos: int) -> tuple[int | float, int]:
        m = _NUM.match(self.s, pos)
        if m is None:
            raise JsonError("bad number", pos)
        text = m.group()
        try:
            value = float(text) if (m.group(1) or m.group(2)) else int(text)
        except ValueError:
            raise JsonError("number too long", pos) from None
        return value, m.end()

    def _open(self, stack: list[list[Any]], c: str, pos: int, as_key: bool) -> tuple[Any, int, int]:
        """A ``{`` or ``[`` at ``pos``: push its container (``as_key``: an object key)."""
        if len(stack) >= MAX_DEPTH:
            raise JsonError(f"nesting deeper than {MAX_DEPTH}", pos)
        stack.append([{} if c == "{" else [], _MISSING, as_key])
        return _PENDING, pos + 1, _KEY if c == "{" else _VALUE

    def _close(self, stack: list[list[Any]], pos: int) -> tuple[Any, int, int]:
        """The innermost container ended just before ``pos``: it becomes the pending key of
        its parent when it was opened as a key, else the completed value."""
        frame = stack.pop()
        if frame[2]:
            return _PENDING, self._set_key(stack, _freeze(frame[0]), pos), _VALUE
        return frame[0], pos, _AFTER

    def _colon(self, pos: int) -> int:
        pos = self._ws(pos)
        if pos >= self.n:
            raise self._eof(pos)
        if self.s[pos] != ":":
            raise JsonError(f"expected ':', found {self.s[pos]!r}", pos)
        return pos + 1

    def _set_key(self, stack: list[list[Any]], key: Any, pos: int) -> int:
        stack[-1][1] = key
        return self._colon(pos)

    def _string(self, pos: int) -> tuple[str, int]:
        s, n = self.s, self.n
        quote = s[pos]
        chunk = _CHUNK[quote]
        start = pos
        pos += 1
        parts: list[str] = []
        while True:
            m = chunk.match(s, pos)
            parts.append(m.group())  # type: ignore[union-attr]
            pos = m.end()  # type: ignore[union-attr]
            if pos >= n:
                raise JsonError("unterminated string", start)
            if s[pos] == quote:
                return "".join(parts), pos + 1
            # backslash escape
            if pos + 1 >= n:
                raise JsonError("unterminated string", start)
            e = s[pos + 1]
            if e == "u":
                h = _HEX4.match(s, pos + 2)
                if h is None:
                    raise JsonError("bad \\u escape", pos)
                cp = int(h.group(), 16)
                pos += 6
                if 0xD800 <= cp < 0xDC00 and s.startswith("\\u", pos):
                    low = _HEX4.match(s, pos + 2)
                    if low is not None and 0xDC00 <= int(low.group(), 16) < 0xE000:
                        cp = 0x10000 + ((cp - 0xD800) << 10) + (int(low.group(), 16) - 0xDC00)
                        pos += 6
                parts.append(chr(cp))
            elif e == "x":
                h = _HEX2.match(s, pos + 2)
                if h is None:
                    raise JsonError("bad \\x escape", pos)
                parts.append(chr(int(h.group(), 16)))
                pos += 4
            else:
                parts.append(_ESCAPES.get(e, e))
                pos += 2
