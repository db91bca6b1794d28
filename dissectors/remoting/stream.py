"""The sans-I/O ``StreamDecoder``: one direction of one TCP connection in, the events
``Frame`` / ``DecodeError`` / ``Resync`` out, with its resynchronisation after garbage or
capture gaps, and the stats-only peek (:data:`Peeked`) of a whole frame."""
from __future__ import annotations

import re
import struct
from dataclasses import dataclass
from typing import Annotated, Any

import msgspec

from .codes import TRUNCATED_REQUEST_CODES
from .command import FLAG_RESPONSE, ROCKETMQ, RemotingCommand
from .frame import BIN_FIXED, BIN_FIXED_LEN, DEFAULT_MAX_FRAME, I32, MIN_HEADER, PREFIX, FrameError, decode_at

__all__ = ["Frame", "DecodeError", "Resync", "Event", "StreamDecoder", "Peeked"]


@dataclass(slots=True)
class Frame:
    """A decoded frame; ``offset`` = stream offset of its length field, ``length`` = 4 + length."""

    command: RemotingCommand
    offset: int
    length: int


@dataclass(slots=True)
class DecodeError:
    """Bytes lost for a reason: a complete frame whose header failed to decode
    (``length`` = the whole frame), a partial frame cut by a gap or the end of the
    stream, or a frame prefix that broke framing (``length`` = 0; the bytes then
    belong to the following :class:`Resync`)."""

    reason: str
    offset: int
    length: int


@dataclass(slots=True)
class Resync:
    """The decoder found a plausible frame at ``offset`` after ``skipped`` bytes it could
    not frame (garbage, bytes behind a capture gap, a mid-frame capture start)."""

    offset: int
    skipped: int


Event = Frame | DecodeError | Resync

# --------------------------------------------------------------------------- peek (stats-only fast path)

Peeked = tuple[int, int, int, "dict[str, str] | None"]
"""(code, flag, opaque, ext) of a frame, without building a command (ext: requests only)."""


_Int32 = Annotated[int, msgspec.Meta(ge=-(1 << 31), le=(1 << 31) - 1)]


class _JsonHead(msgspec.Struct):
    """The fields of a JSON header the peek needs, in the types :func:`.frame._decode_json` keeps as
    they are (Java ints; extFields absent, null or an object of text). Decoding into it
    validates the whole document, skips the other fields without building them, and is
    about twice as fast as a full ``orjson.loads``."""
    code: _Int32
    flag: _Int32
    opaque: _Int32
    version: _Int32
    extFields: dict[str, str] | None = None


_json_head = msgspec.json.Decoder(_JsonHead).decode
# what a header the peek leaves to the full decoder raises (UnicodeDecodeError is a ValueError)
_NOT_PEEKED = (msgspec.DecodeError, ValueError)
_prefix = PREFIX.unpack_from
_u32 = struct.Struct(">I").unpack_from
_u16 = struct.Struct(">H").unpack_from


def _peek_binary_ext(buf: Any, p: int, elen: int) -> dict[str, str] | None:
    """:func:`.frame._binary_ext` for the peek: the same map when the block is ASCII and well
    formed, else None (the caller then takes the full decode, which says what is wrong)."""
    blk = bytes(buf[p:p + elen])
    if not blk.isascii():
        return None
    txt = blk.decode("latin-1")
    ext: dict[str, str] = {}
    q = 0
    try:
        while q < elen:  # (ASCII: no length byte >= 0x80, so no key length Java reads as negative)
            k = q + 2
            v = k + _u16(blk, q)[0]
            q = v + 4 + _u32(blk, v)[0]
            ext[txt[k:v]] = txt[v + 4:q]
    except struct.error:  # a length running past the block
        return None
    return ext if q == elen else None


def _check_binary_ext(buf: bytes, p: int, elen: int) -> bool:
    """Whether the ``elen`` extFields bytes at ``buf[p:]`` are well formed (lengths only)."""
    blk = buf[p:p + elen]
    q = 0
    try:
        while q < elen:
            klen = _u16(blk, q)[0]
            if klen >= 0x8000:  # a key length Java reads as negative
                return False
            q += 6 + klen + _u32(blk, q + 2 + klen)[0]
    except struct.error:  # a length running past the block
        return False
    return q == elen


# --------------------------------------------------------------------------- decoder

def _candidate_regex(first_byte_zero: bool) -> re.Pattern[bytes]:
    """Where a frame may start: JSON ``{"`` at +8, or a binary header with language
    byte <= 13 at +10 and flag 0..3 at +17. When the maximum frame is below 2^24 the
    length's first byte must be 0."""
    first = rb"\x00" if first_byte_zero else rb"."
    return re.compile(
        first + rb".{3}(?:\x00.{3}\{\"|\x01.{5}[\x00-\x0d].{6}\x00\x00\x00[\x00-\x03])",
        re.S,
    )


_LOOKAHEAD = 25  # bytes needed to judge a candidate (8 prefix + 17 binary fixed)


class StreamDecoder:
    """Sans-I/O decoder for one direction of one TCP connection.

    Feed bytes in stream order; each call returns events in stream order. Every stream
    byte (fed or lost in a gap) ends up in exactly one event span: ``Frame``
    ``[offset, offset+length)``, ``DecodeError`` ``[offset, offset+length)`` or
    ``Resync`` ``[offset-skipped, offset)``, or is still pending.

    What is emitted:

    * a complete frame that decodes -> ``Frame``;
    * a complete frame whose header does not decode -> ``DecodeError`` (length = the
      frame), decoding continues with the next frame;
    * a prefix that breaks framing (length > max_frame or too small, serialize byte
      not 0/1, H > length - 4) -> ``DecodeError(reason, offset, 0)`` and resync mode;
    * ``gap(n)`` with a partial frame whose prefix is known -> ``DecodeError("frame
      truncated by capture gap", start, received + lost bytes of that frame)``; the
      frame's remaining bytes are dropped unseen and counted in the ``Resync`` that
      follows; the declared end of the frame is tried first as the next frame start.
      With a partial prefix (< 8 bytes) the received bytes are reported and resync
      starts right after the gap;
    * resync mode scans for a plausible frame (sane prefix, JSON ``{"`` or a sane
      binary header) whose header also decodes; then ``Resync(offset, skipped)`` is
      emitted (only when skipped > 0) followed by the ``Frame``;
    * ``close()`` -> ``DecodeError("incomplete frame at end of stream", ...)`` for a
      partial frame, or ``DecodeError("no frame found before end of stream", ...)`` for
      unsynchronised bytes.

    ``start_in_resync=True`` (capture started mid-connection) makes the first bytes
    pass the resync plausibility check before they are trusted.
    """

    __slots__ = ("max_frame", "_buf", "_pos", "_total", "_resync", "_resync_from",
                 "_drop", "_regex")

    def __init__(self, max_frame: int = DEFAULT_MAX_FRAME, start_in_resync: bool = False) -> None:
        if max_frame < 8 + BIN_FIXED_LEN:
            raise ValueError("max_frame too small")
        self.max_frame = max_frame
        self._buf = bytearray()
        self._pos = 0            # stream offset of _buf[0]
        self._total = 0          # stream bytes fed or gapped
        self._resync = start_in_resync
        self._resync_from = 0    # start of the unaccounted region while resyncing
        self._drop = 0           # bytes still to discard (rest of a gap-truncated frame)
        self._regex = _candidate_regex(max_frame <= 0x1000000)

    @property
    def offset(self) -> int:
        """Stream bytes seen so far (fed plus gaps); the offset of the next fed byte."""
        return self._total

    @property
    def buffered(self) -> int:
        """Bytes held back (a partial frame or an unconfirmed resync candidate)."""
        return len(self._buf)

    @property
    def in_resync(self) -> bool:
        return self._resync

    # -- public API --------------------------------------------------------------

    def feed(self, data: bytes | bytearray | memoryview) -> list[Event]:
        """Add stream bytes; returns the events they complete."""
        events: list[Event] = []
        mv = memoryview(data)
        if mv.format != "B" or mv.ndim != 1:
            mv = mv.cast("B")
        n = len(mv)
        if not n:
            return events
        self._total += n
        if self._drop:
            k = min(self._drop, n)
            self._drop -= k
            self._pos += k
            if k == n:
                return events
            mv = mv[k:]
        if self._buf:
            self._buf += mv
            bmv = memoryview(self._buf)
            p = self._process(bmv, events)
            del bmv
            try:
                del self._buf[:p]
            except BufferError:  # a view is still alive somewhere: copy instead
                self._buf = bytearray(self._buf[p:])
        else:
            p = self._process(mv, events)
            if p < len(mv):
                self._buf = bytearray(mv[p:])
        self._pos += p
        return events

    def feed_one(self, data: bytes) -> RemotingCommand | None:
        """Fast path of :meth:`feed` for ``data`` that is exactly one whole frame that
        decodes, arriving with the decoder synchronised and nothing held back: consume it
        and return its command (its offset is :attr:`offset` before the call). Otherwise
        consume nothing and return None; the caller then uses :meth:`feed`."""
        n = len(data)
        if n < 8 or self._buf or self._resync or self._drop:
            return None
        length, mark = PREFIX.unpack_from(data, 0)
        hlen = mark & 0xFFFFFF
        if length + 4 != n or n > self.max_frame or hlen > length - 4 or length < (25 if mark >> 24 else 6):
            return None
        try:
            cmd = decode_at(data, 0, n, mark >> 24, hlen)
        except Exception:  # noqa: BLE001 - feed() reports it
            return None
        self._total += n
        self._pos += n
        return cmd

    def peek_one(self, data: bytes, t: int, n: int) -> Peeked | None:
        """Stats-only fast path: :meth:`feed_one` for the ``n`` bytes at ``data[t:]`` without
        building the command. When they are one whole frame whose header is in the common
        form :meth:`feed_one` decodes without error or conversion of these fields (JSON:
        code/flag/opaque/version Java ints, extFields absent or of text; ROCKETMQ: sane
        lengths, no truncated 5.x code), consume them and return (code, flag, opaque, ext);
        ext only for requests (None for responses: pairing and stats never read it, but it
        is still checked). Otherwise consume nothing and return None: the caller then
        feeds the bytes, which converts, restores or reports whatever is unusual."""
        if n < 8 or self._buf or self._resync or self._drop:
            return None
        length, mark = _prefix(data, t)
        hlen = mark & 0xFFFFFF
        if length + 4 != n or n > self.max_frame or hlen > length - 4:
            return None
        hs = t + 8
        if not mark >> 24:  # JSON
            try:
                h = _json_head(data[hs:hs + hlen])
            except _NOT_PEEKED:  # not JSON, a key missing, another type, text that is not UTF-8...
                return None
            # (language and remark are not looked at: decode turns any value into text; a
            # value msgspec skips but orjson rejects, such as bytes that are not UTF-8, is read
            # by the decoder's lenient fallback, with the same code, flag, opaque and ext)
            code = h.code
            flag = h.flag
            opaque = h.opaque
            ext = None if flag & FLAG_RESPONSE else h.extFields
        elif mark >> 24 == ROCKETMQ:
            if hlen < BIN_FIXED_LEN or length < 25:
                return None
            code, _lang, _version, opaque, flag, rlen = BIN_FIXED.unpack_from(data, hs)
            he = hs + hlen
            p = hs + 17
            if rlen < 0 or rlen > hlen or p + rlen + 4 > he:
                return None
            p += rlen
            (elen,) = I32.unpack_from(data, p)
            p += 4
            if elen < 0 or elen > hlen or p + elen > he:
                return None
            if flag & FLAG_RESPONSE:
                ext = None
                if elen and not _check_binary_ext(data, p, elen):
                    return None
            elif code in TRUNCATED_REQUEST_CODES:
                return None
            elif elen:
                ext = _peek_binary_ext(data, p, elen)
                if ext is None:
                    return None
            else:
                ext = None
        else:
            return None
        self._total += n
        self._pos += n
        return code, flag, opaque, ext

    def gap(self, nbytes: int) -> list[Event]:
        """The capture lost ``nbytes`` at the current position."""
        events: list[Event] = []
        if nbytes <= 0:
            return events
        start = self._pos
        self._total += nbytes
        if self._drop:
            k = min(self._drop, nbytes)
            self._drop -= k
            self._pos += k
            nbytes -= k
            start = self._pos
            if not nbytes:
                return events
        r = len(self._buf)
        if self._resync:
            # Unconfirmed bytes simply join the skipped region.
            self._buf = bytearray()
            self._pos = start + r + nbytes
            return events
        self._resync = True
        if r >= 8:
            # The prefix was validated when the frame was started, so its end is known:
            # skip the rest of it and try the next frame start first.
            (length,) = I32.unpack_from(self._buf, 0)
            remaining = length + 4 - r
            claimed = r + min(nbytes, remaining)
            events.append(DecodeError("frame truncated by capture gap", start, claimed))
            self._buf = bytearray()
            self._drop = max(0, remaining - nbytes)
            self._resync_from = start + claimed
            self._pos = start + r + nbytes
            return events
        if r:
            events.append(DecodeError("frame truncated by capture gap", start, r))
            self._buf = bytearray()
        self._resync_from = start + r
        self._pos = start + r + nbytes
        return events

    def close(self) -> list[Event]:
        """End of stream: report whatever is still pending."""
        events: list[Event] = []
        r = len(self._buf)
        if self._resync:
            lost = self._pos + r - self._resync_from
            if lost > 0:
                events.append(DecodeError("no frame found before end of stream",
                                          self._resync_from, lost))
            self._resync_from = self._pos + r
        elif r:
            events.append(DecodeError("incomplete frame at end of stream", self._pos, r))
        self._buf = bytearray()
        self._pos += r
        self._drop = 0
        return events

    # -- internals -----------------------------------------------------------------

    def _framing_problem(self, length: int, stype: int, hlen: int) -> str | None:
        if length < 0:
            return "negative frame length"
        if length + 4 > self.max_frame:
            return "frame length exceeds maximum"
        if stype > 1:
            return "unknown serialize type"
        if length < 4 + MIN_HEADER[stype]:
            return "frame length too small"
        if hlen > length - 4:
            return "header length exceeds frame length"
        return None

    def _process(self, buf: memoryview, events: list[Event]) -> int:
        """Decode what ``buf`` (starting at stream offset ``self._pos``) allows;
        returns the number of bytes consumed."""
        base = self._pos
        n = len(buf)
        p = 0
        unpack = PREFIX.unpack_from
        max_len = self.max_frame - 4
        while True:
            if self._resync:
                q = self._find(buf, p, n)
                if q < 0:
                    return max(p, n - _LOOKAHEAD + 1)
                length, mark = unpack(buf, q)
                total = length + 4
                if n - q < total:
                    return q  # wait for the candidate to complete
                try:
                    cmd = decode_at(buf, q, total, mark >> 24, mark & 0xFFFFFF)
                except Exception:  # noqa: BLE001 - not a real frame: keep scanning
                    p = q + 1
                    continue
                skipped = base + q - self._resync_from
                if skipped > 0:
                    events.append(Resync(base + q, skipped))
                self._resync = False
                events.append(Frame(cmd, base + q, total))
                p = q + total
                continue
            if n - p < 8:
                return p
            length, mark = unpack(buf, p)
            stype = mark >> 24
            hlen = mark & 0xFFFFFF
            if length > max_len or length < 6 or stype > 1 or hlen > length - 4 \
                    or (stype and length < 25):
                reason = self._framing_problem(length, stype, hlen) or "bad frame prefix"
                events.append(DecodeError(reason, base + p, 0))
                self._resync = True
                self._resync_from = base + p
                p += 1
                continue
            total = length + 4
            if n - p < total:
                return p
            try:
                cmd = decode_at(buf, p, total, stype, hlen)
            except FrameError as e:
                events.append(DecodeError(e.reason, base + p, total))
            except Exception as e:  # noqa: BLE001 - never let bad input crash the caller
                events.append(DecodeError(f"header decode failed ({type(e).__name__})", base + p, total))
            else:
                events.append(Frame(cmd, base + p, total))
            p += total

    def _find(self, buf: memoryview, p: int, n: int) -> int:
        """Next plausible frame start at or after ``p`` with a sane prefix, or -1."""
        search = self._regex.search
        max_len = self.max_frame - 4
        unpack = PREFIX.unpack_from
        while True:
            m = search(buf, p)
            if m is None:
                return -1
            q = m.start()
            length, mark = unpack(buf, q)
            stype = mark >> 24
            hlen = mark & 0xFFFFFF
            ok = 4 + MIN_HEADER[stype] <= length <= max_len and MIN_HEADER[stype] <= hlen <= length - 4
            if ok and stype == ROCKETMQ:
                if n - q < _LOOKAHEAD:
                    return -1  # the caller keeps the last _LOOKAHEAD - 1 bytes
                (rlen,) = I32.unpack_from(buf, q + 21)
                ok = 0 <= rlen <= hlen - BIN_FIXED_LEN
            if ok:
                return q
            p = q + 1
