"""Linux AF_PACKET capture for the live tap, and pcapng writing with rotation.

One :class:`AfPacketSource` per interface.  The kernel runs the BPF filter
(compiled by libpcap through scapy, attached with ``SO_ATTACH_FILTER``) and
fills a ``TPACKET_V3`` ring that is read in whole blocks, without a system call
per packet; ``recvmsg`` is the fallback (``mode="recv"``).  Ethernet and
loopback interfaces give Ethernet frames (linktype 1); ``any`` and other
interfaces are read cooked and given a Linux SLL header (linktype 113).
Loopback packets are seen twice by a tap (leaving and arriving): the outgoing
copy is dropped in the kernel, as libpcap does.  Kernel drop counters come from
``PACKET_STATISTICS``.
"""
from __future__ import annotations

import contextlib
import ctypes
import fcntl
import mmap
import os
import select
import socket
import struct
import sys
import time
from collections import deque
from dataclasses import dataclass
from typing import BinaryIO

ETH_P_ALL = 0x0003
SOL_PACKET = 263
PACKET_ADD_MEMBERSHIP = 1
PACKET_RX_RING = 5
PACKET_STATISTICS = 6
PACKET_VERSION = 10
PACKET_MR_PROMISC = 1
TPACKET_V3 = 2
SO_ATTACH_FILTER = 26
SO_TIMESTAMPNS = 35
SO_RCVBUFFORCE = 33
SIOCGIFHWADDR = 0x8927
TP_STATUS_USER = 1
TP_STATUS_VLAN_VALID = 0x10
TP_STATUS_VLAN_TPID_VALID = 0x40
PACKET_OUTGOING = 4
ARPHRD_ETHER = 1
ARPHRD_LOOPBACK = 772
SKF_AD_OFF = -0x1000
SKF_AD_PKTTYPE = 4
SKF_AD_IFINDEX = 8

LINKTYPE_ETHERNET = 1
LINKTYPE_LINUX_SLL = 113
_DLT_RAW = 12  # libpcap's DLT for raw IP on Linux: what a cooked socket's filter sees

DEFAULT_SNAPLEN = 262144
DEFAULT_BUFFER = 32 * 1024 * 1024
BLOCK_SIZE = 1 << 20
RETIRE_MS = 50  # a block is handed over at the latest this long after its first packet

_hdr3 = struct.Struct("=IIIIIIHH").unpack_from  # tpacket3_hdr up to tp_net
_vlan = struct.Struct("=IH").unpack_from  # tp_vlan_tci, tp_vlan_tpid (offset 28)
_sll_in = struct.Struct("=HHiHBB8s").unpack_from  # sockaddr_ll after the tpacket3_hdr
_sll_out = struct.Struct("!HHH8sH").pack
_u32 = struct.Struct("=I").unpack_from
_u32x2 = struct.Struct("=II").unpack_from
_TP3_HDRLEN = 48  # TPACKET_ALIGN(sizeof(struct tpacket3_hdr))

# Packet tuple: (timestamp in ns, frame bytes, length on the wire)
Packet = tuple[int, bytes, int]


class CaptureSetupError(Exception):
    """Capture could not start; the message is one line saying what to do."""


def interface_names() -> list[str]:
    """Interfaces a tap can open (``any`` included), sorted."""
    return ["any"] + sorted(name for _, name in socket.if_nameindex())


def _hardware_type(name: str) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        ifr = fcntl.ioctl(s, SIOCGIFHWADDR, struct.pack("16s16x", name.encode()))
    return struct.unpack_from("=H", ifr, 16)[0]


def compile_bpf(expr: str, linktype: int, snaplen: int = DEFAULT_SNAPLEN) -> list[tuple[int, int, int, int]]:
    """Compile a tcpdump filter with libpcap (via scapy) into classic BPF instructions."""
    try:
        from scapy.arch.common import compile_filter
        from scapy.error import Scapy_Exception
    except ImportError as e:  # pragma: no cover - scapy is a dependency
        raise CaptureSetupError(f"cannot compile capture filter: scapy unavailable ({e})") from None
    try:
        prog = compile_filter(expr, linktype=linktype)
    except Scapy_Exception as e:
        why = str(e).strip().splitlines()[-1] if str(e).strip() else "libpcap rejected it"
        raise CaptureSetupError(f"bad capture filter {expr!r}: {why}") from None
    except OSError as e:
        raise CaptureSetupError(f"cannot compile capture filter {expr!r}: libpcap not usable ({e})") from None
    ins = [(prog.bf_insns[i].code, prog.bf_insns[i].jt, prog.bf_insns[i].jf, prog.bf_insns[i].k)
           for i in range(prog.bf_len)]
    # libpcap returns its own snaplen (262144): use ours
    return [(c, jt, jf, snaplen if (c == 0x06 and k) else k) for c, jt, jf, k in ins]


def drop_loopback_outgoing(program: list[tuple[int, int, int, int]], lo_index: int) -> list[tuple[int, int, int, int]]:
    """Prefix ``program`` so outgoing copies on the loopback device are rejected in the kernel."""
    ld = 0x20  # BPF_LD | BPF_W | BPF_ABS
    return [
        (ld, 0, 0, (SKF_AD_OFF + SKF_AD_IFINDEX) & 0xFFFFFFFF),
        (0x15, 0, 3, lo_index),  # jeq lo ? next : program
        (ld, 0, 0, (SKF_AD_OFF + SKF_AD_PKTTYPE) & 0xFFFFFFFF),
        (0x15, 0, 1, PACKET_OUTGOING),  # jeq outgoing ? reject : program
        (0x06, 0, 0, 0),  # ret #0
        *program,
    ]


def attach_filter(sock: socket.socket, program: list[tuple[int, int, int, int]]) -> None:
    """``SO_ATTACH_FILTER`` a classic BPF program to a socket."""
    raw = b"".join(struct.pack("=HBBI", *ins) for ins in program)
    buf = ctypes.create_string_buffer(raw, len(raw))
    fprog = struct.pack("HL", len(program), ctypes.addressof(buf))
    sock.setsockopt(socket.SOL_SOCKET, SO_ATTACH_FILTER, fprog)


@dataclass
class Counters:
    """What the kernel says about one socket since it was opened."""

    received: int = 0  # packets that passed the filter (dropped ones included)
    dropped: int = 0  # no room in the ring / socket buffer
    freezes: int = 0  # ring full events (TPACKET_V3)


def _interface(interface: str) -> tuple[int, int]:
    """(index, ARPHRD hardware type) of a named interface; the type is 0 when unknown (read cooked)."""
    try:
        index = socket.if_nametoindex(interface)
    except OSError:
        raise CaptureSetupError(f"no interface named {interface!r} "
                                f"(available: {', '.join(interface_names())})") from None
    try:
        hw = _hardware_type(interface)
    except OSError:
        hw = 0  # unknown: read it cooked
    return index, hw


def _packet_socket(interface: str, kind: int) -> socket.socket:
    """An AF_PACKET socket for ``interface``; no permission is explained as CAP_NET_RAW."""
    try:
        # protocol 0: nothing arrives until bind(), so nothing passes unfiltered
        return socket.socket(socket.AF_PACKET, kind, 0 if interface != "any" else socket.htons(ETH_P_ALL))
    except PermissionError:
        raise CaptureSetupError(
            f"cannot capture on {interface}: permission denied - capturing needs the CAP_NET_RAW "
            "capability; run as root or grant it, e.g. "
            f"`sudo setcap cap_net_raw,cap_net_admin+eip {os.path.realpath(_python())}`") from None


def _loopback_index() -> int | None:
    try:
        return socket.if_nametoindex("lo")
    except OSError:
        return None


class AfPacketSource:
    """Packets of one interface (``any`` for all), filtered in the kernel."""

    def __init__(self, interface: str, bpf: str | None = None, *, snaplen: int = DEFAULT_SNAPLEN,
                 buffer_size: int = DEFAULT_BUFFER, mode: str = "ring", promisc: bool = True) -> None:
        self.name = interface
        self.snaplen = snaplen
        self.mode = mode
        self.counters = Counters()
        self._sock: socket.socket | None = None
        self._mm: mmap.mmap | None = None
        any_ = interface == "any"
        index, hw = _interface(interface) if not any_ else (0, 0)
        self.cooked = any_ or hw not in (ARPHRD_ETHER, ARPHRD_LOOPBACK)
        self.linktype = LINKTYPE_LINUX_SLL if self.cooked else LINKTYPE_ETHERNET
        sock = self._sock = _packet_socket(interface, socket.SOCK_DGRAM if self.cooked else socket.SOCK_RAW)
        try:
            program = compile_bpf(bpf or "tcp", _DLT_RAW if self.cooked else LINKTYPE_ETHERNET, snaplen)
        except CaptureSetupError:
            self.close()
            raise
        lo = _loopback_index()
        if lo is not None and (any_ or index == lo):
            program = drop_loopback_outgoing(program, lo)
        try:
            if any_:
                # "any" cannot wait for bind(): it receives everything from socket() on. Accept nothing,
                # drop what came in unfiltered, and reset the kernel counters (reading them does) so
                # that traffic never shows as ours or as our drops; then the real filter.
                attach_filter(sock, [(0x06, 0, 0, 0)])
                self._drain()
                sock.getsockopt(SOL_PACKET, PACKET_STATISTICS, 12)
            attach_filter(sock, program)
            if mode == "ring":
                try:
                    self._ring(buffer_size)
                except OSError:  # no TPACKET_V3 here (old kernel, restricted mmap): one recvmsg per packet
                    self.mode = mode = "recv"
            if mode == "recv":
                self._recv_setup(buffer_size)
            if not any_:
                sock.bind((interface, ETH_P_ALL))
                if promisc and hw == ARPHRD_ETHER:
                    sock.setsockopt(SOL_PACKET, PACKET_ADD_MEMBERSHIP,
                                    struct.pack("iHH8s", index, PACKET_MR_PROMISC, 0, b""))
            sock.setblocking(False)
        except OSError as e:
            self.close()
            raise CaptureSetupError(f"cannot capture on {interface}: {e.strerror or e}") from None
        self._backlog: list[Packet] = self._drain() if any_ and mode == "ring" else []
        # reads that empty what the kernel holds: one per ring block, or 1024 packets each
        self.drain_limit = self._nblocks + 1 if self._mm is not None else 1 + buffer_size // (1024 * 1024)

    def _recv_setup(self, buffer_size: int) -> None:
        """One recvmsg per packet: kernel timestamps, the socket buffer as large as asked."""
        sock = self._sock
        assert sock is not None
        sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
        try:
            sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, buffer_size)
        except OSError:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, buffer_size)
        self._buf = bytearray(self.snaplen)

    def _ring(self, buffer_size: int) -> None:
        sock = self._sock
        assert sock is not None
        block = BLOCK_SIZE
        while block < self.snaplen + 4096:
            block <<= 1
        nblocks = max(2, buffer_size // block)
        sock.setsockopt(SOL_PACKET, PACKET_VERSION, TPACKET_V3)
        req = struct.pack("=7I", block, nblocks, 2048, block // 2048 * nblocks, RETIRE_MS, 0, 0)
        sock.setsockopt(SOL_PACKET, PACKET_RX_RING, req)
        try:
            self._mm = mmap.mmap(sock.fileno(), block * nblocks, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
        except OSError:
            sock.setsockopt(SOL_PACKET, PACKET_RX_RING, bytes(28))  # free the ring: packets to the queue again
            raise
        self._block_size = block
        self._nblocks = nblocks
        self._next = 0

    def _drain(self) -> list[Packet]:
        """Read what waits in the socket's queue (not the ring)."""
        out: list[Packet] = []
        sock = self._sock
        assert sock is not None
        while True:
            try:
                data, addr = sock.recvfrom(self.snaplen, socket.MSG_DONTWAIT)
            except (BlockingIOError, InterruptedError):
                return out
            if self.cooked:
                data = _sll_out(addr[2], addr[3], len(addr[4]), addr[4], addr[1]) + data
            out.append((_now_ns(), data, len(data)))

    def fileno(self) -> int:
        assert self._sock is not None
        return self._sock.fileno()

    def read(self) -> list[Packet]:
        """Packets ready now: one ring block (or up to 1024 queued packets); [] when none."""
        if self._backlog:
            backlog, self._backlog = self._backlog, []
            return backlog
        if self._mm is None:
            return self._recv()
        mm = self._mm
        base = self._next * self._block_size
        if not _u32(mm, base + 8)[0] & TP_STATUS_USER:
            return []
        num, first = _u32x2(mm, base + 12)
        out: list[Packet] = []
        add = out.append
        off = base + first
        cooked = self.cooked
        for _ in range(num):
            nxt, sec, nsec, snap, wire, status, mac, _net = _hdr3(mm, off)
            start = off + mac
            frame = mm[start:start + snap]
            if cooked:
                _fam, proto, _idx, hatype, pkttype, halen, addr = _sll_in(mm, off + _TP3_HDRLEN)
                frame = _sll_out(pkttype, hatype, halen, addr, socket.ntohs(proto)) + frame
                wire += 16
            elif status & TP_STATUS_VLAN_VALID:
                tci, tpid = _vlan(mm, off + 28)
                if not status & TP_STATUS_VLAN_TPID_VALID:
                    tpid = 0x8100
                frame = frame[:12] + struct.pack("!HH", tpid, tci & 0xFFFF) + frame[12:]
                wire += 4
            add((sec * 1_000_000_000 + nsec, frame, wire))
            off += nxt
        struct.pack_into("=I", mm, base + 8, 0)  # hand the block back to the kernel
        self._next = (self._next + 1) % self._nblocks
        return out

    def _recv(self) -> list[Packet]:
        sock = self._sock
        assert sock is not None
        buf = self._buf
        view = memoryview(buf)
        out: list[Packet] = []
        anc_size = socket.CMSG_SPACE(16)
        for _ in range(1024):
            try:
                n, anc, flags, addr = sock.recvmsg_into([view], anc_size, socket.MSG_TRUNC)
            except (BlockingIOError, InterruptedError):
                break
            ts = _now_ns()
            for level, typ, data in anc:
                if level == socket.SOL_SOCKET and typ == SO_TIMESTAMPNS and len(data) >= 16:
                    sec, nsec = struct.unpack_from("=qq", data)
                    ts = sec * 1_000_000_000 + nsec
            cap = min(n, len(buf))
            frame = bytes(view[:cap])
            if self.cooked:
                frame = _sll_out(addr[2], addr[3], len(addr[4]), addr[4], addr[1]) + frame
                n += 16
            out.append((ts, frame, n))
        return out

    def poll_stats(self) -> Counters:
        """Add the kernel's counters since the last call (they reset when read)."""
        if self._sock is None:
            return self.counters
        raw = self._sock.getsockopt(SOL_PACKET, PACKET_STATISTICS, 12)
        packets, drops = struct.unpack_from("=II", raw)
        c = self.counters
        c.received += packets  # the kernel's tp_packets includes the drops
        c.dropped += drops
        if len(raw) >= 12 and self._mm is not None:
            c.freezes += struct.unpack_from("=I", raw, 8)[0]
        return c

    def close(self) -> None:
        if self._sock is not None:
            with contextlib.suppress(OSError):
                self.poll_stats()
        if self._mm is not None:
            self._mm.close()
            self._mm = None
        if self._sock is not None:
            self._sock.close()
            self._sock = None


def _python() -> str:
    return sys.executable or "python3"


def _now_ns() -> int:
    return time.time_ns()


def wait(sources: list[AfPacketSource], timeout: float, extra: tuple[int, ...] = ()) -> list[int]:
    """File descriptors (sources' and ``extra``) readable within ``timeout`` seconds."""
    p = select.poll()
    for fd in [s.fileno() for s in sources] + list(extra):
        p.register(fd, select.POLLIN)
    try:
        return [fd for fd, _ in p.poll(int(timeout * 1000))]
    except InterruptedError:
        return []


# ---------------------------------------------------------------- pcapng out

_PCAPNG_SHB = 0x0A0D0D0A


def _opt(code: int, value: bytes) -> bytes:
    return struct.pack("<HH", code, len(value)) + value + b"\0" * (-len(value) % 4)


def _block(btype: int, body: bytes) -> bytes:
    n = 12 + len(body)
    return struct.pack("<II", btype, n) + body + struct.pack("<I", n)


class PcapngWriter:
    """pcapng output of the tap: one interface block per source, ns timestamps.

    With ``rotate`` (bytes) a new file starts once the current one reaches that
    size: ``NAME_00001.EXT``, ``NAME_00002.EXT``...; with ``keep`` only the newest
    ``keep`` files are kept.  Each file is complete by itself; at its end an
    interface statistics block records the kernel's received/dropped counts.
    """

    def __init__(self, path: str, interfaces: list[tuple[str, int]], *, snaplen: int = DEFAULT_SNAPLEN,
                 rotate: int | None = None, keep: int | None = None) -> None:
        self.path = path
        self.interfaces = interfaces
        self.snaplen = snaplen
        self.rotate = rotate
        self.keep = keep
        self.files: deque[str] = deque()
        self.packets = 0
        self._seq = 0
        self._f: BinaryIO | None = None
        self._size = 0
        self._counters: dict[int, Counters] = {}
        self._open()

    def _name(self) -> str:
        if not self.rotate:
            return self.path
        stem, ext = os.path.splitext(self.path)
        return f"{stem}_{self._seq:05d}{ext or '.pcapng'}"

    def _open(self) -> None:
        self._seq += 1
        name = self._name()
        try:
            f = open(name, "wb", buffering=1 << 20)  # noqa: SIM115 - closed in _close_file
        except OSError as e:
            raise CaptureSetupError(f"cannot write {name}: {e.strerror or e}") from None
        shb = struct.pack("<IHHq", 0x1A2B3C4D, 1, 0, -1) + _opt(4, b"rmqsniff live") + _opt(0, b"")
        head = _block(_PCAPNG_SHB, shb)
        for name_, linktype in self.interfaces:
            opts = _opt(2, name_.encode()) + _opt(9, b"\x09") + _opt(0, b"")
            head += _block(1, struct.pack("<HHI", linktype, 0, self.snaplen) + opts)
        f.write(head)
        self._f = f
        self._size = len(head)
        self.files.append(name)
        while self.keep and len(self.files) > self.keep:
            old = self.files.popleft()
            with contextlib.suppress(FileNotFoundError):
                os.unlink(old)

    def write(self, iface: int, ts_ns: int, frame: bytes, wire: int) -> None:
        cap = len(frame)
        pad = -cap % 4
        n = 32 + cap + pad
        f = self._f
        assert f is not None
        f.write(struct.pack("<IIIIIII", 6, n, iface, ts_ns >> 32, ts_ns & 0xFFFFFFFF, cap, wire))
        f.write(frame + b"\0" * pad + struct.pack("<I", n) if pad else frame + struct.pack("<I", n))
        self.packets += 1
        self._size += n
        if self.rotate and self._size >= self.rotate:
            self._close_file()
            self._open()

    def set_counters(self, iface: int, counters: Counters) -> None:
        """Counters to record (interface statistics block) when a file ends."""
        self._counters[iface] = counters

    def flush(self) -> None:
        if self._f is not None:
            self._f.flush()

    def _close_file(self) -> None:
        f = self._f
        if f is None:
            return
        now = time.time_ns()
        for iface, c in sorted(self._counters.items()):
            body = struct.pack("<III", iface, now >> 32, now & 0xFFFFFFFF)
            body += _opt(4, struct.pack("<Q", c.received)) + _opt(5, struct.pack("<Q", c.dropped)) + _opt(0, b"")
            f.write(_block(5, body))
        f.close()
        self._f = None

    def close(self) -> None:
        self._close_file()

