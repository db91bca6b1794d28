"""gRPC exchanges shown: JSON sides (``read --format json``, ``/exchanges``) and follow entries."""
from __future__ import annotations

from typing import Any

import orjson

from dissectors.grpc.call import (
    GrpcMessage,
    GrpcPayload,
    method_name,
    redact_value,
    response_code_name,
)
from dissectors.grpc.messages import jsonable

from ...model import Exchange, Message
from ..base import Side, follow_entry


def _payload(p: GrpcPayload) -> dict[str, Any]:
    d: dict[str, Any] = {"type": p.type_name, "size": p.wire_size, "compressed": p.compressed, "ts": p.ts}
    if p.message is not None:
        d["decoded"] = jsonable(p.decoded)
    else:
        d["raw"] = jsonable(p.data)
    if p.error:
        d["error"] = p.error
    return d


def _side(m: Message, is_response: bool, redact: bool) -> dict[str, Any]:
    cmd: GrpcMessage = m.command
    d: dict[str, Any] = {
        "ts": m.ts,
        "code": cmd.code,
        "name": response_code_name(cmd.code) if is_response else method_name(cmd.code),
        "stream_id": cmd.stream_id,
        "method": cmd.method,
        "path": cmd.path,
        "headers": [list(h) for h in cmd.redacted_headers(redact)],
        "messages": [_payload(p) for p in cmd.messages],
        "frame_len": m.size,
        "from": "client" if m.from_client else "server",
    }
    if not is_response:
        d["method_from"] = cmd.how or "unknown"
        d["metadata"] = cmd.metadata(redact)
    else:
        d["trailers"] = [[k, redact_value(k, v) if redact else v] for k, v in cmd.trailers]
        d["grpc_status"] = cmd.grpc_status
        d["grpc_message"] = cmd.grpc_message
        d["status_code"] = cmd.status_code
        d["status_message"] = cmd.status_message
    if not cmd.headers_seen:
        d["headers_seen"] = False
    if cmd.unresolved:
        d["unresolved_headers"] = cmd.unresolved
    if cmd.dropped:
        d["messages_dropped"] = cmd.dropped
    return d


def sides(ex: Exchange, redact: bool = True) -> tuple[Side, Side]:
    """(request, response) JSON objects of a gRPC exchange; secrets redacted unless ``redact`` is False."""
    req = _side(ex.request, False, redact) if ex.request is not None else None
    resp = _side(ex.response, True, redact) if ex.response is not None else None
    return req, resp


def _payload_line(p: GrpcPayload) -> str:
    head = f"{p.type_name or 'message'} ({p.wire_size} B{', compressed' if p.compressed else ''})"
    if p.message is not None:
        return f"{head}: " + orjson.dumps(jsonable(p.decoded), default=str).decode()
    return f"{head}: not decoded" + (f" ({p.error})" if p.error else "")


def follow(ex: Exchange, m: Message, redact: bool) -> dict[str, Any]:
    """One side of a call in ``follow``: every message of the stream decoded, one line each."""
    is_resp = m is ex.response
    side = sides(ex, redact)[1 if is_resp else 0] or {}
    cmd: GrpcMessage = m.command
    ext = {str(k): str(v) for k, v in (side.get("metadata") or {}).items()} or None
    lines = [_payload_line(p) for p in cmd.messages]
    if cmd.dropped:
        lines.append(f"({cmd.dropped} more message(s) not kept)")
    if is_resp and cmd.grpc_status is not None:
        lines.append(f"grpc-status {cmd.grpc_status} {cmd.grpc_message or ''}".rstrip())
    remark = cmd.status_message if is_resp else None
    return follow_entry(ex, m, side.get("name", str(cmd.code)), cmd.stream_id, None, remark, ext, lines, side)
