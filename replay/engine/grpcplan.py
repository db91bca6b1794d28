"""Which captured gRPC calls replay re-sends (``--grpc-target``), and what a plan needs to
know about them: selection, session kind, topics, sampling values, when their answer
arrived, how a replayed answer is compared with the recorded one.

Default selection: the producer side - QueryRoute, producer Heartbeat / Telemetry /
NotifyClientTermination, SendMessage, EndTransaction, RecallMessage. Consumer calls
(QueryAssignment, ReceiveMessage, AckMessage, ChangeInvisibleDuration, consumer Heartbeat /
Telemetry / NotifyClientTermination, ...) with ``--consumers`` (receipt handles mapped by
:mod:`.grpcstate`).

The same interface as :mod:`.remotingplan`; :mod:`.plan` reaches either through
``protocol_of(ex).planner``.
"""
from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from rmqsniff.model import Connection, Exchange
from rmqsniff.protocols.grpc.classify import topic_of

from .grpcdiff import compare as compare  # the planner's answer diff
from .plan import GRPC, request_of, response_of

PRODUCER_METHODS = frozenset({"QueryRoute", "SendMessage", "EndTransaction", "RecallMessage"})
MAYBE_PRODUCER = frozenset({"Heartbeat", "Telemetry", "NotifyClientTermination"})
CONSUMER_METHODS = frozenset({"QueryAssignment", "ReceiveMessage", "AckMessage", "ChangeInvisibleDuration",
                              "ForwardMessageToDeadLetterQueue", "PullMessage", "UpdateOffset", "GetOffset",
                              "QueryOffset", "SyncLiteSubscription"})
SEND_SIDE = frozenset({"SendMessage", "EndTransaction", "RecallMessage"})
PRODUCER = 1  # ClientType.PRODUCER

UNTARGETED = "grpc (use --grpc-target)"
"""Why a gRPC call is left out when replay has no gRPC target."""


def _first(ex: Exchange) -> Any:
    return next((p.message for p in request_of(ex).command.messages if p.message is not None), None)


def is_producer_call(ex: Exchange) -> bool:
    """Heartbeat / Telemetry / NotifyClientTermination of a producer (no consumer group,
    producer client type or publishing settings)."""
    name = request_of(ex).command.method
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
    cmd = request_of(ex).command
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


def session_topics(exchanges: Iterable[Exchange]) -> list[str]:
    seen: dict[str, None] = {}
    for ex in exchanges:
        t = topic_of(request_of(ex).command)
        if t:
            seen[t] = None
    return list(seen)


def sample_value(by: str, ex: Exchange) -> str | None:
    """``--sample-by`` value of a gRPC call (topic, first message key, client address)."""
    if by == "topic":
        return topic_of(request_of(ex).command)
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
    response = response_of(ex)
    resp = response.command
    if resp.messages and request_of(ex).command.method == "Telemetry":
        return resp.messages[0].ts
    return response.ts


def consumer_side(ex: Exchange) -> str | None:
    """``--consumers-only``: why this call is producer traffic (SendMessage, EndTransaction,
    RecallMessage), None when it may be replayed."""
    if getattr(request_of(ex).command, "method", None) in SEND_SIDE:
        return "producer traffic (--consumers-only)"
    return None


def session_kind(conn: Connection, nameserver_traffic: bool) -> str:
    """Every gRPC client connection is a GRPC session (to ``--grpc-target``)."""
    return GRPC


def default_topics(exchanges: Iterable[Exchange]) -> list[str]:
    """No default-topic fallback in gRPC."""
    return []


def broker_name(exchanges: Iterable[Exchange]) -> str | None:
    """gRPC calls go to the proxy's endpoint, not to a named broker."""
    return None


def producer_only(ex: Exchange) -> bool:
    """Nothing of a gRPC call is dropped when consumers are not replayed."""
    return False
