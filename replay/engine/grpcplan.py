"""Which captured gRPC calls replay re-sends (``--grpc-target``), and what a plan needs to
know about them: topics, sampling values, when their answer arrived.

Default selection: the producer side - QueryRoute, producer Heartbeat / Telemetry /
NotifyClientTermination, SendMessage, EndTransaction, RecallMessage. Consumer calls
(QueryAssignment, ReceiveMessage, AckMessage, ChangeInvisibleDuration, consumer Heartbeat /
Telemetry / NotifyClientTermination, ...) with ``--consumers`` (receipt handles mapped by
:mod:`.grpcstate`).
"""
from __future__ import annotations

from rmqsniff.model import Exchange
from rmqsniff.protocols.grpc.classify import topic_of

PRODUCER_METHODS = frozenset({"QueryRoute", "SendMessage", "EndTransaction", "RecallMessage"})
MAYBE_PRODUCER = frozenset({"Heartbeat", "Telemetry", "NotifyClientTermination"})
CONSUMER_METHODS = frozenset({"QueryAssignment", "ReceiveMessage", "AckMessage", "ChangeInvisibleDuration",
                              "ForwardMessageToDeadLetterQueue", "PullMessage", "UpdateOffset", "GetOffset",
                              "QueryOffset", "SyncLiteSubscription"})
PRODUCER = 1  # ClientType.PRODUCER


def _first(ex: Exchange):
    return next((p.message for p in ex.request.command.messages if p.message is not None), None)


def is_producer_call(ex: Exchange) -> bool:
    """Heartbeat / Telemetry / NotifyClientTermination of a producer (no consumer group,
    producer client type or publishing settings)."""
    name = ex.request.command.method
    m = _first(ex)
    if m is None:
        return False
    if name == "Heartbeat":
        return m.client_type == PRODUCER or not m.HasField("group")
    if name == "NotifyClientTermination":
        return not m.HasField("group")
    if name == "Telemetry":
        s = m.settings if m.HasField("settings") else None
        return s is not None and (s.client_type == PRODUCER or s.HasField("publishing"))
    return False


def why_not(ex: Exchange, consumers: bool, selected_by_filter: bool | None) -> str | None:
    """None when this gRPC call is replayed, else why not (``selected_by_filter``: the
    ``-Y`` verdict, None without a filter)."""
    cmd = ex.request.command
    name = cmd.method
    if name is None or cmd.how not in ("", "path", "inferred"):
        return "gRPC call whose method is not known"
    if not any(p.message is not None for p in cmd.messages):
        return "gRPC call without a decoded request message"
    if not consumers and (name in CONSUMER_METHODS or (name in MAYBE_PRODUCER and not is_producer_call(ex))):
        return "gRPC consumer traffic (use --consumers)"
    if name not in PRODUCER_METHODS | MAYBE_PRODUCER | CONSUMER_METHODS:
        return f"gRPC {name} (not replayable)"
    if selected_by_filter is not None:
        return None if selected_by_filter else "filter"
    return None


def session_topics(exchanges) -> list[str]:
    seen: dict[str, None] = {}
    for ex in exchanges:
        t = topic_of(ex.request.command)
        if t:
            seen[t] = None
    return list(seen)


def sample_value(by: str, ex: Exchange) -> str | None:
    """``--sample-by`` value of a gRPC call (topic, first message key, client address)."""
    if by == "topic":
        return topic_of(ex.request.command)
    if by == "client":
        return ex.connection.client[0]
    m = _first(ex)
    if m is not None and m.DESCRIPTOR.name == "SendMessageRequest":
        for msg in m.messages:
            if len(msg.system_properties.keys):
                return msg.system_properties.keys[0]
    return None


def answer_ts(ex: Exchange) -> float:
    """When the client had its answer: the first response message of a streaming call
    (Telemetry's settings reply), else the end of the response."""
    resp = ex.response.command
    if resp.messages and ex.request.command.method == "Telemetry":
        return resp.messages[0].ts
    return ex.response.ts
