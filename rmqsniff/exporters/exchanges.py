"""Exchanges as JSON objects and as table rows (``rmqsniff read``), for every protocol
(each protocol's sides come from :mod:`rmqsniff.protocols`)."""
from __future__ import annotations

import datetime as _dt
from collections.abc import Callable
from typing import Any

from ..model import ANSWERED, ONEWAY, ORPHAN, UNANSWERED, Exchange
from ..protocols import protocol_of
from ..text import shown


def exchange_to_dict(ex: Exchange, redact: bool = True) -> dict[str, Any]:
    """The JSONL form of an exchange; secrets redacted unless ``redact`` is False."""
    proto = protocol_of(ex)
    req, resp = proto.sides(ex, redact)
    out: dict[str, Any] = {
        "index": ex.index,
        "connection": ex.connection.to_dict(),
        "protocol": ex.protocol,
        "status": ex.status,
        "latency_ms": None if ex.latency_ms is None else round(ex.latency_ms, 3),
        "request": req,
        "response": resp,
    }
    result = proto.result(ex)
    if result is not None:
        out["result"] = result
    if ex.server_initiated:
        out["initiator"] = "server"
    if ex.notes:
        out["notes"] = list(ex.notes)
    tls = ex.connection.tls
    if tls is not None and "cipher" in tls:  # decoded from TLS (only decrypted bytes become exchanges)
        out["tls"] = {"version": tls.get("version"), "cipher": tls["cipher"]}
    return out


STATUS_STYLE = {ANSWERED: "green", UNANSWERED: "yellow", ONEWAY: "cyan", ORPHAN: "magenta"}
COLUMNS = ("#", "time", "connection", "request", "topic/group", "status", "response", "ms", "bytes")


def row(ex: Exchange, time_text: Callable[[float], str] | None = None) -> tuple[str, ...]:
    """One table row: index, time (``time_text``, default UTC time of day), connection, request name,
    topic/group, status, answer, latency, bytes (wire text with its control characters escaped: the
    row is for a terminal)."""
    req = ex.request.command if ex.request else None
    resp = ex.response.command if ex.response else None
    cl = protocol_of(ex).classifier
    t = time_text(ex.ts) if time_text is not None else _dt.datetime.fromtimestamp(
        ex.ts, _dt.timezone.utc).strftime("%H:%M:%S.%f")[:-3]
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
    if conn.tls:
        label += " 🔒"  # decoded from TLS
    return (str(ex.index), t, label, shown(name), shown(where), ex.status, shown(answer), lat, str(size))


def result_of(ex: Exchange) -> str:
    """success / no_message / error / unanswered / oneway / orphan: what to colour a row by."""
    return protocol_of(ex).result(ex) or ex.status


def exchange_record(ex: Exchange) -> dict[str, Any]:
    """The flat, typed columns of an exchange (CSV and Parquet exports): ``ts`` in seconds,
    ``latency_ms``, absent values None."""
    from ..filter import getter

    d = exchange_to_dict(ex)
    req, resp = d["request"], d["response"]  # both protocols' sides carry code and name
    return {
        "index": ex.index, "ts": ex.ts, "protocol": ex.protocol, "connection": ex.connection.id,
        "client": d["connection"]["client"], "server": d["connection"]["server"], "status": ex.status,
        "result": result_of(ex), "code": req["code"] if req else None, "name": req["name"] if req else None,
        "response_code": resp["code"] if resp else None, "response_name": resp["name"] if resp else None,
        "opaque": getter("opaque")(ex), "topic": getter("topic")(ex), "group": getter("group")(ex),
        "latency_ms": d["latency_ms"], "request_bytes": ex.request.size if ex.request else None,
        "response_bytes": ex.response.size if ex.response else None,
    }
