"""Where exchanges go: sinks with one interface, the way mitmproxy's addons take flows.

A sink gets the pairing layer's hooks (:class:`Sink`: ``request_started``,
``exchange_done``, ``duplicate``, ``kept``); the pairing sink
(:class:`rmqsniff.pairing.PairingSink`) calls the stats and then every other sink.  The
stats (:class:`rmqsniff.stats.Stats`) are one; :class:`SelectedStats` (the stats of what
a ``-Y`` filter selects), :class:`Recent` (the latest exchanges, for ``/exchanges``) and
the callables the pipeline and the TUI give for ordered output are others.
"""
from __future__ import annotations

import itertools
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from .model import Connection, Exchange

if TYPE_CHECKING:
    from .pairing import Lite

BIG_BODY = 64 * 1024  # a body larger than this is not kept by Recent (a note says so)
RECENT_BODY_BYTES = 32 * 1024 * 1024  # bodies Recent keeps in all


class Sink:
    """The hooks; each does nothing unless a sink overrides it."""

    def request_started(self, ex: Exchange) -> None:
        """A request was decoded (its answer may follow)."""

    def exchange_done(self, ex: Exchange) -> None:
        """An exchange ended: answered, unanswered, one-way or orphan."""

    def duplicate(self, ex: Exchange) -> None:
        """A pending request's opaque was sent again (``exchange_done`` follows for it)."""

    def kept(self, conn: Connection, request: Lite | None, response: Lite | None) -> None:
        """An exchange a fast lane completed without building it (peeked frames)."""

    wants_kept = False  # whether kept() matters: lanes skip keeping frames for nobody


class SelectedStats(Sink):
    """Stats events for the exchanges a display filter (``-Y``) selects only.  The filter
    can only judge a finished exchange (latency, response code), so a selected exchange is
    reported, start and end, when it is done."""

    def __init__(self, stats: Any, select: Callable[[Exchange], bool]) -> None:
        self.stats = stats
        self.select = select

    def duplicate(self, ex: Exchange) -> None:
        if self.select(ex):
            self.stats.duplicate(ex)

    def exchange_done(self, ex: Exchange) -> None:
        if self.select(ex):
            if ex.request is not None:
                self.stats.request_started(ex)
            self.stats.exchange_done(ex)


class Recent(Sink):
    """The latest exchanges (``/exchanges`` of ``live`` and ``proxy``), bounded in count
    (``maxlen``) and in body bytes (:data:`RECENT_BODY_BYTES`).  Called once per exchange on
    the data path, so it does as little as it can: exchanges a lane completed without
    building them are kept as their frames' bytes and decoded only when someone asks."""

    wants_kept = True

    def __init__(self, maxlen: int) -> None:
        # (exchange, its body bytes), or ((connection, index, request, response), frame bytes)
        self.items: deque[tuple[Any, int]] = deque()
        self.maxlen = max(1, maxlen)
        self.body_bytes = 0
        self.next_index: Callable[[], int] = itertools.count().__next__  # the pairing sink's, once made

    def exchange_done(self, ex: Exchange) -> None:
        n = 0
        for m in (ex.request, ex.response):
            if m is not None:
                cmd = m.command
                body = getattr(cmd, "body", None)
                if body:
                    if len(body) > BIG_BODY:
                        cmd.body = None
                        ex.notes.append(f"body of {len(body)} bytes not kept")
                    else:
                        n += len(body)
        self._push(ex, n)

    def kept(self, conn: Connection, request: Lite | None, response: Lite | None) -> None:
        n = (request[5] if request is not None else 0) + (response[5] if response is not None else 0)
        self._push((conn, self.next_index(), request, response), n)

    def _push(self, item: Any, n: int) -> None:
        items = self.items
        items.append((item, n))
        self.body_bytes += n
        while len(items) > self.maxlen or (self.body_bytes > RECENT_BODY_BYTES and len(items) > 1):
            self.body_bytes -= items.popleft()[1]

    def select(self, flt: Callable[[Exchange], bool] | None, limit: int,
               items: list[tuple[Any, int]] | None = None) -> list[Exchange]:
        """The kept exchanges ``flt`` selects, oldest first, the last ``limit`` (0: all);
        ``items``: a copy of :attr:`items` taken where the feeding thread could not change it."""
        out = [ex for ex in map(_exchange, [it for it, _ in (self.items if items is None else items)])
               if flt is None or flt(ex)]
        return out[-limit:] if limit > 0 else out


def _exchange(item: Any) -> Exchange:
    """A kept item as an exchange (peeked ones decoded now; bodies over BIG_BODY dropped)."""
    if type(item) is not tuple:
        return item
    from .pairing import lite_exchange

    ex = lite_exchange(*item)
    for m in (ex.request, ex.response):
        if m is not None and m.command.body and len(m.command.body) > BIG_BODY:
            ex.notes.append(f"body of {len(m.command.body)} bytes not kept")
            m.command.body = None
    return ex


class Lag(Sink):
    """Feeds a :class:`rmqsniff.lag.LagTable` (the stats' ``lag``) every exchange, those a
    fast lane completed without building them too (decoded here from their kept frames)."""

    wants_kept = True

    def __init__(self, table: Any) -> None:
        from .pairing import LITE_PROTOCOL
        from .protocols import protocol_named

        self.table = table
        self.codes = protocol_named(LITE_PROTOCOL).offset_codes  # the rest cannot have facts

    def exchange_done(self, ex: Exchange) -> None:
        self.table.add(ex)

    def kept(self, conn: Connection, request: Lite | None, response: Lite | None) -> None:
        if request is None or (self.codes is not None and request[1] not in self.codes):
            return
        from .pairing import lite_exchange

        self.table.add(lite_exchange(conn, -1, request, response))
