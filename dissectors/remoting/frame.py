"""One remoting frame: ``encode`` a command, ``decode_frame`` a whole frame, and the JSON
and ROCKETMQ (binary) header codecs behind them.

Frame layout (all big-endian): int32 ``length`` (= 4 + H + B), one serialize byte
(0 JSON, 1 ROCKETMQ), uint24 header length H, H header bytes, B body bytes.
"""
from __future__ import annotations

import struct
from typing import Any

import orjson

from . import fastjson
from .codes import LANGUAGES, TRUNCATED_REQUEST_CODES, language_code
from .command import FLAG_RESPONSE, JSON, ROCKETMQ, RemotingCommand

__all__ = [
    "JSON", "ROCKETMQ", "DEFAULT_MAX_FRAME", "FrameError", "encode", "decode_frame", "decode_at",
    "PREFIX", "BIN_FIXED", "BIN_FIXED_LEN", "MIN_HEADER", "I32",
]

DEFAULT_MAX_FRAME = 16 * 1024 * 1024
"""Java's default ``com.rocketmq.remoting.frameMaxLength`` (whole frame incl. the prefix)."""

PREFIX = struct.Struct(">iI")           # length, mark (serialize << 24 | H)
BIN_FIXED = struct.Struct(">hBhiii")    # code, language, version, opaque, flag, R
_I16 = struct.Struct(">h")
I32 = struct.Struct(">i")
_U32 = struct.Struct(">I")
BIN_FIXED_LEN = 21                      # 17 + the int32 E
MIN_HEADER = (2, BIN_FIXED_LEN)         # smallest sane header per serialize type ("{}" / binary)
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
        BIN_FIXED.pack(_s16(cmd.code), language_code(cmd.language), _s16(cmd.version),
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
            ext_parts += (_I16.pack(len(kb)), kb, I32.pack(len(vb)), vb)
    ext_block = b"".join(ext_parts)
    parts += (I32.pack(len(ext_block)), ext_block)
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
    return b"".join((PREFIX.pack(4 + hlen + len(body), (cmd.serialize << 24) | hlen), header, body))


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
    if hlen < BIN_FIXED_LEN:
        raise FrameError("binary header shorter than 21 bytes", 8)
    he = hs + hlen
    code, lang, version, opaque, flag, rlen = BIN_FIXED.unpack_from(buf, hs)
    p = hs + 17
    if rlen < 0 or rlen > hlen or p + rlen + 4 > he:
        raise FrameError("bad remark length", p - 4 - hs + 8)
    remark = str(buf[p:p + rlen], "utf-8", _REPLACE) if rlen else None
    p += rlen
    (elen,) = I32.unpack_from(buf, p)
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


def decode_at(buf: bytes | memoryview, start: int, total: int, stype: int, hlen: int) -> RemotingCommand:
    """Decode the frame ``buf[start:start+total]`` whose prefix was already checked (the
    stream decoder's way in: no copy of the frame, errors raised as they come)."""
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
    length, mark = PREFIX.unpack_from(buf, 0)
    if length != n - 4:
        raise FrameError("length field does not match frame size", 0)
    stype = mark >> 24
    hlen = mark & 0xFFFFFF
    if stype > 1:
        raise FrameError("unknown serialize type", 4)
    if hlen > length - 4:
        raise FrameError("header length exceeds frame length", 5)
    return decode_at(buf, 0, n, stype, hlen)

