"""Bytes and values shown to a person: safe one-line previews, full bodies, times."""
from __future__ import annotations

import datetime as _dt

_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _escape_char(c: str) -> str:
    if c in _NAMED:
        return _NAMED[c]
    n = ord(c)
    return f"\\x{n:02x}" if n < 0x100 else f"\\u{n:04x}" if n < 0x10000 else f"\\U{n:08x}"


def shown(value: object) -> str:
    """``value`` as text safe for a terminal: control characters (C0 incl. ESC, BEL, CR, LF,
    TAB; DEL; C1 U+0080–U+009F) and other non-printable characters (format characters such
    as bidi overrides, separators, unassigned code points, lone surrogates) become visible
    escapes (``\\x1b``, ``\\n``, ``\\u202e`` …); printable text, including non-ASCII, is
    unchanged.  For everything a person reads; machine formats (JSON, CSV) keep the value."""
    s = value if isinstance(value, str) else str(value)
    if s.isprintable():
        return s
    return "".join(c if c.isprintable() else _escape_char(c) for c in s)


def is_text(body: bytes) -> str | None:
    """The body as text when it is printable UTF-8, else None."""
    try:
        t = body.decode("utf-8")
    except UnicodeDecodeError:
        return None
    return t if all(c.isprintable() or c in "\t\r\n" for c in t) else None


def preview(body: bytes, limit: int = 48) -> str:
    """A safe one-line preview: text (escaped controls) or hex, cut at ``limit``."""
    t = is_text(body[: limit * 4])
    if t is not None:
        s = t.encode("unicode_escape").decode("ascii") if any(c in t for c in "\t\r\n") else t
        return s if len(s) <= limit and len(body) <= limit * 4 else s[:limit] + "…"
    h = body[: limit // 2].hex()
    return "hex:" + h + ("…" if len(body) > limit // 2 else "")


def preview_any(data: bytes | str, limit: int = 120) -> str:
    """A value on one line for the detail tree: text with controls escaped, else spaced hex."""
    if isinstance(data, bytes):
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            h = data[: limit // 2].hex(" ")
            return f"hex: {h}" + (" …" if len(data) > limit // 2 else "")
    else:
        text = data
    text = text if text.isprintable() else text.encode("unicode_escape").decode("ascii")
    return text if len(text) <= limit else text[:limit] + "…"


def full_body(body: bytes) -> str:
    """The whole body: text as is, binary as hex."""
    t = is_text(body)
    return t if t is not None else "hex:" + body.hex()


def ms_text(ms: int | None) -> str | None:
    """Milliseconds since the epoch as ISO 8601 UTC, or None."""
    if ms is None:
        return None
    try:
        return _dt.datetime.fromtimestamp(ms / 1000, _dt.timezone.utc).isoformat(timespec="milliseconds")
    except (OverflowError, OSError, ValueError):
        return None


def time_text(ts: float) -> str:
    """A capture time as ``HH:MM:SS.mmm`` (UTC)."""
    return _dt.datetime.fromtimestamp(ts, _dt.timezone.utc).strftime("%H:%M:%S.%f")[:-3]
