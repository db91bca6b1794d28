"""Exchanges as JSON objects and as table rows (``rmqsniff read``), for every protocol
(remoting here, gRPC via :mod:`.grpc_json`, others from the stats classifier)."""
from __future__ import annotations

import datetime as _dt
from typing import Any

from dissectors.remoting import codes, headers

from ..model import ANSWERED, ONEWAY, ORPHAN, UNANSWERED, Exchange, Message
from ..stats import CLASSIFIERS, GENERIC


def _side(m: Message, is_response: bool, request: Message | None, redact: bool) -> dict[str, Any]:
    cmd = m.command
    ext = headers.redact_ext(cmd.ext, redact)
    if ext is not None and not is_response:
        ext = headers.long_ext(type(cmd)(cmd.code, cmd.flag, cmd.opaque, ext=ext))
    d: dict[str, Any] = {
        "ts": m.ts,
        "code": cmd.code,
        "name": codes.response_name(cmd.code) if is_response else codes.request_name(cmd.code),
        "opaque": cmd.opaque,
        "flag": cmd.flag,
        "language": cmd.language,
        "version": cmd.version,
        "version_name": codes.version_name(cmd.version),
        "serialize": cmd.serialize_name,
        "remark": cmd.remark,
        "ext": ext,
        "body_len": cmd.body_len,
        "frame_len": m.size,
        "from": "client" if m.from_client else "server",
    }
    if cmd.code_truncated:
        d["wire_code"] = cmd.wire_code
        d["code_truncated"] = True
    return d


def _remoting_sides(ex: Exchange, redact: bool) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
    return (_side(ex.request, False, None, redact) if ex.request else None,
            _side(ex.response, True, ex.request, redact) if ex.response else None)


def _grpc_sides(ex: Exchange, redact: bool) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
    from .grpc_json import grpc_sides

    return grpc_sides(ex, redact)


def _generic_sides(ex: Exchange, redact: bool) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
    cl = CLASSIFIERS.get(ex.protocol, GENERIC)

    def side(m: Message | None, is_resp: bool) -> dict[str, Any] | None:
        if m is None:
            return None
        code = m.command.code
        return {"ts": m.ts, "code": code, "name": cl.response_name(code) if is_resp else cl.request_name(code),
                "frame_len": m.size, "from": "client" if m.from_client else "server"}
    return side(ex.request, False), side(ex.response, True)


# (request, response) JSON objects per protocol
SIDES = {"remoting": _remoting_sides, "rocketmq": _remoting_sides, "grpc": _grpc_sides}


def exchange_to_dict(ex: Exchange, redact: bool = True) -> dict[str, Any]:
    """The JSONL form of an exchange; secrets redacted unless ``redact`` is False."""
    req, resp = SIDES.get(ex.protocol, _generic_sides)(ex, redact)
    out: dict[str, Any] = {
        "index": ex.index,
        "connection": ex.connection.to_dict(),
        "protocol": ex.protocol,
        "status": ex.status,
        "latency_ms": None if ex.latency_ms is None else round(ex.latency_ms, 3),
        "request": req,
        "response": resp,
    }
    if ex.request is not None and ex.response is not None:
        out["result"] = CLASSIFIERS.get(ex.protocol, GENERIC).classify(ex.request.command.code,
                                                                      ex.response.command.code)
    if ex.server_initiated:
        out["initiator"] = "server"
    if ex.notes:
        out["notes"] = list(ex.notes)
    return out


STATUS_STYLE = {ANSWERED: "green", UNANSWERED: "yellow", ONEWAY: "cyan", ORPHAN: "magenta"}
COLUMNS = ("#", "time", "connection", "request", "topic/group", "status", "response", "ms", "bytes")


def row(ex: Exchange) -> tuple[str, ...]:
    """One table row: index, time, connection, request name, topic/group, status, answer, latency, bytes."""
    req = ex.request.command if ex.request else None
    resp = ex.response.command if ex.response else None
    cl = CLASSIFIERS.get(ex.protocol, GENERIC)
    t = _dt.datetime.fromtimestamp(ex.ts, _dt.timezone.utc).strftime("%H:%M:%S.%f")[:-3]
    name = cl.request_name(req.code) if req else "-"
    where = ""
    if req is not None:
        topic, group = cl.topic_of(req), cl.group_of(req)
        where = "/".join(x for x in (topic, group) if x)
    answer = cl.response_name(resp.code) if resp else "-"
    lat = f"{ex.latency_ms:.3f}" if ex.latency_ms is not None else "-"
    size = (ex.request.size if ex.request else 0) + (ex.response.size if ex.response else 0)
    direction = "<-" if ex.server_initiated else "->"
    conn = ex.connection
    label = f"{conn.client[0]}:{conn.client[1]} {direction} {conn.server[0]}:{conn.server[1]}"
    return (str(ex.index), t, label, name, where, ex.status, answer, lat, str(size))


def result_of(ex: Exchange) -> str:
    """success / no_message / error / unanswered / oneway / orphan: what to colour a row by."""
    if ex.request is not None and ex.response is not None:
        return CLASSIFIERS.get(ex.protocol, GENERIC).classify(ex.request.command.code, ex.response.command.code)
    return ex.status
