"""Pre-encoded request frames: a rewritten request encoded once, then re-sent with only
its opaque and its millisecond timestamps patched in.

A template is built from two full rewrites + encodes (two opaques, two clocks) and kept
only when rendering the second from the first gives the very same bytes, so a request
whose rewrite depends on anything else (a random id, a signature, a relative delivery
time) is never templated and always goes through the full rewrite.
"""
from __future__ import annotations

from collections.abc import Callable

from dissectors.remoting.command import JSON, RemotingCommand
from dissectors.remoting.frame import encode

OPAQUE, MILLIS = 0, 1
_BIN_OPAQUE = 5  # header offset of the binary opaque: code (2) + language (1) + version (2)
_O1, _O2 = 1234567, 0x7FFFFFFE
_SHIFT = 111_111  # the second clock, in ms: same digit count, different digits


class FrameTemplate:
    """One request's frame with an opaque slot and zero or more millisecond slots."""

    __slots__ = ("cmd", "binary", "segs", "slots", "mark", "body")

    def __init__(self, cmd: RemotingCommand, header: bytes, ms: int, opaque_at: tuple[int, int]) -> None:
        self.cmd = cmd  # the rewritten request (for the report; its opaque is stale)
        self.binary = cmd.serialize != JSON
        self.mark = cmd.serialize << 24
        self.body = cmd.body or b""
        found = [(opaque_at[0], opaque_at[1], OPAQUE)]
        needle = str(ms).encode()
        i = header.find(needle)
        while i >= 0:
            found.append((i, len(needle), MILLIS))
            i = header.find(needle, i + len(needle))
        found.sort()
        self.segs: list[bytes] = []
        self.slots: list[int] = []
        pos = 0
        for at, n, kind in found:
            if at < pos:
                raise ValueError("overlapping slots")
            self.segs.append(header[pos:at])
            self.slots.append(kind)
            pos = at + n
        self.segs.append(header[pos:])

    def render(self, opaque: int, ms: int) -> bytes:
        """The whole frame (length prefix included) with ``opaque`` and ``ms`` in place."""
        o = opaque.to_bytes(4, "big") if self.binary else str(opaque).encode()
        m = str(ms).encode()
        segs, slots = self.segs, self.slots
        parts = [segs[0]]
        for k, kind in enumerate(slots):
            parts.append(o if kind == OPAQUE else m)
            parts.append(segs[k + 1])
        header = b"".join(parts)
        hlen = len(header)
        body = self.body
        return b"".join(((4 + hlen + len(body)).to_bytes(4, "big"), (self.mark | hlen).to_bytes(4, "big"),
                         header, body))


def _header(frame: bytes) -> tuple[bytes, bytes]:
    hlen = int.from_bytes(frame[4:8], "big") & 0xFFFFFF
    return frame[8:8 + hlen], frame[8 + hlen:]


def _opaque_at(header: bytes, binary: bool, opaque: int) -> tuple[int, int] | None:
    if binary:
        return (_BIN_OPAQUE, 4) if header[_BIN_OPAQUE:_BIN_OPAQUE + 4] == opaque.to_bytes(4, "big") else None
    digits = str(opaque).encode()
    i = header.rfind(b'"opaque":' + digits)
    return (i + 9, len(digits)) if i >= 0 else None


def build_template(rewrite: Callable[[int], RemotingCommand], now_ms: int,
                   check: Callable[[int], RemotingCommand] | None = None) -> FrameTemplate | None:
    """A template for the request ``rewrite(now_ms)`` returns, or None when its bytes depend on
    more than the opaque and the clock: rendering it must give exactly what ``check`` (default
    ``rewrite``; e.g. another copy's rewrite, to share one template) encodes at another time."""
    try:
        a, b = rewrite(now_ms), (check or rewrite)(now_ms + _SHIFT)
        a.opaque, b.opaque = _O1, _O2
        fa, fb = encode(a), encode(b)
        ha, body_a = _header(fa)
        at = _opaque_at(ha, a.serialize != JSON, _O1)
        if at is None or body_a != _header(fb)[1]:
            return None
        t = FrameTemplate(a, ha, now_ms, at)
        return t if t.render(_O2, now_ms + _SHIFT) == fb else None
    except ValueError:
        return None
