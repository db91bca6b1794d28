"""Join the hops of each message into one journey, streaming, without a clock.

Every exchange's hops come from its protocol (:meth:`Protocol.journey_events`).  A hop names
its message by unique key (UNIQ_KEY / gRPC message id) and aliases (``omid:`` offset message
id, ``tx:`` transaction id, ``rh:`` receipt handle, ``qo:`` topic/queue/offset); a hop that
carries no unique key (an ACK_MESSAGE, an END_TRANSACTION named by transaction id) is found by
its ``refs``.  Two journeys found to be one message (an ack seen before its delivery, captures
from two hosts) are merged; a hop a second capture shows again (one connection captured on both
its hosts) is counted in ``duplicates``, not added.

Memory is bounded: past :data:`MAX_OPEN_JOURNEYS` the oldest journey is flushed (handed to
``emit``) and its names forgotten; one flushed before it finished is counted in
``flushed_unfinished``.
"""
from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from dissectors.msgtrace import parse_trace_body
from dissectors.tracectx import trace_context

from ..model import Exchange, JourneyEvent
from ..protocols import protocol_of

MAX_OPEN_JOURNEYS = 100_000
"""Journeys kept open at once; past it the oldest is flushed (unfinished ones counted)."""
BYTES_PER_OPEN_JOURNEY = 5_700
"""Measured (benchmarks/trace.py, 1M exchanges, 653 333 messages of 4 hops): tracemalloc
counts 4 690 bytes per open journey (3 hops on average when counted); the trace run's peak RSS
with the cap full was 619 MB against 52 MB for stats, i.e. about 5 700 bytes each with the
allocator's overhead.  So the cap bounds the engine at about 570 MB."""

MAX_PROBLEMS = 20  # problem lines kept (all are counted in ``undecodable``)
FINISHING = frozenset({"acked", "dead_lettered", "rolled_back"})
_STORING = ("stored", "prepared")



@dataclass(slots=True)
class Hop:
    """One event of a journey, with the capture it was seen in."""

    event: JourneyEvent
    capture: str | None = None


@dataclass(slots=True)
class Journey:
    """One message's hops, in arrival order (``hops_in_order`` sorts them by time)."""

    unique_key: str | None = None
    topic: str | None = None
    tags: str | None = None
    keys: list[str] = field(default_factory=list)
    born_ts: int | None = None  # ms
    offset_msg_ids: list[str] = field(default_factory=list)
    trace: dict[str, Any] | None = None
    hops: list[Hop] = field(default_factory=list)
    names: list[str] = field(default_factory=list)  # every name it is filed under
    delivered_at: list[tuple[str, str, int, int]] = field(default_factory=list)  # (group, topic, queue, offset)
    flushed: bool = False  # handed out before the end (the cap)
    other_keys: list[str] = field(default_factory=list)  # other UNIQ_KEYs hops gave it (batch members)
    trace_read: bool = False  # its body's trace records were read (a message-trace topic message)

    @property
    def finished(self) -> bool:
        """Consumed (acked, offset committed), dead-lettered or rolled back."""
        return any(h.event.kind in FINISHING for h in self.hops)

    def hops_in_order(self) -> list[Hop]:
        return sorted(self.hops, key=lambda h: h.event.ts)

    def first(self, *kinds: str) -> float | None:
        ts = [h.event.ts for h in self.hops if h.event.kind in kinds]
        return min(ts) if ts else None

    def latency_ms(self) -> dict[str, float | None]:
        """store: born → stored; first_delivery: stored → first delivery; ack: first delivery →
        first ack (or offset commit).  Stored is the send answer, or the first delivery when that
        came first: a broker may hand a message to a waiting long poll before its send answer
        is on the wire, and a message is delivered only once stored."""
        stored = self.first(*_STORING)
        delivered = self.first("delivered")
        if stored is not None and delivered is not None and delivered < stored:
            stored = delivered
        acked = self.first("acked")
        born = self.born_ts / 1000.0 if self.born_ts is not None else self.first("sent")

        def ms(a: float | None, b: float | None) -> float | None:
            return round((b - a) * 1000.0, 3) if a is not None and b is not None else None
        return {"store": ms(born, stored), "first_delivery": ms(stored, delivered), "ack": ms(delivered, acked)}

    def message_ids(self) -> set[str]:
        """Everything an ID on the command line may name: unique key, offset message ids,
        message keys, transaction ids and the trace id."""
        out = set(self.keys) | set(self.offset_msg_ids) | set(self.other_keys)
        if self.unique_key:
            out.add(self.unique_key)
        out.update(n[3:] for n in self.names if n.startswith("tx:"))
        if self.trace and self.trace.get("trace_id"):
            out.add(str(self.trace["trace_id"]))
        return out


class JourneyEngine:
    """Streaming join of journey hops; ``emit`` receives each journey flushed by the cap."""

    def __init__(self, max_open: int = MAX_OPEN_JOURNEYS, emit: Callable[[Journey], None] | None = None) -> None:
        self.max_open = max_open
        self.emit = emit
        self.open: dict[int, Journey] = {}  # id(journey) -> journey, oldest first
        self.by_name: dict[str, Journey] = {}
        self.delivered: dict[tuple[str, str, int], dict[int, Journey]] = {}
        self.flushed = 0
        self.flushed_unfinished = 0
        self.unmatched = 0  # hops that named no message (e.g. an offset commit covering nothing seen)
        self.conflicts = 0  # hops whose names pointed at two messages with different unique keys
        self.duplicates = 0  # hops seen again in another capture (the same connection captured twice)
        self.undecodable = 0  # exchanges whose hops could not be read (see ``problems``)
        self.problems: list[str] = []  # the first MAX_PROBLEMS of them, one line each

    # -- feeding ------------------------------------------------------------------------
    def feed(self, ex: Exchange, capture: str | None = None) -> None:
        """Add the hops one exchange shows.  An exchange whose decoded parts do not fit what its
        code says (hostile or damaged input) is counted and explained, not fatal."""
        try:
            events = protocol_of(ex).journey_events(ex)
        except (AttributeError, TypeError, ValueError, KeyError, IndexError) as e:
            self.undecodable += 1
            if len(self.problems) < MAX_PROBLEMS:
                self.problems.append(f"exchange #{ex.index} ({ex.connection.label}): hops not read: "
                                     f"{type(e).__name__}: {e}")
            return
        for ev in events:
            self.add(ev, capture)

    def feed_all(self, exchanges: Iterable[Exchange], capture: str | None = None) -> None:
        for ex in exchanges:
            self.feed(ex, capture)

    def add(self, ev: JourneyEvent, capture: str | None = None) -> None:
        """Add one hop: to the journey it names (found or new), or, for an offset commit, to
        every journey of that group's queue it covers."""
        if ev.covers is not None:
            self._commit(ev, capture)
            return
        j = self._find(ev)
        if j is None:
            self.unmatched += 1
            return
        if capture is not None and self._seen_elsewhere(j, ev, capture):
            self.duplicates += 1
            return
        j.hops.append(Hop(ev, capture))
        self._learn(j, ev)
        if ev.kind == "delivered":
            self._index_delivery(j, ev)
        elif ev.kind == "retried":
            self._dead_letter_check(j, ev, capture)
        if ev.body is not None and not j.trace_read:
            j.trace_read = True
            self._traced(ev, capture)
        self._bound()

    def finish(self) -> list[Journey]:
        """Every journey still open, oldest first; the engine is empty afterwards."""
        out = list(self.open.values())
        self.open.clear()
        self.by_name.clear()
        self.delivered.clear()
        return out

    # -- joining ------------------------------------------------------------------------
    def _find(self, ev: JourneyEvent) -> Journey | None:
        """The journey a hop names: the one with its unique key, else one found by an alias or
        ref, else a new one.  Others found that are the same message (no unique key of their
        own) are merged into it; one with another unique key is left alone and counted."""
        names = list(ev.aliases) + list(ev.refs)
        found: list[Journey] = []
        for n in names:
            f = self.by_name.get(n)
            if f is not None and all(f is not g for g in found):
                found.append(f)
        # a stored message's place (offset message id) names it best: consumers of a batch see
        # the batch's UNIQ_KEY on every member (RocketMQ 5.3), not the member's own
        keep = next((self.by_name[n] for n in names if n.startswith("omid:") and n in self.by_name), None)
        if keep is None and ev.unique_key:
            keep = self.by_name.get(ev.unique_key)
        if keep is None:
            key = ev.unique_key
            keep = next((f for f in found if key is None or f.unique_key in (None, key)), None)
        if keep is None:
            if not ev.unique_key and not names:
                return None
            keep = Journey(unique_key=ev.unique_key)
            self.open[id(keep)] = keep
            self._name(keep, ev.unique_key or names[0])
        for other in found:
            if other is keep:
                continue
            if keep.unique_key and other.unique_key and keep.unique_key != other.unique_key:
                self.conflicts += 1
            else:
                self._merge(keep, other)
        return keep

    @staticmethod
    def _seen_elsewhere(j: Journey, ev: JourneyEvent, capture: str) -> bool:
        """The same hop already came from another capture (one connection captured on both
        hosts): same kind, connection, protocol and facts; its time may differ (two clocks)."""
        return any(h.capture != capture and h.event.kind == ev.kind and h.event.connection == ev.connection
                   and h.event.protocol == ev.protocol and h.event.info == ev.info for h in j.hops)

    def _name(self, j: Journey, name: str) -> None:
        if self.by_name.get(name) is not j:
            self.by_name[name] = j
            j.names.append(name)

    def _merge(self, keep: Journey, other: Journey) -> None:
        keep.hops.extend(other.hops)
        keep.unique_key = keep.unique_key or other.unique_key
        for n in other.names:
            self._name(keep, n)
        for d in other.delivered_at:
            idx = self.delivered.get(d[:3])
            if idx is not None and idx.get(d[3]) is other:
                idx[d[3]] = keep
            keep.delivered_at.append(d)
        for f in ("topic", "tags", "born_ts", "trace"):
            if getattr(keep, f) is None:
                setattr(keep, f, getattr(other, f))
        keep.keys = keep.keys or other.keys
        keep.offset_msg_ids += [m for m in other.offset_msg_ids if m not in keep.offset_msg_ids]
        keep.trace_read = keep.trace_read or other.trace_read
        self.open.pop(id(other), None)

    def _learn(self, j: Journey, ev: JourneyEvent) -> None:
        if ev.unique_key:
            if j.unique_key in (None, ev.unique_key):
                j.unique_key = ev.unique_key
                self._name(j, ev.unique_key)
            elif ev.unique_key not in j.other_keys:
                j.other_keys.append(ev.unique_key)
        for a in ev.aliases:
            self._name(j, a)
            if a.startswith("omid:") and a[5:] not in j.offset_msg_ids:
                j.offset_msg_ids.append(a[5:])
        if ev.topic and (j.topic is None or (j.topic.startswith("%") and not ev.topic.startswith("%"))):
            j.topic = ev.topic
        j.tags = j.tags or ev.tags
        j.keys = j.keys or list(ev.keys)
        if j.born_ts is None and ev.born_ts is not None:
            j.born_ts = ev.born_ts
        if j.trace is None and ev.properties:
            ctx = trace_context(ev.properties)
            if ctx is not None:
                j.trace = ctx.to_json()

    def _index_delivery(self, j: Journey, ev: JourneyEvent) -> None:
        group, queue, offset = ev.info.get("group"), ev.info.get("queue"), ev.info.get("offset")
        if group is None or ev.topic is None or queue is None or offset is None:
            return
        self.delivered.setdefault((group, ev.topic, queue), {})[offset] = j
        j.delivered_at.append((group, ev.topic, queue, offset))

    def _commit(self, ev: JourneyEvent, capture: str | None) -> None:
        assert ev.covers is not None
        group, topic, queue, upto = ev.covers
        idx = self.delivered.get((group, topic, queue))
        covered = sorted(o for o in idx if o < upto) if idx else []
        if not covered:
            self.unmatched += 1
            return
        assert idx is not None
        for off in covered:
            j = idx.pop(off)
            hop = JourneyEvent(ev.kind, ev.ts, ev.exchange, ev.connection, ev.protocol, topic=topic,
                               info=ev.info | {"offset": off})
            j.hops.append(Hop(hop, capture))

    def _dead_letter_check(self, j: Journey, ev: JourneyEvent, capture: str | None) -> None:
        """A send-back past maxReconsumeTimes (or with a negative delay level) goes to the DLQ."""
        delay, most = ev.info.get("delay_level"), ev.info.get("max_reconsume")
        # the attempt given back is the latest delivered before it (a long poll's delivery of a
        # later attempt may already be known: exchanges come in request order)
        seen = [h.event.info.get("reconsume") for h in j.hops if h.event.kind == "delivered" and h.event.ts <= ev.ts]
        last = max((r for r in seen if r is not None), default=None)
        if (delay is not None and delay < 0) or (most is not None and last is not None and last >= most):
            dl = JourneyEvent("dead_lettered", ev.ts, ev.exchange, ev.connection, ev.protocol, topic=ev.topic,
                              info={"group": ev.info.get("group"), "reconsume": last, "max_reconsume": most,
                                    "by": "send-back past maxReconsumeTimes"})
            j.hops.append(Hop(dl, capture))

    def _traced(self, ev: JourneyEvent, capture: str | None) -> None:
        """Message-trace records carried by a trace-topic message: a ``traced`` hop on each
        journey they describe."""
        if ev.body is None:
            return
        for rec in parse_trace_body(ev.body):
            info = rec.to_json()
            key = getattr(rec, "msg_id", None) or None
            omid = getattr(rec, "offset_msg_id", None)
            hop = JourneyEvent("traced", ev.ts, ev.exchange, ev.connection, ev.protocol, unique_key=key,
                               refs=(f"omid:{omid}",) if omid else (), topic=getattr(rec, "topic", None),
                               info=info)
            j = self._find(hop)
            if j is None:
                self.unmatched += 1
                continue
            j.hops.append(Hop(hop, capture))
            self._learn(j, hop)

    # -- the bound -------------------------------------------------------------------------
    def _bound(self) -> None:
        while len(self.open) > self.max_open:
            oldest = self.open.pop(next(iter(self.open)))
            for n in oldest.names:
                if self.by_name.get(n) is oldest:
                    del self.by_name[n]
            for g, t, q, o in oldest.delivered_at:
                idx = self.delivered.get((g, t, q))
                if idx is not None and idx.get(o) is oldest:
                    del idx[o]
                    if not idx:
                        del self.delivered[(g, t, q)]
            oldest.flushed = True
            self.flushed += 1
            if not oldest.finished:
                self.flushed_unfinished += 1
            if self.emit is not None:
                self.emit(oldest)


def journey_to_dict(j: Journey, with_capture: bool = False) -> dict[str, Any]:
    """The ``trace --format jsonl`` object of one journey."""
    events = []
    for h in j.hops_in_order():
        e = h.event
        d: dict[str, Any] = {"kind": e.kind, "ts": e.ts, "exchange": e.exchange}
        if with_capture:
            d["capture"] = h.capture
        d["connection"] = e.connection
        d["protocol"] = e.protocol
        if e.topic is not None and e.topic != j.topic:
            d["topic"] = e.topic
        d.update(e.info)
        events.append(d)
    return {"unique_key": j.unique_key, "offset_msg_ids": list(j.offset_msg_ids), "topic": j.topic,
            "tags": j.tags, "keys": list(j.keys), "events": events, "latency_ms": j.latency_ms(),
            "finished": j.finished, "trace": j.trace}
