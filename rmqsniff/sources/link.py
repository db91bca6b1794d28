"""From a captured frame to a TCP segment: link layer, IPv4/IPv6, TCP.

Hand-rolled with ``struct`` because it runs once per packet.  Link types:
Ethernet (with 802.1Q / QinQ VLAN tags), Linux cooked SLL and SLL2
(``tcpdump -i any``), BSD loopback NULL and LOOP (macOS captures), raw IP.
Anything that is not TCP over IP returns ``None``; reasons are counted by the
caller through :data:`SKIP_REASONS`.
"""
from __future__ import annotations

import socket
import struct

DLT_NULL = 0
DLT_EN10MB = 1
DLT_RAW = 101
DLT_RAW_ALT = (12, 14)
DLT_LOOP = 108
DLT_LINUX_SLL = 113
DLT_LINUX_SLL2 = 276
SUPPORTED_LINKTYPES = {DLT_NULL, DLT_EN10MB, DLT_RAW, 12, 14, DLT_LOOP, DLT_LINUX_SLL, DLT_LINUX_SLL2}

TH_FIN, TH_SYN, TH_RST, TH_ACK = 0x01, 0x02, 0x04, 0x10

_u16 = struct.Struct("!H").unpack_from
_u32le = struct.Struct("<I").unpack_from
_u32be = struct.Struct("!I").unpack_from
_tcp = struct.Struct("!HHIIBB").unpack_from  # sport dport seq ack off flags
# Ethernet + IPv4 + TCP fixed headers in one call: ethertype, ver/ihl, total length,
# fragment word, protocol, src, dst, sport, dport, seq, ack, data offset, flags
_ETH_IP4_TCP = struct.Struct("!12xHBxH2xHxB2x4s4sHHIIBB").unpack_from
# the same without the addresses, ports and acknowledgment number: ethertype, ver/ihl, total
# length, fragment word, protocol, seq, data offset, flags (the ack is at ETH_IP4_TCP_ACK)
ETH_IP4_TCP_NOACK = struct.Struct("!12xHBxH2xHxB2x8x4xI4xBB").unpack_from  # addresses and ports: bytes 26-38
ETH_IP4_TCP_ACK = 42  # offset of the TCP acknowledgment number behind Ethernet + a 20-byte IPv4 header

# Segment tuple: (src_addr_bytes, sport, dst_addr_bytes, dport, seq, ack, flags, payload)
Segment = tuple[bytes, int, bytes, int, int, int, int, bytes]

_V6_NEXT_SKIPPABLE = {0, 43, 60}  # hop-by-hop, routing, destination options


def ip_of(frame: bytes, linktype: int) -> tuple[int, int] | None:
    """Return (ip_version, offset of the IP header) for a frame, or None."""
    if linktype == DLT_EN10MB:
        r = _ethernet(frame)
        if r is None:
            return None
        et, off = r
    elif linktype == DLT_LINUX_SLL:
        if len(frame) < 16:
            return None
        et, off = _u16(frame, 14)[0], 16
    elif linktype == DLT_LINUX_SLL2:
        if len(frame) < 20:
            return None
        et, off = _u16(frame, 0)[0], 20
    elif linktype in (DLT_NULL, DLT_LOOP):
        return _bsd_loopback(frame, linktype)
    elif linktype == DLT_RAW or linktype in DLT_RAW_ALT:
        if not frame:
            return None
        v = frame[0] >> 4
        return (v, 0) if v in (4, 6) else None
    else:
        return None
    if et == 0x0800:
        return 4, off
    if et == 0x86DD:
        return 6, off
    return None


def _ethernet(frame: bytes) -> tuple[int, int] | None:
    """(ethertype, offset of the payload) behind an Ethernet header and any 802.1Q / QinQ tags."""
    if len(frame) < 14:
        return None
    et = _u16(frame, 12)[0]
    off = 14
    while et in (0x8100, 0x88A8, 0x9100):
        if len(frame) < off + 4:
            return None
        et = _u16(frame, off + 2)[0]
        off += 4
    return et, off


def _bsd_loopback(frame: bytes, linktype: int) -> tuple[int, int] | None:
    """(ip_version, 4) from a BSD NULL / LOOP header's address family, or None."""
    if len(frame) < 4:
        return None
    fam = _u32be(frame, 0)[0] if linktype == DLT_LOOP else _u32le(frame, 0)[0]
    if fam > 0xFFFF:  # written in the other byte order
        fam = _u32be(frame, 0)[0]
    if fam == 2:
        return 4, 4
    if fam in (10, 24, 28, 30):
        return 6, 4
    return None


def tcp_segment(frame: bytes, linktype: int) -> Segment | str:  # noqa: C901 - hot path: once per packet, layers inline
    """Decode a frame down to its TCP segment, or return a skip reason."""
    # Fastest path: Ethernet + IPv4 without options or VLAN + TCP, one unpack.
    if linktype == DLT_EN10MB and len(frame) >= 54:
        et, vihl, total, frag, proto, src, dst, sport, dport, seq, ack, doff, flags = _ETH_IP4_TCP(frame, 0)
        if et == 0x0800 and vihl == 0x45 and proto == 6 and not frag & 0x3FFF and doff >= 0x50:
            end = 14 + total if total else len(frame)
            if end > len(frame):
                end = len(frame)
            t = 34 + (doff >> 4) * 4
            if t <= end:
                return src, sport, dst, dport, seq, ack, flags, frame[t:end]
    # Fast path: Ethernet + IPv4 without VLAN, the common case.
    if linktype == DLT_EN10MB and len(frame) >= 34 and frame[12] == 8 and frame[13] == 0:
        ver, off = 4, 14
    else:
        r = ip_of(frame, linktype)
        if r is None:
            return "not ip"
        ver, off = r
    if ver == 4:
        if len(frame) < off + 20:
            return "truncated ip"
        vihl = frame[off]
        ihl = (vihl & 0x0F) * 4
        if vihl >> 4 != 4 or ihl < 20:
            return "bad ip header"
        if frame[off + 9] != 6:
            return "not tcp"
        if _u16(frame, off + 6)[0] & 0x3FFF:
            return "ip fragment"
        total = _u16(frame, off + 2)[0]
        end = off + total if total else len(frame)  # total 0: TSO-offloaded capture
        if end > len(frame):
            end = len(frame)  # snaplen cut: the tcp layer sees fewer bytes
        src = frame[off + 12:off + 16]
        dst = frame[off + 16:off + 20]
        t = off + ihl
    elif ver == 6:
        if len(frame) < off + 40:
            return "truncated ip"
        nxt = frame[off + 6]
        plen = _u16(frame, off + 4)[0]
        src = frame[off + 8:off + 24]
        dst = frame[off + 24:off + 40]
        t = off + 40
        end = t + plen if plen else len(frame)
        if end > len(frame):
            end = len(frame)
        hops = 0
        while nxt in _V6_NEXT_SKIPPABLE and hops < 8:
            if len(frame) < t + 2:
                return "truncated ip"
            nxt, t = frame[t], t + (frame[t + 1] + 1) * 8
            hops += 1
        if nxt == 44:
            return "ip fragment"
        if nxt != 6:
            return "not tcp"
    else:
        return "not ip"
    if end < t + 20:
        return "truncated tcp"
    sport, dport, seq, ack, doff, flags = _tcp(frame, t)
    doff = (doff >> 4) * 4
    if doff < 20:
        return "bad tcp header"
    if t + doff > end:  # options cut by the snap length (or a lying data offset)
        return "truncated tcp"
    return src, sport, dst, dport, seq, ack, flags, frame[t + doff:end]


def addr_text(raw: bytes) -> str:
    """Render a 4- or 16-byte address."""
    if len(raw) == 4:
        return socket.inet_ntop(socket.AF_INET, raw)
    return socket.inet_ntop(socket.AF_INET6, raw)
