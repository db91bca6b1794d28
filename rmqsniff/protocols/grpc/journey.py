"""Journey hops a gRPC call shows: SendMessage (sent, stored / prepared), ReceiveMessage
(delivered), AckMessage, ChangeInvisibleDuration, ForwardMessageToDeadLetterQueue,
EndTransaction and the Telemetry stream's RecoverOrphanedTransactionCommand.

Messages come from :func:`.messages.messages` (decoded once); the other calls name a message
by its id (and receipt handle).
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ...model import Exchange, JourneyEvent, MessageRow
from .classify import resource_name
from .messages import messages, payloads

_TRANSACTION = 4  # apache.rocketmq.v2.MessageType.TRANSACTION
_RESOLUTION = {1: "committed", 2: "rolled_back"}  # TransactionResolution COMMIT / ROLLBACK


def _event(ex: Exchange, kind: str, ts: float, r: MessageRow | None = None, **kw: Any) -> JourneyEvent:
    return JourneyEvent.hop(ex, "grpc", kind, ts, r, **kw)


def _client_id(ex: Exchange) -> str | None:
    cmd = ex.request.command if ex.request is not None else None
    for k, v in getattr(cmd, "headers", ()):
        if k == "x-mq-client-id":
            return str(v)
    return None


def _first(ex: Exchange, response: bool = False) -> Any:
    side = ex.response if response else ex.request
    return next(payloads(side.command if side is not None else None), None)


def _status(ex: Exchange) -> str:
    return ex.response.command.name if ex.response is not None else ex.status


def journey_events(ex: Exchange) -> list[JourneyEvent]:
    """The journey hops of one gRPC call."""
    cmd = ex.request.command if ex.request is not None else ex.response.command if ex.response else None
    handler = _BY_METHOD.get(getattr(cmd, "method", None) or "")
    return handler(ex) if handler is not None else []


def _send(ex: Exchange) -> list[JourneyEvent]:
    if ex.request is None:  # an answer whose call start the capture lost
        return []
    req = _first(ex)
    entries = [e for r in payloads(ex.response.command if ex.response else None) for e in getattr(r, "entries", ())]
    sent = list(req.messages) if req is not None else []
    out: list[JourneyEvent] = []
    for i, r in enumerate(messages(ex)):
        out.append(_event(ex, "sent", ex.request.ts, r, info={"result": r.result, "producer": _client_id(ex)}))
        e = entries[i] if i < len(entries) else None
        if e is None or ex.response is None or r.result != "OK":
            continue
        tx = i < len(sent) and sent[i].system_properties.message_type == _TRANSACTION
        tid = (e.transaction_id or None) if tx else None
        out.append(_event(ex, "prepared" if tx else "stored", ex.response.ts, r,
                          aliases=(f"tx:{tid}",) if tx and tid else (),
                          info={"offset": int(e.offset), "result": r.result}
                          | ({"transaction_id": tid} if tx else {})))
    return out


def _receive(ex: Exchange) -> list[JourneyEvent]:
    req = _first(ex)
    group = resource_name(req.group) if req is not None else None
    raw = [p.message.message for p in (ex.response.command.messages if ex.response is not None else ())
           if p.message is not None and p.message.WhichOneof("content") == "message"]
    out: list[JourneyEvent] = []
    for i, r in enumerate(messages(ex)):
        handle = raw[i].system_properties.receipt_handle if i < len(raw) else ""
        attempt = r.reconsume
        out.append(_event(ex, "delivered", r.ts, r, aliases=(f"rh:{handle}",) if handle else (),
                          info={"group": group, "consumer": _client_id(ex), "queue": r.queue, "offset": r.offset,
                                "delivery_attempt": attempt,
                                "reconsume": attempt - 1 if attempt else None, "receipt_handle": handle or None}))
        if (r.topic or "").startswith("%DLQ%"):
            out.append(_event(ex, "dead_lettered", r.ts, r, info={"group": group, "topic": r.topic}))
    return out


def _named(kind: str) -> Callable[[Exchange], list[JourneyEvent]]:
    """AckMessage (entries), ChangeInvisibleDuration, ForwardMessageToDeadLetterQueue: the
    message by id and receipt handle."""
    def events(ex: Exchange) -> list[JourneyEvent]:
        if ex.request is None:  # an answer whose call start the capture lost
            return []
        req = _first(ex)
        if req is None:
            return []
        group = resource_name(req.group)
        topic = resource_name(req.topic)
        named = list(req.entries) if "entries" in req.DESCRIPTOR.fields_by_name else [req]
        resp = _first(ex, response=True)
        new_handle = getattr(resp, "receipt_handle", "") if resp is not None else ""
        out = []
        for n in named:
            info: dict[str, Any] = {"group": group, "consumer": _client_id(ex), "result": _status(ex)}
            aliases: tuple[str, ...] = ()
            if kind == "invisible_changed":
                info["invisible_s"] = req.invisible_duration.seconds
                aliases = (f"rh:{new_handle}",) if new_handle else ()
            elif kind == "dead_lettered":
                info["delivery_attempt"] = req.delivery_attempt
                info["max_delivery_attempts"] = req.max_delivery_attempts
            rh = n.receipt_handle
            out.append(_event(ex, kind, ex.request.ts, unique_key=n.message_id or None, topic=topic,
                              aliases=aliases, refs=(f"rh:{rh}",) if rh else (), info=info))
        return out
    return events


def _end_transaction(ex: Exchange) -> list[JourneyEvent]:
    if ex.request is None:  # an answer whose call start the capture lost
        return []
    req = _first(ex)
    kind = _RESOLUTION.get(int(req.resolution)) if req is not None else None
    if req is None or kind is None:
        return []
    tid = req.transaction_id or None
    return [_event(ex, kind, ex.request.ts, unique_key=req.message_id or None, topic=resource_name(req.topic),
                   refs=(f"tx:{tid}",) if tid else (),
                   info={"transaction_id": tid, "from_check": int(req.source) == 2, "result": _status(ex)})]


def _telemetry(ex: Exchange) -> list[JourneyEvent]:
    """RecoverOrphanedTransactionCommand on the Telemetry stream: the proxy asks the producer
    about an open transaction."""
    out: list[JourneyEvent] = []
    for p in (ex.response.command.messages if ex.response is not None else ()):
        m = p.message
        if m is None or m.WhichOneof("command") != "recover_orphaned_transaction_command":
            continue
        c = m.recover_orphaned_transaction_command
        sp = c.message.system_properties
        tid = c.transaction_id or None
        out.append(_event(ex, "checked", p.ts or ex.ts, unique_key=sp.message_id or None,
                          topic=resource_name(c.message.topic), refs=(f"tx:{tid}",) if tid else (),
                          info={"transaction_id": tid}))
    return out


_BY_METHOD: dict[str, Callable[[Exchange], list[JourneyEvent]]] = {
    "SendMessage": _send,
    "ReceiveMessage": _receive,
    "AckMessage": _named("acked"),
    "ChangeInvisibleDuration": _named("invisible_changed"),
    "ForwardMessageToDeadLetterQueue": _named("dead_lettered"),
    "EndTransaction": _end_transaction,
    "Telemetry": _telemetry,
}
