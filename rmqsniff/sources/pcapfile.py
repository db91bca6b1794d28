"""Capture files: classic pcap (micro/nanosecond, both byte orders) and pcapng.

The file and interface headers are parsed with dpkt's structures; the per-record
loop is a plain ``struct`` walk over large buffered reads, because it runs once
per packet and dpkt's per-record objects cost more than the rest of the decode.

pcapng: every section (SHB) and every interface (IDB) is honoured, each with its
own link type, timestamp resolution and offset, so multi-interface captures
(``tshark -i lo -i eth0``) decode correctly.

A truncated or corrupt file never raises out of the iterator: the problem is
recorded in :attr:`CaptureReader.errors` (one line: what, at which byte). A
corrupt record or block is skipped: the reader resynchronises on the next
plausible one (pcap: two record headers in a row with sane lengths and
timestamps near the last good one; pcapng: an aligned block whose trailing
length matches) and reading resumes; the bytes skipped are counted in
:attr:`CaptureReader.corrupt_bytes`. A truncated file keeps what was read.
A block's length is checked before the block acts on anything: a corrupt section
header is skipped like any corrupt block and leaves the section (byte order,
interfaces) as it was.
"""
from __future__ import annotations

import io
import mmap
import os
import re
import stat
import struct
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, BinaryIO

import dpkt
from dpkt import pcap as dpcap
from dpkt import pcapng as dpcapng

CHUNK = 1 << 20
BATCH_BYTES = 64 << 10  # file bytes per batch of records (CaptureReader.batches)
RELEASE = 8 << 20  # bytes of a mapped file read between giving their pages back
MAX_RECORD = 256 * 1024 * 1024  # a record larger than this is corruption, not data
MIN_RECORD_LIMIT = 256 * 1024  # records up to this size are believed whatever the snap length says
MAX_BLOCK = 16 * 1024 * 1024  # a pcapng block larger than this is corruption
RESYNC_BLIND = 1 << 20  # how far to look for a record when no earlier timestamp can guide the search
MAX_TS_JUMP = 86400  # seconds a resynchronised record may be away from the last good one

PCAP_MAGICS = {
    dpcap.TCPDUMP_MAGIC: ("<", 1e-6),
    dpcap.TCPDUMP_MAGIC_NANO: ("<", 1e-9),
}
_PCAPNG_SHB = 0x0A0D0D0A
_PCAPNG_DSB = 0x0000000A  # Decryption Secrets Block
_DSB_TLS_KEYLOG = 0x544C534B  # its secrets type "TLSK": NSS key log text


class CaptureError(Exception):
    """A capture file that cannot be read at all."""


@dataclass(slots=True)
class Interface:
    linktype: int
    scale: float  # seconds per timestamp unit
    offset: int  # seconds added to every timestamp
    name: str = ""


class CaptureReader:
    """Iterate ``(ts, linktype, frame_bytes)`` over one capture file."""

    def __init__(self, fileobj: BinaryIO, name: str = "") -> None:
        self.f = fileobj
        self.name = name or getattr(fileobj, "name", "<capture>")
        self.errors: list[str] = []
        self.packets = 0
        self.corrupt_bytes = 0  # bytes skipped over corrupt records to resynchronise
        self.interfaces: list[Interface] = []
        # told the key log text of each pcapng Decryption Secrets Block (TLS), as it is read
        self.on_secrets: Callable[[str], object] | None = None
        # what is there now, not a full chunk: a pipe (``tcpdump -U -w - |``) is decoded as it comes
        self._read: Callable[[int], bytes] = getattr(fileobj, "read1", fileobj.read)
        head = fileobj.read(24)
        if len(head) < 4:
            raise CaptureError(f"{self.name}: empty or too short to be a capture file")
        magic_le = struct.unpack("<I", head[:4])[0]
        magic_be = struct.unpack(">I", head[:4])[0]
        self._head = head
        if magic_le == _PCAPNG_SHB:
            self.format = "pcapng"
        elif magic_le in PCAP_MAGICS or magic_be in PCAP_MAGICS:
            self.format = "pcap"
            if len(head) < 24:
                raise CaptureError(f"{self.name}: truncated pcap file header")
        else:
            raise CaptureError(
                f"{self.name}: not a pcap or pcapng file (magic {head[:4].hex()})"
            )

    def __enter__(self) -> CaptureReader:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the underlying file."""
        self.f.close()

    def __iter__(self) -> Iterator[tuple[float, int, bytes]]:
        if self.format == "pcap":
            return self._iter_pcap()
        return self._iter_pcapng()

    def batches(self) -> Iterator[tuple[Any, int, list[tuple[float, int, int]]]]:
        """The records in batches: ``(buf, linktype, [(ts, start, end), ...])``, each frame
        being ``buf[start:end]`` (valid until the next batch). Classic pcap is walked
        without slicing a frame or resuming a generator per record (the stats-only fast
        path reads this way); pcapng comes one record per batch."""
        if self.format == "pcap":
            for buf, linktype, recs in self._pcap_batches():
                self.packets += len(recs)
                yield buf, linktype, recs
            return
        for ts, linktype, frame in self._iter_pcapng():
            yield frame, linktype, [(ts, 0, len(frame))]

    # -- classic pcap -------------------------------------------------------
    def _iter_pcap(self) -> Iterator[tuple[float, int, bytes]]:
        for buf, linktype, recs in self._pcap_batches():
            for ts, start, end in recs:
                self.packets += 1
                yield ts, linktype, buf[start:end]

    def _pcap_batches(self) -> Iterator[tuple[Any, int, list[tuple[float, int, int]]]]:
        head = self._head
        magic_le = struct.unpack("<I", head[:4])[0]
        if magic_le in PCAP_MAGICS:
            endian, scale = PCAP_MAGICS[magic_le]
            fh = dpcap.LEFileHdr(head)
        else:
            endian, scale = ">", PCAP_MAGICS[struct.unpack(">I", head[:4])[0]][1]
            fh = dpcap.FileHdr(head)
        linktype = fh.linktype & 0x0FFFFFFF
        self.interfaces.append(Interface(linktype, scale, 0))
        # a record longer than the snap length (or 256 KiB, for writers that lie about it) is corruption
        limit = min(max(fh.snaplen, MIN_RECORD_LIMIT), MAX_RECORD)
        rec = struct.Struct(endian + "IIII").unpack_from
        rec3 = struct.Struct(endian + "III").unpack_from  # the hot loop's: no wire length
        win = _Window(self._read, 24, fileobj=self.f)
        pos = 24
        last_sec: int | None = None  # of the last good record: where a resync looks for the next
        while True:
            if not win.ensure(pos, 16):
                break
            buf, base = win.buf, win.base
            off, end = pos - base, len(buf)
            bad = short = False
            caplen = 0
            while not (bad or short) and off + 16 <= end:
                stop = min(end - 16, off + BATCH_BYTES)  # a batch: the records starting up to here
                recs: list[tuple[float, int, int]] = []
                add = recs.append
                while off <= stop:  # the hot loop: every record of the file
                    sec, frac, caplen = rec3(buf, off)
                    if caplen > limit:
                        bad = True
                        break
                    start = off + 16
                    nxt = start + caplen
                    if nxt > end:
                        short = True
                        break
                    add((sec + frac * scale, start, nxt))
                    off = nxt
                if recs:
                    last_sec = rec3(buf, recs[-1][1] - 16)[0]
                    yield buf, linktype, recs
                    win.release(base + off)
            pos = base + off
            if bad:
                q = _pcap_resync(win, pos, rec, limit, 1e9 if scale < 1e-6 else 1e6, last_sec, endian)
                where = f"{self.name}: corrupt record header at byte {pos} (captured length {caplen})"
                if q is None:
                    self.errors.append(f"{where}; no valid record after it, stopped reading")
                    return
                self.errors.append(f"{where}; skipped {q - pos} bytes, resumed at byte {q}")
                self.corrupt_bytes += q - pos
                pos = q
                continue
            if not win.ensure(pos, 16 + caplen if short else 16):
                break
        if win.end > pos:
            self.errors.append(
                f"{self.name}: file truncated at byte {pos} "
                f"({win.end - pos} bytes of a partial record ignored)"
            )

    # -- pcapng ---------------------------------------------------------------
    def _iter_pcapng(self) -> Iterator[tuple[float, int, bytes]]:  # noqa: C901 - hot loop: every pcapng block
        win = _Window(self._read, 0, self._head)
        pos = 0
        endian = "<"
        hdr = struct.Struct("<II").unpack_from
        epb = struct.Struct("<IIIII").unpack_from
        spb_len = struct.Struct("<I").unpack_from
        ifaces = self.interfaces
        while True:
            if not win.ensure(pos, 12) and not win.ensure(pos, 8):
                break
            buf, base = win.buf, win.base
            off = pos - base
            btype, blen = hdr(buf, off)
            problem = None
            if btype == _PCAPNG_SHB:
                if len(buf) - off < 12:
                    break
                bom = buf[off + 8:off + 12]
                section = "<" if bom == b"\x4d\x3c\x2b\x1a" else ">" if bom == b"\x1a\x2b\x3c\x4d" else None
                if section is None:
                    problem = "bad pcapng byte-order magic"
                else:
                    u32 = struct.Struct(section + "I").unpack_from
                    blen = u32(buf, off + 4)[0]
                    # the block must check out before it resets the section; if it does not,
                    # the checks below name the problem and skip this block only
                    if 12 <= blen <= MAX_BLOCK and blen % 4 == 0 and win.ensure(pos, blen):
                        buf, base = win.buf, win.base
                        off = pos - base
                        if u32(buf, off + blen - 4)[0] == blen:
                            endian = section
                            hdr = struct.Struct(endian + "II").unpack_from
                            epb = struct.Struct(endian + "IIIII").unpack_from
                            spb_len = u32
                            ifaces.clear()  # interface ids are per section
            if problem is None:
                if blen < 12 or blen % 4 or blen > MAX_BLOCK:
                    problem = f"corrupt pcapng block (length {blen})"
                elif not win.ensure(pos, blen):
                    problem = f"truncated pcapng block (length {blen}, {win.end - pos} bytes left)"
                else:
                    buf, base = win.buf, win.base
                    off = pos - base
                    if spb_len(buf, off + blen - 4)[0] != blen:
                        problem = f"corrupt pcapng block (length {blen} does not match its trailing length)"
            if problem is not None:
                q = _pcapng_resync(win, pos, endian)
                if q is None:
                    if problem.startswith("truncated"):
                        self.errors.append(f"{self.name}: file truncated at byte {pos} ({problem})")
                    else:
                        self.errors.append(f"{self.name}: {problem} at byte {pos}; no valid block after it, "
                                           f"stopped reading")
                    return
                self.errors.append(f"{self.name}: {problem.replace('truncated', 'corrupt')} at byte {pos}; "
                                   f"skipped {q - pos} bytes, resumed at byte {q}")
                self.corrupt_bytes += q - pos
                pos = q
                continue
            if btype == 6:  # Enhanced Packet Block
                if blen < 32:
                    self.errors.append(f"{self.name}: packet block at byte {pos} too short ({blen} bytes); skipped")
                else:
                    iface_id, ts_hi, ts_lo, caplen, _wire = epb(buf, off + 8)
                    if iface_id >= len(ifaces) or 28 + caplen > blen:
                        self.errors.append(
                            f"{self.name}: packet block at byte {pos} names interface {iface_id} "
                            f"or overruns its block; skipped"
                        )
                    else:
                        ifc = ifaces[iface_id]
                        self.packets += 1
                        yield (
                            ifc.offset + ((ts_hi << 32) | ts_lo) * ifc.scale,
                            ifc.linktype,
                            buf[off + 28:off + 28 + caplen],
                        )
            elif btype == 3:  # Simple Packet Block: no timestamp
                if ifaces and blen >= 16:
                    wire = spb_len(buf, off + 8)[0]
                    caplen = min(wire, blen - 16)
                    self.packets += 1
                    yield 0.0, ifaces[0].linktype, buf[off + 12:off + 12 + caplen]
            elif btype == 1:  # Interface Description Block
                ifaces.append(self._idb(bytes(buf[off:off + blen]), endian))
            elif btype == _PCAPNG_DSB and blen >= 20:
                self._secrets(bytes(buf[off + 8:off + blen - 4]), endian, pos)
            elif btype == 2 and blen >= 32:  # obsolete Packet Block
                iface_id = struct.unpack_from(endian + "H", buf, off + 8)[0]
                _d, ts_hi, ts_lo, caplen, _w = epb(buf, off + 8)
                if iface_id < len(ifaces) and 28 + caplen <= blen:
                    ifc = ifaces[iface_id]
                    self.packets += 1
                    yield (
                        ifc.offset + ((ts_hi << 32) | ts_lo) * ifc.scale,
                        ifc.linktype,
                        buf[off + 28:off + 28 + caplen],
                    )
            pos += blen
        if win.end > pos:
            self.errors.append(
                f"{self.name}: file truncated at byte {pos} ({win.end - pos} trailing bytes ignored)"
            )

    def _secrets(self, body: bytes, endian: str, pos: int) -> None:
        """A Decryption Secrets Block: TLS key log text goes to ``on_secrets``; other kinds are skipped."""
        stype, slen = struct.unpack_from(endian + "II", body)
        if stype != _DSB_TLS_KEYLOG:
            self.errors.append(f"{self.name}: decryption secrets of type 0x{stype:08x} at byte {pos} not used")
        elif 8 + slen > len(body):
            self.errors.append(f"{self.name}: decryption secrets block at byte {pos} overruns itself; skipped")
        elif self.on_secrets is not None:
            self.on_secrets(body[8:8 + slen].decode("utf-8", "replace"))

    def _idb(self, block: bytes, endian: str) -> Interface:
        cls = dpcapng.InterfaceDescriptionBlockLE if endian == "<" else dpcapng.InterfaceDescriptionBlock
        try:
            idb = cls(block)
        except (dpkt.UnpackError, struct.error, ValueError) as e:
            self.errors.append(f"{self.name}: unreadable interface description ({e}); assuming Ethernet/µs")
            return Interface(1, 1e-6, 0)
        scale, offset, name = 1e-6, 0, ""
        for opt in getattr(idb, "opts", []):
            if opt.code == dpcapng.PCAPNG_OPT_IF_TSRESOL and opt.data:
                v = opt.data[0]
                scale = 2.0 ** -(v & 0x7F) if v & 0x80 else 10.0 ** -(v & 0x7F)
            elif opt.code == dpcapng.PCAPNG_OPT_IF_TSOFFSET and len(opt.data) >= 8:
                offset = struct.unpack(endian + "q", opt.data[:8])[0]
            elif opt.code == dpcapng.PCAPNG_OPT_IF_NAME:
                name = bytes(opt.data).rstrip(b"\0").decode("utf-8", "replace")
        return Interface(idb.linktype, scale, offset, name)


class _Window:
    """Buffered reads with absolute file offsets: ``buf[0]`` is the byte at ``base``.

    A regular file is memory-mapped instead (``buf`` is the whole file, ``base`` 0):
    no read copies, and records are sliced straight out of the page cache."""

    __slots__ = ("read", "buf", "base", "eof", "mapped", "released")

    def __init__(self, read, base: int, initial: bytes = b"", fileobj: BinaryIO | None = None) -> None:
        self.read = read
        self.buf: bytes | mmap.mmap = initial
        self.base = base
        self.eof = False
        self.mapped = False
        self.released = 0  # mapped: pages before this offset were given back
        m = _map(fileobj) if fileobj is not None else None
        if m is not None:
            self.buf, self.base, self.eof, self.mapped = m, 0, True, True

    def release(self, pos: int) -> None:
        """Mapped: the bytes before ``pos`` are done with; every RELEASE bytes their pages
        are dropped from the mapping (they stay in the page cache), so resident memory
        does not grow with the file."""
        if self.mapped and pos - self.released >= RELEASE:
            end = pos - pos % mmap.PAGESIZE
            buf = self.buf
            assert isinstance(buf, mmap.mmap)  # mapped
            buf.madvise(mmap.MADV_DONTNEED, self.released, end - self.released)
            self.released = end

    @property
    def end(self) -> int:
        return self.base + len(self.buf)

    def ensure(self, pos: int, n: int, keep: int | None = None) -> bool:
        """Make bytes ``[pos, pos + n)`` available (dropping what precedes ``keep``,
        default ``pos``); False at end of file."""
        if pos + n <= self.base + len(self.buf):
            return True
        keep = pos if keep is None else keep
        if keep > self.base and not self.mapped:
            self.buf = self.buf[keep - self.base:]
            self.base = keep
        while self.base + len(self.buf) < pos + n and not self.eof:
            chunk = self.read(max(CHUNK, pos + n - self.base - len(self.buf)))
            if not chunk:
                self.eof = True
                break
            self.buf += chunk
        return pos + n <= self.base + len(self.buf)


def _map(fileobj: BinaryIO) -> mmap.mmap | None:
    """A read-only map of a non-empty regular file, else None (pipes, sockets, BytesIO)."""
    try:
        fd = fileobj.fileno()
        if not stat.S_ISREG(os.fstat(fd).st_mode) or os.fstat(fd).st_size == 0:
            return None
        return mmap.mmap(fd, 0, access=mmap.ACCESS_READ)
    except (OSError, ValueError, AttributeError, io.UnsupportedOperation):
        return None


def _sec_pattern(last_sec: int, endian: str) -> tuple[re.Pattern[bytes], int]:
    """Regex finding the high 16 bits of a seconds field near ``last_sec``, and the
    distance from a match back to the record start."""
    highs = {(s >> 16) & 0xFFFF for s in (max(0, last_sec - MAX_TS_JUMP), last_sec, last_sec + MAX_TS_JUMP)}
    alts = b"|".join(re.escape(struct.pack(endian + "H", h)) for h in sorted(highs))
    return re.compile(alts), (2 if endian == "<" else 0)


def _pcap_resync(win: _Window, bad: int, rec, limit: int, frac_max: float, last_sec: int | None,
                 endian: str) -> int | None:
    """File offset of the first plausible record after the corrupt header at ``bad``:
    its header and the next one (or the end of the file right after it) are sane."""
    wire_max = max(limit, 1 << 18)

    def sane(p: int, ref: int | None) -> int | None:
        sec, frac, caplen, wire = rec(win.buf, p - win.base)
        if caplen > limit or not caplen <= wire <= wire_max or frac >= frac_max:
            return None
        if ref is not None and abs(sec - ref) > MAX_TS_JUMP:
            return None
        return caplen

    if last_sec is not None:
        pattern, back = _sec_pattern(last_sec, endian)
        horizon = None
    else:
        pattern, back = re.compile(b".", re.S), 0
        horizon = bad + RESYNC_BLIND
    p = bad + 1
    while horizon is None or p < horizon:
        if not win.ensure(p, 16):
            return None
        m = pattern.search(win.buf, p - win.base + back)
        if m is None:
            p = max(p, win.end - 15)
            if not win.ensure(p, 16 + CHUNK) and win.end - p < 16:
                return None
            if win.eof and pattern.search(win.buf, p - win.base + back) is None:
                return None
            continue
        q = win.base + m.start() - back
        if not win.ensure(q, 16, keep=q):
            return None
        caplen = sane(q, last_sec)
        if caplen is not None:
            nxt = q + 16 + caplen
            if win.ensure(nxt, 16, keep=q):
                ref = rec(win.buf, q - win.base)[0]
                if sane(nxt, ref) is not None:
                    return q
            elif win.end == nxt:  # the record ends exactly at the end of the file
                return q
        p = q + 1
    return None


_NG_TYPES = {"<": re.compile(rb"[\x01-\x0a]\x00\x00\x00|\x0a\x0d\x0d\x0a"),
             ">": re.compile(rb"\x00\x00\x00[\x01-\x0a]|\x0a\x0d\x0d\x0a")}


def _pcapng_resync(win: _Window, bad: int, endian: str) -> int | None:
    """File offset of the first 4-byte aligned block after ``bad`` whose type is known
    and whose leading and trailing lengths agree."""
    pattern = _NG_TYPES[endian]
    u32 = struct.Struct(endian + "I").unpack_from
    p = bad + 4
    while True:
        if not win.ensure(p, 12):
            return None
        m = pattern.search(win.buf, p - win.base)
        if m is None:
            p = max(p, win.end - 11)
            if win.eof:
                return None
            win.ensure(p, 12 + CHUNK)
            continue
        q = win.base + m.start()
        if (q - bad) % 4 == 0 and win.ensure(q, 12, keep=q):
            blen = u32(win.buf, q - win.base + 4)[0]
            if win.buf[q - win.base:q - win.base + 4] == b"\x0a\x0d\x0d\x0a":
                bom = win.buf[q - win.base + 8:q - win.base + 12]
                blen = struct.unpack_from("<I" if bom == b"\x4d\x3c\x2b\x1a" else ">I", win.buf, q - win.base + 4)[0]
            if 12 <= blen <= MAX_BLOCK and blen % 4 == 0 and win.ensure(q, blen, keep=q):
                tail = win.buf[q - win.base + blen - 4:q - win.base + blen]
                if tail in (struct.pack("<I", blen), struct.pack(">I", blen)):
                    return q
        p = q + 1


STDIN = "-"  # the path that names standard input (read once, front to back: pipes cannot seek)


def open_capture(path: str) -> CaptureReader:
    """Open a capture file (``-``: standard input); raises CaptureError with a one-line reason."""
    if path == STDIN:
        return CaptureReader(sys.stdin.buffer, "<stdin>")
    try:
        f = open(path, "rb")  # noqa: SIM115 - closed by the caller via .f
    except OSError as e:
        raise CaptureError(f"{path}: cannot open ({e.strerror or e})") from None
    try:
        return CaptureReader(f, path)
    except CaptureError:
        f.close()
        raise
