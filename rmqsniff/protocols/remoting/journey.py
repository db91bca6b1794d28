"""Journey hops a remoting exchange shows: sends and their answers, pulls and pops, acks,
offset commits, send-backs (retry / DLQ) and transactions.

The messages themselves come from :func:`.messages.messages` (decoded once); acks, commits,
send-backs and transaction ends name a message by header fields only.
"""
from __future__ import annotations

from typing import Any

from dissectors.remoting import codes
from dissectors.remoting.message import offset_msg_id

from ...model import Exchange, JourneyEvent, MessageRow
from .messages import messages

TRACE_TOPIC = "RMQ_SYS_TRACE_TOPIC"
# a message-trace body starts with its first record's type and the field separator (char 1)
TRACE_BODY_STARTS = (b"Pub\x01", b"SubBefore\x01", b"SubAfter\x01", b"EndTransaction\x01")
SCHEDULE_TOPIC = "SCHEDULE_TOPIC_XXXX"
TIMER_TOPIC = "rmq_sys_wheel_timer"
_TIMER_PROPERTIES = ("TIMER_DELIVER_MS", "TIMER_DELAY_SEC", "TIMER_DELAY_MS")
_DELIVERED = frozenset({"pulled", "popped"})
_COMMIT_OFFSET_FLAG = 0x1  # PullSysFlag.FLAG_COMMIT_OFFSET
_TX_PREPARED_FLAG = 0x4  # MessageSysFlag.TRANSACTION_PREPARED_TYPE
_TX_END = {8: "committed", 12: "rolled_back"}  # END_TRANSACTION commitOrRollback


def queue_offset_alias(topic: str | None, queue: int | None, offset: int | None) -> str | None:
    """The ``qo:`` alias of a stored message: topic, queue id and queue offset."""
    if topic is None or queue is None or offset is None:
        return None
    return f"qo:{topic}\x00{queue}\x00{offset}"


def _int(v: str | None) -> int | None:
    try:
        return int(v) if v is not None else None
    except ValueError:
        return None


def _names(*names: str | None) -> tuple[str, ...]:
    return tuple(n for n in names if n)


def _trace_body(r: MessageRow) -> bytes | None:
    """The body of a message-trace topic message (or one whose body reads like trace records)."""
    if r.topic == TRACE_TOPIC or r.body.startswith(TRACE_BODY_STARTS):
        return r.body
    return None


def _event(ex: Exchange, kind: str, ts: float, r: MessageRow | None = None, **kw: Any) -> JourneyEvent:
    return JourneyEvent.hop(ex, "remoting", kind, ts, r, **kw)


def journey_events(ex: Exchange) -> list[JourneyEvent]:
    """The journey hops of one remoting exchange."""
    req = ex.request.command if ex.request is not None else None
    if req is None:
        return []
    code = req.code
    if code in codes.SEND_REQUESTS:
        return _sends(ex, req)
    if code in _DELIVERING:
        return _deliveries(ex, req)
    handler = _BY_CODE.get(code)
    return handler(ex, req) if handler is not None else []


def _sends(ex: Exchange, req: Any) -> list[JourneyEvent]:
    assert ex.request is not None
    ext = req.ext or {}
    v2 = req.code in codes.SEND_V2_REQUESTS  # one-letter keys (SendMessageRequestHeaderV2)

    def h(short: str, name: str) -> str | None:
        return (ext.get(short) if v2 else None) or ext.get(name)
    group = h("a", "producerGroup")
    half = bool((_int(h("f", "sysFlag")) or 0) & _TX_PREPARED_FLAG)
    reconsume = _int(h("j", "reconsumeTimes"))
    rext = (ex.response.command.ext or {}) if ex.response is not None else {}
    out: list[JourneyEvent] = []
    for r in messages(ex):
        half = half or r.properties.get("TRAN_MSG") == "true"
        omid = f"omid:{r.msg_id}" if r.msg_id else None
        out.append(_event(ex, "sent", ex.request.ts, r, aliases=_names(omid), body=_trace_body(r),
                          info={"queue": r.queue, "group": group, "result": r.result, "reconsume": reconsume}))
        if ex.response is None or r.result != "SUCCESS" and r.msg_id is None:
            continue
        ts = ex.response.ts
        if half:
            tid = rext.get("transactionId")
            out.append(_event(ex, "prepared", ts, r, aliases=_names(omid, f"tx:{tid}" if tid else None),
                              info={"msg_id": r.msg_id, "transaction_id": tid, "queue": r.queue,
                                    "offset": r.offset, "result": r.result}))
            continue
        kind = "dead_lettered" if (r.topic or "").startswith("%DLQ%") else "stored"
        where = _stored_topic(r)
        out.append(_event(ex, kind, ts, r, aliases=_names(omid, queue_offset_alias(where, r.queue, r.offset)),
                          info={"msg_id": r.msg_id, "queue": r.queue, "offset": r.offset, "result": r.result}
                          | ({"stored_topic": where} if where != r.topic else {})))
    return out


def _stored_topic(r: MessageRow) -> str | None:
    """Where the broker put a sent message (and what the answer's queue and offset are of):
    a delayed message in SCHEDULE_TOPIC_XXXX, a 5.x timer message in rmq_sys_wheel_timer."""
    p = r.properties
    if p.get("DELAY", "0") not in ("", "0"):
        return SCHEDULE_TOPIC
    if any(k in p for k in _TIMER_PROPERTIES):
        return TIMER_TOPIC
    return r.topic


def _deliveries(ex: Exchange, req: Any) -> list[JourneyEvent]:
    ext = req.ext or {}
    group = ext.get("consumerGroup")
    out: list[JourneyEvent] = []
    if req.code in codes.PULL_REQUESTS and (_int(ext.get("sysFlag")) or 0) & _COMMIT_OFFSET_FLAG:
        out += _commit(ex, ext)
    for r in messages(ex):
        if r.kind not in _DELIVERED:
            continue
        omid = f"omid:{r.msg_id}" if r.msg_id else None
        ck = r.properties.get("POP_CK")
        info = {"group": group, "consumer": None, "client_addr": r.connection.partition(" -> ")[0],
                "queue": r.queue, "offset": r.offset, "msg_id": r.msg_id, "reconsume": r.reconsume,
                "via": r.kind}
        aliases = _names(omid, queue_offset_alias(r.topic, r.queue, r.offset), f"rh:{ck}" if ck else None)
        out.append(_event(ex, "delivered", r.ts, r, aliases=aliases, info=info))
        if (r.topic or "").startswith("%DLQ%"):
            out.append(_event(ex, "dead_lettered", r.ts, r, aliases=aliases, info={"group": group, "topic": r.topic}))
        body = _trace_body(r)
        if body is not None:
            out[-1].body = body
    return out


def _commit(ex: Exchange, ext: dict[str, str]) -> list[JourneyEvent]:
    """An offset commit: every message of that group's queue below the offset is consumed."""
    assert ex.request is not None
    group, topic = ext.get("consumerGroup"), ext.get("topic")
    queue, offset = _int(ext.get("queueId")), _int(ext.get("commitOffset"))
    if group is None or topic is None or queue is None or offset is None or offset <= 0:
        return []
    return [_event(ex, "acked", ex.request.ts, topic=topic, covers=(group, topic, queue, offset),
                   info={"group": group, "queue": queue, "commit_offset": offset, "by": "offset commit"})]


def _update_offset(ex: Exchange, req: Any) -> list[JourneyEvent]:
    return _commit(ex, req.ext or {})


def _result(ex: Exchange) -> str:
    return codes.response_name(ex.response.command.code) if ex.response is not None else ex.status


def _ack(ex: Exchange, req: Any) -> list[JourneyEvent]:
    """ACK_MESSAGE / CHANGE_MESSAGE_INVISIBLETIME: the message by topic, queue and offset (or its
    pop check point, ``extraInfo``)."""
    assert ex.request is not None
    ext = req.ext or {}
    topic, queue, offset = ext.get("topic"), _int(ext.get("queueId")), _int(ext.get("offset"))
    extra = ext.get("extraInfo")
    kind = "acked" if req.code == codes.ACK_MESSAGE else "invisible_changed"
    info: dict[str, Any] = {"group": ext.get("consumerGroup"), "queue": queue, "offset": offset,
                            "result": _result(ex)}
    if kind == "invisible_changed":
        info["invisible_ms"] = _int(ext.get("invisibleTime"))
    refs = _names(queue_offset_alias(topic, queue, offset), f"rh:{extra}" if extra else None)
    return [_event(ex, kind, ex.request.ts, topic=topic, refs=refs, info=info)]


def _batch_ack(ex: Exchange, req: Any) -> list[JourneyEvent]:
    """BATCH_ACK_MESSAGE: the body names (topic, queue, offsets) per pop check point."""
    from dissectors.remoting import bodies

    assert ex.request is not None
    view = bodies.decode_body(req)
    if view.kind != "batch_ack" or not isinstance(view.value, dict):
        return []
    out: list[JourneyEvent] = []
    for a in view.value.get("acks") or ():
        topic, queue = a.get("topic"), _int(str(a.get("queueId")))
        for off in a.get("offsets") or ():
            out.append(_event(ex, "acked", ex.request.ts, topic=topic,
                              refs=_names(queue_offset_alias(topic, queue, off)),
                              info={"group": a.get("consumerGroup"), "queue": queue, "offset": off,
                                    "result": _result(ex)}))
    return out


def _send_back(ex: Exchange, req: Any) -> list[JourneyEvent]:
    """CONSUMER_SEND_MSG_BACK: the consumer gives the message back for a later retry (or, past
    maxReconsumeTimes or with a negative delay level, to the dead-letter queue)."""
    assert ex.request is not None
    ext = req.ext or {}
    offset = _int(ext.get("offset"))
    refs: tuple[str, ...] = ()
    if offset is not None:
        host, port = ex.connection.server
        try:
            refs = (f"omid:{offset_msg_id(host, port, offset)}",)
        except ValueError:
            refs = ()
    info = {"group": ext.get("group"), "delay_level": _int(ext.get("delayLevel")),
            "max_reconsume": _int(ext.get("maxReconsumeTimes")), "result": _result(ex)}
    return [_event(ex, "retried", ex.request.ts, unique_key=ext.get("originMsgId") or None, refs=refs,
                   topic=ext.get("originTopic"), info=info)]


def _end_transaction(ex: Exchange, req: Any) -> list[JourneyEvent]:
    assert ex.request is not None
    ext = req.ext or {}
    kind = _TX_END.get(_int(ext.get("commitOrRollback")) or 0)
    if kind is None:
        return []
    tid = ext.get("transactionId")
    return [_event(ex, kind, ex.request.ts, unique_key=ext.get("msgId") or None,
                   refs=_names(f"tx:{tid}" if tid else None),
                   info={"transaction_id": tid, "from_check": ext.get("fromTransactionCheck") == "true",
                         "group": ext.get("producerGroup")})]


def _check(ex: Exchange, req: Any) -> list[JourneyEvent]:
    assert ex.request is not None
    ext = req.ext or {}
    tid, omid = ext.get("transactionId"), ext.get("offsetMsgId")
    return [_event(ex, "checked", ex.request.ts, unique_key=ext.get("msgId") or None,
                   refs=_names(f"tx:{tid}" if tid else None, f"omid:{omid}" if omid else None),
                   info={"transaction_id": tid})]


_DELIVERING = frozenset({codes.PULL_MESSAGE, codes.LITE_PULL_MESSAGE, codes.POP_MESSAGE})
_BY_CODE = {
    codes.UPDATE_CONSUMER_OFFSET: _update_offset,
    codes.ACK_MESSAGE: _ack,
    codes.CHANGE_MESSAGE_INVISIBLETIME: _ack,
    codes.BATCH_ACK_MESSAGE: _batch_ack,
    codes.CONSUMER_SEND_MSG_BACK: _send_back,
    codes.END_TRANSACTION: _end_transaction,
    codes.CHECK_TRANSACTION_STATE: _check,
}
