"""Offset facts of remoting exchanges (consumer lag): the broker's max offset from pull,
pop, GET_MAX_OFFSET, query and send answers; a group's committed offset from
UPDATE_CONSUMER_OFFSET, pull requests' commitOffset and QUERY_CONSUMER_OFFSET answers;
pop deliveries and acks (ACK_MESSAGE, BATCH_ACK_MESSAGE) for in-flight counts."""
from __future__ import annotations

from typing import Any

from dissectors.remoting import bodies, codes, headers

from ...model import (
    ACKED,
    BROKER_ADDRESS,
    BROKER_OFFSET,
    CONSUMER_OFFSET,
    DELIVERED,
    Exchange,
    OffsetFact,
    endpoint_text,
)
from ..pophandle import handle_fields, retry_topic

COMMIT_OFFSET_FLAG = 0x1  # PullSysFlag.FLAG_COMMIT_OFFSET


def _int(v: Any) -> int | None:
    try:
        return int(v) if v is not None else None
    except (TypeError, ValueError):
        return None


class _Facts:
    """One exchange's request and answer, and the facts found in them."""

    __slots__ = ("ex", "req", "resp", "server", "out", "ext", "bname", "ok", "sent", "rts", "rext", "topic",
                 "group", "queue")

    def __init__(self, ex: Exchange, req: Any) -> None:
        self.ex = ex
        self.req = req
        self.resp = ex.response.command if ex.response is not None else None
        self.server = endpoint_text(ex.connection.server)
        self.out: list[OffsetFact] = []
        self.ext: dict[str, str] = req.ext or {}
        bname = self.ext.get("bname") or self.ext.get("brokerName") or None
        if req.code in codes.SEND_V2_REQUESTS:
            bname = self.ext.get("n") or bname
        self.bname: str | None = bname
        self.ok = self.resp is not None and codes.classify(req.code, self.resp.code) == codes.SUCCESS_CLASS
        self.sent = ex.ts  # the request's time
        self.rts = ex.response.ts if ex.response is not None else ex.ts
        self.rext: dict[str, str] = (self.resp.ext or {}) if self.resp is not None else {}
        self.topic, self.group = headers.topic_of(req), headers.group_of(req)
        self.queue = headers.queue_id_of(req)

    def add(self, kind: str, ts: float, broker: str | None, topic: str | None, queue: int | None,
            offset: int | None, group: str | None = None) -> None:
        if topic is None or queue is None or offset is None or queue < 0:
            return
        self.out.append(OffsetFact(kind, ts, self.server, broker, topic, queue, group, offset, self.ex.index))


def offset_facts(ex: Exchange) -> list[OffsetFact]:
    """The offset facts of one remoting exchange (empty when it says nothing about offsets)."""
    if ex.request is None or ex.server_initiated:
        return []
    req = ex.request.command
    code = req.code
    how = _BY_CODE.get(code)
    if how is None:
        if code not in codes.SEND_REQUESTS:
            return []
        how = _sent
    f = _Facts(ex, req)
    if f.bname:
        f.out.append(OffsetFact(BROKER_ADDRESS, ex.ts, f.server, f.bname, exchange=ex.index))
    how(f)
    return f.out


def _pull(f: _Facts) -> None:
    if (_int(f.ext.get("sysFlag")) or 0) & COMMIT_OFFSET_FLAG:
        f.add(CONSUMER_OFFSET, f.sent, f.bname, f.topic, f.queue, _int(f.ext.get("commitOffset")), f.group)
    if f.resp is not None:
        # every pull answer's header (found or not) carries the queue's max offset (so the
        # messages it carries, each below it, need no decoding here); nextBeginOffset is a
        # lower bound of it
        for k in ("maxOffset", "nextBeginOffset"):
            f.add(BROKER_OFFSET, f.rts, f.bname, f.topic, f.queue, _int(f.rext.get(k)))


def _update_offset(f: _Facts) -> None:
    if f.resp is None or f.ok:  # one-way, or accepted
        f.add(CONSUMER_OFFSET, f.sent, f.bname, f.topic, f.queue, _int(f.ext.get("commitOffset")), f.group)


def _query_offset(f: _Facts) -> None:
    if f.ok:
        f.add(CONSUMER_OFFSET, f.rts, f.bname, f.topic, f.queue, _int(f.rext.get("offset")), f.group)


def _max_offset(f: _Facts) -> None:
    if f.ok:
        f.add(BROKER_OFFSET, f.rts, f.bname, f.topic, f.queue, _int(f.rext.get("offset")))


def _pop(f: _Facts) -> None:
    if f.ok:
        _stored(f, f.group)


def _query(f: _Facts) -> None:
    if f.ok:
        _stored(f, None)


def _sent(f: _Facts) -> None:
    """A send answer's queueOffset is the (first) message's offset: max offset ≥ it + count."""
    first = _int(f.rext.get("queueOffset")) if f.ok else None
    if first is None:
        return
    n = 1
    if f.req.code == codes.SEND_BATCH_MESSAGE:
        view = bodies.decode_body(f.req)
        n = len(view.value) if view.kind == "batch" and view.value else 1
    f.add(BROKER_OFFSET, f.rts, f.bname, f.topic, _int(f.rext.get("queueId")), first + n)


def _stored(f: _Facts, pop_group: str | None) -> None:
    """Stored messages in an answer: each one's offset + 1 is a lower bound of its queue's max
    offset; popped ones (``pop_group``) are in flight until acked."""
    resp, ts, bname = f.resp, f.rts, f.bname
    if resp is None or not resp.body:
        return
    view = bodies.decode_body(resp, f.req)
    if view.kind != "messages":
        return
    for m in view.value:
        topic, broker = m.topic, bname
        if pop_group is not None:
            ck = m.properties.get("POP_CK")  # set by the broker on messages from a retry topic
            retry, ck_broker, _, _ = handle_fields(ck) if ck else (None, None, None, None)
            broker = ck_broker or bname
            topic = retry_topic(pop_group, topic, retry)
            f.add(DELIVERED, ts, broker, topic, m.queue_id, m.queue_offset, pop_group)
        if m.queue_offset is not None:
            f.add(BROKER_OFFSET, ts, broker, topic, m.queue_id, m.queue_offset + 1)


def _acked_one(f: _Facts) -> None:
    """An ack names the real topic (the retry topic for a retried message) and the handle."""
    if f.resp is not None and not f.ok:
        return
    _, broker, queue, offset = handle_fields(f.ext.get("extraInfo") or "")
    queue = f.queue if queue is None else queue
    offset = _int(f.ext.get("offset")) if offset is None else offset
    f.add(ACKED, f.sent, broker or f.bname, f.topic, queue, offset, f.group)


def _batch_acked(f: _Facts) -> None:
    view = bodies.decode_body(f.req)
    if (f.resp is not None and not f.ok) or view.kind != "batch_ack" or not isinstance(view.value, dict):
        return
    ts, broker = f.sent, view.value.get("brokerName") or f.bname
    for a in view.value.get("acks") or []:
        group, topic = a.get("consumerGroup"), a.get("topic")
        if not isinstance(group, str) or not isinstance(topic, str):
            continue
        for off in a.get("offsets") or []:
            f.add(ACKED, ts, broker, topic, _int(a.get("queueId")), off, group)


def _route(f: _Facts) -> None:
    """A route answer tells at which addresses each broker name serves."""
    if not f.ok or f.resp is None:
        return
    ts = f.rts
    view = bodies.decode_body(f.resp, f.req)
    if view.kind != "topic_route":
        return
    for name, addrs in bodies.broker_addresses(view.value).items():
        for addr in addrs.values():
            if isinstance(addr, str) and addr:
                f.out.append(OffsetFact(BROKER_ADDRESS, ts, addr, name, exchange=f.ex.index))


_BY_CODE = {
    codes.PULL_MESSAGE: _pull, codes.LITE_PULL_MESSAGE: _pull, codes.UPDATE_CONSUMER_OFFSET: _update_offset,
    codes.QUERY_CONSUMER_OFFSET: _query_offset, codes.GET_MAX_OFFSET: _max_offset, codes.POP_MESSAGE: _pop,
    codes.ACK_MESSAGE: _acked_one, codes.BATCH_ACK_MESSAGE: _batch_acked, codes.GET_ROUTEINFO_BY_TOPIC: _route,
    codes.QUERY_MESSAGE: _query, codes.VIEW_MESSAGE_BY_ID: _query, codes.PEEK_MESSAGE: _query,
}

OFFSET_CODES: frozenset[int] = frozenset(_BY_CODE) | codes.SEND_REQUESTS
"""Request codes whose exchanges may have offset facts."""
