"""Remoting frame codec: ``encode``, ``decode_frame`` and the sans-I/O ``StreamDecoder``.

Frame layout (all big-endian): int32 ``length`` (= 4 + H + B), one serialize byte
(0 JSON, 1 ROCKETMQ), uint24 header length H, H header bytes, B body bytes.
"""
from __future__ import annotations

import re
import struct
from dataclasses import dataclass
from typing import Annotated, Any

import msgspec
import orjson

from . import fastjson
from .codes import LANGUAGES, TRUNCATED_REQUEST_CODES, language_code
from .command import FLAG_RESPONSE, JSON, ROCKETMQ, RemotingCommand

__all__ = [
    "JSON", "ROCKETMQ", "DEFAULT_MAX_FRAME", "FrameError", "Frame", "DecodeError", "Resync",
    "Event", "encode", "decode_frame", "StreamDecoder", "Peeked",
]

DEFAULT_MAX_FRAME = 16 * 1024 * 1024
"""Java's default ``com.rocketmq.remoting.frameMaxLength`` (whole frame incl. the prefix)."""

_PREFIX = struct.Struct(">iI")          # length, mark (serialize << 24 | H)
_BIN_FIXED = struct.Struct(">hBhiii")   # code, language, version, opaque, flag, R
_I16 = struct.Struct(">h")
_I32 = struct.Struct(">i")
_U32 = struct.Struct(">I")
_BIN_FIXED_LEN = 21                     # 17 + the int32 E
_MIN_HEADER = (2, _BIN_FIXED_LEN)       # smallest sane header per serialize type ("{}" / binary)
_LANG_NAMES = LANGUAGES
_N_LANG = len(LANGUAGES)
_REPLACE = "replace"


class FrameError(ValueError):
    """A frame (or its header) that cannot be decoded; ``offset`` is the byte offset
    inside the frame (0 = the length field) where the problem was found."""

    def __init__(self, reason: str, offset: int = 0) -> None:
        super().__init__(f"{reason} (at frame byte {offset})")
        self.reason = reason
        self.offset = offset


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


# --------------------------------------------------------------------------- encode

def _s16(v: int) -> int:
    """Java ``(short) v``: keep the low 16 bits, signed."""
    return ((v + 0x8000) & 0xFFFF) - 0x8000


def _text(v: Any) -> str:
    """Text form of an extFields value as Java's ``toString`` would give it."""
    if type(v) is str:
        return v
    if v is True:
        return "true"
    if v is False:
        return "false"
    if v is None:
        return ""
    if isinstance(v, (int, float)):
        return str(v)
    if isinstance(v, (bytes, bytearray, memoryview)):
        return bytes(v).decode("utf-8", _REPLACE)
    try:
        return orjson.dumps(v).decode("utf-8")
    except TypeError:
        return str(v)


def _encode_json_header(cmd: RemotingCommand) -> bytes:
    d: dict[str, Any] = {"code": cmd.code}
    if cmd.ext is not None:
        d["extFields"] = {str(k): _text(v) for k, v in cmd.ext.items() if v is not None}
    d["flag"] = cmd.flag
    d["language"] = cmd.language
    d["opaque"] = cmd.opaque
    if cmd.remark is not None:
        d["remark"] = cmd.remark
    d["serializeTypeCurrentRPC"] = "JSON"
    d["version"] = cmd.version
    return orjson.dumps(d)


def _encode_binary_header(cmd: RemotingCommand) -> bytes:
    remark = cmd.remark.encode("utf-8") if cmd.remark else b""
    parts = [
        _BIN_FIXED.pack(_s16(cmd.code), language_code(cmd.language), _s16(cmd.version),
                        cmd.opaque, cmd.flag, len(remark)),
        remark,
    ]
    ext_parts: list[bytes] = []
    if cmd.ext:
        for k, v in cmd.ext.items():
            if k is None or v is None:  # Java skips null keys/values
                continue
            kb = str(k).encode("utf-8")
            vb = _text(v).encode("utf-8")
            if len(kb) > 0x7FFF:
                raise ValueError(f"extFields key too long for a binary header: {len(kb)} bytes")
            ext_parts += (_I16.pack(len(kb)), kb, _I32.pack(len(vb)), vb)
    ext_block = b"".join(ext_parts)
    parts += (_I32.pack(len(ext_block)), ext_block)
    return b"".join(parts)


def encode(cmd: RemotingCommand) -> bytes:
    """Whole frame (with the 4-byte length) for ``cmd`` in ``cmd.serialize``.

    JSON headers use fastjson's key order; ROCKETMQ headers write code and version as
    Java ``short`` (a code > 32767 is truncated to 16 bits, as Java does). A binary
    header needs a known language name (ValueError otherwise). Binary decoding gives
    ``None`` back for an empty remark or an empty ext map (Java writes both as length 0).
    """
    if cmd.serialize == JSON:
        header = _encode_json_header(cmd)
    elif cmd.serialize == ROCKETMQ:
        header = _encode_binary_header(cmd)
    else:
        raise ValueError(f"unknown serialize type {cmd.serialize}")
    hlen = len(header)
    if hlen > 0xFFFFFF:
        raise ValueError(f"header too long for the 24-bit length field: {hlen} bytes")
    body = cmd.body or b""
    return b"".join((_PREFIX.pack(4 + hlen + len(body), (cmd.serialize << 24) | hlen), header, body))


# --------------------------------------------------------------------------- decode

_MISSING: Any = object()  # typed Any: it stands in for any header value


def _as_int(v: Any, key: str, offset: int) -> int:
    if type(v) is int:
        return v
    if isinstance(v, bool):
        return int(v)
    if isinstance(v, float) and v.is_integer():
        return int(v)
    if isinstance(v, str):
        try:
            return int(v.strip())
        except ValueError:
            pass
    if v is None:
        return 0
    raise FrameError(f"JSON header field {key} is not an integer", offset)


_JSON_KEYS = ("code", "flag", "opaque", "version", "language", "remark", "extFields")


def _lookup(d: dict[Any, Any], key: str, lowered: list[dict[str, Any]]) -> Any:
    """Case-insensitive fallback lookup (fastjson matches property names loosely)."""
    if not lowered:
        lowered.append({str(k).lower(): v for k, v in d.items()})
    return lowered[0].get(key.lower(), _MISSING)


def _json_object(raw: bytes | memoryview) -> dict[Any, Any]:
    """The JSON header as a dict: orjson, else the tolerant fastjson reader."""
    try:
        d = orjson.loads(raw)
    except ValueError:
        try:
            d = fastjson.loads(str(raw, "utf-8", _REPLACE))
        except Exception:  # noqa: BLE001 - any parser failure means a bad header
            raise FrameError("bad JSON header", 8) from None
    if type(d) is not dict:
        raise FrameError("JSON header is not an object", 8)
    return d


def _decode_json(buf: bytes | memoryview, hs: int, he: int) -> RemotingCommand:
    d = _json_object(buf[hs:he])
    get = d.get
    code = get("code", _MISSING)
    if code is not _MISSING and "opaque" in d:
        # the usual case (Java, Go, ...): exact key names; absent keys take Java's defaults
        flag = get("flag", _MISSING)
        opaque = d["opaque"]
        version = get("version", _MISSING)
        language = get("language", _MISSING)
        remark = get("remark", _MISSING)
        ext = get("extFields", _MISSING)
        if type(code) is int and type(flag) is int and type(opaque) is int and type(version) is int \
                and type(language) is str and (remark is _MISSING or type(remark) is str) \
                and type(ext) is dict:
            for v in ext.values():
                if type(v) is not str:
                    break
            else:
                return RemotingCommand(code, flag, opaque, language, version,
                                       None if remark is _MISSING else remark, ext, None, JSON)
    else:  # other writers: fastjson's loose (case-insensitive) key matching
        lowered: list[dict[str, Any]] = []
        code, flag, opaque, version, language, remark, ext = (
            v if (v := get(k, _MISSING)) is not _MISSING else _lookup(d, k, lowered)
            for k in _JSON_KEYS)
    return _loose_json_command(code, flag, opaque, version, language, remark, ext)


def _loose_json_command(code: Any, flag: Any, opaque: Any, version: Any, language: Any, remark: Any,
                        ext: Any) -> RemotingCommand:
    """The command of a JSON header whose fields are not all in Java's own types: the
    values coerced (or defaulted, when ``_MISSING``) as fastjson would."""
    if type(code) is not int:
        code = 0 if code is _MISSING else _as_int(code, "code", 8)
    if type(flag) is not int:
        flag = 0 if flag is _MISSING else _as_int(flag, "flag", 8)
    if type(opaque) is not int:
        opaque = 0 if opaque is _MISSING else _as_int(opaque, "opaque", 8)
    if type(version) is not int:
        version = 0 if version is _MISSING else _as_int(version, "version", 8)
    if type(language) is not str:
        language = _json_language(language)
    if remark is _MISSING:
        remark = None
    elif remark is not None and type(remark) is not str:
        remark = _text(remark)
    return RemotingCommand(code, flag, opaque, language, version, remark, _json_ext(ext), None, JSON)


def _json_language(language: Any) -> str:
    """A JSON header's ``language`` that is not a string: absent/null is JAVA, an int is
    the binary header's language number."""
    if language is _MISSING or language is None:
        return "JAVA"
    if type(language) is int:
        return _LANG_NAMES[language] if 0 <= language < _N_LANG else f"UNKNOWN({language})"
    return _text(language)


def _json_ext(ext: Any) -> dict[str, str] | None:
    """A JSON header's ``extFields``: None when absent or null, values as text."""
    if ext is _MISSING or ext is None:
        return None
    if type(ext) is not dict:
        raise FrameError("JSON header extFields is not an object", 8)
    for v in ext.values():
        if type(v) is not str:
            return {str(k): _text(v) for k, v in ext.items()}
    return ext


def _binary_ext(buf: Any, p: int, elen: int, base: int) -> dict[str, str]:
    """The extFields map of a binary header: ``elen`` bytes at ``buf[p:]``; ``base`` is
    their frame offset (for errors)."""
    ext: dict[str, str] = {}
    blk = bytes(buf[p:p + elen])
    # one latin-1 decode of the block, then str slices (keys and values are almost
    # always ASCII, for which latin-1 and UTF-8 agree); other text is decoded as UTF-8
    txt = blk.decode("latin-1")
    ascii_only = blk.isascii()  # then no key or value needs a second look
    q = 0
    unpack32 = _U32.unpack_from
    while q < elen:
        if q + 2 > elen:
            raise FrameError("truncated extFields key length", base + q)
        klen = (blk[q] << 8) | blk[q + 1]
        q += 2
        if klen >= 0x8000 or q + klen + 4 > elen:
            raise FrameError("bad extFields key length", base + q - 2)
        key = txt[q:q + klen]
        if not ascii_only and not key.isascii():
            key = blk[q:q + klen].decode("utf-8", _REPLACE)
        q += klen
        (vlen,) = unpack32(blk, q)  # unsigned: a negative length fails the bound below
        q += 4
        if q + vlen > elen:
            raise FrameError("bad extFields value length", base + q - 4)
        val = txt[q:q + vlen]
        if not ascii_only and not val.isascii():
            val = blk[q:q + vlen].decode("utf-8", _REPLACE)
        ext[key] = val
        q += vlen
    return ext


def _decode_binary(buf: bytes | memoryview, hs: int, hlen: int) -> RemotingCommand:
    if hlen < _BIN_FIXED_LEN:
        raise FrameError("binary header shorter than 21 bytes", 8)
    he = hs + hlen
    code, lang, version, opaque, flag, rlen = _BIN_FIXED.unpack_from(buf, hs)
    p = hs + 17
    if rlen < 0 or rlen > hlen or p + rlen + 4 > he:
        raise FrameError("bad remark length", p - 4 - hs + 8)
    remark = str(buf[p:p + rlen], "utf-8", _REPLACE) if rlen else None
    p += rlen
    (elen,) = _I32.unpack_from(buf, p)
    p += 4
    if elen < 0 or elen > hlen or p + elen > he:
        raise FrameError("bad extFields length", p - 4 - hs + 8)
    ext = _binary_ext(buf, p, elen, p - hs + 8) if elen else None
    language = _LANG_NAMES[lang] if lang < _N_LANG else f"UNKNOWN({lang})"
    if not flag & FLAG_RESPONSE and code in TRUNCATED_REQUEST_CODES:
        return RemotingCommand(TRUNCATED_REQUEST_CODES[code], flag, opaque, language, version, remark, ext,
                               None, ROCKETMQ, code, True)
    # positional: keyword construction of this 13-field dataclass costs ~3x more
    return RemotingCommand(code, flag, opaque, language, version, remark, ext, None, ROCKETMQ)


Peeked = tuple[int, int, int, "dict[str, str] | None"]
"""(code, flag, opaque, ext) of a frame, without building a command (ext: requests only)."""


_Int32 = Annotated[int, msgspec.Meta(ge=-(1 << 31), le=(1 << 31) - 1)]


class _JsonHead(msgspec.Struct):
    """The fields of a JSON header the peek needs, in the types :func:`_decode_json` keeps as
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
_prefix = _PREFIX.unpack_from
_u32 = _U32.unpack_from
_u16 = struct.Struct(">H").unpack_from


def _peek_binary_ext(buf: Any, p: int, elen: int) -> dict[str, str] | None:
    """:func:`_binary_ext` for the peek: the same map when the block is ASCII and well
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


def _decode(buf: bytes | memoryview, start: int, total: int, stype: int, hlen: int) -> RemotingCommand:
    """Decode the frame ``buf[start:start+total]`` whose prefix was already checked."""
    hs = start + 8
    if stype == JSON:
        cmd = _decode_json(buf, hs, hs + hlen)
    elif stype == ROCKETMQ:
        cmd = _decode_binary(buf, hs, hlen)
    else:
        raise FrameError("unknown serialize type", 4)
    bs = hs + hlen
    be = start + total
    if be > bs:
        cmd.body = bytes(buf[bs:be])
    cmd.header_len = hlen
    cmd.frame_len = total
    return cmd


def decode_frame(frame: bytes | bytearray | memoryview) -> RemotingCommand:
    """Decode one whole frame (with its length prefix); raises :class:`FrameError`."""
    buf = memoryview(frame)
    if buf.format != "B" or buf.ndim != 1:
        buf = buf.cast("B")
    n = len(buf)
    if n < 8:
        raise FrameError("frame shorter than 8 bytes", 0)
    length, mark = _PREFIX.unpack_from(buf, 0)
    if length != n - 4:
        raise FrameError("length field does not match frame size", 0)
    stype = mark >> 24
    hlen = mark & 0xFFFFFF
    if stype > 1:
        raise FrameError("unknown serialize type", 4)
    if hlen > length - 4:
        raise FrameError("header length exceeds frame length", 5)
    return _decode(buf, 0, n, stype, hlen)


# --------------------------------------------------------------------------- stream

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
        if max_frame < 8 + _BIN_FIXED_LEN:
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
        length, mark = _PREFIX.unpack_from(data, 0)
        hlen = mark & 0xFFFFFF
        if length + 4 != n or n > self.max_frame or hlen > length - 4 or length < (25 if mark >> 24 else 6):
            return None
        try:
            cmd = _decode(data, 0, n, mark >> 24, hlen)
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
            if hlen < _BIN_FIXED_LEN or length < 25:
                return None
            code, _lang, _version, opaque, flag, rlen = _BIN_FIXED.unpack_from(data, hs)
            he = hs + hlen
            p = hs + 17
            if rlen < 0 or rlen > hlen or p + rlen + 4 > he:
                return None
            p += rlen
            (elen,) = _I32.unpack_from(data, p)
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
            (length,) = _I32.unpack_from(self._buf, 0)
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
        if length < 4 + _MIN_HEADER[stype]:
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
        unpack = _PREFIX.unpack_from
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
                    cmd = _decode(buf, q, total, mark >> 24, mark & 0xFFFFFF)
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
                cmd = _decode(buf, p, total, stype, hlen)
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
        unpack = _PREFIX.unpack_from
        while True:
            m = search(buf, p)
            if m is None:
                return -1
            q = m.start()
            length, mark = unpack(buf, q)
            stype = mark >> 24
            hlen = mark & 0xFFFFFF
            ok = 4 + _MIN_HEADER[stype] <= length <= max_len and _MIN_HEADER[stype] <= hlen <= length - 4
            if ok and stype == ROCKETMQ:
                if n - q < _LOOKAHEAD:
                    return -1  # the caller keeps the last _LOOKAHEAD - 1 bytes
                (rlen,) = _I32.unpack_from(buf, q + 21)
                ok = 0 <= rlen <= hlen - _BIN_FIXED_LEN
            if ok:
                return q
            p = q + 1
