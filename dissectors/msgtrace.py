"""RocketMQ message-trace records: the bodies clients with ``enableMsgTrace`` send to the trace
topic (``RMQ_SYS_TRACE_TOPIC`` or a custom one).

A body is text: records end with U+0002, fields within a record are separated by U+0001,
the first field names the record type.  Layouts per type (the Java client's trace encoder;
older clients write the shorter forms, absent values are written as ``null``):

* ``Pub``: type, timestamp, region, group, topic, msgId, tags, keys, storeHost, bodyLength,
  costTime, msgType, [offsetMsgId,] success[, clientHost]
* ``SubBefore``: type, timestamp, region, group, requestId, msgId, retryTimes, keys
* ``SubAfter``: type, requestId, msgId, costTime, success, keys[, contextCode[, timestamp, group]]
* ``EndTransaction``: type, timestamp, region, group, topic, msgId, tags, keys, storeHost,
  msgType, transactionId, transactionState, fromTransactionCheck
* ``Recall``: type, timestamp, region, group, topic, msgId, success

``msgId`` is the message's unique key (UNIQ_KEY).  A record that does not fit its layout is
returned with ``problem`` set, never raised; decoding goes on with the next record.
"""
from __future__ import annotations

import zlib
from dataclasses import dataclass, field
from typing import Any

__all__ = ["TraceRecord", "parse_trace_body", "looks_like_trace_body", "TRACE_TOPIC", "TYPES",
           "MAX_RECORDS", "MAX_BODY"]

TRACE_TOPIC = "RMQ_SYS_TRACE_TOPIC"
TYPES = ("Pub", "SubBefore", "SubAfter", "EndTransaction", "Recall")
MAX_RECORDS = 4096  # records decoded per body; the rest are reported as one problem record
MAX_BODY = 4 * 1024 * 1024  # bytes a (zlib-compressed) trace body is inflated to at most
FIELD_SEP = "\x01"
RECORD_SEP = "\x02"

# org.apache.rocketmq.common.message.MessageType and ConsumeReturnType, by ordinal
MSG_TYPES = ("Normal_Msg", "Trans_Msg_Half", "Trans_msg_Commit", "Delay_Msg", "Order_Msg")
CONSUME_RETURN = ("SUCCESS", "TIME_OUT", "EXCEPTION", "RETURNNULL", "FAILED")

_STARTS = tuple((t + FIELD_SEP).encode() for t in TYPES)


@dataclass(frozen=True, slots=True)
class TraceRecord:
    """One message-trace record.  ``msg_id`` is the traced message's unique key; ``cost_ms``
    the client-side send or consume time; ``extra`` the type's other fields (region,
    request_id, retry_times, msg_type, consume_return, transaction_id …)."""

    type: str
    msg_id: str | None = None
    offset_msg_id: str | None = None
    topic: str | None = None
    tags: str | None = None
    keys: list[str] = field(default_factory=list)
    group: str | None = None
    client_host: str | None = None
    store_host: str | None = None
    cost_ms: int | None = None
    success: bool | None = None
    timestamp_ms: int | None = None
    extra: dict[str, str] = field(default_factory=dict)
    problem: str | None = None

    def to_json(self) -> dict[str, Any]:
        d: dict[str, Any] = {
            "type": self.type, "msg_id": self.msg_id, "offset_msg_id": self.offset_msg_id, "topic": self.topic,
            "tags": self.tags, "keys": list(self.keys), "group": self.group, "client_host": self.client_host,
            "store_host": self.store_host, "cost_ms": self.cost_ms, "success": self.success,
            "timestamp_ms": self.timestamp_ms,
        }
        if self.extra:
            d["extra"] = dict(self.extra)
        if self.problem is not None:
            d["problem"] = self.problem
        return d


def looks_like_trace_body(body: bytes) -> bool:
    """True when ``body`` starts like a trace record (any topic: trace topics can be custom),
    or is zlib-compressed (a trace record's first byte is never ``x``)."""
    return body.startswith(_STARTS) or (body[:1] == b"\x78" and looks_like_trace_body(_inflate(body, 64)[0]))


def _inflate(body: bytes, limit: int) -> tuple[bytes, str | None]:
    try:
        d = zlib.decompressobj()
        out = d.decompress(body, limit)
        return out, (f"inflated body longer than {limit} bytes: cut" if d.unconsumed_tail else None)
    except zlib.error as e:
        return b"", f"compressed body not inflated: {e}"


def _text(v: str | None) -> str | None:
    return None if v is None or v in ("", "null") else v


def _int(v: str | None) -> int | None:
    try:
        return int(v) if v is not None else None
    except ValueError:
        return None


def _bool(v: str | None) -> bool | None:
    return {"true": True, "false": False}.get(v or "")


def _keys(v: str | None) -> list[str]:
    t = _text(v)
    return [k for k in t.split(" ") if k] if t else []


def _ordinal(names: tuple[str, ...], v: str | None) -> str | None:
    n = _int(v)
    if n is None:
        return _text(v)
    return names[n] if 0 <= n < len(names) else str(n)


def _extra(**kw: str | None) -> dict[str, str]:
    return {k: v for k, v in kw.items() if v is not None}


def _pub(f: list[str]) -> TraceRecord:
    n = len(f)
    if n < 13:
        return TraceRecord("Pub", _text(f[5]) if n > 5 else None, problem=f"Pub record has {n} fields, 13-15 expected")
    offset_id, success = (None, f[12]) if n == 13 else (f[12], f[13])
    r = TraceRecord("Pub", _text(f[5]), _text(offset_id), _text(f[4]), _text(f[6]), _keys(f[7]), _text(f[3]),
                    _text(f[14]) if n >= 15 else None, _text(f[8]), _int(f[10]), _bool(success), _int(f[1]),
                    _extra(region=_text(f[2]), body_length=f[9], msg_type=_ordinal(MSG_TYPES, f[11])))
    return _checked(r, f, (1, 9, 10))


def _sub_before(f: list[str]) -> TraceRecord:
    if len(f) < 8:
        return TraceRecord("SubBefore", problem=f"SubBefore record has {len(f)} fields, 8 expected")
    r = TraceRecord("SubBefore", _text(f[5]), keys=_keys(f[7]), group=_text(f[3]), timestamp_ms=_int(f[1]),
                    extra=_extra(region=_text(f[2]), request_id=_text(f[4]), retry_times=f[6]))
    return _checked(r, f, (1, 6))


def _sub_after(f: list[str]) -> TraceRecord:
    n = len(f)
    if n < 6:
        return TraceRecord("SubAfter", problem=f"SubAfter record has {n} fields, 6-9 expected")
    r = TraceRecord("SubAfter", _text(f[2]), keys=_keys(f[5]), group=_text(f[8]) if n >= 9 else None,
                    cost_ms=_int(f[3]), success=_bool(f[4]), timestamp_ms=_int(f[7]) if n >= 9 else None,
                    extra=_extra(request_id=_text(f[1]),
                                 consume_return=_ordinal(CONSUME_RETURN, f[6]) if n >= 7 else None))
    return _checked(r, f, (3,) + ((7,) if n >= 9 else ()))


def _end_transaction(f: list[str]) -> TraceRecord:
    if len(f) < 13:
        return TraceRecord("EndTransaction", problem=f"EndTransaction record has {len(f)} fields, 13 expected")
    r = TraceRecord("EndTransaction", _text(f[5]), topic=_text(f[4]), tags=_text(f[6]), keys=_keys(f[7]),
                    group=_text(f[3]), store_host=_text(f[8]), timestamp_ms=_int(f[1]),
                    extra=_extra(region=_text(f[2]), msg_type=_ordinal(MSG_TYPES, f[9]),
                                 transaction_id=_text(f[10]), transaction_state=_text(f[11]),
                                 from_transaction_check=f[12]))
    return _checked(r, f, (1,))


def _recall(f: list[str]) -> TraceRecord:
    if len(f) < 7:
        return TraceRecord("Recall", problem=f"Recall record has {len(f)} fields, 7 expected")
    r = TraceRecord("Recall", _text(f[5]), topic=_text(f[4]), group=_text(f[3]), success=_bool(f[6]),
                    timestamp_ms=_int(f[1]), extra=_extra(region=_text(f[2])))
    return _checked(r, f, (1,))


def _checked(r: TraceRecord, f: list[str], numeric: tuple[int, ...]) -> TraceRecord:
    bad = [i for i in numeric if _int(f[i]) is None]
    if not bad:
        return r
    return TraceRecord(r.type, r.msg_id, r.offset_msg_id, r.topic, r.tags, r.keys, r.group, r.client_host,
                       r.store_host, r.cost_ms, r.success, r.timestamp_ms, r.extra,
                       f"{r.type} field {bad[0]} ({f[bad[0]]!r}) is not a number")


_PARSERS = {"Pub": _pub, "SubBefore": _sub_before, "SubAfter": _sub_after, "EndTransaction": _end_transaction,
            "Recall": _recall}


def parse_trace_body(body: bytes) -> list[TraceRecord]:
    """The records of one trace message body (zlib-compressed bodies are inflated).  Records
    that do not fit their layout carry ``problem``; nothing is raised."""
    out: list[TraceRecord] = []
    if body[:1] == b"\x78":
        body, err = _inflate(body, MAX_BODY)
        if err is not None:
            out.append(TraceRecord("unknown", problem=err))
    text = body.decode("utf-8", "replace")
    records = [r for r in text.split(RECORD_SEP) if r.strip()]
    for rec in records[:MAX_RECORDS]:
        fields = rec.split(FIELD_SEP)
        kind = fields[0].strip()
        parse = _PARSERS.get(kind)
        if parse is None:
            out.append(TraceRecord("unknown", problem=f"unknown trace record type {kind[:40]!r}"))
        else:
            out.append(parse(fields))
    if len(records) > MAX_RECORDS:
        out.append(TraceRecord("unknown", problem=f"{len(records) - MAX_RECORDS} records past {MAX_RECORDS} "
                                                  "not decoded"))
    return out
