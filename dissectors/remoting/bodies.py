"""What a remoting frame's body means, decoded only when asked (reference sections 3, 4).

``decode_body(cmd, request)`` picks a decoder from the request code (for a
response, the paired request's code) and returns a ``BodyView``. It never
raises: problems are listed in ``BodyView.errors``.

Kinds and values:

* ``messages``: ``list[StoredMessage]`` (pull/pop/peek/query/view responses,
  check-transaction and consume-directly requests);
* ``message``: ``bytes``, the send request's body, decompressed when the header's
  sysFlag says so;
* ``batch``: ``list[BatchMessage]``;
* ``heartbeat``, ``topic_route``, ``cluster_info``, ``consumer_list``, ``json``:
  the parsed JSON (see ``fastjson``); in a topic route every queue data carrying
  only the pre-4.9 ``topicSynFlag`` also gets ``topicSysFlag``;
* ``register_broker``: the RegisterBrokerBody shape (``filterServerList``,
  ``topicConfigSerializeWrapper`` with ``dataVersion``, ``topicConfigTable``,
  ``topicQueueMappingInfoMap``) whether the body was JSON or the zlib form;
* ``batch_ack``: ``{"brokerName", "acks": [{long names..., "offsets": [...]}]}``;
* ``text``: ``str``; ``binary``: ``bytes``; ``empty``: None; ``error``: the raw body.
"""
from __future__ import annotations

import base64
import binascii
import struct
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from . import fastjson
from .command import RemotingCommand
from .message import (
    DEFAULT_MAX_PAYLOAD,
    PayloadError,
    decode_batch,
    decode_stored_messages,
    decompress_body,
    looks_like_stored_messages,
)

__all__ = ["BodyView", "decode_body", "heartbeat_summary", "broker_addresses", "reset_offsets",
           "decode_register_broker", "MAX_ACK_OFFSETS"]

MAX_ACK_OFFSETS = 1 << 20
_I32 = struct.Struct(">i")

# 5.x codes above 65535 and their 16-bit truncated wire form
_WIDE_CODES = (200050, 200051, 200052, 200053, 200054, 200055, 200151)
_RESTORE = {c & 0xFFFF: c for c in _WIDE_CODES}

# responses whose body is stored messages, by request code
_MESSAGE_RESPONSES = {
    11,      # PULL_MESSAGE
    361,     # LITE_PULL_MESSAGE
    200050,  # POP_MESSAGE
    200052,  # PEEK_MESSAGE
    12,      # QUERY_MESSAGE
    33,      # VIEW_MESSAGE_BY_ID
}
_MESSAGE_REQUESTS = {
    39,   # CHECK_TRANSACTION_STATE
    309,  # CONSUME_MESSAGE_DIRECTLY
}
_SEND_V1 = {10, 324}   # SEND_MESSAGE, SEND_REPLY_MESSAGE
_SEND_V2 = {310, 325}  # SEND_MESSAGE_V2, SEND_REPLY_MESSAGE_V2


@dataclass(slots=True)
class BodyView:
    """A decoded body: ``kind`` (see module doc), ``value`` and problems found."""

    kind: str
    value: Any = None
    errors: list[str] = field(default_factory=list)


def _code(c: int) -> int:
    return _RESTORE.get(c, c)


def decode_body(cmd: RemotingCommand, request: RemotingCommand | None = None,
                max_payload: int = DEFAULT_MAX_PAYLOAD) -> BodyView:
    """Decode ``cmd.body``; ``request`` is the paired request when ``cmd`` is a response."""
    body = cmd.body
    if not body:
        return BodyView("empty")
    try:
        if cmd.is_response:
            decoder = _RESPONSE_DECODERS.get(_code(request.code)) if request is not None else None
        else:
            decoder = _REQUEST_DECODERS.get(_code(cmd.code))
        if decoder is None:
            return _generic(body)
        view = decoder(cmd, bytes(body), max_payload)
        if view.kind == "error" and cmd.is_response and cmd.code != 0:
            # an error response may carry something else (e.g. a text explanation)
            fallback = _generic(bytes(body))
            fallback.errors[:0] = view.errors
            return fallback
        return view
    except Exception as e:  # a decoder bug must not take the caller down
        return BodyView("error", body, [f"body decoder failed: {type(e).__name__}: {e}"])


# ---------------------------------------------------------------- generic

def _generic(body: bytes) -> BodyView:
    head = body[:64].lstrip()
    if head[:1] in (b"{", b"["):
        try:
            return BodyView("json", fastjson.loads(body))
        except fastjson.JsonError as e:
            err = [f"looks like JSON but is not: {e}"]
            view = _text_or_binary(body)
            view.errors = err
            return view
    if looks_like_stored_messages(body):
        msgs, errors = decode_stored_messages(body)
        if msgs:
            return BodyView("messages", msgs, errors)
    return _text_or_binary(body)


def _text_or_binary(body: bytes) -> BodyView:
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        return BodyView("binary", body)
    if text.isprintable() or all(ch.isprintable() or ch in "\t\r\n" for ch in text):
        return BodyView("text", text)
    return BodyView("binary", body)


def _json(kind: str, body: bytes) -> BodyView:
    try:
        return BodyView(kind, fastjson.loads(body))
    except fastjson.JsonError as e:
        return BodyView("error", body, [f"{kind} body is not JSON: {e}"])


# ---------------------------------------------------------------- messages

def _messages(cmd: RemotingCommand, body: bytes, max_payload: int) -> BodyView:
    msgs, errors = decode_stored_messages(body)
    if not msgs and errors:
        return BodyView("error", body, errors)
    return BodyView("messages", msgs, errors)


def _ext(cmd: RemotingCommand, *names: str) -> str | None:
    ext = cmd.ext or {}
    for n in names:
        if n in ext:
            return ext[n]
    return None


def _send(cmd: RemotingCommand, body: bytes, max_payload: int) -> BodyView:
    code = _code(cmd.code)
    names = ("f", "sysFlag") if code in _SEND_V2 else ("sysFlag", "f")
    raw = _ext(cmd, *names)
    if raw is None:
        return BodyView("message", body)
    try:
        sys_flag = int(raw)
    except ValueError:
        return BodyView("message", body, [f"sysFlag {raw!r} is not an integer; body left as is"])
    try:
        return BodyView("message", decompress_body(body, sys_flag, max_payload))
    except PayloadError as e:
        return BodyView("message", body, [f"body not decompressed: {e}"])


def _batch(cmd: RemotingCommand, body: bytes, max_payload: int) -> BodyView:
    msgs, errors = decode_batch(body)
    if not msgs and errors:
        return BodyView("error", body, errors)
    return BodyView("batch", msgs, errors)


# ---------------------------------------------------------------- JSON bodies

def _heartbeat(cmd: RemotingCommand, body: bytes, max_payload: int) -> BodyView:
    return _json("heartbeat", body)


def _topic_route(cmd: RemotingCommand, body: bytes, max_payload: int) -> BodyView:
    view = _json("topic_route", body)
    if view.kind == "topic_route" and isinstance(view.value, dict):
        for qd in view.value.get("queueDatas") or []:
            if isinstance(qd, dict) and "topicSynFlag" in qd and "topicSysFlag" not in qd:
                qd["topicSysFlag"] = qd["topicSynFlag"]
    return view


def _cluster_info(cmd: RemotingCommand, body: bytes, max_payload: int) -> BodyView:
    return _json("cluster_info", body)


def _consumer_list(cmd: RemotingCommand, body: bytes, max_payload: int) -> BodyView:
    return _json("consumer_list", body)


def _plain_json(cmd: RemotingCommand, body: bytes, max_payload: int) -> BodyView:
    return _json("json", body)


def _get(d: Any, name: str, default: Any = None) -> Any:
    """Exact key, else a case-insensitive match (fastjson reads loosely, 5.9)."""
    if not isinstance(d, dict):
        return default
    if name in d:
        return d[name]
    low = name.lower()
    for k, v in d.items():
        if isinstance(k, str) and k.lower() == low:
            return v
    return default


def heartbeat_summary(d: Any) -> dict[str, Any]:
    """The essentials of a HeartbeatData dict (3.9)."""
    producers = [_get(p, "groupName") for p in _get(d, "producerDataSet") or [] if isinstance(p, dict)]
    consumers = []
    for c in _get(d, "consumerDataSet") or []:
        if not isinstance(c, dict):
            continue
        subs = [
            {"topic": _get(s, "topic"), "expressionType": _get(s, "expressionType"),
             "subString": _get(s, "subString"), "tags": list(_get(s, "tagsSet") or [])}
            for s in _get(c, "subscriptionDataSet") or [] if isinstance(s, dict)
        ]
        consumers.append({
            "groupName": _get(c, "groupName"),
            "consumeType": _get(c, "consumeType"),
            "messageModel": _get(c, "messageModel"),
            "consumeFromWhere": _get(c, "consumeFromWhere"),
            "subscriptions": subs,
        })
    return {"clientID": _get(d, "clientID"), "producerGroups": producers, "consumerGroups": consumers}


def broker_addresses(route: Any) -> dict[str, dict[int, str]]:
    """``{brokerName: {brokerId: "ip:port"}}`` from a TopicRouteData (or BrokerData list)."""
    out: dict[str, dict[int, str]] = {}
    datas = route.get("brokerDatas") if isinstance(route, dict) else route
    for bd in datas or []:
        if not isinstance(bd, dict):
            continue
        addrs: dict[int, str] = {}
        for k, v in (bd.get("brokerAddrs") or {}).items():
            try:
                addrs[int(k)] = v
            except (TypeError, ValueError):
                continue
        out[str(bd.get("brokerName"))] = addrs
    return out


def reset_offsets(value: Any) -> list[dict[str, Any]]:
    """ResetOffsetBody (object keys) or ResetOffsetBodyForC (list) as a list of
    ``{"topic", "brokerName", "queueId", "offset"}``."""
    table = value.get("offsetTable") if isinstance(value, dict) else None
    out: list[dict[str, Any]] = []
    if isinstance(table, dict):
        for k, off in table.items():
            mq = k.as_dict() if isinstance(k, fastjson.ObjectKey) else {}
            out.append({"topic": mq.get("topic"), "brokerName": mq.get("brokerName"),
                        "queueId": mq.get("queueId"), "offset": off})
    elif isinstance(table, list):
        for e in table:
            if isinstance(e, dict):
                out.append({k: e.get(k) for k in ("topic", "brokerName", "queueId", "offset")})
    return out


# ---------------------------------------------------------------- batch ack

_ACK_NAMES = (("c", "consumerGroup"), ("t", "topic"), ("r", "retry"), ("so", "startOffset"),
              ("q", "queueId"), ("rq", "reviveQueueId"), ("pt", "popTime"), ("it", "invisibleTime"))


def _bitset_offsets(b64: str, start: int, errors: list[str], where: str) -> list[int]:
    try:
        raw = base64.b64decode(b64, validate=False)
    except (binascii.Error, ValueError) as e:
        errors.append(f"{where}: bitSet is not base64 ({e})")
        return []
    out: list[int] = []
    for i, byte in enumerate(raw):
        for bit in range(8):
            if byte >> bit & 1:
                if len(out) >= MAX_ACK_OFFSETS:
                    errors.append(f"{where}: more than {MAX_ACK_OFFSETS} acked offsets; rest dropped")
                    return out
                out.append(start + i * 8 + bit)
    return out


def _batch_ack(cmd: RemotingCommand, body: bytes, max_payload: int) -> BodyView:
    view = _json("batch_ack", body)
    if view.kind != "batch_ack":
        return view
    d = view.value
    if not isinstance(d, dict):
        return BodyView("error", body, ["batch ack body is not a JSON object"])
    acks = []
    for n, a in enumerate(d.get("acks") or []):
        if not isinstance(a, dict):
            view.errors.append(f"acks[{n}]: not an object")
            continue
        ack = {long: a.get(short, a.get(long)) for short, long in _ACK_NAMES}
        bits = a.get("b", a.get("bitSet"))
        try:
            start = int(ack["startOffset"] or 0)
        except (TypeError, ValueError):
            view.errors.append(f"acks[{n}]: startOffset {ack['startOffset']!r} is not an integer")
            start = 0
        if isinstance(bits, str):
            ack["offsets"] = _bitset_offsets(bits, start, view.errors, f"acks[{n}]")
        else:
            ack["offsets"] = []
            if bits is not None:
                view.errors.append(f"acks[{n}]: bitSet is not a string")
        acks.append(ack)
    view.value = {"brokerName": d.get("brokerName"), "acks": acks}
    return view


# ---------------------------------------------------------------- register broker

def _register_broker(cmd: RemotingCommand, body: bytes, max_payload: int) -> BodyView:
    flagged = (_ext(cmd, "compressed") or "").lower() == "true"
    if body.lstrip()[:1] == b"{":
        view = _json("register_broker", body)
        if flagged:
            view.errors.insert(0, "header says compressed but the body is JSON")
        return view
    # 5.x always writes compressed=false, so recognise the zlib header byte too
    if flagged or body[:1] == b"\x78":
        value, errors = decode_register_broker(body, max_payload)
        if value is None:
            return BodyView("error", body, errors)
        return BodyView("register_broker", value, errors)
    view = _generic(body)
    view.errors.insert(0, "register broker body is neither JSON nor zlib")
    return view


def _parse_topic_config(text: str) -> dict[str, Any]:
    """``TopicConfig.decode``: ``name read write perm filterType [attributes JSON]``."""
    parts = text.split(" ", 5)
    if len(parts) < 5:
        raise ValueError(f"topic config {text[:80]!r} has {len(parts)} fields, want at least 5")
    tc: dict[str, Any] = {
        "topicName": parts[0], "readQueueNums": int(parts[1]), "writeQueueNums": int(parts[2]),
        "perm": int(parts[3]), "topicFilterType": parts[4],
    }
    if len(parts) == 6:
        tc["attributes"] = fastjson.loads(parts[5])
    return tc


def decode_register_broker(body: bytes, max_size: int = DEFAULT_MAX_PAYLOAD) -> tuple[dict[str, Any] | None, list[str]]:
    """The zlib form of a RegisterBrokerBody (3.11) in the JSON body's shape."""
    errors: list[str] = []
    try:
        data = decompress_body(body, 0x301, max_size)  # compressed | ZLIB
    except PayloadError as e:
        return None, [f"register broker body: {e}"]
    pos = 0

    def take_int(what: str) -> int:
        nonlocal pos
        if pos + 4 > len(data):
            raise ValueError(f"{what}: need 4 bytes at {pos}, have {len(data) - pos}")
        v: int = _I32.unpack_from(data, pos)[0]
        pos += 4
        return v

    def take_bytes(what: str) -> bytes:
        nonlocal pos
        n = take_int(f"{what} length")
        if n < 0 or pos + n > len(data):
            raise ValueError(f"{what}: length {n} at {pos - 4} exceeds the {len(data)} inflated bytes")
        pos += n
        return data[pos - n:pos]

    wrapper: dict[str, Any] = {}
    out: dict[str, Any] = {"topicConfigSerializeWrapper": wrapper}
    try:
        wrapper["dataVersion"] = fastjson.loads(take_bytes("dataVersion"))
        count = take_int("topic count")
        if count < 0 or count * 4 > len(data) - pos:
            raise ValueError(f"topic count {count} at {pos - 4} does not fit the data")
        table: dict[str, Any] = {}
        for i in range(count):
            at = pos
            raw = take_bytes(f"topic config {i}")
            try:
                tc = _parse_topic_config(raw.decode("utf-8", "replace"))
            except ValueError as e:
                errors.append(f"inflated offset {at}: topic config {i} skipped: {e}")
                continue
            table[tc["topicName"]] = tc
        wrapper["topicConfigTable"] = table
        out["filterServerList"] = fastjson.loads(take_bytes("filter server list"))
        if pos < len(data):
            n = take_int("mapping count")
            if n < 0 or n * 4 > len(data) - pos:
                raise ValueError(f"mapping count {n} at {pos - 4} does not fit the data")
            mappings: dict[str, Any] = {}
            for i in range(n):
                info = fastjson.loads(take_bytes(f"queue mapping {i}"))
                key = info.get("topic") if isinstance(info, dict) else None
                mappings[str(key if key is not None else i)] = info
            wrapper["topicQueueMappingInfoMap"] = mappings
        if pos != len(data):
            errors.append(f"inflated offset {pos}: {len(data) - pos} trailing bytes")
    except ValueError as e:  # includes fastjson.JsonError
        errors.append(f"register broker body: {e}")
        if not wrapper.get("dataVersion"):
            return None, errors
    return out, errors


# ---------------------------------------------------------------- dispatch tables

_Decoder = Callable[[RemotingCommand, bytes, int], BodyView]

_REQUEST_DECODERS: dict[int, _Decoder] = {
    **{c: _messages for c in _MESSAGE_REQUESTS},
    **{c: _send for c in _SEND_V1 | _SEND_V2},
    320: _batch,            # SEND_BATCH_MESSAGE
    34: _heartbeat,         # HEART_BEAT
    103: _register_broker,  # REGISTER_BROKER
    200151: _batch_ack,     # BATCH_ACK_MESSAGE
    41: _plain_json,        # LOCK_BATCH_MQ
    42: _plain_json,        # UNLOCK_BATCH_MQ
    220: _plain_json,       # RESET_CONSUMER_CLIENT_OFFSET (object keys; see reset_offsets)
}

_RESPONSE_DECODERS: dict[int, _Decoder] = {
    **{c: _messages for c in _MESSAGE_RESPONSES},
    105: _topic_route,      # GET_ROUTEINFO_BY_TOPIC
    106: _cluster_info,     # GET_BROKER_CLUSTER_INFO
    38: _consumer_list,     # GET_CONSUMER_LIST_BY_GROUP
    41: _plain_json,        # LOCK_BATCH_MQ
}
