"""Pairing remoting frames into exchanges.

A response is matched to its request by (connection, direction of the request,
opaque): each side of a remoting connection numbers its own requests, and
brokers send requests to clients too (CHECK_TRANSACTION_STATE,
NOTIFY_CONSUMER_IDS_CHANGED…).  One-way requests stand alone; responses with
no request are *orphans*; a request whose opaque is already pending closes
the older one as unanswered (a *duplicate*); requests still pending when the
stream ends are *unanswered*.  Nothing is dropped.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from dissectors.remoting.command import RemotingCommand
from dissectors.remoting.frame import FrameError, decode_frame
from dissectors.remoting.headers import group_in, topic_in

from .model import ANSWERED, ONEWAY, ORPHAN, UNANSWERED, Connection, Exchange, Message
from .sinks import Sink

MAX_PENDING_PER_CONNECTION = 65536
# requests a broker may legitimately hold open (long polling) until it has something to say
LONG_POLL_CODES = frozenset({11, 361, 200050, 200052, 200054})  # pull, lite pull, pop, peek, notification


# a pending peeked request: ts, code, flag, opaque, ext, size, stream offset, from_client, and the
# frame's bytes when the caller keeps them (the proxy: for failure answers and /exchanges), else None
Lite = tuple[float, int, int, int, "dict[str, str] | None", int, int, bool, "bytes | None"]
LITE_PROTOCOL = "remoting"  # the protocol whose frames lanes peek


def command_of(r: Lite) -> RemotingCommand:
    """The command of a peeked frame: decoded from its kept bytes, else its peeked fields."""
    raw = r[8]
    if raw is not None:
        try:
            return decode_frame(raw)
        except FrameError:
            pass
    return RemotingCommand(r[1], r[2], r[3], ext=r[4])


def lite_message(r: Lite) -> Message:
    """The message of a peeked frame."""
    return Message(r[0], command_of(r), r[7], r[6], r[5])


def lite_exchange(conn: Connection, index: int, request: Lite | None, response: Lite | None,
                  protocol: str = LITE_PROTOCOL) -> Exchange:
    """The exchange of peeked frames that ``Pairing.lite`` completed and handed to ``keep``:
    answered, one-way (no response) or orphan (no request)."""
    status = ANSWERED if request is not None and response is not None else (ONEWAY if response is None else ORPHAN)
    return Exchange(index, conn, protocol, status, lite_message(request) if request is not None else None,
                    lite_message(response) if response is not None else None)


class Pairing:
    """Pending requests of one connection, both directions."""

    __slots__ = ("conn", "pending_c", "pending_s", "sink", "protocol")

    def __init__(self, conn: Connection, sink: PairingSink, protocol: str = "remoting") -> None:
        self.conn = conn
        self.sink = sink
        self.protocol = protocol
        # opaque -> pending request; plain dicts keep insertion order and cost far less
        # than OrderedDict (this is per-connection state: a capture can hold 100k flows)
        self.pending_c: dict[int, Exchange | Lite] = {}  # requests sent by the client (peeked: Lite)
        self.pending_s: dict[int, Exchange | Lite] = {}  # requests sent by the server

    def frame(self, msg: Message) -> None:
        cmd = msg.command
        sink = self.sink
        if cmd.flag & 1:  # response
            pend = self.pending_s if msg.from_client else self.pending_c
            ex = pend.pop(cmd.opaque, None)
            if isinstance(ex, tuple):
                ex = self._exchange(ex)
            if ex is None:
                ex = Exchange(sink.next_index(), self.conn, self.protocol, ORPHAN, None, msg)
                ex.notes.append("response without a request in the capture")
                sink.done(ex)
                return
            ex.response = msg
            ex.status = ANSWERED
            sink.done(ex)
            return
        if cmd.flag & 2:  # one-way request
            ex = Exchange(sink.next_index(), self.conn, self.protocol, ONEWAY, msg)
            sink.started(ex)
            sink.done(ex)
            return
        ex = Exchange(sink.next_index(), self.conn, self.protocol, UNANSWERED, msg)
        pend = self.pending_c if msg.from_client else self.pending_s
        old = pend.pop(cmd.opaque, None)
        sink.started(ex)
        if old is not None:
            self._reused(old, cmd.opaque)
        pend[cmd.opaque] = ex
        if len(pend) > MAX_PENDING_PER_CONNECTION:
            self._evict(pend)

    def _reused(self, old: Exchange | Lite, opaque: int) -> None:
        """A pending request whose opaque was sent again: it ends unanswered, a duplicate."""
        if isinstance(old, tuple):
            old = self._exchange(old)
        old.notes.append(f"opaque {opaque} reused before an answer arrived")
        self.sink.duplicate(old)
        self.sink.done(old)

    def _evict(self, pend: dict) -> None:
        evicted = pend.pop(next(iter(pend)))
        if isinstance(evicted, tuple):
            evicted = self._exchange(evicted)
        evicted.notes.append("evicted: too many requests pending on this connection")
        self.sink.done(evicted)

    def _exchange(self, r: Lite) -> Exchange:
        """The exchange of a pending peeked request: its command decoded from the kept
        frame, else made of the peeked fields (stats-only runs, where nobody reads it)."""
        return Exchange(self.sink.next_index(), self.conn, self.protocol, UNANSWERED, lite_message(r))

    def lite(self, ts: float, code: int, flag: int, opaque: int, ext: dict[str, str] | None, size: int,
             offset: int, from_client: bool, raw: bytes | None = None) -> None:
        """:meth:`frame` for a peeked remoting frame in a stats-only run: the same rules,
        with the stats fed raw fields and no exchange built (exchange indices are only
        given to the exchanges that get built)."""
        sink = self.sink
        stats = sink.stats
        conn = self.conn
        if flag & 1:  # response
            pend = self.pending_s if from_client else self.pending_c
            r = pend.pop(opaque, None)
            if r is None:
                stats.finished(self.protocol, None, False, code, ORPHAN, 0.0, 0, None, None, None, None)
                if sink.keep is not None:
                    sink.keep(conn, None, (ts, code, flag, opaque, ext, size, offset, from_client, raw))
                return
            if not isinstance(r, tuple):  # its request was decoded by the general path
                resp = (ts, code, flag, opaque, ext, size, offset, from_client, raw)
                r.response = Message(ts, command_of(resp), from_client, offset, size)
                r.status = ANSWERED
                sink.done(r)
                return
            rcode, rflag, rext = r[1], r[2], r[4]
            stats.finished(self.protocol, rcode, False, code, ANSWERED, ts - r[0], r[5] + size,
                           topic_in(rcode, rflag, rext), group_in(rcode, rflag, rext), conn.client[0], conn.server)
            if sink.keep is not None:
                sink.keep(conn, r, (ts, code, flag, opaque, ext, size, offset, from_client, raw))
            return
        if flag & 2:  # one-way request
            stats.started(self.protocol, code, True)
            stats.finished(self.protocol, code, True, None, ONEWAY, 0.0, size,
                           topic_in(code, flag, ext), group_in(code, flag, ext), conn.client[0], conn.server)
            if sink.keep is not None:
                sink.keep(conn, (ts, code, flag, opaque, ext, size, offset, from_client, raw), None)
            return
        pend = self.pending_c if from_client else self.pending_s
        old = pend.pop(opaque, None)
        stats.started(self.protocol, code, False)
        if old is not None:
            self._reused(old, opaque)
        pend[opaque] = (ts, code, flag, opaque, ext, size, offset, from_client, raw)
        if len(pend) > MAX_PENDING_PER_CONNECTION:
            self._evict(pend)

    def close(self) -> None:
        """End of the connection or the capture: whatever is pending is unanswered."""
        for pend in (self.pending_c, self.pending_s):
            while pend:
                ex = pend.pop(next(iter(pend)))
                if isinstance(ex, tuple):
                    ex = self._exchange(ex)
                if ex.request is not None and ex.request.command.code in LONG_POLL_CODES:
                    ex.notes.append("long poll still held by the server when the stream ended")
                else:
                    ex.notes.append("no response before the end of the stream")
                self.sink.done(ex)


class PairingSink:
    """Where pairing reports: index allocation, then the sinks (:mod:`rmqsniff.sinks`): the
    stats first, then ``sinks``, then ``emit`` (in request order when ``ordered``)."""

    def __init__(self, stats: Any, emit: Callable[[Exchange], None] | None = None, ordered: bool = True,
                 window: int = 10_000, sinks: Sequence[Sink] = ()) -> None:
        self.stats = stats
        self.emit = emit if emit is not None else _discard
        self.sinks = list(sinks)
        self._started = [s.request_started for s in sinks if type(s).request_started is not Sink.request_started]
        self._done = [s.exchange_done for s in sinks if type(s).exchange_done is not Sink.exchange_done]
        self._duplicate = [s.duplicate for s in sinks if type(s).duplicate is not Sink.duplicate]
        keepers = [s.kept for s in sinks if s.wants_kept]
        # where Pairing.lite hands the exchanges it completes without building them
        # (request, response: peeked frames); None: nobody wants them (stats-only runs)
        self.keep: Callable[[Connection, Lite | None, Lite | None], None] | None = \
            keepers[0] if len(keepers) == 1 else _fanout(keepers) if keepers else None
        self.ordered = ordered
        self.window = window
        self._index = 0
        self._order: list[int] = []  # indices not yet emitted, in order (head at _head)
        self._head = 0
        self._held: dict[int, Exchange] = {}
        self._released: set[int] = set()

    def next_index(self) -> int:
        i = self._index
        self._index += 1
        if self.ordered:
            self._order.append(i)
        return i

    def started(self, ex: Exchange) -> None:
        self.stats.request_started(ex)
        for f in self._started:
            f(ex)

    def duplicate(self, ex: Exchange) -> None:
        self.stats.duplicate(ex)
        for f in self._duplicate:
            f(ex)

    def done(self, ex: Exchange) -> None:
        self.stats.exchange_done(ex)
        for f in self._done:
            f(ex)
        if not self.ordered:
            self.emit(ex)
            return
        if ex.index in self._released:  # its turn was given up to keep memory bounded
            self._released.discard(ex.index)
            self.emit(ex)
            return
        self._held[ex.index] = ex
        self._release()

    def _release(self) -> None:
        order, held = self._order, self._held
        while self._head < len(order):
            i = order[self._head]
            ex = held.pop(i, None)
            if ex is None:
                if len(held) <= self.window:
                    break
                self._released.add(i)  # still pending; emitted when it completes
            else:
                self.emit(ex)
            self._head += 1
        if self._head > 65536:
            del order[: self._head]
            self._head = 0

    def flush(self) -> None:
        """Emit everything still held (after every flow was closed)."""
        for i in sorted(self._held):
            self.emit(self._held.pop(i))
        self._order.clear()
        self._head = 0


def _discard(_ex: Exchange) -> None:
    pass


def _fanout(fs: Sequence[Callable[[Connection, Lite | None, Lite | None], None]]
            ) -> Callable[[Connection, Lite | None, Lite | None], None]:
    def keep(conn: Connection, request: Lite | None, response: Lite | None) -> None:
        for f in fs:
            f(conn, request, response)
    return keep
