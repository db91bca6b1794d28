"""Journeys as OpenTelemetry traces: one OTLP/JSON ``ExportTraceServiceRequest`` with one span
per hop (``export --format otlp``).

A journey's spans share one trace id: the message's own trace context's (``traceparent``…)
when it carries one, so the hops join the application's trace, else one derived from its
unique key.  The first hop's span is the parent of the others; with a trace context it is
itself the child of the message's span.  Ids are hex, as OTLP/JSON wants (not base64).
Written as it goes: memory does not grow with the number of spans.
"""
from __future__ import annotations

import hashlib
from collections.abc import Iterable
from typing import IO, Any

import orjson

from ..journey import Journey

SCOPE = "rmqsniff.journey"
# OTLP SpanKind
_INTERNAL, _PRODUCER, _CONSUMER = 1, 4, 5
_KIND_OF = {"sent": _PRODUCER, "delivered": _CONSUMER, "acked": _CONSUMER, "retried": _CONSUMER,
            "invisible_changed": _CONSUMER}
_OK_RESULTS = frozenset({"SUCCESS", "OK", "success"})
_HEX = frozenset("0123456789abcdef")


def _digest(text: str, n: int) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[: 2 * n]


def _hex_id(value: str | None, n: int) -> str | None:
    """``value`` as an id of ``n`` bytes when it is one (hex, not all zero), else None."""
    if not value:
        return None
    v = value.lower()
    return v if len(v) == 2 * n and set(v) <= _HEX and v.strip("0") else None


def trace_id_of(j: Journey) -> str:
    """The message's own trace id (32 hex digits; another form is hashed to one), else one
    derived from its unique key (or offset message id)."""
    own = str((j.trace or {}).get("trace_id") or "")
    if own:
        return _hex_id(own, 16) or _digest(f"trace:{own}", 16)
    names = [j.unique_key, *j.offset_msg_ids, *j.names]
    return _digest(f"rmqsniff:{next((x for x in names if x), '?')}", 16)


def _value(v: Any) -> dict[str, Any]:
    if isinstance(v, bool):
        return {"boolValue": v}
    if isinstance(v, int):
        return {"intValue": str(v)}
    if isinstance(v, float):
        return {"doubleValue": v}
    if isinstance(v, (list, tuple)):
        return {"arrayValue": {"values": [_value(x) for x in v]}}
    return {"stringValue": str(v)}


def _attrs(d: dict[str, Any]) -> list[dict[str, Any]]:
    return [{"key": k, "value": _value(v)} for k, v in d.items() if v is not None and not isinstance(v, dict)]


def journey_spans(j: Journey) -> list[dict[str, Any]]:
    """One OTLP span per hop of ``j``, time-ordered."""
    trace_id = trace_id_of(j)
    parent = _hex_id(str((j.trace or {}).get("span_id") or ""), 8) or ""
    root = ""
    out = []
    for n, h in enumerate(j.hops_in_order()):
        e = h.event
        span_id = _digest(f"{trace_id}:{j.unique_key}:{n}:{e.kind}:{e.exchange}", 8)
        ns = str(int(round(e.ts * 1e9)))
        a: dict[str, Any] = {
            "messaging.system": "rocketmq", "messaging.operation.name": e.kind,
            "messaging.destination.name": e.topic or j.topic, "messaging.message.id": j.unique_key,
            "messaging.rocketmq.message.tag": j.tags, "messaging.rocketmq.message.keys": list(j.keys) or None,
            "messaging.consumer.group.name": e.info.get("group") if e.kind != "sent" else None,
            "rmqsniff.protocol": e.protocol, "rmqsniff.exchange": e.exchange, "rmqsniff.connection": e.connection,
            "rmqsniff.capture": h.capture,
        }
        a |= {f"rmqsniff.{k}": v for k, v in e.info.items() if k != "group" or e.kind == "sent"}
        result = e.info.get("result")
        span: dict[str, Any] = {
            "traceId": trace_id, "spanId": span_id, "parentSpanId": root or parent,
            "name": f"{e.kind} {e.topic or j.topic or ''}".rstrip(), "kind": _KIND_OF.get(e.kind, _INTERNAL),
            "startTimeUnixNano": ns, "endTimeUnixNano": ns, "attributes": _attrs(a),
            "status": {"code": 2, "message": str(result)} if result and result not in _OK_RESULTS else {},
        }
        if not span["parentSpanId"]:
            del span["parentSpanId"]
        out.append(span)
        root = root or span_id
    return out


def write_otlp(journeys: Iterable[Journey], f: IO[str], service: str = "rmqsniff") -> int:
    """Write one ``ExportTraceServiceRequest`` (OTLP/JSON); returns the number of spans."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        ver = version("rmqsniff")
    except PackageNotFoundError:  # pragma: no cover - run from a source tree
        ver = "0"
    head = {"resource": {"attributes": _attrs({"service.name": service})},
            "scopeSpans": [{"scope": {"name": SCOPE, "version": ver}, "spans": []}]}
    text = orjson.dumps({"resourceSpans": [head]}).decode()
    cut = text.index('"spans":[') + len('"spans":[')
    f.write(text[:cut])
    n = 0
    for j in journeys:
        for span in journey_spans(j):
            f.write(("," if n else "") + orjson.dumps(span).decode())
            n += 1
    f.write(text[cut:] + "\n")
    return n
