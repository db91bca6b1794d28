"""Writing captures: synthesised TCP/IP packets with correct sequence numbers.

Used wherever rmqsniff has bytes but no packets — the proxy's ``-w``, exports
and the benchmark/test capture generators — so that the result opens in
rmqsniff, tshark and Wireshark like any capture; and :func:`patch_tcp_payload`, which
overwrites bytes of a captured TCP segment and keeps its checksum right.
"""
from __future__ import annotations

import ipaddress
import struct
from typing import BinaryIO

import dpkt

from .sources.link import ip_of

MSS = 16384


class CaptureWriter:
    """A pcap or pcapng file of Ethernet frames."""

    def __init__(self, f: BinaryIO, fmt: str = "pcap", nano: bool = False) -> None:
        self.f = f
        self.fmt = fmt
        if fmt == "pcapng":
            self.w = dpkt.pcapng.Writer(f, snaplen=262144, linktype=dpkt.pcap.DLT_EN10MB)
        else:
            self.w = dpkt.pcap.Writer(f, snaplen=262144, linktype=dpkt.pcap.DLT_EN10MB, nano=nano)

    def write(self, ts: float, frame: bytes) -> None:
        self.w.writepkt(frame, ts=ts)

    def secrets(self, keylog_text: str) -> None:
        """A pcapng Decryption Secrets Block holding TLS key log text (Wireshark and rmqsniff
        decrypt with it); before the packets it is for."""
        if self.fmt != "pcapng":
            raise ValueError("decryption secrets need pcapng")
        self.f.write(dsb_block(keylog_text.encode()))

    def close(self) -> None:
        self.f.flush()


class TcpSession:
    """One synthetic TCP connection; produces Ethernet frames for a :class:`CaptureWriter`."""

    def __init__(self, writer: CaptureWriter, client: tuple[str, int], server: tuple[str, int],
                 isn_client: int = 1000, isn_server: int = 5000, mss: int = MSS) -> None:
        self.w = writer
        self.client = client
        self.server = server
        self.seq = {True: isn_client, False: isn_server}  # next seq per direction (True = from client)
        self.mss = mss
        self.v6 = ipaddress.ip_address(client[0]).version == 6

    def _frame(self, from_client: bool, flags: int, seq: int, ack: int, data: bytes = b"") -> bytes:
        src, dst = (self.client, self.server) if from_client else (self.server, self.client)
        tcp = dpkt.tcp.TCP(sport=src[1], dport=dst[1], seq=seq % (1 << 32), ack=ack % (1 << 32),
                           flags=flags, win=65535, data=data)
        if self.v6:
            ip = dpkt.ip6.IP6(src=ipaddress.ip_address(src[0]).packed, dst=ipaddress.ip_address(dst[0]).packed,
                              nxt=6, hlim=64, data=tcp)
            ip.plen = len(bytes(tcp))
            et = dpkt.ethernet.ETH_TYPE_IP6
        else:
            ip = dpkt.ip.IP(src=ipaddress.ip_address(src[0]).packed, dst=ipaddress.ip_address(dst[0]).packed,
                            p=6, ttl=64, data=tcp)
            et = dpkt.ethernet.ETH_TYPE_IP
        eth = dpkt.ethernet.Ethernet(src=b"\x02\x00\x00\x00\x00\x01", dst=b"\x02\x00\x00\x00\x00\x02",
                                     type=et, data=ip)
        return bytes(eth)

    def handshake(self, ts: float) -> None:
        c, s = self.seq[True], self.seq[False]
        self.w.write(ts, self._frame(True, dpkt.tcp.TH_SYN, c, 0))
        self.w.write(ts, self._frame(False, dpkt.tcp.TH_SYN | dpkt.tcp.TH_ACK, s, c + 1))
        self.w.write(ts, self._frame(True, dpkt.tcp.TH_ACK, c + 1, s + 1))
        self.seq[True], self.seq[False] = c + 1, s + 1

    def segments(self, from_client: bool, data: bytes) -> list[tuple[int, bytes]]:
        """Split ``data`` at the MSS and advance the sequence; returns (seq, chunk) pairs."""
        out = []
        seq = self.seq[from_client]
        for i in range(0, len(data), self.mss):
            chunk = data[i:i + self.mss]
            out.append((seq, chunk))
            seq += len(chunk)
        self.seq[from_client] = seq
        return out

    def send(self, ts: float, from_client: bool, data: bytes, ack: bool = False) -> None:
        """Write ``data`` as in-order segments (and a pure ACK back when asked)."""
        for seq, chunk in self.segments(from_client, data):
            self.write_segment(ts, from_client, seq, chunk)
        if ack:
            self.w.write(ts, self._frame(not from_client, dpkt.tcp.TH_ACK, self.seq[not from_client],
                                         self.seq[from_client]))

    def write_segment(self, ts: float, from_client: bool, seq: int, chunk: bytes) -> None:
        flags = dpkt.tcp.TH_ACK | dpkt.tcp.TH_PUSH
        self.w.write(ts, self._frame(from_client, flags, seq, self.seq[not from_client], chunk))

    def close(self, ts: float) -> None:
        c, s = self.seq[True], self.seq[False]
        self.w.write(ts, self._frame(True, dpkt.tcp.TH_FIN | dpkt.tcp.TH_ACK, c, s))
        self.w.write(ts, self._frame(False, dpkt.tcp.TH_FIN | dpkt.tcp.TH_ACK, s, c + 1))
        self.w.write(ts, self._frame(True, dpkt.tcp.TH_ACK, c + 1, s + 1))


# ------------------------------------------------------------- rewriting captured frames

def _ones_sum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    s = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return s


def _tcp_layout(frame: bytes, linktype: int) -> tuple[bytes, int, int, int] | None:
    """(checksum pseudo-header, offset of the TCP header, offset of its payload, end of the IP
    packet) of a TCP/IP frame, or None (not TCP over IP, fragment, extension headers)."""
    r = ip_of(frame, linktype)
    if r is None:
        return None
    ver, off = r
    if (ver == 4 and len(frame) >= off + 20 and frame[off + 9] == 6
            and not struct.unpack_from("!H", frame, off + 6)[0] & 0x3FFF):
        t = off + (frame[off] & 0x0F) * 4
        end = off + struct.unpack_from("!H", frame, off + 2)[0]
        pseudo = frame[off + 12:off + 20] + struct.pack("!BBH", 0, 6, end - t)
    elif ver == 6 and len(frame) >= off + 40 and frame[off + 6] == 6:
        t = off + 40
        end = t + struct.unpack_from("!H", frame, off + 4)[0]
        pseudo = frame[off + 8:off + 40] + struct.pack("!IxxxB", end - t, 6)
    else:
        return None
    if end < t + 20 or len(frame) < t + 20:
        return None
    return pseudo, t, t + (frame[t + 12] >> 4) * 4, end


def patch_tcp_payload(frame: bytes, linktype: int, patches: list[tuple[int, bytes]]) -> bytes | None:
    """``frame`` with the TCP payload bytes at each (offset, bytes) of ``patches`` replaced and
    the TCP checksum recomputed (left alone when the capture cut the packet short, since then
    it cannot be known); None if the frame is not TCP over IPv4/IPv6."""
    lay = _tcp_layout(frame, linktype)
    if lay is None:
        return None
    pseudo, t, p, end = lay
    out = bytearray(frame)
    stop = min(end, len(frame))
    for off, data in patches:
        a = p + off
        data = data[:max(0, stop - a)]
        out[a:a + len(data)] = data
    if end <= len(frame):
        out[t + 16:t + 18] = b"\0\0"
        out[t + 16:t + 18] = struct.pack("!H", ~_ones_sum(pseudo + bytes(out[t:end])) & 0xFFFF)
    return bytes(out)


def dsb_block(keylog: bytes) -> bytes:
    """A little-endian pcapng Decryption Secrets Block (type 0x0A, secrets type "TLSK")."""
    pad = b"\0" * (-len(keylog) % 4)
    blen = 20 + len(keylog) + len(pad)
    return struct.pack("<IIII", 0x0000000A, blen, 0x544C534B, len(keylog)) + keylog + pad + struct.pack("<I", blen)
