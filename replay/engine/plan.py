"""Replay plan: captured exchanges -> sessions (one per client connection) of ordered steps.

A step waits for the responses that, in the capture, arrived before its request was sent
(``deps``): sync requests therefore wait for their answer, pipelined (async) requests do
not, oneway requests never have anything to wait for.
"""
from __future__ import annotations

import heapq
import zlib
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from rmqsniff.model import ANSWERED, Connection, Endpoint, Exchange, Message
from rmqsniff.protocols import GRPC as GRPC_PROTOCOL
from rmqsniff.protocols import REMOTING, protocol_of
from rmqsniff.protocols import Protocol as WireProtocol

from .diff import DiffRules

NAMESRV = "namesrv"
BROKER = "broker"
GRPC = "grpc"  # a gRPC client connection (--grpc-target)

SAMPLE_BY = ("topic", "key", "client")


class Planner(Protocol):
    """What a plan asks of a protocol's replay planner (``protocol_of(ex).planner``:
    :mod:`.remotingplan`, :mod:`.grpcplan`).  Exchanges given to it are requests of its
    protocol sent by the client (no orphan responses, nothing server-initiated)."""

    UNTARGETED: str  # why its requests are left out when replay has no target for the protocol

    def why_not(self, ex: Exchange, consumers: bool, selected_by_filter: bool | None) -> str | None:
        """None when replayed, else why not (``selected_by_filter``: the ``-Y`` verdict or None)."""

    def consumer_side(self, ex: Exchange) -> str | None:
        """``--consumers-only``: why it is producer traffic, else None."""

    def sample_value(self, by: str, ex: Exchange) -> str | None:
        """What ``--sample-by`` hashes (None: always kept)."""

    def session_kind(self, conn: Connection, nameserver_traffic: bool) -> str:
        """NAMESRV, BROKER or GRPC: where the connection's session goes on staging."""

    def session_topics(self, exchanges: Iterable[Exchange]) -> list[str]: ...

    def default_topics(self, exchanges: Iterable[Exchange]) -> list[str]: ...

    def broker_name(self, exchanges: Iterable[Exchange]) -> str | None: ...

    def producer_only(self, ex: Exchange) -> bool:
        """Replayed without its consumer part when consumers are not replayed (a heartbeat)."""

    def answer_ts(self, ex: Exchange) -> float:
        """When the client had its answer (what later requests waited for)."""

    def compare(self, recorded: Any, replayed: Any, rules: DiffRules) -> list[tuple[str, str, str]]:
        """Mismatches ``(kind, recorded, replayed)`` of a replayed answer against the recorded one."""


if TYPE_CHECKING:  # both planners implement the interface
    from . import grpcplan, remotingplan

    _PLANNERS: tuple[Planner, ...] = (remotingplan, grpcplan)


def request_of(ex: Exchange) -> Message:
    """The request of an exchange a plan holds (orphan responses are never selected)."""
    req = ex.request
    assert req is not None, "a planned exchange has a request"
    return req


def response_of(ex: Exchange) -> Message:
    """The response of an answered exchange."""
    resp = ex.response
    assert resp is not None, "an answered exchange has a response"
    return resp


def planner_of(ex: Exchange) -> Planner | None:
    """The replay planner of the exchange's protocol, None when it is not replayable."""
    planner: Planner | None = protocol_of(ex).planner
    return planner


@dataclass(slots=True)
class Step:
    """One request to re-send."""

    index: int  # position in its session
    ex: Exchange  # the captured exchange (request and recorded response)
    at: float  # capture time offset (s) from the first selected request
    deps: tuple[int, ...] = ()  # step indices whose answers must arrive first
    producer_only: bool = False  # heartbeat: drop its consumer part

    @property
    def command(self) -> Any:
        """The captured request: its protocol's decoded object (a RemotingCommand, a GrpcMessage)."""
        req = self.ex.request
        assert req is not None  # plans hold requests only
        return req.command

    @property
    def code(self) -> int:
        return self.command.code

    @property
    def oneway(self) -> bool:
        return self.command.is_oneway


@dataclass(slots=True)
class Session:
    """The replayable requests of one captured client connection."""

    id: int
    connection: Connection
    kind: str  # NAMESRV, BROKER or GRPC, as the protocol's planner tells (session_kind)
    steps: list[Step] = field(default_factory=list)

    @property
    def planner(self) -> Planner | None:
        """The planner of the session's protocol (None: no steps)."""
        return planner_of(self.steps[0].ex) if self.steps else None

    @property
    def topics(self) -> list[str]:
        p = self.planner
        return p.session_topics(s.ex for s in self.steps) if p is not None else []

    @property
    def default_topics(self) -> list[str]:
        """Topics senders fall back to when theirs has no route (``TBW102``)."""
        p = self.planner
        return p.default_topics(s.ex for s in self.steps) if p is not None else []

    @property
    def broker_name(self) -> str | None:
        p = self.planner
        return p.broker_name(s.ex for s in self.steps) if p is not None else None


@dataclass(slots=True)
class Plan:
    sessions: list[Session]
    servers: set[Endpoint]  # every server address in the capture (production)
    skipped: Counter[str]  # reason -> requests left out
    span: float  # capture seconds from the first to the last selected request

    @property
    def requests(self) -> int:
        return sum(len(s.steps) for s in self.sessions)


def parse_percent(text: str) -> float:
    """``10%`` / ``10`` / ``0.5%`` -> fraction in (0, 1]; ValueError otherwise."""
    t = text.strip().rstrip("%").strip()
    v = float(t) / 100.0
    if not 0.0 < v <= 1.0:
        raise ValueError(f"sample {text!r} must be in (0%, 100%]")
    return v


def keep(value: str, fraction: float) -> bool:
    """Consistent-hash sampling: the same value is always kept or always dropped."""
    if fraction >= 1.0:
        return True
    return (zlib.crc32(value.encode("utf-8", "replace")) % 1_000_000) < fraction * 1_000_000


def sample_value(by: str, ex: Exchange) -> str | None:
    """What ``--sample-by`` hashes for this request (None: not applicable, always kept)."""
    planner = planner_of(ex)
    return planner.sample_value(by, ex) if planner is not None else None


def _selector(consumers: bool, flt: Callable[[Exchange], bool] | None,
              targeted: frozenset[WireProtocol]) -> Callable[[Exchange], str | None]:
    """Returns None for a selected request, else the reason it is left out (``targeted``:
    the protocols replay has a target for)."""
    def why_not(ex: Exchange) -> str | None:
        if ex.request is None:
            return "orphan response"
        if ex.server_initiated:
            return "server-initiated"
        proto = protocol_of(ex)
        planner = proto.planner
        if planner is None:
            return f"{ex.protocol} (not replayable yet)"
        if proto not in targeted:
            return planner.UNTARGETED
        return planner.why_not(ex, consumers, None if flt is None else flt(ex))
    return why_not


def _consumer_side(inner: Callable[[Exchange], str | None]) -> Callable[[Exchange], str | None]:
    """``--consumers-only``: the planner's producer side (sends, producer heartbeats ...)
    left out; everything else as ``inner`` (route lookups, consumer heartbeats, pulls,
    pops, acks, offsets) decides."""
    def why_not(ex: Exchange) -> str | None:
        if ex.request is not None and not ex.server_initiated:
            planner = planner_of(ex)
            reason = planner.consumer_side(ex) if planner is not None else None
            if reason is not None:
                return reason
        return inner(ex)
    return why_not


def build_plan(exchanges: Iterable[Exchange], *, consumers: bool = False,
               flt: Callable[[Exchange], bool] | None = None, sample: float = 1.0,
               sample_by: tuple[str, float] | None = None, grpc: bool = False,
               consumers_only: bool = False, remoting: bool = True) -> Plan:
    """Group the selected requests per client connection, in request order, with dependencies
    (``remoting`` / ``grpc``: whether replay has a target for that protocol's connections,
    ``--target`` / ``--grpc-target``; ``consumers_only``: the consumer side only, see
    :func:`_consumer_side`).  What is selected, and the kind of each session, is the
    business of the protocol's planner (:mod:`.remotingplan`, :mod:`.grpcplan`)."""
    consumers = consumers or consumers_only
    targeted = frozenset(p for p, on in ((REMOTING, remoting), (GRPC_PROTOCOL, grpc)) if on)
    why_not = _selector(consumers, flt, targeted)
    if consumers_only:
        why_not = _consumer_side(why_not)
    per_conn: dict[int, list[Exchange]] = defaultdict(list)
    conns: dict[int, Connection] = {}
    servers: set[Endpoint] = set()
    skipped: Counter[str] = Counter()
    ns_conns: set[int] = set()  # connections with name-server requests on them
    for ex in exchanges:
        conn = ex.connection
        servers.add(conn.server)
        if ex.request is not None and ex.request.command.code in protocol_of(ex).classifier.nameserver_codes:
            ns_conns.add(conn.id)
        reason = why_not(ex)
        if reason is None and sample < 1.0 and not keep(f"{conn.client}|{conn.server}", sample):
            reason = "sampled out"
        if reason is None and sample_by is not None:
            v = sample_value(sample_by[0], ex)
            if v is not None and not keep(v, sample_by[1]):
                reason = "sampled out"
        if reason is not None:
            skipped[reason] += 1
            continue
        conns[conn.id] = conn
        per_conn[conn.id].append(ex)
    sent = [request_of(ex).ts for lst in per_conn.values() for ex in lst]
    t0 = min(sent, default=0.0)
    t1 = max(sent, default=0.0)
    sessions = []
    for cid, lst in sorted(per_conn.items(), key=lambda kv: request_of(kv[1][0]).ts if kv[1] else 0):
        lst.sort(key=lambda ex: (request_of(ex).ts, request_of(ex).stream_offset))
        conn = conns[cid]
        planner = planner_of(lst[0])
        assert planner is not None  # selected: its protocol has one
        sess = Session(cid, conn, planner.session_kind(conn, cid in ns_conns))
        sess.steps = _steps(planner, lst, t0, producer_only=not consumers and flt is None)
        sessions.append(sess)
    return Plan(sessions, servers, skipped, t1 - t0)


def _steps(planner: Planner, lst: list[Exchange], t0: float, producer_only: bool) -> list[Step]:
    """Steps with their dependencies: a request waits for every answer the capture shows
    arriving before it was sent (earlier answers were already waited for by earlier steps);
    ``lst`` is one connection's, of one protocol (``planner``)."""
    steps: list[Step] = []
    answered: list[tuple[float, int]] = []  # heap of (response ts, step index) not yet waited for
    for i, ex in enumerate(lst):
        ts = request_of(ex).ts
        deps = []
        while answered and answered[0][0] <= ts:
            deps.append(heapq.heappop(answered)[1])
        steps.append(Step(i, ex, ts - t0, tuple(sorted(deps)),
                          producer_only=producer_only and planner.producer_only(ex)))
        if ex.status == ANSWERED and ex.response is not None:
            heapq.heappush(answered, (planner.answer_ts(ex), i))
    return steps
