"""Consumer lag from the wire: a streaming table per (group, topic, broker, queue).

Every exchange's :meth:`~rmqsniff.protocols.base.Protocol.offset_facts` feed one
:class:`LagTable`: the broker's max offset per queue (the highest seen: answers that only
bound it from below, like a send's queueOffset + 1, never lower it), each group's committed
offset (the latest seen), and the messages pop / gRPC consumers hold (delivered, not yet
acked).  A broker is keyed by its name once the wire tells it (``bname`` in requests, route
answers, pop handles), else by its address.  Unknown values stay None; nothing is guessed.

Memory is bounded: at most ``max_queues`` queue and group rows each and ``max_inflight``
in-flight messages (the oldest in-flight entry is dropped past it); what does not fit is
counted in :attr:`LagTable.overflow`.
"""
from __future__ import annotations

import heapq
from collections import Counter
from collections.abc import Iterable, Iterator
from typing import Any

from .model import ACKED, BROKER_ADDRESS, BROKER_OFFSET, CONSUMER_OFFSET, DELIVERED, Exchange, OffsetFact
from .protocols import protocol_of

MAX_QUEUES = 100_000  # (topic, broker, queue) rows and (group, topic, broker, queue) rows, each
MAX_INFLIGHT = 1_000_000  # in-flight messages tracked (about 200 bytes each)
MAX_NAMES = 10_000  # broker addresses mapped to names

QueueKey = tuple[str, str, int]  # topic, broker, queue
GroupKey = tuple[str, str, str, int]  # group, topic, broker, queue
FlightKey = tuple[str, str, str, int, int]  # group, topic, broker, queue, offset


class LagTable:
    """Offsets and in-flight messages per consumer queue, fed fact by fact."""

    def __init__(self, max_queues: int = MAX_QUEUES, max_inflight: int = MAX_INFLIGHT) -> None:
        self.max_queues = max_queues
        self.max_inflight = max_inflight
        self.names: dict[str, str] = {}  # broker address -> broker name
        self.broker: dict[QueueKey, list[Any]] = {}  # [max offset, ts]
        self.consumer: dict[GroupKey, list[Any]] = {}  # [committed offset, ts]
        self.popped: dict[GroupKey, float] = {}  # rows of pop / gRPC consumers -> last delivery or ack
        self.inflight: dict[FlightKey, float] = {}  # -> when delivered (insertion order: oldest first)
        self.overflow: Counter[str] = Counter()  # facts that did not fit, by table
        self.facts = 0
        self.last_ts = 0.0

    # -- feeding ----------------------------------------------------------------------
    def add(self, ex: Exchange) -> None:
        """Take the offset facts of one exchange."""
        for f in protocol_of(ex).offset_facts(ex):
            self.fact(f)

    def _broker(self, f: OffsetFact) -> str:
        return f.broker or self.names.get(f.server) or f.server

    def fact(self, f: OffsetFact) -> None:
        """Take one fact."""
        self.facts += 1
        if f.ts > self.last_ts:
            self.last_ts = f.ts
        if f.kind == BROKER_ADDRESS:
            if f.broker and (f.server in self.names or len(self.names) < MAX_NAMES):
                self.names[f.server] = f.broker
            return
        if f.topic is None or f.queue is None or f.offset is None:
            return
        broker = self._broker(f)
        if f.kind == BROKER_OFFSET:
            self._max(self.broker, (f.topic, broker, f.queue), f.offset, f.ts)
        elif f.group is None:
            return
        elif f.kind == CONSUMER_OFFSET:
            self._latest(self.consumer, (f.group, f.topic, broker, f.queue), f.offset, f.ts)
        elif f.kind in (DELIVERED, ACKED):
            self._flight(f, (f.group, f.topic, broker, f.queue))

    def _room(self, table: dict[Any, Any], key: Any, name: str) -> bool:
        if key in table or len(table) < self.max_queues:
            return True
        self.overflow[name] += 1
        return False

    def _max(self, table: dict[QueueKey, list[Any]], key: QueueKey, offset: int, ts: float) -> None:
        cur = table.get(key)
        if cur is None:
            if self._room(table, key, "queues"):
                table[key] = [offset, ts]
        elif offset >= cur[0]:
            cur[0] = offset
            cur[1] = max(cur[1], ts)

    def _latest(self, table: dict[GroupKey, list[Any]], key: GroupKey, offset: int, ts: float) -> None:
        cur = table.get(key)
        if cur is None:
            if self._room(table, key, "groups"):
                table[key] = [offset, ts]
        elif ts >= cur[1]:
            cur[0], cur[1] = offset, ts

    def _flight(self, f: OffsetFact, row: GroupKey) -> None:
        if not self._room(self.popped, row, "groups"):
            return
        self.popped[row] = max(self.popped.get(row, 0.0), f.ts)
        assert f.offset is not None
        key = (*row, f.offset)
        if f.kind == ACKED:
            self.inflight.pop(key, None)
        elif key not in self.inflight:  # delivered again (the proxy's pop, then the client's receive)
            if len(self.inflight) >= self.max_inflight:
                del self.inflight[next(iter(self.inflight))]
                self.overflow["inflight"] += 1
            self.inflight[key] = f.ts

    # -- reading ----------------------------------------------------------------------
    def rows(self, now: float | None = None) -> list[dict[str, Any]]:
        """One row per (group, topic, broker, queue) known so far (group None for queues no
        consumer was seen on), ages relative to ``now`` (default: the latest fact's time)."""
        now = self.last_ts if now is None else now
        name = self.names.get
        brokers: dict[QueueKey, list[Any]] = {}
        for (t, b, q), (off, ts) in self.broker.items():
            k = (t, name(b, b), q)
            cur = brokers.get(k)
            if cur is None or off > cur[0]:
                brokers[k] = [off, ts if cur is None else max(ts, cur[1])]
        consumers: dict[GroupKey, list[Any]] = {}
        for (g, t, b, q), (off, ts) in self.consumer.items():
            gk = (g, t, name(b, b), q)
            cur = consumers.get(gk)
            if cur is None or ts >= cur[1]:
                consumers[gk] = [off, ts]
        flights: dict[GroupKey, list[Any]] = {}  # [count, oldest delivery, last seen]
        for (g, t, b, q), seen in self.popped.items():
            cur = flights.setdefault((g, t, name(b, b), q), [0, None, seen])
            cur[2] = max(cur[2], seen)
        for (g, t, b, q, _), ts in self.inflight.items():
            cur = flights[(g, t, name(b, b), q)]
            cur[0] += 1
            cur[1] = ts if cur[1] is None else min(cur[1], ts)
        keys = set(consumers) | set(flights)
        with_group = {(t, b, q) for (_, t, b, q) in keys}
        out = [_row(k, brokers.get(k[1:]), consumers.get(k), flights.get(k), now) for k in keys]
        out += [_row((None, *k), v, None, None, now) for k, v in brokers.items() if k not in with_group]
        out.sort(key=lambda r: (r["group"] or "", r["topic"], r["broker"], r["queue"]))
        return out


def _age(now: float, ts: float | None) -> float | None:
    return None if ts is None else round(max(now - ts, 0.0), 3)


def _row(key: tuple[Any, ...], broker: list[Any] | None, consumer: list[Any] | None, flight: list[Any] | None,
         now: float) -> dict[str, Any]:
    group, topic, bname, queue = key
    b_off, b_ts = broker if broker is not None else (None, None)
    c_off, c_ts = consumer if consumer is not None else (None, None)
    lag = max(b_off - c_off, 0) if b_off is not None and c_off is not None else None
    seen = [ts for ts in (b_ts, c_ts, flight[2] if flight is not None else None) if ts is not None]
    return {
        "group": group, "topic": topic, "broker": bname, "queue": queue,
        "broker_offset": b_off, "consumer_offset": c_off, "lag": lag, "ts": max(seen) if seen else None,
        "broker_offset_ts": b_ts, "consumer_offset_ts": c_ts,
        "broker_offset_age_s": _age(now, b_ts), "consumer_offset_age_s": _age(now, c_ts),
        "inflight": flight[0] if flight is not None else None,
        "inflight_oldest_s": _age(now, flight[1]) if flight is not None else None,
    }


def lag_rows(exchanges: Iterable[Exchange], table: LagTable | None = None) -> list[dict[str, Any]]:
    """The lag rows at the end of ``exchanges``."""
    t = LagTable() if table is None else table
    for ex in exchanges:
        t.add(ex)
    return t.rows()


def lag_over_time(exchanges: Iterable[Exchange], interval: float,
                  table: LagTable | None = None) -> Iterator[dict[str, Any]]:
    """Every row at the end of each ``interval`` seconds (empty intervals too: values carried,
    with their ages), each with ``interval_start`` and ``interval_end``.

    Facts are applied in their own time order: exchanges come in request order, but a long
    poll's answer (and its facts) may come many seconds after requests that follow it.  A fact
    is held until no exchange still to come can carry an earlier one (the next request's
    time); the facts held are those of exchanges answered later than the latest request."""
    t = LagTable() if table is None else table
    held: list[tuple[float, int, OffsetFact]] = []
    edge: float | None = None
    seq = 0

    def upto(ts: float) -> Iterator[dict[str, Any]]:
        while held and held[0][0] <= ts:
            fts, _, f = heapq.heappop(held)
            yield from snapshots(fts)
            t.fact(f)
        yield from snapshots(ts)

    def snapshots(ts: float) -> Iterator[dict[str, Any]]:
        nonlocal edge
        if edge is None:
            edge = (ts // interval) * interval + interval
        while ts >= edge:
            yield from _snapshot(t, edge, interval)
            edge += interval

    for ex in exchanges:
        first = ex.request or ex.response
        yield from upto(first.ts if first is not None else ex.ts)
        for f in protocol_of(ex).offset_facts(ex):
            heapq.heappush(held, (f.ts, seq, f))
            seq += 1
    while held:
        fts, _, f = heapq.heappop(held)
        yield from snapshots(fts)
        t.fact(f)
    if edge is not None:
        yield from _snapshot(t, edge, interval)


def _snapshot(t: LagTable, edge: float, interval: float) -> Iterator[dict[str, Any]]:
    for r in t.rows(now=edge):
        r["interval_start"] = round(edge - interval, 6)
        r["interval_end"] = round(edge, 6)
        yield r
