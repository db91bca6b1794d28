"""TCP connections reassembled from a capture file by the tests' own code (dpkt and a small
sequence-number reassembly, not rmqsniff's), and a remoting stream split into frames by
its length prefixes alone."""
from __future__ import annotations

import struct
from dataclasses import dataclass, field
from pathlib import Path

import dpkt

_SEQ = 1 << 32


@dataclass
class Half:
    """One direction of a connection: its initial sequence number and the payload by offset."""

    isn: int | None = None
    segments: dict[int, bytes] = field(default_factory=dict)

    def add(self, seq: int, payload: bytes) -> None:
        if self.isn is None or not payload:
            return
        off = (seq - self.isn - 1) % _SEQ
        if len(self.segments.get(off, b"")) < len(payload):
            self.segments[off] = payload

    def stream(self) -> tuple[bytes, int]:
        """The reassembled bytes and how many bytes were missing (holes)."""
        out = bytearray()
        holes = 0
        for off in sorted(self.segments):
            seg = self.segments[off]
            if off > len(out):
                holes += off - len(out)
                out += b"\0" * (off - len(out))
            if off + len(seg) > len(out):
                out += seg[len(out) - off:]
        return bytes(out), holes


@dataclass
class TcpStream:
    client: tuple[str, int]
    server: tuple[str, int]
    c2s_half: Half = field(default_factory=Half)
    s2c_half: Half = field(default_factory=Half)
    ended: bool = False  # FIN or RST seen
    c2s: bytes = b""
    s2c: bytes = b""
    holes: int = 0

    def finish(self) -> None:
        self.c2s, h1 = self.c2s_half.stream()
        self.s2c, h2 = self.s2c_half.stream()
        self.holes = h1 + h2

    @property
    def label(self) -> str:
        return f"{self.client[0]}:{self.client[1]}->{self.server[0]}:{self.server[1]}"


def _ip_packets(path: Path):
    with open(path, "rb") as f:
        try:
            reader = dpkt.pcap.Reader(f)
        except ValueError:
            f.seek(0)
            reader = dpkt.pcapng.Reader(f)
        dl = reader.datalink()
        for _ts, buf in reader:
            if dl == dpkt.pcap.DLT_EN10MB:
                ip = dpkt.ethernet.Ethernet(buf).data
            elif dl == 113:  # LINUX_SLL
                ip = dpkt.sll.SLL(buf).data
            elif dl in (dpkt.pcap.DLT_NULL, dpkt.pcap.DLT_LOOP):
                ip = dpkt.loopback.Loopback(buf).data
            else:
                ip = dpkt.ip.IP(buf)
            if isinstance(ip, dpkt.ip.IP) and isinstance(ip.data, dpkt.tcp.TCP):
                yield ip


def tcp_streams(path: Path) -> list[TcpStream]:
    """Every connection whose SYN is in the capture, both directions reassembled."""
    by_key: dict[tuple, TcpStream] = {}
    done: list[TcpStream] = []
    for ip in _ip_packets(path):
        tcp = ip.data
        src = (dpkt.utils.inet_to_str(ip.src), tcp.sport)
        dst = (dpkt.utils.inet_to_str(ip.dst), tcp.dport)
        syn, ack = tcp.flags & dpkt.tcp.TH_SYN, tcp.flags & dpkt.tcp.TH_ACK
        if syn and not ack:
            old = by_key.pop((src, dst), None)
            if old is not None and old.c2s_half.isn != tcp.seq:
                done.append(old)  # the 4-tuple was reused
            if old is not None and old.c2s_half.isn == tcp.seq:
                by_key[(src, dst)] = old  # a retransmitted SYN
                continue
            new = TcpStream(src, dst)
            new.c2s_half.isn = tcp.seq
            by_key[(src, dst)] = by_key[(dst, src)] = new
            continue
        st = by_key.get((src, dst))
        if st is None:
            continue  # began before the capture
        from_client = src == st.client
        half = st.c2s_half if from_client else st.s2c_half
        if syn and ack:
            half.isn = tcp.seq
            continue
        half.add(tcp.seq, bytes(tcp.data))
        if tcp.flags & (dpkt.tcp.TH_FIN | dpkt.tcp.TH_RST):
            st.ended = True
    out = {id(s): s for s in [*by_key.values(), *done]}
    for s in out.values():
        s.finish()
    return list(out.values())


def frames(data: bytes) -> list[bytes]:
    """Split a remoting stream into whole frames (length prefix only); the tail must be empty."""
    out, pos = [], 0
    while pos + 4 <= len(data):
        (n,) = struct.unpack_from(">i", data, pos)
        assert 0 < n <= len(data) - pos - 4, f"bad or cut frame at {pos}"
        out.append(data[pos:pos + 4 + n])
        pos += 4 + n
    assert pos == len(data), f"{len(data) - pos} stray bytes at the end"
    return out
