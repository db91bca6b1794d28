"""Per-message figures from the journey engine (:mod:`rmqsniff.journey`): per topic and per
group, delivery latency (stored → first delivery) and end-to-end latency (born → acked)
p50/p90/p99, and messages in (per topic, and per producer group where the send names it) and
out (deliveries, one per consumer group and message) — messages, not requests: a batch of 5
is 5.  Rates are over the capture's span (first to last exchange fed).

Rows hold log-bucket histograms (:mod:`.buckets`), at most ``max_keys`` per breakdown (new
keys fold into ``<other>``).  A journey is counted when the engine hands it out: flushed by
its cap or at the end (:meth:`JourneyStats.close`).
"""
from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ..sinks import Sink
from .breakdowns import NONE, OTHER
from .buckets import bucket_of, bucket_percentiles

if TYPE_CHECKING:
    from ..journey import Journey, JourneyEngine
    from ..model import Exchange

_MAX_US = 3_600_000_000  # one hour: longer latencies are clamped (as the request latency)
# row layout: messages in, messages out, then (n, max us, buckets) for delivery and end-to-end
IN, OUT, DEL_N, DEL_MAX, DEL_B, E2E_N, E2E_MAX, E2E_B = range(8)


def _row() -> list[Any]:
    return [0, 0, 0, 0, {}, 0, 0, {}]


def _record(row: list[Any], at: int, seconds: float) -> None:
    us = min(max(int(seconds * 1_000_000), 0), _MAX_US)
    row[at] += 1
    row[at + 1] = max(row[at + 1], us)
    b = row[at + 2]
    k = bucket_of(us)
    b[k] = b.get(k, 0) + 1


class _Feed(Sink):
    """Every finished exchange (that ``select`` takes) to the journey engine."""

    def __init__(self, engine: JourneyEngine, select: Callable[[Exchange], bool] | None) -> None:
        self.engine = engine
        self.select = select

        self.first_ts: float | None = None
        self.last_ts: float | None = None

    def exchange_done(self, ex: Exchange) -> None:
        ts = ex.ts
        if self.first_ts is None or ts < self.first_ts:
            self.first_ts = ts
        if self.last_ts is None or ts > self.last_ts:
            self.last_ts = ts
        if self.select is None or self.select(ex):
            self.engine.feed(ex)


class JourneyStats:
    """Journey figures by topic and by group."""

    def __init__(self, max_keys: int = 10_000, max_open: int | None = None) -> None:
        from ..journey import MAX_OPEN_JOURNEYS, JourneyEngine

        self.engine = JourneyEngine(max_open or MAX_OPEN_JOURNEYS, emit=self.add)
        self.max_keys = max_keys
        self.by: dict[str, dict[str, list[Any]]] = {"topic": {}, "group": {}}
        self.overflow = {"topic": 0, "group": 0}
        self.journeys = 0
        self.first_ts: float | None = None
        self.last_ts: float | None = None
        self.closed = False
        self.feed: _Feed | None = None

    def sink(self, select: Callable[[Exchange], bool] | None = None) -> Sink:
        """A sink for the pipeline (:mod:`rmqsniff.sinks`) that feeds the engine."""
        self.feed = _Feed(self.engine, select)
        return self.feed

    def _row(self, by: str, key: str | None) -> list[Any]:
        rows = self.by[by]
        k = key or NONE
        row = rows.get(k)
        if row is None:
            if len(rows) >= self.max_keys - 1:
                self.overflow[by] += 1
                k = OTHER
                row = rows.get(k)
            if row is None:
                row = rows[k] = _row()
        return row

    def add(self, j: Journey) -> None:
        """Count one journey."""
        self.journeys += 1
        ts = [h.event.ts for h in j.hops]
        if ts:
            lo, hi = min(ts), max(ts)
            self.first_ts = lo if self.first_ts is None else min(self.first_ts, lo)
            self.last_ts = hi if self.last_ts is None else max(self.last_ts, hi)
        stored = j.first("stored", "prepared")
        born = j.born_ts / 1000.0 if j.born_ts is not None else j.first("sent")
        trow = self._row("topic", j.topic)
        if stored is not None or j.first("sent") is not None:
            trow[IN] += 1
        producer = next((h.event.info.get("group") for h in j.hops if h.event.kind == "sent"
                         and h.event.info.get("group")), None)
        if producer is not None:
            self._row("group", producer)[IN] += 1
        first_delivery: dict[str, float] = {}
        first_ack: dict[str, float] = {}
        for h in j.hops:
            e = h.event
            g = e.info.get("group")
            if e.kind == "delivered" and g is not None:
                first_delivery[g] = min(first_delivery.get(g, e.ts), e.ts)
            elif e.kind == "acked" and g is not None:
                first_ack[g] = min(first_ack.get(g, e.ts), e.ts)
        trow[OUT] += len(first_delivery)
        if first_delivery and stored is not None:
            _record(trow, DEL_N, min(first_delivery.values()) - stored)
        if first_ack and born is not None:
            _record(trow, E2E_N, min(first_ack.values()) - born)
        for g, t in first_delivery.items():
            grow = self._row("group", g)
            grow[OUT] += 1
            if stored is not None:
                _record(grow, DEL_N, t - stored)
        for g, t in first_ack.items():
            if born is not None:
                _record(self._row("group", g), E2E_N, t - born)

    def close(self) -> None:
        """Count the journeys still open (once)."""
        if not self.closed:
            self.closed = True
            for j in self.engine.finish():
                self.add(j)

    @property
    def span_s(self) -> float:
        """The capture's span (first to last exchange fed), else the journeys'."""
        f = self.feed
        lo, hi = (f.first_ts, f.last_ts) if f is not None and f.first_ts is not None else (self.first_ts, self.last_ts)
        return hi - lo if lo is not None and hi is not None else 0.0

    def rows(self, by: str) -> dict[str, dict[str, Any]]:
        """Each key's figures: messages_in/out, their rates per second over the capture's span,
        delivery_p50/p90/p99 and e2e_p50/p90/p99 (ms; None when nothing was measured)."""
        self.close()
        span = self.span_s
        out: dict[str, dict[str, Any]] = {}
        for key, r in self.by.get(by, {}).items():
            d: dict[str, Any] = {"messages_in": r[IN], "messages_out": r[OUT],
                                 "in_per_s": round(r[IN] / span, 3) if span else None,
                                 "out_per_s": round(r[OUT] / span, 3) if span else None}
            for name, at in (("delivery", DEL_N), ("e2e", E2E_N)):
                n = r[at]
                ps = bucket_percentiles(r[at + 2], n, r[at + 1]) if n else [None, None, None]
                d |= {f"{name}_p50": ps[0], f"{name}_p90": ps[1], f"{name}_p99": ps[2], f"{name}_n": n}
            out[key] = d
        return out

    def snapshot(self) -> dict[str, Any]:
        self.close()
        e = self.engine
        return {"journeys": self.journeys, "span_s": round(self.span_s, 6),
                "flushed_unfinished": e.flushed_unfinished, "max_open": e.max_open,
                "by_topic": {"overflow": self.overflow["topic"], "rows": self.rows("topic")},
                "by_group": {"overflow": self.overflow["group"], "rows": self.rows("group")}}
