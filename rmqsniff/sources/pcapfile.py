"""Capture files: classic pcap (micro/nanosecond, both byte orders) and pcapng.

The file and interface headers are parsed with dpkt's structures; the per-record
loop is a plain ``struct`` walk over large buffered reads, because it runs once
per packet and dpkt's per-record objects cost more than the rest of the decode.

pcapng: every section (SHB) and every interface (IDB) is honoured, each with its
own link type, timestamp resolution and offset, so multi-interface captures
(``tshark -i lo -i eth0``) decode correctly.

A truncated or corrupt file never raises out of the iterator: the problem is
recorded in :attr:`CaptureReader.errors` and iteration stops (the packets read
so far stay valid).
"""
from __future__ import annotations

import struct
from collections.abc import Iterator
from dataclasses import dataclass
from typing import BinaryIO

import dpkt
from dpkt import pcap as dpcap
from dpkt import pcapng as dpcapng

CHUNK = 1 << 20
MAX_RECORD = 256 * 1024 * 1024  # a record larger than this is corruption, not data

PCAP_MAGICS = {
    dpcap.TCPDUMP_MAGIC: ("<", 1e-6),
    dpcap.TCPDUMP_MAGIC_NANO: ("<", 1e-9),
}
_PCAPNG_SHB = 0x0A0D0D0A


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
        self.interfaces: list[Interface] = []
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

    # -- classic pcap -------------------------------------------------------
    def _iter_pcap(self) -> Iterator[tuple[float, int, bytes]]:
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
        rec = struct.Struct(endian + "IIII").unpack_from
        read = self.f.read
        buf = b""
        off = 0
        fileoff = 24
        while True:
            chunk = read(CHUNK)
            if not chunk:
                break
            buf = buf[off:] + chunk if off < len(buf) else chunk
            off = 0
            end = len(buf)
            while off + 16 <= end:
                sec, frac, caplen, _wirelen = rec(buf, off)
                if caplen > MAX_RECORD:
                    self.errors.append(
                        f"{self.name}: corrupt record header at byte {fileoff + off} "
                        f"(captured length {caplen}); stopped reading"
                    )
                    return
                nxt = off + 16 + caplen
                if nxt > end:
                    break
                self.packets += 1
                yield sec + frac * scale, linktype, buf[off + 16:nxt]
                fileoff += nxt - off
                off = nxt
        if off < len(buf):
            self.errors.append(
                f"{self.name}: file truncated at byte {fileoff} "
                f"({len(buf) - off} bytes of a partial record ignored)"
            )

    # -- pcapng ---------------------------------------------------------------
    def _iter_pcapng(self) -> Iterator[tuple[float, int, bytes]]:
        read = self.f.read
        buf = self._head
        off = 0
        fileoff = 0
        endian = "<"
        hdr = struct.Struct("<II").unpack_from
        epb = struct.Struct("<IIIII").unpack_from
        spb_len = struct.Struct("<I").unpack_from
        ifaces = self.interfaces
        eof = False
        while True:
            if len(buf) - off < 12 and not eof:
                chunk = read(CHUNK)
                if chunk:
                    buf = buf[off:] + chunk
                    off = 0
                else:
                    eof = True
            if len(buf) - off < 8:
                break
            btype, blen = hdr(buf, off)
            if btype == _PCAPNG_SHB:
                if len(buf) - off < 12:
                    break
                bom = buf[off + 8:off + 12]
                if bom == b"\x4d\x3c\x2b\x1a":
                    endian = "<"
                elif bom == b"\x1a\x2b\x3c\x4d":
                    endian = ">"
                else:
                    self.errors.append(f"{self.name}: bad pcapng byte-order magic at byte {fileoff}")
                    return
                hdr = struct.Struct(endian + "II").unpack_from
                epb = struct.Struct(endian + "IIIII").unpack_from
                spb_len = struct.Struct(endian + "I").unpack_from
                btype, blen = hdr(buf, off)
                ifaces.clear()  # interface ids are per section
            if blen < 12 or blen % 4 or blen > MAX_RECORD:
                self.errors.append(
                    f"{self.name}: corrupt pcapng block at byte {fileoff} (length {blen}); stopped reading"
                )
                return
            while len(buf) - off < blen and not eof:
                chunk = read(max(CHUNK, blen))
                if not chunk:
                    eof = True
                    break
                buf = buf[off:] + chunk
                off = 0
            if len(buf) - off < blen:
                self.errors.append(
                    f"{self.name}: file truncated at byte {fileoff} "
                    f"(block of {blen} bytes, {len(buf) - off} present)"
                )
                return
            if spb_len(buf, off + blen - 4)[0] != blen:
                self.errors.append(
                    f"{self.name}: corrupt pcapng block at byte {fileoff} (length {blen} "
                    f"does not match its trailing length); stopped reading"
                )
                return
            if btype == 6:  # Enhanced Packet Block
                iface_id, ts_hi, ts_lo, caplen, _wire = epb(buf, off + 8)
                if iface_id >= len(ifaces) or 28 + caplen > blen:
                    self.errors.append(
                        f"{self.name}: packet block at byte {fileoff} names interface {iface_id} "
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
                if ifaces:
                    wire = spb_len(buf, off + 8)[0]
                    caplen = min(wire, blen - 16)
                    self.packets += 1
                    yield 0.0, ifaces[0].linktype, buf[off + 12:off + 12 + caplen]
            elif btype == 1:  # Interface Description Block
                ifaces.append(self._idb(bytes(buf[off:off + blen]), endian))
            elif btype == 2:  # obsolete Packet Block
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
            off += blen
            fileoff += blen
        if len(buf) - off > 0:
            self.errors.append(
                f"{self.name}: file truncated at byte {fileoff} ({len(buf) - off} trailing bytes ignored)"
            )

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


def open_capture(path: str) -> CaptureReader:
    """Open a capture file; raises CaptureError with a one-line reason."""
    try:
        f = open(path, "rb")  # noqa: SIM115 - closed by the caller via .f
    except OSError as e:
        raise CaptureError(f"{path}: cannot open ({e.strerror or e})") from None
    try:
        return CaptureReader(f, path)
    except CaptureError:
        f.close()
        raise
