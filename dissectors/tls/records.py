"""TLS record framing for one direction: bytes in, whole records out, memory bounded.

A record is ``type(1) version(2) length(2) fragment``.  A length over :data:`MAX_RECORD`
(2^14 + 2048, the TLS 1.2 ciphertext limit) or an unknown type ends the direction's
framing with an error: nothing after it can be trusted as a record boundary.
"""
from __future__ import annotations

from dataclasses import dataclass

CHANGE_CIPHER_SPEC = 20
ALERT = 21
HANDSHAKE = 22
APPLICATION_DATA = 23
CONTENT_TYPES = frozenset({CHANGE_CIPHER_SPEC, ALERT, HANDSHAKE, APPLICATION_DATA})
MAX_RECORD = (1 << 14) + 2048  # the largest fragment accepted
MAX_BUFFER = MAX_RECORD + 5  # the most a direction holds: one incomplete record


@dataclass(slots=True)
class Record:
    type: int
    version: int
    header: bytes  # the 5 header bytes (TLS 1.3 additional data)
    fragment: bytes
    offset: int  # where the record starts in its direction's byte stream


class RecordReader:
    """Whole records out of one direction's in-order bytes."""

    __slots__ = ("buf", "offset", "broken")

    def __init__(self) -> None:
        self.buf = b""
        self.offset = 0  # stream offset of buf[0]
        self.broken = ""

    def feed(self, data: bytes) -> list[Record]:
        """Records completed by ``data``; on a bad header, the records before it and ``broken``
        set to the reason (the direction is not read any further)."""
        if self.broken:
            return []
        n = len(data)
        if not self.buf and n >= 5 and n == 5 + ((data[3] << 8) | data[4]) and data[0] in CONTENT_TYPES \
                and data[1] == 3 and n <= MAX_BUFFER:  # the usual segment: one whole record
            off = self.offset
            self.offset = off + n
            return [Record(data[0], (data[1] << 8) | data[2], data[:5], data[5:], off)]
        buf = self.buf + data if self.buf else data
        out: list[Record] = []
        pos, n = 0, len(buf)
        while n - pos >= 5:
            typ = buf[pos]
            length = (buf[pos + 3] << 8) | buf[pos + 4]
            if typ not in CONTENT_TYPES or buf[pos + 1] != 3:
                return self._break(out, f"not a TLS record (type {typ}, version {buf[pos + 1]}.{buf[pos + 2]})")
            if length > MAX_RECORD:
                return self._break(out, f"record of {length} bytes (over {MAX_RECORD})")
            end = pos + 5 + length
            if end > n:
                break
            out.append(Record(typ, (buf[pos + 1] << 8) | buf[pos + 2], buf[pos:pos + 5], buf[pos + 5:end],
                              self.offset + pos))
            pos = end
        self.buf = buf[pos:]
        self.offset += pos
        return out

    def _break(self, out: list[Record], why: str) -> list[Record]:
        self.broken = why
        self.buf = b""
        return out


def record_header_ok(data: bytes) -> bool:
    """The first bytes of a direction look like a TLS record header."""
    return (len(data) >= 5 and data[0] in CONTENT_TYPES and data[1] == 3 and data[2] <= 4
            and (data[3] << 8 | data[4]) <= MAX_RECORD)
