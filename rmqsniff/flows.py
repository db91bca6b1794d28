"""The flow table: TCP segments in, each connection's bytes to its protocol's handler.

This is the streaming core shared by capture files and the live tap.  Memory
grows with open flows and in-flight requests, never with capture size: closed
flows are released at once, idle flows can be expired, and the table is capped
(least recently active flows are closed and counted when it is full).

Roles: the SYN decides who is the client; without a SYN, a well-known RocketMQ
server port (or ``--port``) does; failing that, the first decoded frame does
(a side that sends responses is the server) and, before any frame, the higher
port is taken as the client's.  Protocols are recognised from a connection's first
bytes (:func:`rmqsniff.protocols.recognise`), a well-known port or ``--port``; RocketMQ
remoting on any other port by frame plausibility.  A flow whose first bytes are a TLS
record, on any port, is decrypted with the run's key logs (:mod:`rmqsniff.protocols.tls`)
and its plaintext recognised the same way.  Flows that turn out to be neither are
counted and set aside rather than reported as errors.  The
flow table only reassembles TCP: decoding, pairing and their fast lanes live in each
protocol's handler (:mod:`rmqsniff.protocols`).
"""
from __future__ import annotations

import struct
from collections import OrderedDict, deque
from collections.abc import Iterable, Mapping
from typing import Any

from .model import Connection
from .pairing import PairingSink
from .protocols import REMOTING as REMOTING_PROTOCOL
from .protocols import Protocol, by_port, protocol_named, recognise
from .protocols.tls import TlsKeys, TlsLayer, inner_protocol, looks_tls
from .sources.link import (
    DLT_EN10MB,
    ETH_IP4_TCP_ACK,
    ETH_IP4_TCP_NOACK,
    TH_ACK,
    TH_FIN,
    TH_RST,
    TH_SYN,
    addr_text,
    tcp_segment,
)
from .tcp import HalfStream

_U32 = struct.Struct("!I").unpack_from
_PORTS = struct.Struct("!HH").pack


def _raw_key(key: tuple) -> bytes:
    """(src, sport, dst, dport) as the IPv4 header's addresses followed by the TCP ports."""
    return key[0] + key[2] + _PORTS(key[1], key[3])


DEFAULT_SERVER_PORTS = REMOTING_PROTOCOL.well_known_ports
PortSpec = int | tuple[int, str]  # a server port (--port P), or one with its protocol (--port P=grpc)
PROBE_LIMIT = 64 * 1024  # bytes a candidate flow may show without one plausible frame
MAX_FLOWS = 32_768  # ~2.8 KB each when they hold a pending request: about 100 MB at the cap
GAP_TIMEOUT = 2.0  # seconds (capture time) out-of-order bytes wait for a missing segment

# flow kinds
DECODING = "decoding"  # a known protocol: its handler decodes the flow (from its first bytes on)
CANDIDATE = "candidate"  # unknown port, not yet recognised: remoting frames are looked for
OTHER = "other"  # set aside: TLS, unrecognised


class Flow:
    """One TCP connection being decoded; it is its handler's owner (recognition, roles, problems)."""

    __slots__ = ("conn", "c2s", "s2c", "kind", "why", "last_ts", "probe_bytes", "key", "handler", "table",
                 "port_proto")

    def __init__(self, conn: Connection, table: FlowTable, kind: str, key: tuple) -> None:
        self.conn = conn
        self.key = key
        self.table = table
        self.c2s = HalfStream(True, table)
        self.s2c = HalfStream(False, table)
        self.c2s.flow = self.s2c.flow = self
        self.c2s.peer, self.s2c.peer = self.s2c, self.c2s
        self.kind = kind
        self.why = ""
        self.last_ts = conn.first_ts
        self.probe_bytes = 0
        self.handler: Any = None  # the protocol's connection handler, from the first bytes on
        self.port_proto: Protocol | None = None  # the protocol its well-known server port means

    # -- what the handler tells its owner
    def recognised(self, how: str) -> None:
        self.kind = DECODING
        self.conn.recognised_by = how

    def swap_roles(self) -> None:
        self.table._swap(self)

    def problem(self, text: str) -> None:
        errors = self.table.errors
        if len(errors) < 1000:
            errors.append(text)


class FlowTable:
    """Decode every TCP flow of a packet stream into exchanges."""

    def __init__(
        self,
        stats,
        sink: PairingSink,
        *,
        ports: Iterable[PortSpec] = (),
        only_ports: bool = False,
        max_flows: int = MAX_FLOWS,
        max_frame: int = 16 * 1024 * 1024,
        errors: list[str] | None = None,
        track_packets: bool = False,
        protocols: Mapping[int, str] | None = None,
        tls_keys: TlsKeys | None = None,
    ) -> None:
        self.stats = stats
        self.tls_keys = tls_keys if tls_keys is not None else TlsKeys()  # secrets for TLS flows
        self.sink = sink
        # --port P=grpc / P=remoting: that protocol, whatever the bytes say
        named = dict(protocols or {})
        plain: set[int] = set()
        for spec in ports:
            if isinstance(spec, tuple):
                named[spec[0]] = spec[1]
            else:
                plain.add(spec)
        self.port_protocols: dict[int, Protocol] = {p: protocol_named(n) for p, n in named.items()}
        forced = frozenset(plain) | frozenset(self.port_protocols)
        self.server_ports = forced if only_ports and forced else DEFAULT_SERVER_PORTS | forced
        self.forced_ports = forced
        self.only_ports = only_ports and bool(forced)
        self.max_flows = max_flows
        self.max_frame = max_frame
        self.errors = errors if errors is not None else []
        # (src, sport, dst, dport) -> (flow, half)
        self._by_key: dict[tuple, tuple[Flow, HalfStream]] = {}
        # the same entries for IPv4 flows by the 12 raw bytes src, dst, sport, dport of the
        # IP and TCP headers (one slice of the frame: the stats-only fast path's lookup)
        self._by_raw: dict[bytes, tuple[Flow, HalfStream]] = {}
        self._flows: OrderedDict[int, Flow] = OrderedDict()  # by id, least recently active first
        self._next_id = 0
        self.other_flows: dict[str, int] = {}
        self.track_packets = track_packets
        self.packet_no = 0  # ordinal of the packet being fed (set by the source when tracking)
        self.peeked = 0  # frames the stats-only fast path took (consume)
        self.ooo_seen = False  # a half-stream has held a segment out of order (set by tcp.HalfStream)
        self._tcp = stats.tcp

    # -- HalfStream owner protocol -------------------------------------------
    def count(self, kind: str, n: int) -> None:
        self._tcp(kind, n)

    def lost(self, half: HalfStream, nbytes: int) -> None:
        half.pos += nbytes
        h = half.flow.handler
        if h is not None:
            h.lost(half.from_client, nbytes)

    def deliver(self, half: HalfStream, data: bytes, ts: float) -> None:
        flow = half.flow
        h = flow.handler
        if h is None:
            if flow.kind is OTHER or not self._classify(flow, half, data):
                return
            h = flow.handler
        start = half.pos
        half.pos = start + len(data)
        if half.track is not None:
            half.track.append((start, half.pos, self.packet_no))
        h.data(half.from_client, data, ts)
        if flow.kind is CANDIDATE:
            flow.probe_bytes += len(data)
            if flow.probe_bytes > PROBE_LIMIT:
                self._set_aside(flow, "no RocketMQ remoting frame in the first 64 KiB")

    # -- packets ----------------------------------------------------------------
    def packet(self, ts: float, src: bytes, sport: int, dst: bytes, dport: int, seq: int, ack: int, flags: int,
               payload: bytes) -> None:
        """Feed one TCP segment."""
        entry = self._by_key.get((src, sport, dst, dport))
        if entry is not None and not flags & 0x07:
            # Fast path: data in order on a decoding flow with nothing held back (the handler
            # has its own fast lane for a segment that is one whole frame).
            flow, half = entry
            h = flow.handler
            if payload and half.next_seq == seq and not half.ooo and h is not None and half.track is None \
                    and flow.kind is DECODING:
                other = half.peer
                if other.ooo:
                    self._acked(other, ack, ts)
                n = len(payload)
                half.next_seq = (seq + n) & 0xFFFFFFFF
                if ts - flow.last_ts > 1.0:
                    self._flows.move_to_end(flow.conn.id)
                flow.last_ts = ts
                half.pos += n
                h.data(half.from_client, payload, ts)
                return
        self._segment(entry, ts, src, sport, dst, dport, seq, ack, flags, payload)

    def _segment(self, entry: tuple[Flow, HalfStream] | None, ts: float, src: bytes, sport: int, dst: bytes,
                 dport: int, seq: int, ack: int, flags: int, payload: bytes) -> None:
        """Every segment the fast path does not take: pure ACKs, SYN/FIN/RST, new flows,
        out-of-order data, tracked packets."""
        if not payload and not flags & 0x07:  # pure ACK: only news about lost bytes
            if entry is not None and entry[1].peer.ooo:
                self._acked(entry[1].peer, ack, ts)
            return
        entry = self._entry(entry, ts, src, sport, dst, dport, seq, flags, payload)
        if entry is None:
            return
        flow, half = entry
        moved = ts - flow.last_ts > 1.0
        flow.last_ts = ts
        if moved:
            self._flows.move_to_end(flow.conn.id)
        if flags & 0x07:
            self._control(flow, half, seq, flags)
        if flags & TH_SYN:
            if not payload:
                return
            seq = (seq + 1) % (1 << 32)
        if flags & TH_ACK and half.peer.ooo:  # first: what the peer acknowledged precedes what it sends now
            self._acked(half.peer, ack, ts)
        if payload:
            half.segment(seq, payload, ts)
        if half.ooo and ts - half.ooo_since > GAP_TIMEOUT:
            half.skip_gap()
        if flags & (TH_FIN | TH_RST):
            half.closed = True
            if flags & TH_RST or (flow.c2s.closed and flow.s2c.closed):
                self._close(flow, "closed")

    def _control(self, flow: Flow, half: HalfStream, seq: int, flags: int) -> None:
        """SYN / FIN / RST: the packet is kept for exports, a SYN fixes the roles."""
        if self.track_packets:
            cp = flow.conn.control_packets
            if cp is not None and len(cp) < 16:
                cp.append(self.packet_no)
        if flags & TH_SYN:
            half.syn(seq)
            if flags & TH_ACK and flow.conn.role_source != "syn":
                self._make_server(flow, half)

    def _entry(self, entry: tuple[Flow, HalfStream] | None, ts: float, src: bytes, sport: int, dst: bytes,
               dport: int, seq: int, flags: int, payload: bytes) -> tuple[Flow, HalfStream] | None:
        """The flow of a segment: a new one on a SYN reusing a 4-tuple or for a flow not seen yet
        (None: nothing to decode)."""
        if entry is not None and flags & TH_SYN and not flags & TH_ACK and entry[1].syn_seen \
                and entry[1].next_seq != (seq + 1) % (1 << 32):
            self._close(entry[0], "reused")  # a new connection on the same 4-tuple
            entry = None
        if entry is None:
            if not payload and not flags & TH_SYN:
                return None  # pure ACK/FIN/RST of a connection we never saw carry nothing
            entry = self._open(ts, src, sport, dst, dport, flags)
        return entry

    def consume(  # noqa: C901 - the stats-only hot loop: one pass per packet, inline on purpose
            self, batches: Iterable[tuple[Any, int, list[tuple[float, int, int]]]], skipped: dict[str, int]) -> int:
        """Stats-only runs: feed records in batches (``CaptureReader.batches``: a buffer, the
        link type and ``(ts, start, end)`` of each frame in it); return the TCP payload bytes.

        The common case (an Ethernet/IPv4 segment carrying exactly one whole frame, in
        order, on a known remoting flow) is peeked (``StreamDecoder.peek_one``) and paired
        here without building a command, a message or an exchange: a request that needs
        no special rule is kept pending as a tuple, its answer closes it, and both become
        stats events applied in batches. Everything else goes to :meth:`packet` or
        :meth:`Pairing.lite`, after the batch so far is applied, so the stats see every
        event in capture order. Only for runs whose exchanges nobody reads."""
        by_raw = self._by_raw
        flows = self._flows
        packet = self.packet
        acked = self._acked
        unpack = ETH_IP4_TCP_NOACK
        segment = tcp_segment
        remoting = "remoting"  # the protocol of the lanes' stats events
        ethernet = DLT_EN10MB
        apply = self.stats.apply
        events: list = []
        nbytes = 0
        peeked = 0
        for buf, linktype, recs in batches:
            lane = linktype == ethernet
            for ts, s, e in recs:
                if lane and e - s >= 54:
                    et, vihl, total, frag, proto, seq, doff, flags = unpack(buf, s)
                    if et == 0x0800 and vihl == 0x45 and proto == 6 and not frag & 0x3FFF and doff >= 0x50 \
                            and not flags & 0x07:
                        end = e
                        if total and s + 14 + total < end:
                            end = s + 14 + total
                        t = s + 34 + (doff >> 4) * 4
                        if t <= end:
                            n = end - t
                            if not n:  # pure ACK: only news about lost bytes, if anything was ever held
                                if self.ooo_seen:
                                    entry = by_raw.get(buf[s + 26:s + 38])
                                    if entry is None:
                                        continue
                                    other = entry[1].peer
                                    if other.ooo:
                                        if events:
                                            apply(remoting, events)
                                            events.clear()
                                        acked(other, _U32(buf, s + ETH_IP4_TCP_ACK)[0], ts)
                                continue
                            entry = by_raw.get(buf[s + 26:s + 38])
                            if entry is not None:
                                flow, half = entry
                                h = flow.handler
                                if h is not None and h.lane_ok and half.next_seq == seq and not half.ooo:
                                    other = half.peer
                                    if other.ooo:
                                        if events:
                                            apply(remoting, events)
                                            events.clear()
                                        acked(other, _U32(buf, s + ETH_IP4_TCP_ACK)[0], ts)
                                    pos = half.pos
                                    if h.lane(buf, t, n, ts, half.from_client, pos, events, apply):
                                        nbytes += n
                                        peeked += 1
                                        half.next_seq = (seq + n) & 0xFFFFFFFF
                                        if ts - flow.last_ts > 1.0:
                                            flows.move_to_end(flow.conn.id)
                                        flow.last_ts = ts
                                        half.pos = pos + n
                                        continue
                if events:
                    apply(remoting, events)
                    events.clear()
                seg = segment(buf[s:e], linktype)
                if type(seg) is str:
                    skipped[seg] = skipped.get(seg, 0) + 1
                    continue
                nbytes += len(seg[7])
                packet(ts, *seg)
        if events:
            apply(remoting, events)
        self.peeked += peeked
        return nbytes

    def _open(self, ts: float, src: bytes, sport: int, dst: bytes, dport: int,
              flags: int) -> tuple[Flow, HalfStream] | None:
        if self.only_ports and sport not in self.forced_ports and dport not in self.forced_ports:
            return None
        if flags & TH_SYN and not flags & TH_ACK:
            client_is_src, how = True, "syn"
        elif flags & TH_SYN:
            client_is_src, how = False, "syn"
        elif dport in self.server_ports:
            client_is_src, how = True, "port"
        elif sport in self.server_ports:
            client_is_src, how = False, "port"
        else:
            client_is_src, how = sport >= dport, "guess"
        a = (addr_text(src), sport)
        b = (addr_text(dst), dport)
        client, server = (a, b) if client_is_src else (b, a)
        sp = server[1]
        proto = self.port_protocols.get(sp)
        recognised = "forced"
        if proto is None and sp not in self.forced_ports:
            proto, recognised = by_port(sp), "port"
        if proto is not None and proto is not REMOTING_PROTOCOL:
            kind = DECODING
        elif self.only_ports or sp in self.server_ports:
            kind, recognised = DECODING, "forced" if sp in self.forced_ports else "port"
        else:
            kind, recognised = CANDIDATE, ""
        conn = Connection(self._next_id, client, server, ts, how, recognised_by=recognised)
        self._next_id += 1
        key_c = (src, sport, dst, dport) if client_is_src else (dst, dport, src, sport)
        key_s = (key_c[2], key_c[3], key_c[0], key_c[1])
        flow = Flow(conn, self, kind, key_c)
        if self.track_packets:
            flow.c2s.track = deque()
            flow.s2c.track = deque()
            conn.control_packets = []
        self._by_key[key_c] = (flow, flow.c2s)
        self._by_key[key_s] = (flow, flow.s2c)
        if len(src) == 4:
            self._by_raw[_raw_key(key_c)] = self._by_key[key_c]
            self._by_raw[_raw_key(key_s)] = self._by_key[key_s]
        self._flows[conn.id] = flow
        self.stats.tcp("flows", 1)
        if proto is not None and proto is not REMOTING_PROTOCOL:  # known by its port: decoded from the first bytes
            flow.port_proto = proto
        if len(self._flows) > self.max_flows:
            _, oldest = next(iter(self._flows.items()))
            self.stats.tcp("flows_evicted", 1)
            self._close(oldest, "evicted")
        return self._by_key[(src, sport, dst, dport)]

    @staticmethod
    def _acked(half: HalfStream, ack: int, ts: float) -> None:
        """The peer acknowledged bytes we never saw while later ones wait: they were lost
        from the capture (not the network), so stop waiting for them."""
        nxt = half.next_seq
        if nxt is not None:
            rel = (ack - nxt) % (1 << 32)
            if 0 < rel < (1 << 31):
                half.skip_gap()

    def _make_server(self, flow: Flow, half: HalfStream) -> None:
        """``half`` is the server's direction (SYN/ACK seen): fix the roles if needed."""
        if half.from_client:
            self._swap(flow)
        flow.conn.role_source = "syn"

    def _swap(self, flow: Flow) -> None:
        conn = flow.conn
        conn.client, conn.server = conn.server, conn.client
        flow.c2s, flow.s2c = flow.s2c, flow.c2s
        flow.c2s.from_client, flow.s2c.from_client = True, False
        if flow.handler is not None:
            flow.handler.swap()
        k = flow.key
        flow.key = (k[2], k[3], k[0], k[1])

    # -- protocol recognition ---------------------------------------------------
    def _classify(self, flow: Flow, half: HalfStream, data: bytes) -> bool:
        """First bytes of a direction: hand the flow to the protocol they show (remoting unless
        another protocol recognises them), or set it aside; True when it has a handler."""
        conn = flow.conn
        forced = self.port_protocols.get(conn.server[1])
        if looks_tls(data):
            self._tls(flow, half, data, forced)
            return True
        proto = forced or flow.port_proto
        how = conn.recognised_by
        if proto is None:
            hit = recognise(data, half.from_client)
            if hit is None and conn.role_source == "guess":
                hit = recognise(data, not half.from_client)  # roles were a guess: the bytes say
                if hit is not None:
                    self._swap(flow)
                    conn.role_source = "flags"
            if hit is not None:
                proto, how = hit
                flow.kind = DECODING
            else:
                proto = REMOTING_PROTOCOL
        self._handler(flow, proto, how, mid_stream=(not flow.c2s.syn_seen, not flow.s2c.syn_seen))
        return True

    def _tls(self, flow: Flow, half: HalfStream, data: bytes, forced: Protocol | None) -> None:
        """A TLS flow: decrypted by a :class:`TlsLayer` whose plaintext goes to the protocol that
        ``--port``, the ALPN, its first bytes or a well-known server port show."""
        conn = flow.conn
        hello = data[5:6] if data[0] == 0x16 else b""
        if conn.role_source == "guess" and hello == (b"\x02" if half.from_client else b"\x01"):
            self._swap(flow)  # a ClientHello from the "server": the roles were a guess
            conn.role_source = "flags"
        kind = flow.kind
        port = flow.port_proto or (REMOTING_PROTOCOL if kind is DECODING else None)
        flow.kind = DECODING

        def inner(from_client: bool, first: bytes, alpn: str | None) -> Any:
            proto, found, candidate = inner_protocol(from_client, first, alpn, forced, port)
            if candidate and kind is CANDIDATE:
                flow.kind = CANDIDATE
            conn.recognised_by = found
            return proto.handler(conn, self.sink, self.stats, False, owner=flow, candidate=flow.kind is CANDIDATE,
                                 max_frame=self.max_frame)

        flow.handler = h = TlsLayer(conn, self.stats, self.tls_keys, inner, owner=flow)
        if self.track_packets:
            h.track(lambda fc, start, end: (flow.c2s if fc else flow.s2c).packets_for(start, end))

    def _handler(self, flow: Flow, proto: Protocol, how: str, mid_stream: bool | tuple[bool, bool]) -> None:
        """Hand the flow to ``proto``'s connection handler."""
        flow.conn.recognised_by = how
        flow.handler = h = proto.handler(flow.conn, self.sink, self.stats, mid_stream, owner=flow,
                                         candidate=flow.kind is CANDIDATE, max_frame=self.max_frame)
        if self.track_packets:
            h.track(lambda fc, start, end: (flow.c2s if fc else flow.s2c).packets_for(start, end))

    def _set_aside(self, flow: Flow, why: str) -> None:
        flow.kind = OTHER
        flow.why = why
        flow.handler = None  # nothing was decoded: nothing to report at the end
        self.other_flows[why] = self.other_flows.get(why, 0) + 1
        self.stats.tcp("flows_other", 1)

    # -- end of flows ------------------------------------------------------------
    def _close(self, flow: Flow, why: str) -> None:
        if flow.kind is CANDIDATE and flow.probe_bytes:
            self._set_aside(flow, "not recognised as RocketMQ remoting (use --port to force)")
        for half in (flow.c2s, flow.s2c):
            half.flush()
        if flow.handler is not None:
            flow.handler.close(flow.last_ts)
            flow.handler = None
        k = flow.key
        r = (k[2], k[3], k[0], k[1])
        self._by_key.pop(k, None)
        self._by_key.pop(r, None)
        if len(k[0]) == 4:
            self._by_raw.pop(_raw_key(k), None)
            self._by_raw.pop(_raw_key(r), None)
        self._flows.pop(flow.conn.id, None)

    def expire(self, now: float, idle: float) -> int:
        """Close flows idle for longer than ``idle`` seconds (live tap)."""
        n = 0
        for flow in list(self._flows.values()):
            if now - flow.last_ts < idle:
                break
            self._close(flow, "idle")
            n += 1
        return n

    def finish(self) -> None:
        """End of input: close every flow, then flush ordered output."""
        for flow in list(self._flows.values()):
            self._close(flow, "end")
        self.sink.flush()
