"""Offset facts of gRPC calls (consumer lag): UpdateOffset / GetOffset (a group's committed
offset), QueryOffset END and PullMessage answers (the broker's max offset), and the messages
ReceiveMessage hands to SimpleConsumer / PushConsumer groups until AckMessage or
ForwardMessageToDeadLetterQueue settles them (in flight).  A message's broker, queue and
offset come from its receipt handle (the proxy's pop handle) when it has one."""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ...model import ACKED, BROKER_OFFSET, CONSUMER_OFFSET, DELIVERED, Exchange, OffsetFact, endpoint_text
from ..pophandle import handle_fields, retry_topic
from .classify import resource_name
from .messages import payloads

OK = 20000  # apache.rocketmq.v2.Code.OK
QUERY_OFFSET_END = 1  # QueryOffsetPolicy.END: the queue's max offset


class _Call:
    """One call's request and response payloads, and the facts found in them."""

    def __init__(self, ex: Exchange) -> None:
        self.ex = ex
        self.server = endpoint_text(ex.connection.server)
        self.req = list(payloads(ex.request.command if ex.request is not None else None))
        resp = ex.response.command if ex.response is not None else None
        self.resp_cmd = resp
        self.resp = list(payloads(resp))
        self.sent = ex.request.ts if ex.request is not None else ex.ts
        self.rts = ex.response.ts if ex.response is not None else self.sent
        self.out: list[OffsetFact] = []

    @property
    def ok(self) -> bool:
        return self.resp_cmd is not None and getattr(self.resp_cmd, "status_code", None) == OK

    def add(self, kind: str, ts: float, mq: Any, offset: int | None, group: str | None = None) -> None:
        topic = resource_name(mq.topic)
        if topic is None or offset is None:
            return
        self.out.append(OffsetFact(kind, ts, self.server, mq.broker.name or None, topic, int(mq.id), group,
                                   int(offset), self.ex.index))

    def message(self, kind: str, ts: float, group: str | None, topic: str | None, handle: str,
                mq: Any = None, queue: int | None = None, offset: int | None = None) -> None:
        retry, broker, hq, hoff = handle_fields(handle)
        queue = hq if hq is not None else queue
        offset = hoff if hoff is not None else offset
        if broker is None and mq is not None:
            broker = mq.broker.name or None
        if topic is None or queue is None or offset is None or group is None:
            return
        self.out.append(OffsetFact(kind, ts, self.server, broker, retry_topic(group, topic, retry), queue, group,
                                   offset, self.ex.index))


def offset_facts(ex: Exchange) -> list[OffsetFact]:
    """The offset facts of one gRPC call (empty when it says nothing about offsets)."""
    cmd = (ex.request or ex.response)
    method = getattr(cmd.command, "method", None) if cmd is not None else None
    how = _BY_METHOD.get(method or "")
    if how is None or ex.request is None:
        return []
    c = _Call(ex)
    how(c)
    return c.out


def _update_offset(c: _Call) -> None:
    if c.resp_cmd is None or c.ok:
        for r in c.req:
            c.add(CONSUMER_OFFSET, c.sent, r.message_queue, r.offset, resource_name(r.group))


def _get_offset(c: _Call) -> None:
    if c.ok:
        for r, a in zip(c.req, c.resp, strict=False):
            c.add(CONSUMER_OFFSET, c.rts, r.message_queue, a.offset, resource_name(r.group))


def _query_offset(c: _Call) -> None:
    if c.ok:
        for r, a in zip(c.req, c.resp, strict=False):
            if r.query_offset_policy == QUERY_OFFSET_END:
                c.add(BROKER_OFFSET, c.rts, r.message_queue, a.offset)


def _pull(c: _Call) -> None:
    for r in c.req:
        for a in c.resp:
            which = a.WhichOneof("content")
            if which == "next_offset":
                c.add(BROKER_OFFSET, c.rts, r.message_queue, a.next_offset)
            elif which == "message":
                sp = a.message.system_properties
                c.add(BROKER_OFFSET, c.rts, r.message_queue, sp.queue_offset + 1)


def _receive(c: _Call) -> None:
    if not c.req or c.resp_cmd is None:
        return
    r = c.req[0]
    group = resource_name(r.group)
    for p in c.resp_cmd.messages:
        a = p.message
        if a is None or a.WhichOneof("content") != "message":
            continue
        m = a.message
        sp = m.system_properties
        ts = p.ts or c.rts
        offset = sp.queue_offset if sp.HasField("queue_offset") else None
        c.message(DELIVERED, ts, group, resource_name(m.topic), sp.receipt_handle, r.message_queue, sp.queue_id,
                  offset)


def _ack(c: _Call) -> None:
    if c.resp_cmd is not None and not c.ok:
        settled = {e.receipt_handle for a in c.resp for e in a.entries if e.status.code == OK}
    else:
        settled = None  # no answer seen, or all acked
    for r in c.req:
        group, topic = resource_name(r.group), resource_name(r.topic)
        for e in r.entries:
            if settled is None or e.receipt_handle in settled:
                c.message(ACKED, c.sent, group, topic, e.receipt_handle)


def _dead_letter(c: _Call) -> None:
    if c.resp_cmd is None or c.ok:
        for r in c.req:
            c.message(ACKED, c.sent, resource_name(r.group), resource_name(r.topic), r.receipt_handle)


_BY_METHOD: dict[str, Callable[[_Call], None]] = {
    "UpdateOffset": _update_offset, "GetOffset": _get_offset, "QueryOffset": _query_offset, "PullMessage": _pull,
    "ReceiveMessage": _receive, "AckMessage": _ack, "ForwardMessageToDeadLetterQueue": _dead_letter,
}
