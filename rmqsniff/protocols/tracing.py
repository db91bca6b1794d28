"""What every protocol's messages say about tracing: the trace context in their properties
(:mod:`dissectors.tracectx`) and, for messages of a trace topic, RocketMQ message-trace
records (:mod:`dissectors.msgtrace`).  Each protocol builds its ``trace_id`` filter field
with :func:`trace_id_field` over its own message rows, so nothing here knows a protocol.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any, cast

from dissectors.msgtrace import TraceRecord, looks_like_trace_body, parse_trace_body
from dissectors.tracectx import TraceContext, trace_context

from ..model import Exchange, MessageRow
from ..tree import MAX_CHILDREN, Node
from .base import Getter

__all__ = ["trace_of", "trace_records_of", "trace_id_field", "trace_json", "records_json", "trace_text", "detail"]


def trace_of(row: MessageRow) -> TraceContext | None:
    """The trace context a message carries in its properties, or None."""
    return trace_context(row.properties) if row.properties else None


def trace_records_of(row: MessageRow) -> list[TraceRecord] | None:
    """The message-trace records of a trace-topic message's body (None for other messages)."""
    return parse_trace_body(row.body) if row.body and looks_like_trace_body(row.body) else None


def trace_json(row: MessageRow) -> dict[str, Any] | None:
    tc = trace_of(row)
    return tc.to_json() if tc is not None else None


def records_json(row: MessageRow) -> list[dict[str, Any]] | None:
    recs = trace_records_of(row)
    return [r.to_json() for r in recs] if recs is not None else None


def trace_text(row: MessageRow) -> str:
    """One table cell: ``w3c:<trace id>`` (``!`` marks a malformed value), or the record types of
    a trace-topic body (``msgtrace Pub×2 SubAfter``), or ``-``."""
    tc = trace_of(row)
    if tc is not None:
        return f"{tc.format}{'!' if tc.problem else ''}:{tc.trace_id or '-'}"
    recs = trace_records_of(row)
    if recs:
        counts: dict[str, int] = {}
        for r in recs:
            counts[r.type] = counts.get(r.type, 0) + 1
        return "msgtrace " + " ".join(t if n == 1 else f"{t}×{n}" for t, n in counts.items())
    return "-"


def trace_id_field(messages: Callable[[Exchange], list[MessageRow]]) -> Getter:
    """The ``trace_id`` filter field over a protocol's message rows: the trace ids of the messages
    an exchange carries (None when none carries one).  The last exchange's answer is kept,
    since one filter may ask more than once."""
    last: list[Any] = [None, None]

    def get(ex: Exchange) -> tuple[str, ...] | None:
        if last[0] is ex:
            return cast("tuple[str, ...] | None", last[1])
        ids: list[str] = []
        for r in messages(ex):
            tc = trace_of(r)
            if tc is not None and tc.trace_id:
                ids.append(tc.trace_id)
        out = tuple(dict.fromkeys(ids)) or None
        last[0], last[1] = ex, out
        return out
    return get


def detail(root: Node, rows: list[MessageRow]) -> None:
    """A ``trace`` branch under ``root`` for every message that carries a trace context or is a
    message-trace record body."""
    from ..tree import json_node

    for i, r in enumerate(rows[:MAX_CHILDREN]):
        tc = trace_of(r)
        if tc is not None:
            n = root.add(f"message {i} trace: {tc.format} trace id {tc.trace_id or '-'} span {tc.span_id or '-'}"
                         + (f"  (problem: {tc.problem})" if tc.problem else ""))
            for k, v in tc.to_json().items():
                json_node(n, k, v)
        recs = trace_records_of(r)
        if recs is not None:
            n = root.add(f"message {i} message-trace records: {len(recs)}")
            for j, rec in enumerate(recs[:MAX_CHILDREN]):
                json_node(n, f"[{j}] {rec.type} {rec.msg_id or '-'}", rec.to_json())
