"""The gRPC connection handler: a flow's bytes to the sans-I/O :class:`dissectors.grpc.GrpcConnection`,
its calls to exchanges.

One exchange per gRPC call (HTTP/2 stream), protocol ``"grpc"``, with the request side
(client headers and messages) and the response side (server headers, messages and
trailers) as :class:`dissectors.grpc.GrpcMessage` commands.  Statuses: ``answered`` (the
server side was seen and the call ended), ``unanswered`` (no server side, call still open
at the end, reset before an answer, refused by GOAWAY), ``orphan`` (only the server side
of a call from before the capture was seen).  How calls count in the stats:
:mod:`.classify`.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from dissectors.grpc.call import GrpcCall
from dissectors.grpc.connection import (
    CallEnded,
    CallStarted,
    Encrypted,
    GrpcConnection,
    Problem,
    Resynced,
)

from ...model import ANSWERED, ORPHAN, UNANSWERED, Connection, Exchange, Message
from ...pairing import PairingSink

if TYPE_CHECKING:
    from ..remoting.handler import Owner

MAX_SETUP_PACKETS = 64  # connection-level frames' packets kept per connection (SETTINGS come first)


class GrpcHandler:
    """Protocol handler for one gRPC flow (see :mod:`rmqsniff.flows`)."""

    lane_ok = False  # no stats-only lane: HTTP/2 frames do not line up with segments

    __slots__ = ("conn", "sink", "stats", "dec", "exchanges", "why", "packets_for", "packets", "mid_stream",
                 "owner")

    def __init__(self, conn: Connection, sink: PairingSink, stats: Any, mid_stream: bool = False,
                 owner: Owner | None = None) -> None:
        self.conn = conn
        self.sink = sink
        self.stats = stats
        self.owner = owner  # told each problem, one line for the user
        self.mid_stream = mid_stream
        self.dec = GrpcConnection(mid_stream=mid_stream)
        self.exchanges: dict[int, Exchange] = {}  # started calls by stream id
        self.why = ""  # set when the flow cannot be decoded (TLS)
        self.packets_for: Callable[[bool, int, int], list[int]] | None = None
        self.packets: dict[int, tuple[list[int], list[int]]] = {}  # stream id -> (client's, server's) packets

    def track(self, packets_for: Callable[[bool, int, int], list[int]]) -> None:
        """Fill ``Message.packets``: ``packets_for(from_client, start, end)`` names the packets
        that carried bytes ``[start, end)`` of a direction (asked in increasing order)."""
        self.packets_for = packets_for
        self.dec.spans = []
        self.conn.setup_packets = []

    def data(self, from_client: bool, data: bytes, ts: float) -> None:
        events = self.dec.feed(from_client, data, ts)
        if self.dec.spans:
            self._spans()
        self._events(events)

    def _spans(self) -> None:
        """Map the frames just decoded to packets: per call, or the connection's for stream 0."""
        spans = self.dec.spans
        get = self.packets_for
        assert spans is not None and get is not None
        setup = self.conn.setup_packets
        for fc, sid, start, end in spans:
            if sid == 0:
                if setup is not None and len(setup) < MAX_SETUP_PACKETS:
                    # the client preface (24 bytes) goes with the first SETTINGS
                    pk = get(fc, 0 if start <= 24 else start, end)
                    setup.extend(n for n in pk if n not in setup)
                else:
                    get(fc, start, end)
                continue
            pk = get(fc, start, end)
            lists = self.packets.get(sid)
            if lists is None:
                lists = self.packets[sid] = ([], [])
            lst = lists[0 if fc else 1]
            lst.extend(n for n in pk if not lst or n > lst[-1])
        spans.clear()

    def lost(self, from_client: bool, nbytes: int) -> None:
        self._events(self.dec.gap(from_client, nbytes))

    def close(self, ts: float = 0.0) -> None:
        self._events(self.dec.close())

    def swap(self) -> None:
        """Roles are decided before a gRPC handler exists (the preface / SETTINGS says)."""

    def lane(self, buf: Any, t: int, n: int, ts: float, from_client: bool, start: int, events: list[Any],
             apply: Callable[[str, list[Any]], None]) -> bool:
        return False

    def _events(self, events: list[Any]) -> None:
        for ev in events:
            t = type(ev)
            if t is CallStarted:
                self._started(ev.call)
            elif t is CallEnded:
                self._ended(ev.call)
            elif t is Problem:
                self._problem(ev)
            elif t is Resynced:
                self.stats.tcp("resync", 1)
            elif t is Encrypted:
                self.why = "TLS: encrypted, cannot be decoded"
                self.stats.tcp("flows_other", 1)

    def _problem(self, ev: Problem) -> None:
        self.stats.decoding_error(ev.from_client, f"grpc: {ev.reason}", self.conn)
        if self.owner is not None:
            where = f"{self.conn.label} {'client' if ev.from_client else 'server'}"
            if ev.stream_id:
                where += f" stream {ev.stream_id}"
            self.owner.problem(f"{where}: grpc: {ev.reason}")

    def _started(self, call: GrpcCall) -> None:
        req = call.request
        ex = Exchange(self.sink.next_index(), self.conn, "grpc", UNANSWERED,
                      Message(req.first_ts, req, True, 0, req.size))
        self.exchanges[call.stream_id] = ex
        self.sink.started(ex)

    def _ended(self, call: GrpcCall) -> None:
        ex = self.exchanges.pop(call.stream_id, None)
        req, resp = call.request, call.response
        server = call.server_seen
        if ex is None:
            if not call.client_seen:
                if not server:
                    return
                ex = Exchange(self.sink.next_index(), self.conn, "grpc", ORPHAN, None)
            else:
                ex = Exchange(self.sink.next_index(), self.conn, "grpc", UNANSWERED,
                              Message(req.first_ts, req, True, 0, req.size))
                self.sink.started(ex)
        elif ex.request is not None:
            ex.request.size = req.size
        if server:
            ex.response = Message(resp.last_ts, resp, False, 0, resp.size)
        if ex.status != ORPHAN:
            ex.status = ANSWERED if server and call.ended_by in ("trailers", "end_stream", "rst_stream") \
                and (resp.headers_seen or resp.messages) else UNANSWERED
        ex.notes.extend(call.notes)
        if self.packets_for is not None:
            cp, sp = self.packets.pop(call.stream_id, ([], []))
            if ex.request is not None:
                ex.request.packets = cp
            if ex.response is not None:
                ex.response.packets = sp
        self.sink.done(ex)
