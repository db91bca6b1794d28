"""gRPC's stats classifier.

Every call counts in the generic counters and in ``request_code.<Method>``; Envoy's
per-request counters are reused where the meaning is the same:

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
from dissectors.grpc.call import (
    GRPC_OK_NO_STATUS,
    GrpcMessage,
    method_name,
    response_code_name,
)

from ..base import Classifier

OK = 20000
MESSAGE_NOT_FOUND = 40401
_B = schema.BY_NAME
_POLLING = frozenset({_B["ReceiveMessage"].code, _B["PullMessage"].code})


def classify(request_code: int | None, response_code: int) -> str:
    """success / no_message / error for a gRPC call (codes as in the module docstring)."""
    if response_code in (OK, GRPC_OK_NO_STATUS):
        return "success"
    if response_code == MESSAGE_NOT_FOUND and (request_code is None or request_code in _POLLING):
        return "no_message"
    return "error"


def resource_name(d: Any) -> str | None:
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
            return resource_name(m.topic)
        if "message_queue" in f and m.HasField("message_queue"):
            return resource_name(m.message_queue.topic)
        if "messages" in f and len(m.messages):
            return resource_name(m.messages[0].topic)
        if "settings" in f and m.HasField("settings"):
            s = m.settings
            if s.HasField("publishing") and len(s.publishing.topics):
                return resource_name(s.publishing.topics[0])
            if s.HasField("subscription") and len(s.subscription.subscriptions):
                return resource_name(s.subscription.subscriptions[0].topic)
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
            return resource_name(m.group)
        if "settings" in f and m.HasField("settings") and m.settings.HasField("subscription"):
            sub = m.settings.subscription
            if sub.HasField("group"):
                return resource_name(sub.group)
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
CLASSIFIER = Classifier(
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
