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

import orjson

from dissectors.remoting import codes as c
from dissectors.remoting import fastjson
from dissectors.remoting.headers import topic_of
from dissectors.remoting.message import decode_batch, parse_properties
from rmqsniff.model import ANSWERED, Connection, Endpoint, Exchange
from rmqsniff.protocols import REMOTING

NAMESRV = "namesrv"
BROKER = "broker"
GRPC = "grpc"  # a gRPC client connection (--grpc-target)

PRODUCER_CODES: frozenset[int] = frozenset({
    c.GET_ROUTEINFO_BY_TOPIC, c.HEART_BEAT, c.UNREGISTER_CLIENT, c.SEND_MESSAGE, c.SEND_MESSAGE_V2,
    c.SEND_BATCH_MESSAGE, c.END_TRANSACTION,
})
"""Replayed by default (heartbeats and unregisters only for their producer part)."""

CONSUMER_CODES: frozenset[int] = frozenset({
    c.PULL_MESSAGE, c.LITE_PULL_MESSAGE, c.QUERY_CONSUMER_OFFSET, c.UPDATE_CONSUMER_OFFSET,
    c.GET_CONSUMER_LIST_BY_GROUP, c.CONSUMER_SEND_MSG_BACK, c.LOCK_BATCH_MQ, c.UNLOCK_BATCH_MQ,
    c.SEARCH_OFFSET_BY_TIMESTAMP, c.GET_MAX_OFFSET, c.GET_MIN_OFFSET, c.QUERY_ASSIGNMENT,
    c.POP_MESSAGE, c.ACK_MESSAGE, c.PEEK_MESSAGE, c.CHANGE_MESSAGE_INVISIBLETIME, c.NOTIFICATION,
    c.POLLING_INFO, c.BATCH_ACK_MESSAGE,
})
"""Replayed with ``--consumers`` (or when ``-Y`` selects them)."""

REPLAYABLE = PRODUCER_CODES | CONSUMER_CODES
"""Nothing else is ever replayed: admin codes and broker <-> name-server traffic stay out."""

SAMPLE_BY = ("topic", "key", "client")


@dataclass(slots=True)
class Step:
    """One request to re-send."""

    index: int  # position in its session
    ex: Exchange  # the captured exchange (request and recorded response)
    at: float  # capture time offset (s) from the first selected request
    deps: tuple[int, ...] = ()  # step indices whose answers must arrive first
    producer_only: bool = False  # heartbeat: drop its consumer part

    @property
    def code(self) -> int:
        return self.ex.request.command.code

    @property
    def oneway(self) -> bool:
        return self.ex.request.command.is_oneway


@dataclass(slots=True)
class Session:
    """The replayable requests of one captured client connection."""

    id: int
    connection: Connection
    kind: str  # NAMESRV or BROKER
    steps: list[Step] = field(default_factory=list)

    @property
    def topics(self) -> list[str]:
        if self.kind == GRPC:
            from .grpcplan import session_topics

            return session_topics(s.ex for s in self.steps)
        seen: dict[str, None] = {}
        for s in self.steps:
            t = topic_of(s.ex.request.command)
            if t:
                seen[t] = None
        return list(seen)

    @property
    def default_topics(self) -> list[str]:
        """Topics senders fall back to when theirs has no route (``TBW102``)."""
        seen: dict[str, None] = {}
        for s in self.steps:
            ext = s.ex.request.command.ext or {}
            t = ext.get("c") if s.code in c.SEND_V2_REQUESTS else ext.get("defaultTopic")
            if t:
                seen[t] = None
        return list(seen)

    @property
    def broker_name(self) -> str | None:
        for s in self.steps:
            ext = s.ex.request.command.ext or {}
            for k in ("n", "bname", "brokerName"):
                if ext.get(k):
                    return ext[k]
        return None


@dataclass(slots=True)
class Plan:
    sessions: list[Session]
    servers: set[Endpoint]  # every server address in the capture (production)
    skipped: Counter  # reason -> requests left out
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


def _json(body: bytes | None) -> dict | None:
    if not body:
        return None
    try:
        d = orjson.loads(body)
    except orjson.JSONDecodeError:
        try:
            d = fastjson.loads(body)
        except Exception:  # noqa: BLE001 - not JSON: leave it to the caller
            return None
    return d if isinstance(d, dict) else None


def heartbeat_sides(cmd) -> tuple[bool, bool]:
    """(has producer groups, has consumer groups) of a HEART_BEAT body."""
    d = _json(cmd.body) or {}
    return bool(d.get("producerDataSet")), bool(d.get("consumerDataSet"))


def sample_value(by: str, ex: Exchange) -> str | None:
    """What ``--sample-by`` hashes for this request (None: not applicable, always kept)."""
    cmd = ex.request.command
    if ex.protocol == "grpc":
        from .grpcplan import sample_value as grpc_value

        return grpc_value(by, ex)
    if by == "topic":
        return topic_of(cmd)
    if by == "client":
        return ex.connection.client[0]
    if by == "key":
        ext = cmd.ext or {}
        props = ext.get("i") if cmd.code in c.SEND_V2_REQUESTS else ext.get("properties")
        keys = parse_properties(props or "").get("KEYS")
        if not keys and cmd.code == c.SEND_BATCH_MESSAGE and cmd.body:
            msgs, _ = decode_batch(cmd.body)
            keys = next((m.properties.get("KEYS") for m in msgs if m.properties.get("KEYS")), None)
        return keys.split(" ")[0] if keys else None
    raise ValueError(f"--sample-by {by!r}: expected one of {', '.join(SAMPLE_BY)}")


def _selector(consumers: bool, flt: Callable[[Exchange], bool] | None,
              grpc: bool = False, remoting: bool = True) -> Callable[[Exchange], str | None]:
    """Returns None for a selected request, else the reason it is left out."""
    def why_not(ex: Exchange) -> str | None:
        req = ex.request
        if req is None:
            return "orphan response"
        if ex.server_initiated:
            return "server-initiated"
        if ex.protocol == "grpc":
            if not grpc:
                return "grpc (use --grpc-target)"
            from .grpcplan import why_not as grpc_why_not

            return grpc_why_not(ex, consumers, None if flt is None else flt(ex))
        if not remoting:
            return "remoting (no --target)"
        if ex.protocol not in ("remoting", "rocketmq"):
            return f"{ex.protocol} (not replayable yet)"
        code = req.command.code
        if code not in REPLAYABLE:
            return "not a client request (admin / server traffic)"
        if flt is not None:
            return None if flt(ex) else "filter"
        if code in PRODUCER_CODES:
            if code == c.HEART_BEAT and not consumers:
                prod, _cons = heartbeat_sides(req.command)
                return None if prod else "consumer heartbeat (use --consumers)"
            if code == c.UNREGISTER_CLIENT and not consumers:
                ext = req.command.ext or {}
                return None if ext.get("producerGroup") else "consumer unregister (use --consumers)"
            return None
        return None if consumers else "consumer traffic (use --consumers)"
    return why_not


SEND_SIDE = c.SEND_REQUESTS | {c.END_TRANSACTION}
GRPC_SEND_SIDE = frozenset({"SendMessage", "EndTransaction", "RecallMessage"})


def _consumer_side(inner: Callable[[Exchange], str | None]) -> Callable[[Exchange], str | None]:
    """``--consumers-only``: no sends and END_TRANSACTION, no heartbeat / unregister of a
    producer alone; everything else as ``inner`` (route lookups, consumer heartbeats, pulls,
    pops, acks, offsets) decides."""
    def why_not(ex: Exchange) -> str | None:
        req = ex.request
        if req is not None and not ex.server_initiated:
            cmd = req.command
            if ex.protocol == "grpc":
                if getattr(cmd, "method", None) in GRPC_SEND_SIDE:
                    return "producer traffic (--consumers-only)"
            elif cmd.code in SEND_SIDE:
                return "producer traffic (--consumers-only)"
            elif cmd.code == c.HEART_BEAT and not heartbeat_sides(cmd)[1]:
                return "producer heartbeat (--consumers-only)"
            elif cmd.code == c.UNREGISTER_CLIENT and not (cmd.ext or {}).get("consumerGroup"):
                return "producer unregister (--consumers-only)"
        return inner(ex)
    return why_not


def build_plan(exchanges: Iterable[Exchange], *, consumers: bool = False,
               flt: Callable[[Exchange], bool] | None = None, sample: float = 1.0,
               sample_by: tuple[str, float] | None = None, grpc: bool = False,
               consumers_only: bool = False, remoting: bool = True) -> Plan:
    """Group the selected requests per client connection, in request order, with dependencies
    (``grpc``: gRPC client connections too, as GRPC sessions; ``consumers_only``: the consumer
    side only, see :func:`_consumer_side`)."""
    consumers = consumers or consumers_only
    why_not = _selector(consumers, flt, grpc, remoting)
    if consumers_only:
        why_not = _consumer_side(why_not)
    per_conn: dict[int, list[Exchange]] = defaultdict(list)
    conns: dict[int, Connection] = {}
    servers: set[Endpoint] = set()
    skipped: Counter = Counter()
    nameserver_codes = REMOTING.classifier.nameserver_codes
    ns_conns: set[int] = set()
    for ex in exchanges:
        conn = ex.connection
        servers.add(conn.server)
        if ex.request is not None and ex.request.command.code in nameserver_codes:
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
    allx = [ex for lst in per_conn.values() for ex in lst]
    t0 = min((ex.request.ts for ex in allx), default=0.0)
    t1 = max((ex.request.ts for ex in allx), default=0.0)
    sessions = []
    for cid, lst in sorted(per_conn.items(), key=lambda kv: kv[1][0].request.ts if kv[1] else 0):
        lst.sort(key=lambda ex: (ex.request.ts, ex.request.stream_offset))
        conn = conns[cid]
        kind = NAMESRV if cid in ns_conns or conn.server[1] in REMOTING.classifier.nameserver_ports else BROKER
        if lst[0].protocol == "grpc":
            kind = GRPC
        sess = Session(cid, conn, kind)
        sess.steps = _steps(lst, t0, producer_only=not consumers and flt is None)
        sessions.append(sess)
    return Plan(sessions, servers, skipped, t1 - t0)


def _steps(lst: list[Exchange], t0: float, producer_only: bool) -> list[Step]:
    """Steps with their dependencies: a request waits for every answer the capture shows
    arriving before it was sent (earlier answers were already waited for by earlier steps)."""
    steps: list[Step] = []
    answered: list[tuple[float, int]] = []  # heap of (response ts, step index) not yet waited for
    for i, ex in enumerate(lst):
        ts = ex.request.ts
        deps = []
        while answered and answered[0][0] <= ts:
            deps.append(heapq.heappop(answered)[1])
        steps.append(Step(i, ex, ts - t0, tuple(sorted(deps)),
                          producer_only=producer_only and ex.request.command.code == c.HEART_BEAT))
        if ex.status == ANSWERED and ex.response is not None:
            heapq.heappush(answered, (_answer_ts(ex), i))
    return steps


def _answer_ts(ex: Exchange) -> float:
    if ex.protocol == "grpc":
        from .grpcplan import answer_ts

        return answer_ts(ex)
    return ex.response.ts
