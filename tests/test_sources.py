"""Capture input: pcap/pcapng readers and link/IP/TCP decoding, proved with files built
byte by byte here (independently of the reader) and cross-checked with tshark."""
from __future__ import annotations

import os
import re
import shutil
import socket
import struct
import subprocess
from collections.abc import Callable
from fractions import Fraction

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dissectors.remoting.command import JSON, ROCKETMQ, RemotingCommand
from dissectors.remoting.frame import encode
from rmqsniff.model import ANSWERED, UNANSWERED
from rmqsniff.pipeline import analyze
from rmqsniff.sources.pcapfile import CaptureError, CaptureReader, open_capture

TOL = 1e-7  # seconds: float timestamps
# Timestamps of moderate size, so a float can hold them to well below a nanosecond (at
# today's epoch seconds a float's spacing is 2.4e-7 s: nanoseconds cannot be represented).
BASE_SEC = 1_000_000

SYN, FIN, RST, PSH, ACK = 0x02, 0x01, 0x04, 0x08, 0x10

# ------------------------------------------------------------------ packet builders


def tcp(sport: int, dport: int, seq: int, ack: int, flags: int, payload: bytes = b"") -> bytes:
    """A TCP header with one 4-byte option (MSS) so the data offset is not the minimum."""
    return struct.pack("!HHIIBBHHH", sport, dport, seq, ack, 6 << 4, flags, 65535, 0, 0) + \
        b"\x02\x04\x05\xb4" + payload


def ipv4(src: str, dst: str, payload: bytes, proto: int = 6, frag: int = 0x4000,
         total: int | None = None, opts: bytes = b"") -> bytes:
    total = 20 + len(opts) + len(payload) if total is None else total
    return struct.pack("!BBHHHBBH4s4s", 0x40 | (5 + len(opts) // 4), 0, total, 1, frag, 64, proto, 0,
                       socket.inet_aton(src), socket.inet_aton(dst)) + opts + payload


# hop-by-hop (8 bytes, PadN) then destination options (16 bytes, PadN), then TCP
V6_EXT = (0, b"\x3c\x00\x01\x04\x00\x00\x00\x00" + b"\x06\x01\x01\x0c" + b"\x00" * 12)


def ipv6(src: str, dst: str, payload: bytes, nxt: int = 6, ext: bytes = b"") -> bytes:
    body = ext + payload
    return struct.pack("!IHBB16s16s", 6 << 28, len(body), nxt, 64, socket.inet_pton(socket.AF_INET6, src),
                       socket.inet_pton(socket.AF_INET6, dst)) + body


ETH_ADDRS = b"\x02\x00\x00\x00\x00\x02" + b"\x02\x00\x00\x00\x00\x01"


def eth(ethertype: int, ip: bytes, tags: tuple[int, ...] = ()) -> bytes:
    vl = b"".join(struct.pack("!HH", tpid, 100 + i) for i, tpid in enumerate(tags))
    return ETH_ADDRS + vl + struct.pack("!H", ethertype) + ip


def sll(ethertype: int, ip: bytes) -> bytes:
    return struct.pack("!HHH8sH", 0, 1, 6, b"\x02\0\0\0\0\1\0\0", ethertype) + ip


def sll2(ethertype: int, ip: bytes) -> bytes:
    return struct.pack("!HHIHBB8s", ethertype, 0, 3, 1, 0, 6, b"\x02\0\0\0\0\1\0\0") + ip


def et_of(ip: bytes) -> int:
    return 0x0800 if ip[0] >> 4 == 4 else 0x86DD


# ------------------------------------------------------------------ file builders


def pcap_file(records: list[tuple[int, int, bytes]], linktype: int, *, endian: str = "<",
              nano: bool = False, wirelens: dict[int, int] | None = None) -> bytes:
    """Classic pcap; records are (seconds, fraction in µs or ns, frame)."""
    magic = 0xA1B23C4D if nano else 0xA1B2C3D4
    out = [struct.pack(endian + "IHHiIII", magic, 2, 4, 0, 0, 262144, linktype)]
    for i, (sec, frac, data) in enumerate(records):
        wire = (wirelens or {}).get(i, len(data))
        out.append(struct.pack(endian + "IIII", sec, frac, len(data), wire) + data)
    return b"".join(out)


def _pad(b: bytes) -> bytes:
    return b + b"\0" * (-len(b) % 4)


def block(e: str, btype: int, body: bytes) -> bytes:
    body = _pad(body)
    n = 12 + len(body)
    return struct.pack(e + "II", btype, n) + body + struct.pack(e + "I", n)


def shb(e: str) -> bytes:
    return block(e, 0x0A0D0D0A, struct.pack(e + "IHHq", 0x1A2B3C4D, 1, 0, -1))


def opt(e: str, code: int, value: bytes) -> bytes:
    return struct.pack(e + "HH", code, len(value)) + _pad(value)


def idb(e: str, linktype: int, tsresol: int | None = None, tsoffset: int | None = None,
        name: str = "") -> bytes:
    opts = b""
    if name:
        opts += opt(e, 2, name.encode())
    if tsresol is not None:
        opts += opt(e, 9, bytes([tsresol]))
    if tsoffset is not None:
        opts += opt(e, 14, struct.pack(e + "q", tsoffset))
    if opts:
        opts += opt(e, 0, b"")
    return block(e, 1, struct.pack(e + "HHI", linktype, 0, 262144) + opts)


def epb(e: str, iface: int, units: int, data: bytes) -> bytes:
    return block(e, 6, struct.pack(e + "IIIII", iface, units >> 32, units & 0xFFFFFFFF,
                                   len(data), len(data)) + data)


# ------------------------------------------------------------------ one remoting exchange

REQ = RemotingCommand(105, 0, 4242, "JAVA", 373, None, {"topic": "TopicTest"}, None, JSON)
RESP = RemotingCommand(0, 1, 4242, "JAVA", 373, None, None, b'{"brokerDatas":[]}', ROCKETMQ)
REQ_BYTES, RESP_BYTES = encode(REQ), encode(RESP)


def session(v6: bool = False, cport: int = 50000, sport: int = 10911, req: bytes = REQ_BYTES,
            resp: bytes = RESP_BYTES, v6_ext: bool = False) -> list[bytes]:
    """IP packets of one connection: handshake, request, response, close (8 packets)."""
    if v6:
        c, s = "fd00::1", "fd00::2"

        def ip(src: str, dst: str, seg: bytes) -> bytes:
            return ipv6(src, dst, seg, *(V6_EXT if v6_ext else (6, b"")))
    else:
        c, s = "10.1.0.1", "10.1.0.2"

        def ip(src: str, dst: str, seg: bytes) -> bytes:
            return ipv4(src, dst, seg)
    ci, si = 0xFFFFFF00, 77  # the client's sequence numbers wrap
    cs = [
        (True, tcp(cport, sport, ci, 0, SYN)),
        (False, tcp(sport, cport, si, ci + 1, SYN | ACK)),
        (True, tcp(cport, sport, ci + 1, si + 1, ACK)),
        (True, tcp(cport, sport, ci + 1, si + 1, PSH | ACK, req)),
        (False, tcp(sport, cport, si + 1, (ci + 1 + len(req)) % 2**32, PSH | ACK, resp)),
        (True, tcp(cport, sport, (ci + 1 + len(req)) % 2**32, si + 1 + len(resp), FIN | ACK)),
        (False, tcp(sport, cport, si + 1 + len(resp), (ci + 2 + len(req)) % 2**32, FIN | ACK)),
        (True, tcp(cport, sport, (ci + 2 + len(req)) % 2**32, si + 2 + len(resp), ACK)),
    ]
    return [ip(c, s, seg) if fc else ip(s, c, seg) for fc, seg in cs]


def check_exchange(ex, t_req: float, t_resp: float, v6: bool = False, sport: int = 10911) -> None:
    assert ex.status == ANSWERED
    assert ex.protocol == "remoting"
    rq, rs = ex.request.command, ex.response.command
    assert (rq.code, rq.opaque, rq.version, rq.ext, rq.serialize) == (105, 4242, 373, {"topic": "TopicTest"}, JSON)
    assert (rs.code, rs.opaque, rs.flag, rs.body, rs.serialize) == (0, 4242, 1, RESP.body, ROCKETMQ)
    assert ex.connection.client == (("fd00::1" if v6 else "10.1.0.1"), 50000)
    assert ex.connection.server == (("fd00::2" if v6 else "10.1.0.2"), sport)
    assert ex.request.ts == pytest.approx(t_req, abs=TOL)
    assert ex.response.ts == pytest.approx(t_resp, abs=TOL)
    assert ex.latency_ms == pytest.approx((t_resp - t_req) * 1000, abs=1e-4)


def write(tmp_path, name: str, data: bytes) -> str:
    p = tmp_path / name
    p.write_bytes(data)
    return str(p)


def us_records(frames: list[bytes], sec: int = BASE_SEC, step_us: int = 137) -> list[tuple[int, int, bytes]]:
    return [(sec, 1000 + i * step_us, f) for i, f in enumerate(frames)]


# ------------------------------------------------------------------ link types

Wrap = Callable[[bytes], bytes]
LINKS: dict[str, tuple[int, Wrap, tuple[bool, ...]]] = {
    "ethernet": (1, lambda ip: eth(et_of(ip), ip), (False, True)),
    "vlan": (1, lambda ip: eth(et_of(ip), ip, (0x8100,)), (False, True)),
    "qinq-88a8": (1, lambda ip: eth(et_of(ip), ip, (0x88A8, 0x8100)), (False, True)),
    "qinq-9100": (1, lambda ip: eth(et_of(ip), ip, (0x9100, 0x8100)), (False,)),
    "sll": (113, lambda ip: sll(et_of(ip), ip), (False, True)),
    "sll2": (276, lambda ip: sll2(et_of(ip), ip), (False, True)),
    "null-le": (0, lambda ip: struct.pack("<I", 2 if ip[0] >> 4 == 4 else 30) + ip, (False, True)),
    "null-be": (0, lambda ip: struct.pack(">I", 2 if ip[0] >> 4 == 4 else 30) + ip, (False, True)),
    "null-le-af24": (0, lambda ip: struct.pack("<I", 24) + ip, (True,)),
    "null-be-af28": (0, lambda ip: struct.pack(">I", 28) + ip, (True,)),
    "null-le-af28": (0, lambda ip: struct.pack("<I", 28) + ip, (True,)),
    "null-be-af24": (0, lambda ip: struct.pack(">I", 24) + ip, (True,)),
    "loop": (108, lambda ip: struct.pack(">I", 2 if ip[0] >> 4 == 4 else 24) + ip, (False, True)),
    "raw-101": (101, lambda ip: ip, (False, True)),
    "raw-12": (12, lambda ip: ip, (False, True)),
    "raw-14": (14, lambda ip: ip, (False, True)),
}
CASES = [(name, v6) for name, (_lt, _w, vs) in LINKS.items() for v6 in vs]


@pytest.mark.parametrize(("link", "v6"), CASES, ids=[f"{n}-{'v6' if v else 'v4'}" for n, v in CASES])
def test_link_types_give_one_answered_exchange(tmp_path, link: str, v6: bool) -> None:
    linktype, wrap, _ = LINKS[link]
    frames = [wrap(p) for p in session(v6=v6, v6_ext=v6 and link in ("ethernet", "sll2", "raw-101"))]
    recs = us_records(frames)
    a = analyze([write(tmp_path, "c.pcap", pcap_file(recs, linktype))])
    assert a.errors == []
    assert a.skipped == {}
    assert a.packets == len(frames)
    assert len(a.exchanges) == 1
    check_exchange(a.exchanges[0], BASE_SEC + recs[3][1] * 1e-6, BASE_SEC + recs[4][1] * 1e-6, v6=v6)


def test_ipv6_extension_headers_are_walked(tmp_path) -> None:
    """Hop-by-hop + destination options before TCP: same exchange, and the payload is exact."""
    frames = [eth(0x86DD, p) for p in session(v6=True, v6_ext=True)]
    assert frames[3][14 + 6] == 0  # next header of the fixed header: hop-by-hop
    recs = us_records(frames)
    a = analyze([write(tmp_path, "c.pcap", pcap_file(recs, 1))])
    assert len(a.exchanges) == 1 and a.skipped == {}
    check_exchange(a.exchanges[0], BASE_SEC + recs[3][1] * 1e-6, BASE_SEC + recs[4][1] * 1e-6, v6=True)
    req = a.exchanges[0].request
    assert req is not None and req.size == len(REQ_BYTES)


def test_ipv4_options_and_ethernet_padding(tmp_path) -> None:
    """IHL > 5 is honoured, and Ethernet padding after a short IP packet is not payload."""
    ips = session()
    frames = []
    for p in ips:
        opt_ip = ipv4(socket.inet_ntoa(p[12:16]), socket.inet_ntoa(p[16:20]), p[20:], opts=b"\x01\x01\x01\x00")
        frames.append(eth(0x0800, opt_ip) + b"\0" * max(0, 60 - 14 - len(opt_ip)) + b"\xee" * 4)
    recs = us_records(frames)
    a = analyze([write(tmp_path, "o.pcap", pcap_file(recs, 1))])
    assert a.skipped == {} and len(a.exchanges) == 1
    check_exchange(a.exchanges[0], BASE_SEC + recs[3][1] * 1e-6, BASE_SEC + recs[4][1] * 1e-6)
    assert a.stats.snapshot()["transport"]["bytes"] == len(REQ_BYTES) + len(RESP_BYTES)


# ------------------------------------------------------------------ pcap variants


@pytest.mark.parametrize("endian", ["<", ">"], ids=["little-endian", "big-endian"])
@pytest.mark.parametrize("nano", [False, True], ids=["usec", "nsec"])
def test_classic_pcap_byte_orders_and_resolutions(tmp_path, endian: str, nano: bool) -> None:
    frames = [eth(0x0800, p) for p in session()]
    unit = Fraction(1, 10**9 if nano else 10**6)
    recs = [(BASE_SEC + i, (123456789 if nano else 123456) + i * 7, f) for i, f in enumerate(frames)]
    path = write(tmp_path, "c.pcap", pcap_file(recs, 1, endian=endian, nano=nano))
    with open_capture(path) as r:
        got = list(r)
    assert [(lt, fr) for _ts, lt, fr in got] == [(1, f) for f in frames]
    for (ts, _lt, _fr), (sec, frac, _f) in zip(got, recs, strict=True):
        assert ts == pytest.approx(float(sec + frac * unit), abs=2e-9 if nano else TOL)
    a = analyze([path])
    assert len(a.exchanges) == 1
    check_exchange(a.exchanges[0], float(recs[3][0] + recs[3][1] * unit), float(recs[4][0] + recs[4][1] * unit))


def test_pcap_linktype_upper_bits_are_ignored(tmp_path) -> None:
    """The top 4 bits of the link-type field carry FCS information (pcap format)."""
    frames = [eth(0x0800, p) for p in session()]
    path = write(tmp_path, "c.pcap", pcap_file(us_records(frames), 1 | 0x10000000))
    assert len(analyze([path]).exchanges) == 1


# ------------------------------------------------------------------ pcapng variants


def test_pcapng_two_interfaces_different_links_and_resolutions(tmp_path) -> None:
    """Ethernet at µs (no if_tsresol) and SLL2 at ns, packets interleaved in one section."""
    e = "<"
    a_frames = [eth(0x0800, p) for p in session()]
    b_frames = [sll2(0x86DD, p) for p in session(v6=True, cport=50000, sport=10911)]
    blocks = [shb(e), idb(e, 1, name="eth0"), idb(e, 276, tsresol=9, name="any")]
    t_a, t_b = [], []
    for i in range(8):
        us = (BASE_SEC + i) * 10**6 + 250_001 + i
        ns = (BASE_SEC + i) * 10**9 + 987_654_321 - i
        blocks += [epb(e, 0, us, a_frames[i]), epb(e, 1, ns, b_frames[i])]
        t_a.append(Fraction(us, 10**6))
        t_b.append(Fraction(ns, 10**9))
    path = write(tmp_path, "multi.pcapng", b"".join(blocks))
    with open_capture(path) as r:
        got = list(r)
        assert [(i.linktype, i.name) for i in r.interfaces] == [(1, "eth0"), (276, "any")]
    assert [lt for _t, lt, _f in got] == [1, 276] * 8
    assert [f for _t, _lt, f in got] == [f for pair in zip(a_frames, b_frames, strict=True) for f in pair]
    for (ts, _lt, _f), want in zip(got, [t for pair in zip(t_a, t_b, strict=True) for t in pair], strict=True):
        assert ts == pytest.approx(float(want), abs=2e-9)  # to the nanosecond
    an = analyze([path])
    assert an.errors == [] and an.packets == 16
    assert len(an.exchanges) == 2
    v4 = [x for x in an.exchanges if ":" not in x.connection.client[0]]
    v6 = [x for x in an.exchanges if ":" in x.connection.client[0]]
    check_exchange(v4[0], float(t_a[3]), float(t_a[4]))
    check_exchange(v6[0], float(t_b[3]), float(t_b[4]), v6=True)


def test_pcapng_binary_resolution_and_offset(tmp_path) -> None:
    """if_tsresol with the high bit set is a power of two; if_tsoffset adds seconds."""
    e = "<"
    frames = [eth(0x0800, p) for p in session()]
    blocks = [shb(e), idb(e, 1, tsresol=0x80 | 20, tsoffset=BASE_SEC)]
    units = [(5 << 20) + (i << 10) for i in range(8)]
    blocks += [epb(e, 0, u, f) for u, f in zip(units, frames, strict=True)]
    path = write(tmp_path, "b.pcapng", b"".join(blocks))
    with open_capture(path) as r:
        got = [ts for ts, _lt, _f in r]
    assert got == pytest.approx([BASE_SEC + u / 2**20 for u in units], abs=1e-9)
    assert len(analyze([path]).exchanges) == 1


def test_pcapng_two_sections_reset_interfaces_and_byte_order(tmp_path) -> None:
    """Section 1 (little-endian): Ethernet + SLL.  Section 2 (big-endian): raw IP at ns as
    interface 0.  A packet in section 2 naming interface 1 (only defined in section 1) is
    reported, not decoded with section 1's interface."""
    s1 = [eth(0x0800, p) for p in session(cport=50000)]
    s2_ip = session(v6=True)
    blocks = [shb("<"), idb("<", 1), idb("<", 113)]
    blocks += [epb("<", 0, (BASE_SEC + 1) * 10**6 + i, f) for i, f in enumerate(s1)]
    blocks += [shb(">"), idb(">", 101, tsresol=9)]
    ns = [(BASE_SEC + 2) * 10**9 + 123_456_789 + i for i in range(8)]
    blocks += [epb(">", 0, n, f) for n, f in zip(ns, s2_ip, strict=True)]
    blocks.append(epb(">", 1, ns[-1] + 1, sll(0x0800, session(cport=50001)[0])))
    path = write(tmp_path, "two.pcapng", b"".join(blocks))
    a = analyze([path])
    assert a.packets == 16
    assert len(a.errors) == 1 and "interface 1" in a.errors[0]
    assert len(a.exchanges) == 2
    v4 = next(x for x in a.exchanges if ":" not in x.connection.client[0])
    v6 = next(x for x in a.exchanges if ":" in x.connection.client[0])
    check_exchange(v4, BASE_SEC + 1 + 3e-6, BASE_SEC + 1 + 4e-6)
    check_exchange(v6, ns[3] / 1e9, ns[4] / 1e9, v6=True)
    assert v6.request is not None
    assert v6.request.ts == pytest.approx(float(Fraction(ns[3], 10**9)), abs=2e-9)


def test_pcapng_unknown_and_statistics_blocks_are_passed_over(tmp_path) -> None:
    e = "<"
    frames = [eth(0x0800, p) for p in session()]
    blocks = [shb(e), idb(e, 1), block(e, 4, b"\0" * 4), block(e, 0x0BAD, b"xyz")]
    blocks += [epb(e, 0, BASE_SEC * 10**6 + i, f) for i, f in enumerate(frames)]
    blocks.append(block(e, 5, struct.pack(e + "III", 0, 0, 0)))
    a = analyze([write(tmp_path, "u.pcapng", b"".join(blocks))])
    assert a.errors == [] and a.packets == 8 and len(a.exchanges) == 1


@pytest.mark.parametrize("e", ["<", ">"], ids=["le", "be"])
def test_pcapng_simple_and_obsolete_packet_blocks(e: str) -> None:
    """Simple Packet Blocks (no timestamp, interface 0) and the obsolete Packet Block
    (16-bit interface id + 16-bit drop count)."""
    import io

    f1, f2 = eth(0x0800, session()[0]), sll(0x0800, session()[1])
    spb = block(e, 3, struct.pack(e + "I", len(f1)) + f1)
    ts = (BASE_SEC * 10**6 + 5)
    pb = block(e, 2, struct.pack(e + "HHIIII", 1, 7, ts >> 32, ts & 0xFFFFFFFF, len(f2), len(f2)) + f2)
    data = shb(e) + idb(e, 1) + idb(e, 113) + spb + pb
    r = CaptureReader(io.BytesIO(data), "m")
    got = list(r)
    assert r.errors == []
    assert [(lt, fr) for _t, lt, fr in got] == [(1, f1), (113, f2)]
    assert got[1][0] == pytest.approx(BASE_SEC + 5e-6, abs=TOL)


# ------------------------------------------------------------------ truncated / corrupt input


def two_sessions_pcap() -> tuple[bytes, list[int]]:
    """Session A (port 50000) completely, then session B (port 50001); returns the file and
    the file offset at which each record starts."""
    frames = [eth(0x0800, p) for p in session(cport=50000) + session(cport=50001)]
    data = pcap_file(us_records(frames), 1)
    starts, off = [], 24
    for f in frames:
        starts.append(off)
        off += 16 + len(f)
    return data, starts


@pytest.mark.parametrize("where", ["record header", "record data"])
def test_pcap_cut_mid_record(tmp_path, where: str) -> None:
    data, starts = two_sessions_pcap()
    rec = 8 + 4  # session B's response record
    cut = starts[rec] + (9 if where == "record header" else 16 + 30)
    a = analyze([write(tmp_path, "cut.pcap", data[:cut])])
    assert a.packets == rec  # every complete record was read
    assert len(a.errors) == 1
    assert "truncated" in a.errors[0] and "\n" not in a.errors[0] and "cut.pcap" in a.errors[0]
    by_port = {x.connection.client[1]: x for x in a.exchanges}
    assert by_port[50000].status == ANSWERED
    assert by_port[50001].status == UNANSWERED  # its request was read, the answer cut off
    assert a.files_read == 1


def test_pcap_corrupt_record_length(tmp_path) -> None:
    data, starts = two_sessions_pcap()
    bad = bytearray(data)
    struct.pack_into("<I", bad, starts[9] + 8, 0xFFFFFFF0)  # caplen of B's 2nd record
    a = analyze([write(tmp_path, "bad.pcap", bytes(bad))])
    assert a.packets == 15  # reading resumes at the next plausible record: only the bad one is lost
    assert len(a.errors) == 1 and "corrupt" in a.errors[0]
    assert [x.status for x in a.exchanges if x.connection.client[1] == 50000] == [ANSWERED]


def pcapng_session_blocks() -> tuple[list[bytes], list[bytes]]:
    e = "<"
    a = [epb(e, 0, BASE_SEC * 10**6 + i, eth(0x0800, p)) for i, p in enumerate(session(cport=50000))]
    b = [epb(e, 0, BASE_SEC * 10**6 + 100 + i, eth(0x0800, p)) for i, p in enumerate(session(cport=50001))]
    return [shb(e), idb(e, 1)] + a, b


@pytest.mark.parametrize("length", [13, 8, 0x7FFFFFFC, 40, 400])
def test_pcapng_corrupt_block_length(tmp_path, length: int) -> None:
    """Session A is whole; the first block of session B has a bad length (not a multiple of
    4, too small, huge, smaller or larger than the real block)."""
    head, b = pcapng_session_blocks()
    bad = bytearray(b[0])
    struct.pack_into("<I", bad, 4, length)
    a = analyze([write(tmp_path, "bad.pcapng", b"".join(head) + bytes(bad) + b"".join(b[1:]))])
    assert len(a.errors) >= 1
    assert any("corrupt" in e or "truncated" in e for e in a.errors)
    assert all("\n" not in e for e in a.errors)
    assert a.packets == 15  # reading resumes at the next plausible block: only the bad one is lost
    assert [x.status for x in a.exchanges] == [ANSWERED, ANSWERED]  # B's lost block was its SYN
    assert sorted(x.connection.client[1] for x in a.exchanges) == [50000, 50001]


def test_pcapng_cut_mid_block(tmp_path) -> None:
    head, b = pcapng_session_blocks()
    data = b"".join(head) + b"".join(b)
    cut = len(b"".join(head)) + len(b"".join(b[:4])) + 20  # inside B's response block
    a = analyze([write(tmp_path, "cut.pcapng", data[:cut])])
    assert a.packets == 8 + 4
    assert len(a.errors) == 1 and "truncated" in a.errors[0]
    assert {x.connection.client[1]: x.status for x in a.exchanges} == {50000: ANSWERED, 50001: UNANSWERED}


@pytest.mark.parametrize(("content", "word"), [
    (b"", "empty"),
    (b"\xd4\xc3", "empty"),
    (b"GET / HTTP/1.1\r\nHost: example\r\n\r\n" * 4, "not a pcap"),
    (b"\xd4\xc3\xb2\xa1\x02\x00\x04\x00", "truncated"),
])
def test_unreadable_files(tmp_path, content: bytes, word: str) -> None:
    path = write(tmp_path, "x.bin", content)
    with pytest.raises(CaptureError, match=word):
        open_capture(path)
    a = analyze([path])
    assert a.files_read == 0 and a.exchanges == [] and a.packets == 0
    assert len(a.errors) == 1 and word in a.errors[0] and "x.bin" in a.errors[0]


def test_missing_file_and_good_file_together(tmp_path) -> None:
    good = write(tmp_path, "good.pcap", pcap_file(us_records([eth(0x0800, p) for p in session()]), 1))
    a = analyze([str(tmp_path / "missing.pcap"), good])
    assert a.files_read == 1 and len(a.exchanges) == 1
    assert len(a.errors) == 1 and "missing.pcap" in a.errors[0]


def test_reader_on_file_object_never_raises_on_garbage_tail() -> None:
    import io

    frames = [eth(0x0800, p) for p in session()]
    data = pcap_file(us_records(frames), 1) + b"\x01\x02\x03"
    r = CaptureReader(io.BytesIO(data), "mem")
    assert [f for _t, _l, f in r] == frames
    assert len(r.errors) == 1 and "3 bytes" in r.errors[0]


def test_partial_frame_at_end_of_capture_is_counted(tmp_path) -> None:
    """A response cut off by the end of the capture is a counted decoding error."""
    ips = session(resp=RESP_BYTES)
    resp_cut = ipv4("10.1.0.2", "10.1.0.1", tcp(10911, 50000, 78, 0, PSH | ACK, RESP_BYTES[:20]))
    frames = [eth(0x0800, p) for p in ips[:4]] + [eth(0x0800, resp_cut)]
    a = analyze([write(tmp_path, "p.pcap", pcap_file(us_records(frames), 1))])
    assert a.stats.counter("response_decoding_error") == 1


# ------------------------------------------------------------------ skipped packets


def test_fragments_and_non_tcp_are_skipped_and_counted(tmp_path) -> None:
    udp = struct.pack("!HHHH", 5353, 5353, 12, 0) + b"abcd"
    v6_frag = struct.pack("!BBHI", 6, 0, 0x0001, 99) + tcp(1, 2, 3, 4, ACK, b"x")
    extra = {
        "ip fragment": [
            eth(0x0800, ipv4("10.1.0.1", "10.1.0.2", tcp(50000, 10911, 1, 0, ACK, b"A" * 16), frag=0x2000)),
            eth(0x0800, ipv4("10.1.0.1", "10.1.0.2", b"B" * 24, frag=0x0003)),
            eth(0x86DD, ipv6("fd00::1", "fd00::2", v6_frag, nxt=44)),
        ],
        "not tcp": [
            eth(0x0800, ipv4("10.1.0.1", "10.1.0.2", udp, proto=17)),
            eth(0x0800, ipv4("10.1.0.1", "10.1.0.2", b"\x08\x00\x00\x00\x00\x01\x00\x01", proto=1)),
            eth(0x86DD, ipv6("fd00::1", "fd00::2", udp, nxt=17)),
            eth(0x86DD, ipv6("fd00::1", "fd00::2", b"\x80\x00\x00\x00", nxt=58, ext=b"")),
        ],
        "not ip": [
            eth(0x0806, b"\x00\x01\x08\x00\x06\x04\x00\x01" + b"\0" * 20),
            eth(0x88CC, b"\x02\x07\x04" + b"\0" * 30),
        ],
    }
    good = [eth(0x0800, p) for p in session()]
    frames = good[:4] + [f for fs in extra.values() for f in fs] + good[4:]
    a = analyze([write(tmp_path, "mix.pcap", pcap_file(us_records(frames), 1))])
    assert a.packets == len(frames)
    assert a.skipped == {k: len(v) for k, v in extra.items()}
    assert a.stats.snapshot()["transport"]["packets"] == len(frames)
    assert len(a.exchanges) == 1 and a.exchanges[0].status == ANSWERED


def test_headers_cut_by_snaplen_are_skipped_and_counted(tmp_path) -> None:
    good = [eth(0x0800, p) for p in session()]
    data_pkt = good[3]
    cut_ip = data_pkt[:14 + 12]  # inside the IPv4 header
    cut_tcp = data_pkt[:14 + 20 + 10]  # inside the TCP header
    cut_opts = data_pkt[:14 + 20 + 22]  # inside the TCP options (header is 24 bytes)
    cut_v6 = eth(0x86DD, session(v6=True)[3])[:14 + 30]
    frames = good + [cut_ip, cut_tcp, cut_opts, cut_v6, b"\x02\x00\x00"]
    wl = {len(good) + i: len(data_pkt) for i in range(5)}
    a = analyze([write(tmp_path, "snap.pcap", pcap_file(us_records(frames), 1, wirelens=wl))])
    assert sum(a.skipped.values()) == 5
    assert len(a.exchanges) == 1 and a.exchanges[0].status == ANSWERED


def test_payload_cut_by_snaplen_becomes_a_counted_gap(tmp_path) -> None:
    """A request cut by the snap length: the missing bytes are a counted gap, and the next
    exchange on the connection still decodes."""
    r1 = encode(RemotingCommand(105, 0, 1, ext={"topic": "T1"}, body=b"x" * 300))
    r2 = encode(RemotingCommand(105, 0, 2, ext={"topic": "T2"}))
    a1 = encode(RemotingCommand(0, 1, 1))
    a2 = encode(RemotingCommand(0, 1, 2))
    c, s = ("10.1.0.1", 50000), ("10.1.0.2", 10911)
    cseq, sseq = 1000, 9000

    def pkt(from_client: bool, seq: int, ack: int, flags: int, data: bytes = b"") -> bytes:
        src, dst = (c, s) if from_client else (s, c)
        return eth(0x0800, ipv4(src[0], dst[0], tcp(src[1], dst[1], seq, ack, flags, data)))

    keep = 100
    frames = [
        pkt(True, cseq, 0, SYN), pkt(False, sseq, cseq + 1, SYN | ACK), pkt(True, cseq + 1, sseq + 1, ACK),
        pkt(True, cseq + 1, sseq + 1, PSH | ACK, r1),
        pkt(False, sseq + 1, cseq + 1 + len(r1), PSH | ACK, a1),
        pkt(True, cseq + 1 + len(r1), sseq + 1 + len(a1), PSH | ACK, r2),
        pkt(False, sseq + 1 + len(a1), cseq + 1 + len(r1) + len(r2), PSH | ACK, a2),
    ]
    full = len(frames[3])
    frames[3] = frames[3][:full - (len(r1) - keep)]
    a = analyze([write(tmp_path, "snap.pcap", pcap_file(us_records(frames), 1, wirelens={3: full}))])
    t = a.stats.snapshot()["transport"]
    assert t["gap"] == 1 and t["gap_bytes"] == len(r1) - keep
    assert a.stats.counter("request_decoding_error") == 1  # the cut request, counted
    answered = [x.request for x in a.exchanges if x.status == ANSWERED and x.request is not None]
    assert [r.command.opaque for r in answered] == [2]


# ------------------------------------------------------------------ tshark / capinfos agreement


def _tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"{name} is required in CI")
        pytest.skip(f"{name} not installed")
    return path


_BYTES = r"[\d.]+(?:\s*(?:bytes|kB|MB|GB))?"
# "A <-> B  frames bytes  frames bytes  frames bytes ..." (units are printed by newer tsharks)
CONV_ROW = re.compile(rf"^(\S+)\s+<->\s+(\S+)\s+(\d+)\s+{_BYTES}\s+(\d+)\s+{_BYTES}\s+(\d+)\s")


@pytest.mark.parametrize("fmt", ["pcap", "pcapng"])
def test_tshark_and_capinfos_agree(tmp_path, fmt: str) -> None:
    from rmqsniff.synth import write_capture

    capinfos, tshark = _tool("capinfos"), _tool("tshark")
    path = str(tmp_path / f"s.{fmt}")
    written = write_capture(path, 60, seed=7, connections=6, fmt=fmt)
    out = subprocess.run([capinfos, "-c", "-M", path], capture_output=True, text=True, check=True).stdout
    m = re.search(r"Number of packets:\s*(\d+)", out)
    assert m, out
    n_capinfos = int(m.group(1))
    conv = subprocess.run([tshark, "-n", "-r", path, "-q", "-z", "conv,tcp"], capture_output=True,
                          text=True, check=True).stdout
    rows = [m for m in map(CONV_ROW.search, conv.splitlines()) if m]
    frames_tshark = sum(int(m.group(5)) for m in rows)
    a = analyze([path])
    assert n_capinfos == written["packets"] == a.packets == frames_tshark
    assert len(rows) == 6 == a.stats.snapshot()["transport"]["flows"]
    assert len(a.exchanges) == written["exchanges"]
    ours = {frozenset((f"{x.connection.client[0]}:{x.connection.client[1]}",
                       f"{x.connection.server[0]}:{x.connection.server[1]}")) for x in a.exchanges}
    assert ours == {frozenset((m.group(1), m.group(2))) for m in rows}


# ------------------------------------------------------------------ robustness


def _valid_files() -> list[bytes]:
    e = "<"
    ng = [shb(e), idb(e, 1, tsresol=9, name="eth0"), idb(e, 113)]
    ng += [epb(e, i % 2, BASE_SEC * 10**9 + i, (eth(0x0800, p) if i % 2 == 0 else sll(0x0800, p)))
           for i, p in enumerate(session())]
    return [pcap_file(us_records([eth(0x0800, p) for p in session()]), 1), b"".join(ng)]


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(which=st.integers(0, 1), edits=st.lists(st.tuples(st.integers(0, 2000), st.integers(0, 255)),
                                                min_size=1, max_size=6),
       cut=st.integers(0, 2500))
def test_damaged_files_never_raise(tmp_path, which: int, edits: list[tuple[int, int]], cut: int) -> None:
    """Byte flips and truncation anywhere: analyze returns and reports what it could not read."""
    data = bytearray(_valid_files()[which])
    for pos, val in edits:
        if pos < len(data):
            data[pos] = val
    a = analyze([write(tmp_path, "d.cap", bytes(data[:cut]))])
    assert a.packets <= 8
    assert a.files_read == 1 or len(a.errors) == 1
    assert all(isinstance(e, str) and "\n" not in e for e in a.errors)


@pytest.mark.parametrize("which", [0, 1], ids=["pcap", "pcapng"])
def test_every_cut_point(which: int) -> None:
    """Cut after each byte: every complete record is returned, and the file is reported as
    truncated exactly when the cut is not at a record/block boundary."""
    import io

    data = _valid_files()[which]
    if which == 0:  # 24-byte file header, then 16-byte record headers
        ends, off, packet_ends = [24], 24, []
        while off < len(data):
            off += 16 + struct.unpack_from("<I", data, off + 8)[0]
            ends.append(off)
            packet_ends.append(off)
    else:  # SHB, two IDBs, then EPBs
        ends, off = [], 0
        while off < len(data):
            off += struct.unpack_from("<I", data, off + 4)[0]
            ends.append(off)
        packet_ends = ends[3:]
    assert len(packet_ends) == 8
    for cut in range(ends[0], len(data) + 1):
        r = CaptureReader(io.BytesIO(data[:cut]), "m")
        got = list(r)
        assert len(got) == sum(1 for e in packet_ends if e <= cut), cut
        assert bool(r.errors) == (cut not in ends), cut
        assert len(r.errors) <= 1


@pytest.mark.parametrize("batch", [1, 40, 333, 4096])
@pytest.mark.parametrize("damage", ["none", "corrupt", "cut"])
def test_record_batches_do_not_depend_on_their_size(tmp_path, monkeypatch, batch: int, damage: str) -> None:
    """The stats-only reader walks classic pcap in batches of records: any batch size gives
    the records (and the errors) of reading one record at a time."""
    import rmqsniff.sources.pcapfile as pcapfile

    data, starts = two_sessions_pcap()
    data = data[:24] + data[24:] * 40  # many batches even at 4 KiB
    if damage == "corrupt":
        buf = bytearray(data)
        struct.pack_into("<I", buf, starts[9] + 8 + 17 * (len(buf) - 24) // 40, 0xFFFFFFF0)
        data = bytes(buf)
    elif damage == "cut":
        data = data[:-30]
    path = write(tmp_path, "b.pcap", data)

    def one_by_one() -> tuple[list, list[str]]:
        with open(path, "rb") as f:
            r = CaptureReader(f, "b.pcap")
            return [(ts, lt, bytes(frame)) for ts, lt, frame in r], r.errors

    def in_batches() -> tuple[list, list[str]]:
        with open(path, "rb") as f:
            r = CaptureReader(f, "b.pcap")
            got = [(ts, lt, bytes(buf[s:e])) for buf, lt, recs in r.batches() for ts, s, e in recs]
            assert r.packets == len(got)
            return got, r.errors

    expected = one_by_one()
    monkeypatch.setattr(pcapfile, "BATCH_BYTES", batch)
    assert in_batches() == expected
    assert len(expected[0]) > 500 and bool(expected[1]) == (damage != "none")
