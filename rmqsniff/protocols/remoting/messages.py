"""The messages a remoting exchange carries: sent (single, batch), pulled, popped, checked…"""
from __future__ import annotations

from typing import Any

from dissectors.remoting import bodies, codes, headers
from dissectors.remoting.message import (
    PayloadError,
    decode_offset_msg_id,
    parse_properties,
)

from ...model import Exchange, Message, MessageRow, _ep

_CONSUME_KINDS = {
    codes.PULL_MESSAGE: "pulled", codes.LITE_PULL_MESSAGE: "pulled", codes.POP_MESSAGE: "popped",
    codes.PEEK_MESSAGE: "peeked", codes.QUERY_MESSAGE: "queried", codes.VIEW_MESSAGE_BY_ID: "queried",
}
_REQUEST_KINDS = {codes.CHECK_TRANSACTION_STATE: "checked", codes.CONSUME_MESSAGE_DIRECTLY: "consumed"}


def _int(v: str | None) -> int | None:
    try:
        return int(v) if v is not None else None
    except ValueError:
        return None


def _result(ex: Exchange) -> str:
    if ex.response is None:
        return ex.status
    return codes.response_name(ex.response.command.code)


def _with(base: MessageRow, **kw: Any) -> MessageRow:
    props = kw.get("properties") or {}
    r = MessageRow(**{f: getattr(base, f) for f in MessageRow.__dataclass_fields__} | kw)
    r.unique_key = props.get("UNIQ_KEY")
    r.tags = props.get("TAGS")
    r.keys = [k for k in props.get("KEYS", "").split(" ") if k]
    return r


def _sent(ex: Exchange, req: Any, resp: Any) -> list[MessageRow]:
    assert ex.request is not None
    ext = headers.long_ext(req)
    rext = (resp.ext or {}) if resp is not None else {}
    ok = resp is not None and codes.classify(req.code, resp.code) == codes.SUCCESS_CLASS
    queue = _int(rext.get("queueId")) if ok else None
    if queue is None:
        queue = _int(ext.get("queueId"))
    first = _int(rext.get("queueOffset")) if ok else None
    ids = list(rext.get("msgId", "").split(",")) if ok and rext.get("msgId") else []
    base = MessageRow(ex.index, ex.request.ts, "sent", ex.connection.label, topic=ext.get("topic"), queue=queue,
                      born_host=_ep(ex.connection.client) if not ex.server_initiated else None,
                      born_ts=_int(ext.get("bornTimestamp")), result=_result(ex))
    view = bodies.decode_body(req)
    out: list[MessageRow] = []
    if view.kind == "batch":
        for i, m in enumerate(view.value):
            out.append(_with(base, kind="batch-sent", offset=None if first is None else first + i,
                             msg_id=ids[i] if i < len(ids) else None, properties=dict(m.properties), body=m.body,
                             notes=list(view.errors)))
    else:
        body = view.value if view.kind == "message" else (req.body or b"")
        out.append(_with(base, offset=first, msg_id=ids[0] if ids else None,
                         properties=parse_properties(ext.get("properties") or ""),
                         body=bytes(body or b""), notes=list(view.errors)))
    for r in out:
        if r.msg_id:
            try:
                host, port, _ = decode_offset_msg_id(r.msg_id)
                r.store_host = _ep((host, port))
            except ValueError:
                pass
    return out


def messages(ex: Exchange) -> list[MessageRow]:
    """The messages ``ex`` carries (empty for exchanges that carry none)."""
    req = ex.request.command if ex.request is not None else None
    resp = ex.response.command if ex.response is not None else None
    if req is not None and req.code in codes.SEND_REQUESTS:
        return _sent(ex, req, resp)
    stored: list[tuple[str, Any, Message, list[str]]] = []
    if resp is not None and req is not None and resp.body and codes.classify(req.code, resp.code) == "success":
        kind = _CONSUME_KINDS.get(req.code)
        if kind is not None:
            view = bodies.decode_body(resp, req)
            if view.kind == "messages":
                assert ex.response is not None
                stored.append((kind, view.value, ex.response, view.errors))
    if req is not None and req.body and req.code in _REQUEST_KINDS:
        view = bodies.decode_body(req)
        if view.kind == "messages":
            assert ex.request is not None
            stored.append((_REQUEST_KINDS[req.code], view.value, ex.request, view.errors))
    out: list[MessageRow] = []
    for kind, msgs, carrier, errors in stored:
        for m in msgs:
            notes = list(errors)
            try:
                body = m.payload()
            except PayloadError as e:
                body = m.body
                notes.append(f"body not decompressed: {e}")
            props = dict(m.properties)
            out.append(MessageRow(
                ex.index, carrier.ts, kind, ex.connection.label, topic=m.topic, queue=m.queue_id,
                offset=m.queue_offset, msg_id=m.msg_id, unique_key=m.unique_key, tags=m.tags, keys=m.keys,
                properties=props, born_host=m.born_host, born_ts=m.born_timestamp,
                store_host=m.store_host, store_ts=m.store_timestamp, body=body, result=_result(ex),
                notes=notes, reconsume=m.reconsume_times,
                delivery_ts=_int(props.get("__STARTDELIVERTIME") or props.get("TIMER_DELIVER_MS"))))
    return out
