"""Every byte the broker sent reaches the client: both legs of the proxy on the wire.

A real Java remoting client (produce, push/broadcast/lite-pull consume) runs against the
real cluster through ``rmqsniff proxy`` while tcpdump records the client<->proxy leg (the
proxy's name-server and broker listeners) and the proxy<->cluster leg (the real name server
and broker ports).  Each TCP connection is reassembled here from the packets (dpkt and a
small sequence-number reassembly below, not rmqsniff's), proxied connections are paired
by their client->server bytes (which the proxy forwards unchanged), and then:

* broker connections: the server->client stream is the same, sha256 for sha256;
* name-server connections: the streams frame for frame are the same, except route answers
  (GET_ROUTEINFO_BY_TOPIC / GET_BROKER_CLUSTER_INFO), which differ only in broker addresses.
"""
from __future__ import annotations

import hashlib
import json
import re
import struct
import time
from dataclasses import dataclass, field
from pathlib import Path

import dpkt
import pytest

from dissectors.remoting import codes, decode_frame
from dissectors.remoting.command import FLAG_RESPONSE
from tests.rocketmq.capture import Capture
from tests.test_proxy import free_port

ROUTE_CODES = {codes.GET_ROUTEINFO_BY_TOPIC, codes.GET_BROKER_CLUSTER_INFO}
_SEQ = 1 << 32


# ------------------------------------------------------------------ TCP reassembly (test's own)

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
            st = TcpStream(src, dst)
            st.c2s_half.isn = tcp.seq
            by_key[(src, dst)] = by_key[(dst, src)] = st
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


def kernel_drops(cap: Capture) -> int:
    """Packets tcpdump says the kernel dropped (the capture would have holes)."""
    m = re.search(r"^(\d+) packets? dropped by kernel", cap.stderr_text, re.M)
    assert m, cap.stderr_text
    return int(m[1])


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


def pair_legs(streams: list[TcpStream], port_map: dict[int, int]) -> list[tuple[TcpStream, TcpStream]]:
    """(client leg, upstream leg) pairs: ``port_map`` is proxy listener port -> upstream port;
    the upstream connection of a client connection is the one that carried the same client bytes."""
    client_leg = [s for s in streams if s.server[1] in port_map]
    upstream = {}
    for s in streams:
        if s.server[1] in port_map.values():
            upstream.setdefault((s.server[1], hashlib.sha256(s.c2s).digest()), []).append(s)
    pairs = []
    for c in client_leg:
        assert c.c2s, f"{c.label}: the client sent nothing"
        cands = upstream.get((port_map[c.server[1]], hashlib.sha256(c.c2s).digest()), [])
        assert len(cands) == 1, f"{c.label}: {len(cands)} upstream connections carried its {len(c.c2s)} bytes"
        pairs.append((c, cands[0]))
    return pairs


def _route_body_only_differs(client_frame: bytes, upstream_frame: bytes, addr_map: dict[str, str]) -> None:
    """Same serialize mark and header; the body equals the upstream's with addresses replaced."""
    (_, cmark), (_, umark) = struct.unpack_from(">iI", client_frame), struct.unpack_from(">iI", upstream_frame)
    assert cmark == umark
    hend = 8 + (cmark & 0xFFFFFF)
    assert client_frame[8:hend] == upstream_frame[8:hend], "the header of a route answer changed"
    body = upstream_frame[hend:]
    for up, adv in addr_map.items():
        body = body.replace(f'"{up}"'.encode(), f'"{adv}"'.encode())
    assert client_frame[hend:] == body, "a route answer differs in more than broker addresses"
    assert struct.unpack_from(">i", client_frame)[0] == len(client_frame) - 4


# ------------------------------------------------------------------ the real run

def _settle(pcap, quiet: float = 1.5, limit: float = 10.0) -> None:
    """Wait until the capture file has stopped growing for ``quiet`` seconds (at most ``limit``).
    ``quiet`` is longer than libpcap's read timeout (tcpdump: 1 s): with TPACKET_V3 the kernel
    hands packets over in blocks, a partly filled one only when that timeout expires, so a
    shorter pause in the file's growth does not mean the capture is complete."""
    deadline = time.monotonic() + limit
    last, since = -1, time.monotonic()
    while time.monotonic() < deadline:
        size = pcap.stat().st_size if pcap.exists() else 0
        if size != last:
            last, since = size, time.monotonic()
        elif time.monotonic() - since >= quiet:
            return
        time.sleep(0.05)


@pytest.mark.rocketmq
@pytest.mark.timeout(600)
def test_every_byte_the_cluster_sent_reaches_the_client(rocketmq_cluster, tmp_path):
    from tests.test_proxy_rocketmq import ProxyProcess, _run_java, _wait_idle

    cluster = rocketmq_cluster
    ns_port, broker_port = free_port(), free_port()
    pcap = tmp_path / "legs.pcap"
    cap = Capture(pcap, [ns_port, broker_port, cluster.ports.namesrv, cluster.ports.broker])
    cap.start()
    try:
        p = ProxyProcess("--namesrv", f"127.0.0.1:{ns_port}={cluster.namesrv_addr}",
                         "--broker", f"127.0.0.1:{broker_port}={cluster.broker_addr}", "--admin", "127.0.0.1:0")
        try:
            truth_path = tmp_path / "truth.json"
            _run_java(cluster, "clients/proxy_legs", "produce-consume", f"127.0.0.1:{ns_port}", "TopicLegs",
                      str(truth_path))
            truth = json.loads(truth_path.read_text())
            assert _wait_idle(p)["sessions"] == 0
            flows = json.loads(p.get("/stats?format=json")[2])["transport"]["flows"]
        finally:
            assert p.stop() == 0, "\n".join(p.lines[-20:])
        _settle(pcap)  # the closing FIN/RST packets reach tcpdump a moment after the proxy exits
    finally:
        cap.stop()
    assert truth["counts"] and truth["received"]["push"]
    assert kernel_drops(cap) == 0, cap.stderr_text

    streams = tcp_streams(pcap)
    port_map = {ns_port: cluster.ports.namesrv, broker_port: cluster.ports.broker}
    pairs = pair_legs(streams, port_map)
    assert len(pairs) == flows  # every connection the proxy took is on the wire, on both legs
    for c, u in pairs:
        assert c.holes == 0 and u.holes == 0, f"capture lost bytes of {c.label} / {u.label}"
        # Closing packets are not required: in some fresh-clone CI runs the FINs of many legs were
        # missing from the capture although the proxy had closed every session (cause not found; the
        # bytes before them are complete, holes == 0, and compared below on both legs).
    broker_pairs = [(c, u) for c, u in pairs if c.server[1] == broker_port]
    ns_pairs = [(c, u) for c, u in pairs if c.server[1] == ns_port]
    assert len(broker_pairs) >= 2 and ns_pairs  # producer and consumers; route lookups

    # broker listener: no rewriting, so every server byte arrives as sent
    total = 0
    for c, u in broker_pairs:
        assert len(c.s2c) == len(u.s2c), c.label
        assert hashlib.sha256(c.s2c).hexdigest() == hashlib.sha256(u.s2c).hexdigest(), c.label
        total += len(u.s2c)
    assert total > 50_000  # pulled messages, not only heartbeats

    # name-server listener: frame for frame the same, except route answers (broker addresses only)
    addr_map = {cluster.broker_addr: f"127.0.0.1:{broker_port}"}
    rewritten = 0
    for c, u in ns_pairs:
        requests = {}
        for fr in frames(c.c2s):
            cmd = decode_frame(fr)
            requests[cmd.opaque] = cmd.code
        cf, uf = frames(c.s2c), frames(u.s2c)
        assert len(cf) == len(uf), c.label
        for a, b in zip(cf, uf, strict=True):
            if a == b:
                continue
            cmd = decode_frame(b)
            assert cmd.flag & FLAG_RESPONSE and requests.get(cmd.opaque) in ROUTE_CODES, \
                f"{c.label}: a frame that is not a route answer was changed (opaque {cmd.opaque})"
            _route_body_only_differs(a, b, addr_map)
            assert f'"{cluster.broker_addr}"'.encode() not in a
            rewritten += 1
    assert rewritten > 0
