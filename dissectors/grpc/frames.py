"""HTTP/2 frames (RFC 9113) of one direction of a connection, sans-I/O.

:class:`FrameReader` takes the direction's bytes in order and returns
:class:`Frame` objects.  It skips the client connection preface, and when it does
not know where a frame starts (capture began mid-connection, bytes were lost, a
frame header is impossible) it scans for a chain of three plausible frame headers
and reports the bytes it skipped.  Buffering is bounded by the frame size limit.
"""
from __future__ import annotations

from dataclasses import dataclass

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"

DATA, HEADERS, PRIORITY, RST_STREAM, SETTINGS, PUSH_PROMISE, PING, GOAWAY, WINDOW_UPDATE, CONTINUATION = range(10)
FRAME_NAMES = ("DATA", "HEADERS", "PRIORITY", "RST_STREAM", "SETTINGS", "PUSH_PROMISE", "PING", "GOAWAY",
               "WINDOW_UPDATE", "CONTINUATION")
END_STREAM, ACK, END_HEADERS, PADDED, PRIORITY_FLAG = 0x1, 0x1, 0x4, 0x8, 0x20
MAX_FRAME_LIMIT = (1 << 24) - 1
CHAIN = 3  # plausible headers in a row needed to resync
SCAN_MAX_LEN = 4 * 1024 * 1024  # longest frame believed while resyncing (gRPC peers allow <= 4 MiB)

ERROR_CODES = ("NO_ERROR", "PROTOCOL_ERROR", "INTERNAL_ERROR", "FLOW_CONTROL_ERROR", "SETTINGS_TIMEOUT",
               "STREAM_CLOSED", "FRAME_SIZE_ERROR", "REFUSED_STREAM", "CANCEL", "COMPRESSION_ERROR",
               "CONNECT_ERROR", "ENHANCE_YOUR_CALM", "INADEQUATE_SECURITY", "HTTP_1_1_REQUIRED")


def error_name(code: int) -> str:
    return ERROR_CODES[code] if 0 <= code < len(ERROR_CODES) else f"0x{code:x}"


@dataclass(slots=True)
class Frame:
    """One HTTP/2 frame; ``payload`` is the raw payload (padding not yet removed)."""

    type: int
    flags: int
    stream_id: int
    payload: bytes
    offset: int  # of the frame header in the direction's byte stream

    @property
    def name(self) -> str:
        return FRAME_NAMES[self.type] if self.type < len(FRAME_NAMES) else f"0x{self.type:x}"


@dataclass(slots=True)
class Skipped:
    """Bytes skipped while looking for a frame boundary."""

    offset: int
    nbytes: int
    reason: str


def plausible(h: bytes | bytearray | memoryview, i: int, max_len: int) -> int:
    """Length of the frame whose header is at ``h[i:i+9]`` if it looks like gRPC HTTP/2, else -1."""
    ln = (h[i] << 16) | (h[i + 1] << 8) | h[i + 2]
    t, fl = h[i + 3], h[i + 4]
    if h[i + 5] & 0x80 or ln > max_len:
        return -1
    sid = ((h[i + 5] << 24) | (h[i + 6] << 16) | (h[i + 7] << 8) | h[i + 8])
    if t in (DATA, HEADERS, CONTINUATION, PRIORITY, RST_STREAM):
        if not sid & 1:  # gRPC streams are client-initiated: odd ids
            return -1
        if t == DATA:
            ok = not fl & ~0x09
        elif t == HEADERS:
            ok = not fl & ~0x2D
        elif t == CONTINUATION:
            ok = not fl & ~0x04
        elif t == PRIORITY:
            ok = ln == 5 and not fl
        else:
            ok = ln == 4 and not fl
    elif t == SETTINGS:
        ok = sid == 0 and ln % 6 == 0 and fl in (0, 1) and (fl == 0 or ln == 0)
    elif t == PING:
        ok = sid == 0 and ln == 8 and fl in (0, 1)
    elif t == GOAWAY:
        ok = sid == 0 and ln >= 8 and not fl
    elif t == WINDOW_UPDATE:
        ok = ln == 4 and not fl
    else:
        ok = False
    return ln if ok else -1


class FrameReader:
    """Split one direction's byte stream into HTTP/2 frames."""

    __slots__ = ("buf", "pos", "synced", "preface", "max_len", "skipping", "skip_reason", "skip_start")

    def __init__(self, *, expect_preface: bool, synced: bool = True, max_len: int = MAX_FRAME_LIMIT) -> None:
        self.buf = bytearray()
        self.pos = 0  # stream offset of buf[0]
        self.synced = synced
        self.preface = expect_preface  # still expecting the client preface
        self.max_len = max_len
        self.skipping = 0  # bytes of a damaged frame still to skip
        self.skip_reason = ""
        self.skip_start = 0

    @property
    def buffered(self) -> int:
        return len(self.buf)

    def feed(self, data: bytes) -> list[Frame | Skipped]:
        out: list[Frame | Skipped] = []
        if self.skipping:
            data = self._skip(data, out)
        buf = self.buf
        buf += data
        if self.preface and not self._preface_done():
            return out
        i, n = 0, len(buf)
        max_len = self.max_len
        while True:
            if not self.synced:
                r = self._scan(i)
                if r == -1:  # no chain can start before the last 8 bytes
                    j = max(i, n - 8)
                elif r < -1:  # a chain may start at -2 - r: wait for the rest of it
                    j = -2 - r
                else:
                    j = r
                if j > i:
                    out.append(Skipped(self.pos + i, j - i, self.skip_reason or "looking for a frame boundary"))
                    i = j
                if r < 0:
                    break
                self.synced = True
                self.skip_reason = ""
            if n - i < 9:
                break
            ln = (buf[i] << 16) | (buf[i + 1] << 8) | buf[i + 2]
            if ln > max_len or buf[i + 5] & 0x80 or buf[i + 3] > CONTINUATION:
                self.skip_reason = f"impossible frame header (type {buf[i + 3]}, length {ln})"
                self.synced = False
                continue
            end = i + 9 + ln
            if end > n:
                break
            sid = ((buf[i + 5] & 0x7F) << 24) | (buf[i + 6] << 16) | (buf[i + 7] << 8) | buf[i + 8]
            out.append(Frame(buf[i + 3], buf[i + 4], sid, bytes(buf[i + 9:end]), self.pos + i))
            i = end
        if i:
            del buf[:i]
            self.pos += i
        return out

    def _skip(self, data: bytes, out: list[Frame | Skipped]) -> bytes:
        """Drop what is left of a damaged frame from the front of ``data``; the rest."""
        n = min(self.skipping, len(data))
        self.skipping -= n
        self.pos += n
        if not self.skipping:
            out.append(Skipped(self.skip_start, self.pos - self.skip_start, self.skip_reason))
            self.skip_reason = ""
        return data[n:]

    def _preface_done(self) -> bool:
        """Consume the client preface at the front of the buffer; False while it may still
        be arriving (too few bytes to tell)."""
        buf = self.buf
        k = min(len(buf), len(PREFACE))
        if buf[:k] != PREFACE[:k]:
            self.preface = False
            self.synced = False  # not the start of a connection after all
        elif k < len(PREFACE):
            return False
        else:
            del buf[:k]
            self.pos += k
            self.preface = False
        return True

    def _scan(self, i: int, final: bool = False) -> int:
        """First offset >= i starting a chain of CHAIN plausible headers; ``-2 - offset`` when
        a chain may start at offset but needs more data; -1 when none can start.  With
        ``final`` (no more data will come) a shorter chain ending exactly at the end counts."""
        buf, n, ml = self.buf, len(self.buf), min(self.max_len, SCAN_MAX_LEN)
        while i + 9 <= n:
            p, k = i, 0
            while k < CHAIN:
                if p + 9 > n:
                    return -1 if k == 0 else -2 - i  # chain incomplete: wait for more data
                ln = plausible(buf, p, ml)
                if ln < 0:
                    break
                p += 9 + ln
                k += 1
                if p == n and k < CHAIN:
                    return i if final else -2 - i
            if k == CHAIN:
                return i
            i += 1
        return -1

    def gap(self, nbytes: int) -> list[Skipped]:
        """``nbytes`` of this direction were lost from the capture."""
        out: list[Skipped] = []
        buf = self.buf
        if self.synced and len(buf) >= 9 and not self.skipping:
            ln = (buf[0] << 16) | (buf[1] << 8) | buf[2]
            remaining = 9 + ln - len(buf)
            if remaining > 0 and nbytes < remaining and plausible(buf, 0, self.max_len) >= 0:
                # the loss is inside this frame: drop it, stay in step after it
                self.skip_start = self.pos
                self.skip_reason = f"{nbytes} bytes lost inside a frame"
                self.pos += len(buf) + nbytes
                self.skipping = remaining - nbytes
                buf.clear()
                return out
        out.append(Skipped(self.pos, len(buf) + nbytes, f"{nbytes} bytes lost"))
        self.pos += len(buf) + nbytes
        buf.clear()
        self.synced = False
        self.preface = False
        return out

    def close(self) -> list[Frame | Skipped]:
        """End of the stream: frames a short tail still holds, and bytes left over."""
        out: list[Frame | Skipped] = []
        if self.buf and not self.synced and not self.skipping:
            r = self._scan(0, final=True)
            if r >= 0:
                self.synced = True
                if r:
                    out.append(Skipped(self.pos, r, self.skip_reason or "looking for a frame boundary"))
                    del self.buf[:r]
                    self.pos += r
                out.extend(self.feed(b""))
        if self.buf:
            out.append(Skipped(self.pos, len(self.buf), "truncated frame at the end of the stream"))
            self.pos += len(self.buf)
            self.buf.clear()
        return out
