"""The messages a gRPC call carries (SendMessage, ReceiveMessage) and the ids every call names."""
from __future__ import annotations

import zlib
from collections.abc import Iterator
from typing import Any

from dissectors.grpc.call import GrpcMessage, response_code_name

from ...model import Exchange, MessageRow
from .classify import resource_name

MAX_BODY = 64 * 1024 * 1024  # a gzip body is inflated up to this many bytes (as remoting's)
_GZIP = 2  # apache.rocketmq.v2.Encoding.GZIP


def payloads(cmd: GrpcMessage | None) -> Iterator[Any]:
    """The parsed protobuf messages of one side of a call."""
    if cmd is None:
        return
    for p in cmd.messages:
        if p.message is not None:
            yield p.message


def _has(m: Any, name: str) -> bool:
    try:
        return bool(m.HasField(name))
    except ValueError:  # not a field with presence: set when not the default
        return bool(getattr(m, name))


def _ms(ts: Any) -> int:
    return int(ts.seconds) * 1000 + int(ts.nanos) // 1_000_000


def _body(m: Any, notes: list[str]) -> bytes:
    body = bytes(m.body)
    if m.system_properties.body_encoding == _GZIP:
        try:
            d = zlib.decompressobj(31)
            out = d.decompress(body, MAX_BODY)
            if d.unconsumed_tail:
                notes.append(f"gzip body larger than {MAX_BODY} bytes: cut")
            return out
        except zlib.error as e:
            notes.append(f"body not decompressed: {e}")
    return body


def row(ex: Exchange, ts: float, kind: str, m: Any, result: str | None) -> MessageRow:
    """A message row from an ``apache.rocketmq.v2.Message``."""
    sp = m.system_properties
    notes: list[str] = []
    return MessageRow(
        ex.index, ts, kind, ex.connection.label, topic=resource_name(m.topic),
        queue=sp.queue_id if kind != "sent" else None,
        offset=sp.queue_offset if _has(sp, "queue_offset") else None,
        unique_key=sp.message_id or None, tags=sp.tag if _has(sp, "tag") else None, keys=list(sp.keys),
        properties=dict(m.user_properties),
        born_host=sp.born_host or None, born_ts=_ms(sp.born_timestamp) if _has(sp, "born_timestamp") else None,
        store_host=sp.store_host or None, store_ts=_ms(sp.store_timestamp) if _has(sp, "store_timestamp") else None,
        body=_body(m, notes), result=result, notes=notes,
        message_group=sp.message_group if _has(sp, "message_group") else None,
        delivery_ts=_ms(sp.delivery_timestamp) if _has(sp, "delivery_timestamp") else None,
        reconsume=sp.delivery_attempt if _has(sp, "delivery_attempt") else None,
    )


def _status_name(st: Any) -> str:
    return response_code_name(int(st.code))


def messages(ex: Exchange) -> list[MessageRow]:
    """SendMessage: one ``sent`` row per message, with its SendResultEntry's offset and status;
    ReceiveMessage: one ``received`` row per delivered message."""
    req = ex.request.command if ex.request is not None else None
    resp = ex.response.command if ex.response is not None else None
    method = getattr(req, "method", None) or getattr(resp, "method", None)
    out: list[MessageRow] = []
    if method == "SendMessage" and ex.request is not None:
        entries = [e for r in payloads(resp) for e in getattr(r, "entries", ())]
        default = resp.name if resp is not None else ex.status
        for r in payloads(req):
            for i, m in enumerate(r.messages):
                e = entries[i] if i < len(entries) else None
                mr = row(ex, ex.request.ts, "sent", m, _status_name(e.status) if e is not None else default)
                if e is not None and e.offset:
                    mr.offset = int(e.offset)
                out.append(mr)
    elif method == "ReceiveMessage" and ex.response is not None:
        result = resp.name if resp is not None else ex.status
        for p in (resp.messages if resp is not None else ()):
            r = p.message
            if r is not None and r.WhichOneof("content") == "message":
                out.append(row(ex, p.ts or ex.response.ts, "received", r.message, result))
    return out


_ID_FIELDS = ("message_id", "transaction_id")


def carried(ex: Exchange) -> tuple[tuple[str, ...], tuple[str, ...], tuple[str, ...]]:
    """(tags, keys, message ids) of the messages a call carries or names: sent and received
    messages, send results, and the ids named by EndTransaction, AckMessage,
    ChangeInvisibleDuration, ForwardMessageToDeadLetterQueue and RecallMessage."""
    tags: list[str] = []
    keys: list[str] = []
    ids: list[str] = []
    for side in (ex.request, ex.response):
        for r in payloads(side.command if side is not None else None):
            _collect(r, tags, keys, ids)
    return tuple(tags), tuple(keys), tuple(dict.fromkeys(ids))


def _message(m: Any, tags: list[str], keys: list[str], ids: list[str]) -> None:
    sp = m.system_properties
    if _has(sp, "tag") and sp.tag:
        tags.append(sp.tag)
    keys.extend(k for k in sp.keys if k)
    if sp.message_id:
        ids.append(sp.message_id)


def _collect(r: Any, tags: list[str], keys: list[str], ids: list[str]) -> None:
    f = r.DESCRIPTOR.fields_by_name
    if "messages" in f:  # SendMessageRequest
        for m in r.messages:
            _message(m, tags, keys, ids)
    if "message" in f and r.WhichOneof("content") == "message":  # ReceiveMessageResponse
        _message(r.message, tags, keys, ids)
    if "entries" in f:  # send results, ack entries
        for e in r.entries:
            if e.message_id:
                ids.append(e.message_id)
            tid = getattr(e, "transaction_id", "")
            if tid:
                ids.append(tid)
    for name in _ID_FIELDS:
        if name in f:
            v = getattr(r, name)
            if v:
                ids.append(v)

