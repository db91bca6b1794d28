"""RocketMQ 5.x gRPC flows: the flow table's protocol handler and the stats classifier.

:class:`GrpcHandler` feeds a flow's reassembled bytes to the sans-I/O
:class:`dissectors.grpc.GrpcConnection` and turns its calls into exchanges: one per
gRPC call (HTTP/2 stream), protocol ``"grpc"``, with the request side (client headers
and messages) and the response side (server headers, messages and trailers) as
:class:`dissectors.grpc.GrpcMessage` commands.  Statuses: ``answered`` (the server
side was seen and the call ended), ``unanswered`` (no server side, call still open at
the end, reset before an answer, refused by GOAWAY), ``orphan`` (only the server side
of a call from before the capture was seen).

Stats (the one model in :mod:`rmqsniff.stats`): every call counts in the generic
counters and in ``request_code.<Method>``; Envoy's per-request counters are reused
where the meaning is the same:

| gRPC method | Envoy counter / gauge |
|---|---|
| QueryRoute | get_topic_route, get_topic_route_active |
| Heartbeat | heartbeat |
| SendMessage | send_message_v2, send_message_v2_active |
| ReceiveMessage | pop_message, pop_message_active |
| AckMessage | ack_message |
| NotifyClientTermination | unregister |

Error answers to QueryRoute, Heartbeat and NotifyClientTermination count as
``maintenance_failure``.  Response codes (``response_code.grpc:<NAME>``): the RocketMQ
``Status.code`` of the body (``OK``, ``MESSAGE_NOT_FOUND`` …); ``GRPC_<STATUS>`` for a
non-zero gRPC status (trailers, or a reset mapped as gRPC does: CANCEL → CANCELLED,
REFUSED_STREAM → UNAVAILABLE, others → INTERNAL; a client cancelling a call the server
had answered with a Status keeps that Status, as the Telemetry stream at shutdown);
``GRPC_OK`` for grpc-status 0 without a body Status; ``NO_STATUS`` when neither was seen.
Success: ``OK``, ``GRPC_OK``; ``no_message``: ``MESSAGE_NOT_FOUND`` answering
ReceiveMessage/PullMessage; everything else is an error.
"""
from __future__ import annotations

from typing import Any

from dissectors.grpc import schema
from dissectors.grpc.call import GRPC_OK_NO_STATUS, GrpcCall, GrpcMessage, method_name, response_code_name
from dissectors.grpc.connection import CallEnded, CallStarted, Encrypted, GrpcConnection, Problem, Resynced

from .model import ANSWERED, ORPHAN, UNANSWERED, Connection, Exchange, Message
from .pairing import PairingSink
from .stats import Classifier, register_classifier

OK = 20000
MESSAGE_NOT_FOUND = 40401
_B = schema.BY_NAME
_POLLING = frozenset({_B["ReceiveMessage"].code, _B["PullMessage"].code})


class GrpcHandler:
    """Protocol handler for one gRPC flow (see :mod:`rmqsniff.flows`)."""

    __slots__ = ("conn", "sink", "stats", "dec", "exchanges", "why")

    def __init__(self, conn: Connection, sink: PairingSink, stats: Any, mid_stream: bool = False) -> None:
        self.conn = conn
        self.sink = sink
        self.stats = stats
        self.dec = GrpcConnection(mid_stream=mid_stream)
        self.exchanges: dict[int, Exchange] = {}  # started calls by stream id
        self.why = ""  # set when the flow cannot be decoded (TLS)

    def data(self, from_client: bool, data: bytes, ts: float) -> None:
        self._events(self.dec.feed(from_client, data, ts))

    def lost(self, from_client: bool, nbytes: int) -> None:
        self.stats.tcp("gap", 1)
        self._events(self.dec.gap(from_client, nbytes))

    def close(self) -> None:
        self._events(self.dec.close())

    def _events(self, events: list) -> None:
        for ev in events:
            t = type(ev)
            if t is CallStarted:
                self._started(ev.call)
            elif t is CallEnded:
                self._ended(ev.call)
            elif t is Problem:
                self.stats.decoding_error(ev.from_client, f"grpc: {ev.reason}", self.conn)
            elif t is Resynced:
                self.stats.tcp("resync", 1)
            elif t is Encrypted:
                self.why = "TLS: encrypted, cannot be decoded"
                self.stats.tcp("flows_other", 1)

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
        self.sink.done(ex)


# ------------------------------------------------------------------ stats classifier

def classify(request_code: int | None, response_code: int) -> str:
    """success / no_message / error for a gRPC call (codes as in the module docstring)."""
    if response_code == OK or response_code == GRPC_OK_NO_STATUS:
        return "success"
    if response_code == MESSAGE_NOT_FOUND and (request_code is None or request_code in _POLLING):
        return "no_message"
    return "error"


def _resource(d: Any) -> str | None:
    name = d.name
    if not name:
        return None
    ns = d.resource_namespace
    return f"{ns}%{name}" if ns else name


def _first(cmd: GrpcMessage) -> Any:
    for p in getattr(cmd, "messages", ()):
        if p.message is not None:
            return p.message
    return None


def topic_of(cmd: GrpcMessage) -> str | None:
    """Topic of a request: ``topic``, the message queue's, the first message's, or a
    Telemetry setting's (``namespace%topic`` when namespaced)."""
    m = _first(cmd)
    if m is None:
        return None
    f = m.DESCRIPTOR.fields_by_name
    try:
        if "topic" in f and m.HasField("topic"):
            return _resource(m.topic)
        if "message_queue" in f and m.HasField("message_queue"):
            return _resource(m.message_queue.topic)
        if "messages" in f and len(m.messages):
            return _resource(m.messages[0].topic)
        if "settings" in f and m.HasField("settings"):
            s = m.settings
            if s.HasField("publishing") and len(s.publishing.topics):
                return _resource(s.publishing.topics[0])
            if s.HasField("subscription") and len(s.subscription.subscriptions):
                return _resource(s.subscription.subscriptions[0].topic)
    except (AttributeError, ValueError):
        return None
    return None


def group_of(cmd: GrpcMessage) -> str | None:
    """Consumer group of a request (``group``, or a Telemetry subscription's)."""
    m = _first(cmd)
    if m is None:
        return None
    f = m.DESCRIPTOR.fields_by_name
    try:
        if "group" in f and m.HasField("group"):
            return _resource(m.group)
        if "settings" in f and m.HasField("settings") and m.settings.HasField("subscription"):
            sub = m.settings.subscription
            if sub.HasField("group"):
                return _resource(sub.group)
    except (AttributeError, ValueError):
        return None
    return None


ENVOY_COUNTER = {
    _B["QueryRoute"].code: "get_topic_route", _B["Heartbeat"].code: "heartbeat",
    _B["SendMessage"].code: "send_message_v2", _B["ReceiveMessage"].code: "pop_message",
    _B["AckMessage"].code: "ack_message", _B["NotifyClientTermination"].code: "unregister",
}
ACTIVE_GAUGE = {
    _B["SendMessage"].code: "send_message_v2_active", _B["ReceiveMessage"].code: "pop_message_active",
    _B["QueryRoute"].code: "get_topic_route_active",
}
GRPC = Classifier(
    request_name=method_name,
    response_name=response_code_name,
    classify=classify,
    topic_of=topic_of,
    group_of=group_of,
    envoy_counter=ENVOY_COUNTER,
    active_gauge=ACTIVE_GAUGE,
    maintenance=frozenset({_B["QueryRoute"].code, _B["Heartbeat"].code, _B["NotifyClientTermination"].code}),
    nameserver_codes=frozenset(),
    nameserver_ports=frozenset(),
)
register_classifier("grpc", GRPC)
