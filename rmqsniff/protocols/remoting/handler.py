"""The remoting connection handler: both directions' stream decoders and the pairing.

One implementation for every source: the flow table (captures, live taps) and the proxy
feed it the same way, ``data`` / ``lost`` / ``close``, and it reports exchanges to the
pairing sink and problems to the stats.  Its fast lanes live here too:

* :meth:`RemotingHandler.data` takes a segment that is exactly one whole frame through
  ``StreamDecoder.feed_one`` (no event list);
* :meth:`RemotingHandler.lane` (stats-only runs) peeks a whole frame (``peek_one``: code,
  flag, opaque and the request's extFields, no command object) and pairs it in place,
  collecting the stats events in the caller's batch;
* :meth:`RemotingHandler.peek` (the proxy) peeks the whole frames at the start of a chunk
  and pairs them with ``Pairing.lite``, keeping each frame's bytes.

A flow whose protocol is not known yet (a *candidate*: an unusual port) holds its decoding
errors until a first frame decodes; its owner is told (:class:`Owner`).  Roles guessed
from ports are fixed by the first frame's flags.
"""
from __future__ import annotations

import struct
from collections.abc import Callable
from typing import Any, Protocol

from dissectors.remoting.frame import DEFAULT_MAX_FRAME
from dissectors.remoting.headers import topic_group_in
from dissectors.remoting.stream import DecodeError, Frame, Resync, StreamDecoder

from ...model import ANSWERED, Connection, Message
from ...pairing import MAX_PENDING_PER_CONNECTION, Pairing

MAX_HELD_ERRORS = 100  # decoding errors a candidate flow holds before it is recognised
REMOTING = "remoting"
EVENT_BATCH = 4096  # stats events the stats-only lane collects before they are applied

_LENGTH = struct.Struct(">i")  # a frame's length prefix
PacketsFor = Callable[[bool, int, int], list[int]]


class Owner(Protocol):
    """What a handler tells the flow it decodes for."""

    def recognised(self, how: str) -> None:
        """A first frame decoded on a candidate flow."""

    def swap_roles(self) -> None:
        """The first frame showed the roles were the wrong way round."""

    def problem(self, text: str) -> None:
        """One line for the user (where a decoding error happened)."""


class RemotingHandler:
    """Remoting on one TCP connection, both directions."""

    __slots__ = ("conn", "sink", "stats", "dec", "dec_c", "dec_s", "partial_ts", "pairing", "candidate", "held",
                 "owner", "packets_for", "on_frame", "lane_ok")

    def __init__(self, conn: Connection, sink: Any, stats: Any, *, mid_stream: bool | tuple[bool, bool] = False,
                 candidate: bool = False, max_frame: int = DEFAULT_MAX_FRAME, owner: Owner | None = None) -> None:
        self.conn = conn
        self.sink = sink
        self.stats = stats
        # mid_stream: for both directions, or (client's, server's): their start was not seen
        mc, ms = mid_stream if isinstance(mid_stream, tuple) else (mid_stream, mid_stream)
        # by direction: True = client -> server
        self.dec_c = StreamDecoder(max_frame=max_frame, start_in_resync=mc or candidate)
        self.dec_s = StreamDecoder(max_frame=max_frame, start_in_resync=ms or candidate)
        self.dec = {True: self.dec_c, False: self.dec_s}
        self.partial_ts = {True: 0.0, False: 0.0}  # when the frame now buffered began
        self.pairing = Pairing(conn, sink)
        self.candidate = candidate
        self.held: list[tuple[bool, str]] = []  # (from_client, reason) until recognised
        self.owner = owner
        self.packets_for: PacketsFor | None = None
        # called with (from_client, frame event, request code of an answer) before each decoded
        # frame is paired (the proxy's route rewriting)
        self.on_frame: Callable[[bool, Frame, int | None], None] | None = None
        self.lane_ok = False  # peeked frames may be paired here (see _refresh_lane)
        self._refresh_lane()

    # -- the handler interface -----------------------------------------------------
    def track(self, packets_for: PacketsFor) -> None:
        """Fill ``Message.packets``: ``packets_for(from_client, start, end)``."""
        self.packets_for = packets_for
        self._refresh_lane()

    def watch(self, on_frame: Callable[[bool, Frame, int | None], None]) -> None:
        """Call ``on_frame(from_client, frame, request code of an answer)`` before each frame
        is paired (only decoded frames: no lanes then)."""
        self.on_frame = on_frame
        self._refresh_lane()

    def _refresh_lane(self) -> None:
        """Peeked frames may be paired once the roles are known, the flow is recognised and
        nobody wants more of a frame than its fields (packets, the frame itself)."""
        self.lane_ok = (not self.candidate and self.packets_for is None and self.on_frame is None
                        and self.conn.role_source != "guess")

    def data(self, from_client: bool, data: bytes, ts: float) -> None:
        """In-order bytes of one direction."""
        dec = self.dec[from_client]
        start = dec.offset
        cmd = dec.feed_one(data)
        if cmd is not None:  # the usual segment: exactly one whole frame
            if self.lane_ok:
                self.pairing.frame(Message(ts, cmd, from_client, start, len(data)))
            else:
                self._events(from_client, [Frame(cmd, start, len(data))], ts, start)
            return
        prev = dec.buffered
        events = dec.feed(data)
        if events:
            self._events(from_client, events, ts, start)
        buffered = dec.buffered
        if buffered and (buffered <= len(data) or not prev):
            self.partial_ts[from_client] = ts

    def lost(self, from_client: bool, nbytes: int) -> None:
        """``nbytes`` of one direction never reached the capture."""
        evs = self.dec[from_client].gap(nbytes)
        if evs:
            self._events(from_client, evs, 0.0, 0)

    def close(self, ts: float = 0.0) -> None:
        """End of the connection: partial frames are reported, pending requests unanswered."""
        for fc in (True, False):
            evs = self.dec[fc].close()
            if evs:
                self._events(fc, evs, ts, self.dec[fc].offset)
        self.pairing.close()

    def swap(self) -> None:
        """The roles were the wrong way round: what was the client's is the server's."""
        d, p = self.dec, self.partial_ts
        self.dec_c, self.dec_s = self.dec_s, self.dec_c
        d[True], d[False] = self.dec_c, self.dec_s
        p[True], p[False] = p[False], p[True]
        pr = self.pairing
        pr.pending_c, pr.pending_s = pr.pending_s, pr.pending_c

    # -- decoder events ----------------------------------------------------------------
    def _recognise(self) -> None:
        self.candidate = False
        self._refresh_lane()
        if self.owner is not None:
            self.owner.recognised("frames")
        for fc, reason in self.held:
            self.stats.decoding_error(fc, reason, self.conn)
        self.held.clear()

    def _events(self, from_client: bool, events: list[Any], ts: float, start: int) -> None:
        for ev in events:
            t = type(ev)
            if t is Frame:
                if self.candidate:
                    self._recognise()
                from_client = self._frame(from_client, ev, ts, start)
            elif t is DecodeError:
                self._error(from_client, ev)
            elif t is Resync and not self.candidate:
                self.stats.tcp("resync", 1)

    def _frame(self, from_client: bool, ev: Frame, ts: float, start: int) -> bool:
        cmd = ev.command
        conn = self.conn
        if conn.role_source == "guess":
            # a response comes from the server; a request normally from the client
            conn.role_source = "flags"
            if bool(cmd.flag & 1) == from_client:
                if self.owner is not None:
                    self.owner.swap_roles()  # swaps the connection and calls swap()
                else:
                    conn.client, conn.server = conn.server, conn.client
                    self.swap()
                from_client = not from_client
            self._refresh_lane()
        is_resp = cmd.flag & 1
        if self.on_frame is not None:
            req = self.pairing.pending_s.get(cmd.opaque) if (is_resp and from_client) else \
                self.pairing.pending_c.get(cmd.opaque) if is_resp else None
            self.on_frame(from_client, ev, None if req is None else
                          req[1] if isinstance(req, tuple) else req.code)
        partial = self.partial_ts[from_client]
        msg = Message(ts if (is_resp or ev.offset >= start or not partial) else partial,
                      cmd, from_client, ev.offset, ev.length)
        if self.packets_for is not None:
            msg.packets = self.packets_for(from_client, ev.offset, ev.offset + ev.length)
        self.pairing.frame(msg)
        return from_client

    def _error(self, from_client: bool, ev: DecodeError) -> None:
        if self.candidate:
            if len(self.held) < MAX_HELD_ERRORS:
                self.held.append((from_client, ev.reason))
            return
        # stats group by the bare reason; the one-line problem says where
        self.stats.decoding_error(from_client, ev.reason, self.conn)
        if self.owner is not None:
            hint = " (raise --max-frame if such frames are expected)" if "exceeds maximum" in ev.reason else ""
            self.owner.problem(f"{self.conn.label} stream offset {ev.offset}: {ev.reason}{hint}")

    # -- fast lanes ----------------------------------------------------------------------
    def lane(self, buf: Any, t: int, n: int, ts: float, from_client: bool, start: int, events: list[Any],
             apply: Callable[[str, list[Any]], None]) -> bool:
        """Stats-only runs: the segment ``buf[t:t+n]`` (stream offset ``start``) if it is exactly
        one whole frame that peeks; paired in place (a request that needs no special rule is
        kept pending as a tuple, its answer closes it) and added to ``events`` as stats events,
        which the caller applies in batches with ``apply``.  False: the caller feeds it to
        :meth:`data` instead.  Only for runs whose exchanges nobody reads."""
        r = (self.dec_c if from_client else self.dec_s).peek_one(buf, t, n)
        if r is None:
            return False
        code, flag, opaque, ext = r
        pairing = self.pairing
        if flag & 1:  # the answer to a pending peeked request
            pend = pairing.pending_s if from_client else pairing.pending_c
            q = pend.get(opaque)
            if type(q) is tuple:
                del pend[opaque]
                conn = self.conn
                rcode = q[1]
                topic, group = topic_group_in(rcode, q[2], q[4])
                events.append((rcode, False, code, ANSWERED, ts - q[0], q[5] + n, topic, group, conn.client[0],
                               conn.server))
                if len(events) >= EVENT_BATCH:
                    apply(REMOTING, events)
                    events.clear()
                return True
        elif not flag & 2:  # a request with a fresh opaque
            pend = pairing.pending_c if from_client else pairing.pending_s
            if opaque not in pend and len(pend) < MAX_PENDING_PER_CONNECTION:
                pend[opaque] = (ts, code, flag, opaque, ext, n, start, from_client, None)
                events.append(code)
                return True
        if events:  # orphans, one-way, duplicates, general-path requests: in order
            apply(REMOTING, events)
            events.clear()
        pairing.lite(ts, code, flag, opaque, ext, n, start, from_client)
        return True

    def peek(self, from_client: bool, data: bytes, ts: float,
             on_peek: Callable[[bool, int, int, int], None] | None = None) -> int:
        """The proxy's data path: the whole frames at the start of ``data`` that peek are
        paired with ``Pairing.lite``, which feeds the stats and hands completed exchanges
        (frames kept as bytes) to the sink; ``on_peek(from_client, code, flag, opaque)`` sees
        each first.  Returns how many bytes were dealt with; the rest goes to :meth:`data`."""
        dec = self.dec[from_client]
        n = len(data)
        pos = 0
        lite = self.pairing.lite
        length_at = _LENGTH.unpack_from
        while n - pos >= 8:
            size = length_at(data, pos)[0] + 4
            if size < 8 or size > n - pos:
                break
            offset = dec.offset
            r = dec.peek_one(data, pos, size)
            if r is None:
                break
            code, flag, opaque, ext = r
            if on_peek is not None:
                on_peek(from_client, code, flag, opaque)
            lite(ts, code, flag, opaque, ext, size, offset, from_client, data if size == n else data[pos:pos + size])
            pos += size
        return pos
