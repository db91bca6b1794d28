"""gRPC exchanges as JSON objects (the gRPC counterpart of ``exchanges._side``)."""
from __future__ import annotations

from typing import Any

from dissectors.grpc.call import GrpcMessage, GrpcPayload, method_name, response_code_name
from dissectors.grpc.messages import jsonable

from ..model import Exchange, Message


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
        d["trailers"] = [list(h) for h in cmd.trailers]
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


def grpc_sides(ex: Exchange, redact: bool = True) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
    """(request, response) JSON objects of a gRPC exchange; secrets redacted unless ``redact`` is False."""
    req = _side(ex.request, False, redact) if ex.request is not None else None
    resp = _side(ex.response, True, redact) if ex.response is not None else None
    return req, resp
