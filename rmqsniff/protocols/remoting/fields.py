"""Remoting's filter fields: codes, topic, group, the tags / keys / ids of carried messages."""
from __future__ import annotations

from typing import Any, cast

from dissectors.remoting import bodies, codes, headers
from dissectors.remoting.message import parse_properties

from ...model import Exchange
from ..base import Getter
from ..tracing import trace_id_field
from .messages import messages

# header fields of requests that name a message they are about (not carry it)
_REFERS = {
    codes.END_TRANSACTION: ("msgId", "transactionId"),
    codes.CHECK_TRANSACTION_STATE: ("msgId", "transactionId", "offsetMsgId"),
    codes.CONSUMER_SEND_MSG_BACK: ("originMsgId",),
}

_carried_cache: list[Any] = [None, None]  # [exchange, (tags, keys, ids)]


def _req_cmd(ex: Exchange) -> Any:
    return ex.request.command if ex.request is not None else None


def carried_ids(ex: Exchange) -> tuple[tuple[str, ...], tuple[str, ...], tuple[str, ...]]:
    """(tags, keys, message ids) of the messages an exchange carries or names (cached for
    the last exchange asked about, since one filter may ask three times)."""
    if _carried_cache[0] is ex:
        return cast("tuple[tuple[str, ...], tuple[str, ...], tuple[str, ...]]", _carried_cache[1])
    tags: list[str] = []
    keys: list[str] = []
    ids: list[str] = []
    req = _req_cmd(ex)
    resp = ex.response.command if ex.response is not None else None
    if req is not None:
        _request_ids(req, tags, keys, ids)
    if resp is not None:
        mid = (resp.ext or {}).get("msgId")
        if mid:
            ids.extend(x for x in mid.split(",") if x)
        if resp.body:
            view = bodies.decode_body(resp, req)
            if view.kind == "messages":
                for m in view.value:
                    _add_props(m.properties, tags, keys, ids)
                    if m.msg_id:
                        ids.append(m.msg_id)
    out = (tuple(tags), tuple(keys), tuple(dict.fromkeys(ids)))
    _carried_cache[0], _carried_cache[1] = ex, out
    return out


def _request_ids(req: Any, tags: list[str], keys: list[str], ids: list[str]) -> None:
    ext = req.ext or {}
    raw = ext.get("i" if req.code in codes.SEND_V2_REQUESTS else "properties")
    if raw and req.code in codes.SEND_REQUESTS:
        _add_props(parse_properties(raw), tags, keys, ids)
    for name in _REFERS.get(req.code, ()):
        v = ext.get(name)
        if v:
            ids.append(v)
    view = bodies.decode_body(req) if req.body else None
    if view is not None and view.kind in ("batch", "messages"):
        for m in view.value:
            _add_props(m.properties, tags, keys, ids)
            if view.kind == "messages" and m.msg_id:
                ids.append(m.msg_id)


def _add_props(p: dict[str, str], tags: list[str], keys: list[str], ids: list[str]) -> None:
    t = p.get("TAGS")
    if t:
        tags.append(t)
    k = p.get("KEYS")
    if k:
        keys.extend(x for x in k.split(" ") if x)
    u = p.get("UNIQ_KEY")
    if u:
        ids.append(u)


def _topic(ex: Exchange) -> str | None:
    c = _req_cmd(ex)
    t = headers.topic_of(c) if c is not None else None
    if t is None and ex.response is not None:
        t = headers.topic_of(ex.response.command)
    return t


def _group(ex: Exchange) -> str | None:
    c = _req_cmd(ex)
    return headers.group_of(c) if c is not None else None


def _broker_name(ex: Exchange) -> str | None:
    c = _req_cmd(ex)
    if c is None or not c.ext:
        return None
    v: str | None = c.ext.get("bname") or c.ext.get("n" if c.code in codes.SEND_V2_REQUESTS else "brokerName") \
        or c.ext.get("brokerName")
    return v


def _nonempty(t: tuple[str, ...]) -> tuple[str, ...] | None:
    return t or None


FIELDS: dict[str, Getter] = {
    "code": lambda ex: ex.request.command.code if ex.request is not None else None,
    "response_code": lambda ex: ex.response.command.code if ex.response is not None else None,
    "topic": _topic,
    "group": _group,
    "tag": lambda ex: _nonempty(carried_ids(ex)[0]),
    "keys": lambda ex: _nonempty(carried_ids(ex)[1]),
    "msgid": lambda ex: _nonempty(carried_ids(ex)[2]),
    "language": lambda ex: c.language if (c := _req_cmd(ex)) is not None else None,
    "version": lambda ex: c.version if (c := _req_cmd(ex)) is not None else None,
    "opaque": lambda ex: ex.request.command.opaque if ex.request is not None else ex.response.command.opaque
    if ex.response is not None else None,
    "broker_name": _broker_name,
    "trace_id": trace_id_field(messages),
    # how codes read as text (for ~)
    "code_name": lambda ex: codes.request_name(ex.request.command.code) if ex.request is not None else None,
    "response_code_name": lambda ex: (codes.response_name(ex.response.command.code)
                                      if ex.response is not None else None),
}


def code_literal(text: str) -> int | None:
    """A remoting code by name (a bare number is every protocol's, see the filter)."""
    return codes.code_from_name(text)
