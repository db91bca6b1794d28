"""Per-flow TCP reassembly.

A :class:`HalfStream` turns the segments of one direction of a connection into
an in-order byte stream for a sans-I/O decoder: out-of-order segments wait
(bounded), retransmissions and overlaps are trimmed, and bytes that never
arrive become an explicit *gap* the decoder resynchronises after.  Every such
event is counted; nothing is dropped silently.
"""
from __future__ import annotations

from collections import deque
from typing import Any

MAX_OOO_BYTES = 4 * 1024 * 1024  # out-of-order bytes held per direction before declaring a gap
MAX_OOO_SEGMENTS = 2048

_MOD = 1 << 32
_HALF = 1 << 31


class HalfStream:
    """One direction of a TCP connection feeding one stream decoder.

    ``owner`` receives in-order bytes with ``owner.deliver(half, data, ts)`` and
    lost spans with ``owner.lost(half, nbytes)``; ``owner.count(kind, n)`` counts
    transport events (retransmission, out_of_order, gap, gap_bytes); ``owner.ooo_seen``
    is set once any segment has been held out of order.
    """

    __slots__ = (
        "decoder", "next_seq", "ooo", "ooo_bytes", "pos", "partial_ts", "from_client",
        "owner", "closed", "syn_seen", "flow", "ooo_since", "track", "peer", "lane",
    )

    def __init__(self, from_client: bool, owner: Any) -> None:
        self.decoder: Any = None
        self.next_seq: int | None = None
        self.ooo: dict[int, tuple[bytes, float]] = {}
        self.ooo_bytes = 0
        self.ooo_since = 0.0  # capture time the oldest held segment arrived
        self.pos = 0  # stream offset of the next byte handed to the decoder
        self.partial_ts = 0.0  # when the frame now buffered in the decoder began
        self.from_client = from_client
        self.owner = owner
        self.closed = False
        self.syn_seen = False
        self.flow: Any = None  # the owner's per-connection object
        self.track: deque[tuple[int, int, int]] | None = None  # (start, end, packet no) when tracking
        self.peer: HalfStream = self  # the other direction (set by the owner)
        self.lane: Any = None  # the decoder, once the owner's stats-only fast path may use it

    def syn(self, seq: int) -> None:
        self.syn_seen = True
        self.next_seq = (seq + 1) % _MOD

    def segment(self, seq: int, payload: bytes, ts: float) -> None:
        """Accept one segment's payload (non-empty)."""
        nxt = self.next_seq
        if nxt is None:  # first data seen in this direction (capture started mid-connection)
            self.next_seq = nxt = seq
        rel = (seq - nxt) % _MOD
        if rel == 0:
            self.next_seq = (nxt + len(payload)) % _MOD
            self.owner.deliver(self, payload, ts)
            if self.ooo:
                self._drain()
            return
        if rel >= _HALF:  # starts before what we already have
            overlap = _MOD - rel
            if overlap >= len(payload):
                self.owner.count("retransmission", 1)
                return
            self.owner.count("retransmission", 1)
            payload = payload[overlap:]
            self.next_seq = (nxt + len(payload)) % _MOD
            self.owner.deliver(self, payload, ts)
            if self.ooo:
                self._drain()
            return
        # a hole before this segment: hold it
        if seq in self.ooo:
            self.owner.count("retransmission", 1)
            if len(self.ooo[seq][0]) >= len(payload):
                return
            self.ooo_bytes -= len(self.ooo[seq][0])
        else:
            self.owner.count("out_of_order", 1)
        if not self.ooo:
            self.ooo_since = ts
            self.owner.ooo_seen = True
        self.ooo[seq] = (payload, ts)
        self.ooo_bytes += len(payload)
        if self.ooo_bytes > MAX_OOO_BYTES or len(self.ooo) > MAX_OOO_SEGMENTS:
            self.skip_gap()

    def _drain(self) -> None:
        """Deliver held segments that have become contiguous."""
        ooo = self.ooo
        while ooo:
            nxt = self.next_seq
            assert nxt is not None
            progressed = False
            for s in list(ooo):
                rel = (s - nxt) % _MOD
                data, ts = ooo[s]
                if rel == 0 or rel >= _HALF:
                    del ooo[s]
                    self.ooo_bytes -= len(data)
                    overlap = 0 if rel == 0 else _MOD - rel
                    if overlap < len(data):
                        if overlap:
                            self.owner.count("retransmission", 1)
                        data = data[overlap:]
                        self.next_seq = (nxt + len(data)) % _MOD
                        self.owner.deliver(self, data, ts)
                        progressed = True
                        break
                    self.owner.count("retransmission", 1)
                    progressed = True
                    break
            if not progressed:
                return

    def skip_gap(self) -> None:
        """Give up waiting for missing bytes: jump to the earliest held segment."""
        if not self.ooo or self.next_seq is None:
            return
        nxt = self.next_seq
        first = min(self.ooo, key=lambda s: (s - nxt) % _MOD)
        missing = (first - nxt) % _MOD
        self.owner.count("gap", 1)
        self.owner.count("gap_bytes", missing)
        self.owner.lost(self, missing)
        self.next_seq = first
        self._drain()
        if self.ooo:
            self.ooo_since = min(ts for _d, ts in self.ooo.values())

    def packets_for(self, offset: int, end: int) -> list[int]:
        """Packet numbers whose delivered bytes overlap [offset, end); forgets those wholly before ``end``."""
        track = self.track
        if track is None:
            return []
        out: list[int] = []
        for s, e, n in track:
            if s >= end:
                break
            if e > offset and (not out or out[-1] != n):
                out.append(n)
        while track and track[0][1] <= end:
            track.popleft()
        return out

    def flush(self) -> None:
        """End of stream: whatever is still held goes through, gaps included."""
        while self.ooo:
            self.skip_gap()
