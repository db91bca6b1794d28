"""Views over exchanges that answer operators' questions.

* :func:`messages_of` — the messages an exchange carries (sent, batch-sent, pulled,
  popped, ...), one :class:`MessageRow` each (``rmqsniff read --messages``);
* :func:`conversation` / :func:`render_conversation` — one connection's frames in
  order, both directions, decoded (``rmqsniff follow``);
* :func:`restat`, :func:`grouped_rows` — stats tables per code/topic/group/client/broker
  (``rmqsniff stats --by``); :func:`interval_rows` — the same per time interval.

Protocol-specific extraction sits in :data:`MESSAGE_EXTRACTORS` (one function per
protocol), like the filter's field tables.
"""
from __future__ import annotations

import datetime as _dt
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from dissectors.remoting import bodies, codes, headers
from dissectors.remoting.message import PayloadError, decode_offset_msg_id, parse_properties

from .filter import getter
from .model import Connection, Exchange, Message, _ep
from .stats import CLASSIFIERS, GENERIC, NONE, Stats, bucket_of, bucket_percentiles

# ---------------------------------------------------------------- messages


@dataclass(slots=True)
class MessageRow:
    """One message carried by an exchange."""

    exchange: int
    ts: float
    kind: str  # sent, batch-sent, pulled, popped, peeked, queried, checked, consumed
    connection: str
    topic: str | None = None
    queue: int | None = None
    offset: int | None = None
    msg_id: str | None = None  # offset message id (store host + commit-log offset)
    unique_key: str | None = None  # UNIQ_KEY, the client's message id
    tags: str | None = None
    keys: list[str] = field(default_factory=list)
    properties: dict[str, str] = field(default_factory=dict)
    born_host: str | None = None
    born_ts: int | None = None  # ms
    store_host: str | None = None
    store_ts: int | None = None  # ms
    body: bytes = b""
    result: str | None = None  # the answer's name, "unanswered" or "oneway"
    notes: list[str] = field(default_factory=list)

    @property
    def ids(self) -> tuple[str, ...]:
        return tuple(x for x in (self.unique_key, self.msg_id) if x)


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


def _remoting_messages(ex: Exchange) -> list[MessageRow]:
    req = ex.request.command if ex.request is not None else None
    resp = ex.response.command if ex.response is not None else None
    conn = ex.connection.label
    out: list[MessageRow] = []
    if req is not None and req.code in codes.SEND_REQUESTS:
        ext = headers.long_ext(req)
        rext = (resp.ext or {}) if resp is not None else {}
        ok = resp is not None and codes.classify(req.code, resp.code) == codes.SUCCESS_CLASS
        queue = _int(rext.get("queueId")) if ok else None
        if queue is None:
            queue = _int(ext.get("queueId"))
        first = _int(rext.get("queueOffset")) if ok else None
        ids = [x for x in rext.get("msgId", "").split(",")] if ok and rext.get("msgId") else []
        base = MessageRow(ex.index, ex.request.ts, "sent", conn, topic=ext.get("topic"), queue=queue,
                          born_host=_ep(ex.connection.client) if not ex.server_initiated else None,
                          born_ts=_int(ext.get("bornTimestamp")), result=_result(ex))
        view = bodies.decode_body(req)
        hdr_props = parse_properties(ext.get("properties") or "")
        if view.kind == "batch":
            for i, m in enumerate(view.value):
                props = dict(m.properties)
                out.append(_with(base, kind="batch-sent", offset=None if first is None else first + i,
                                 msg_id=ids[i] if i < len(ids) else None, properties=props, body=m.body,
                                 notes=list(view.errors)))
        else:
            body = view.value if view.kind == "message" else (req.body or b"")
            out.append(_with(base, offset=first, msg_id=ids[0] if ids else None, properties=hdr_props,
                             body=bytes(body or b""), notes=list(view.errors)))
        for r in out:
            if r.msg_id:
                try:
                    host, port, _ = decode_offset_msg_id(r.msg_id)
                    r.store_host = _ep((host, port))
                except ValueError:
                    pass
        return out
    stored: list[tuple[str, Any, Message, list[str]]] = []
    if resp is not None and req is not None and resp.body and codes.classify(req.code, resp.code) == "success":
        kind = _CONSUME_KINDS.get(req.code)
        if kind is not None:
            view = bodies.decode_body(resp, req)
            if view.kind == "messages":
                stored.append((kind, view.value, ex.response, view.errors))
    if req is not None and req.body and req.code in _REQUEST_KINDS:
        view = bodies.decode_body(req)
        if view.kind == "messages":
            stored.append((_REQUEST_KINDS[req.code], view.value, ex.request, view.errors))
    for kind, msgs, carrier, errors in stored:
        for m in msgs:
            notes = list(errors)
            try:
                body = m.payload()
            except PayloadError as e:
                body = m.body
                notes.append(f"body not decompressed: {e}")
            out.append(MessageRow(
                ex.index, carrier.ts, kind, conn, topic=m.topic, queue=m.queue_id, offset=m.queue_offset,
                msg_id=m.msg_id, unique_key=m.unique_key, tags=m.tags, keys=m.keys,
                properties=dict(m.properties), born_host=m.born_host, born_ts=m.born_timestamp,
                store_host=m.store_host, store_ts=m.store_timestamp, body=body, result=_result(ex),
                notes=notes))
    return out


def _with(base: MessageRow, **kw: Any) -> MessageRow:
    props = kw.get("properties") or {}
    r = MessageRow(**{f: getattr(base, f) for f in MessageRow.__dataclass_fields__} | kw)
    r.unique_key = props.get("UNIQ_KEY")
    r.tags = props.get("TAGS")
    r.keys = [k for k in props.get("KEYS", "").split(" ") if k]
    return r


MESSAGE_EXTRACTORS: dict[str, Callable[[Exchange], list[MessageRow]]] = {
    "remoting": _remoting_messages, "rocketmq": _remoting_messages,
}


def messages_of(ex: Exchange) -> list[MessageRow]:
    """The messages ``ex`` carries (empty for exchanges that carry none)."""
    f = MESSAGE_EXTRACTORS.get(ex.protocol)
    return f(ex) if f is not None else []


def is_text(body: bytes) -> str | None:
    """The body as text when it is printable UTF-8, else None."""
    try:
        t = body.decode("utf-8")
    except UnicodeDecodeError:
        return None
    return t if all(c.isprintable() or c in "\t\r\n" for c in t) else None


def preview(body: bytes, limit: int = 48) -> str:
    """A safe one-line preview: text (escaped controls) or hex, cut at ``limit``."""
    t = is_text(body[: limit * 4])
    if t is not None:
        s = t.encode("unicode_escape").decode("ascii") if any(c in t for c in "\t\r\n") else t
        return s if len(s) <= limit and len(body) <= limit * 4 else s[:limit] + "…"
    h = body[: limit // 2].hex()
    return "hex:" + h + ("…" if len(body) > limit // 2 else "")


def full_body(body: bytes) -> str:
    """The whole body: text as is, binary as hex."""
    t = is_text(body)
    return t if t is not None else "hex:" + body.hex()


def _ms_text(ms: int | None) -> str | None:
    if ms is None:
        return None
    try:
        return _dt.datetime.fromtimestamp(ms / 1000, _dt.timezone.utc).isoformat(timespec="milliseconds")
    except (OverflowError, OSError, ValueError):
        return None


def message_to_dict(r: MessageRow, body: bool = False, redact: bool = True) -> dict[str, Any]:
    """The JSON form of a message row (``body``: full body instead of the preview)."""
    props = {k: (headers.REDACTED if redact and headers.is_secret(k) else v) for k, v in r.properties.items()}
    d: dict[str, Any] = {
        "exchange": r.exchange, "ts": r.ts, "kind": r.kind, "connection": r.connection,
        "topic": r.topic, "queue": r.queue, "offset": r.offset, "msg_id": r.msg_id,
        "unique_key": r.unique_key, "tags": r.tags, "keys": r.keys, "properties": props,
        "born_host": r.born_host, "born_ts": r.born_ts, "born_time": _ms_text(r.born_ts),
        "store_host": r.store_host, "store_ts": r.store_ts, "store_time": _ms_text(r.store_ts),
        "body_size": len(r.body), "result": r.result,
    }
    if body:
        d["body"] = full_body(r.body)
    else:
        d["preview"] = preview(r.body)
    if r.notes:
        d["notes"] = r.notes
    return d


MESSAGE_COLUMNS = ("#", "kind", "topic", "queue", "offset", "unique key", "msg id", "tags", "keys",
                   "born", "stored", "bytes", "preview")


def message_row(r: MessageRow) -> tuple[str, ...]:
    """A table row for a message (``MESSAGE_COLUMNS``)."""
    def t(ms: int | None) -> str:
        s = _ms_text(ms)
        return s[11:23] if s else "-"
    born = f"{r.born_host or '-'} {t(r.born_ts)}"
    stored = f"{r.store_host or '-'} {t(r.store_ts)}"
    return (str(r.exchange), r.kind, r.topic or "-", "-" if r.queue is None else str(r.queue),
            "-" if r.offset is None else str(r.offset), r.unique_key or "-", r.msg_id or "-",
            r.tags or "-", " ".join(r.keys) or "-", born, stored, str(len(r.body)), preview(r.body, 32))


# ---------------------------------------------------------------- follow


def resolve_connection(exchanges: Iterable[Exchange], target: str) -> Connection | None:
    """The connection named by ``target``: ``N`` or ``conn:N`` (connection id), ``#N`` or
    ``ex:N`` (the connection of exchange N), or the client's ``ip:port``."""
    t = target.strip()
    by_index = t.startswith(("#", "ex:"))
    num = t.split(":", 1)[1] if t.startswith(("ex:", "conn:")) else t.lstrip("#")
    for ex in exchanges:
        c = ex.connection
        if num.isdigit():
            if (ex.index if by_index else c.id) == int(num):
                return c
        elif t == _ep(c.client):
            return c
    return None


def conversation(exchanges: Iterable[Exchange], conn_id: int) -> list[tuple[Exchange, Message]]:
    """Every decoded frame of connection ``conn_id`` in order (both directions)."""
    out = []
    for ex in exchanges:
        if ex.connection.id != conn_id:
            continue
        for m in (ex.request, ex.response):
            if m is not None:
                out.append((ex, m))
    out.sort(key=lambda em: (em[1].ts, em[1].from_client is False, em[1].stream_offset))
    return out


def _body_summary(ex: Exchange, m: Message) -> str:
    cmd = m.command
    if not cmd.body:
        return ""
    req = ex.request.command if (ex.request is not None and m is ex.response) else None
    view = bodies.decode_body(cmd, req)
    n = len(cmd.body)
    if view.kind in ("messages", "batch"):
        return f"body {n} B: {len(view.value)} message(s)"
    if view.kind in ("message", "text", "binary"):
        return f"body {n} B: {preview(bytes(view.value), 40)}"
    return f"body {n} B: {view.kind}"


def frame_to_dict(ex: Exchange, m: Message, redact: bool = True) -> dict[str, Any]:
    """One frame of a conversation as JSON (for gRPC: one side of a call)."""
    cmd = m.command
    is_resp = m is ex.response
    if ex.protocol not in _REMOTING:
        from .exporters.exchanges import SIDES, _generic_sides

        side = SIDES.get(ex.protocol, _generic_sides)(ex, redact)[1 if is_resp else 0] or {}
        meta = side.get("metadata") or {}
        return {
            "exchange": ex.index, "ts": m.ts, "direction": "client->server" if m.from_client else "server->client",
            "role": "response" if is_resp else "request", "code": cmd.code, "name": side.get("name", str(cmd.code)),
            "opaque": getattr(cmd, "stream_id", None), "flag": None, "remark": side.get("status_message"),
            "ext": {str(k): str(v) for k, v in meta.items()} or None, "frame_len": m.size,
            "body": f"{len(side.get('messages') or [])} message(s)" if side.get("messages") else "",
            "detail": side,
        }
    ext = headers.redact_ext(cmd.ext, redact)
    if ext is not None and not is_resp:
        ext = headers.long_ext(type(cmd)(cmd.code, cmd.flag, cmd.opaque, ext=ext))
    return {
        "exchange": ex.index, "ts": m.ts, "direction": "client->server" if m.from_client else "server->client",
        "role": "response" if is_resp else "request", "code": cmd.code,
        "name": codes.response_name(cmd.code) if is_resp else codes.request_name(cmd.code),
        "opaque": cmd.opaque, "flag": cmd.flag, "remark": cmd.remark, "ext": ext,
        "frame_len": m.size, "body": _body_summary(ex, m),
    }


def _printable(v: str) -> str:
    """A header value on one line: message properties as ``{K=V; ...}``, controls escaped."""
    if "\x01" in v:
        return "{" + "; ".join(f"{k}={x}" for k, x in parse_properties(v).items()) + "}"
    return v if v.isprintable() else v.encode("unicode_escape").decode("ascii")


def render_conversation(conn: Connection, frames: list[tuple[Exchange, Message]], redact: bool = True) -> str:
    """tshark ``-z follow`` style text: a header, then one block per frame."""
    bar = "=" * 72
    lines = [bar, f"Follow: rocketmq connection {conn.id}  {conn.label}", bar]
    for ex, m in frames:
        d = frame_to_dict(ex, m, redact)
        t = _dt.datetime.fromtimestamp(m.ts, _dt.timezone.utc).strftime("%H:%M:%S.%f")
        arrow = ">>" if m.from_client else "<<"
        indent = "" if m.from_client else "    "
        head = f"{indent}{t} {arrow} #{ex.index} {d['role']} {d['name']} ({d['code']}) opaque={d['opaque']}"
        if d["remark"]:
            head += f" remark={d['remark']!r}"
        lines.append(head)
        if d["ext"]:
            lines.append(indent + "      " + " ".join(f"{k}={_printable(v)}" for k, v in d["ext"].items()))
        if d["body"]:
            lines.append(indent + "      " + d["body"])
    lines.append(bar)
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------- grouped stats

GROUPS = ("code", "topic", "group", "client", "broker")
_REMOTING = frozenset({"remoting", "rocketmq"})
ROW_FIELDS = ("requests", "errors", "error_pct", "p50", "p90", "p99", "max", "bytes")


def restat(exchanges: Iterable[Exchange], prefix: str = "rmqsniff") -> Stats:
    """A fresh :class:`Stats` fed with ``exchanges`` only (e.g. the ones a filter selected)."""
    st = Stats(prefix=prefix)
    for ex in exchanges:
        if ex.request is not None:
            st.request_started(ex)
        st.exchange_done(ex)
    return st


def grouped_rows(stats: Stats, by: str, top: int | None = None, sort: str = "requests") -> list[dict[str, Any]]:
    """One row per key of ``by`` (code, topic, group, client, broker): requests, errors,
    error_pct, answered, p50/p90/p99/max (ms), bytes; sorted by ``sort`` (descending,
    ``key`` ascending), at most ``top``.  Rows count exchanges with a request, so they
    sum to ``answered + unanswered + oneway``."""
    if by not in GROUPS:
        raise ValueError(f"cannot group by {by!r}; choose one of {', '.join(GROUPS)}")
    rows: list[dict[str, Any]] = []
    keep = ("requests", "errors", "error_pct", "answered", "p50", "p90", "p99", "max", "bytes")
    if by == "code":
        for r in stats.snapshot()["codes"].values():
            key = r["name"] if r["protocol"] in _REMOTING else f"{r['protocol']}:{r['name']}"
            rows.append({"key": key, "code": r["code"]} | {k: r[k] for k in keep})
    elif by == "broker":
        for name, role in (("by_broker", "broker"), ("by_nameserver", "nameserver")):
            for key, r in stats.breakdown(name)["rows"].items():
                rows.append({"key": key, "role": role} | {k: r[k] for k in keep})
    else:
        for key, r in stats.breakdown(f"by_{by}")["rows"].items():
            rows.append({"key": key} | {k: r[k] for k in keep})
    return sort_rows(rows, sort, top)


def sort_rows(rows: list[dict[str, Any]], sort: str = "requests", top: int | None = None) -> list[dict[str, Any]]:
    """Sort rows by a column (descending; ``key`` ascending) and keep ``top``."""
    if sort == "key":
        rows.sort(key=lambda r: str(r["key"]))
    else:
        if rows and sort not in rows[0]:
            raise ValueError(f"cannot sort by {sort!r}; choose key or one of {', '.join(ROW_FIELDS)}")
        rows.sort(key=lambda r: (-(r[sort] or 0), str(r["key"])))
    return rows[:top] if top else rows


def totals(stats: Stats) -> dict[str, Any]:
    """The whole capture as one row (counters and the overall latency histogram)."""
    c = stats.snapshot()
    n = sum(c["counters"][k] for k in ("answered", "unanswered", "oneway"))
    errs = sum(r["errors"] for r in c["codes"].values())
    h = c["histograms"]["request_time_ms"]
    nbytes = sum(r["bytes"] for r in c["codes"].values())
    return {"key": "total", "requests": n, "errors": errs, "error_pct": round(100.0 * errs / n, 3) if n else 0.0,
            "answered": c["counters"]["answered"], "p50": h["p50"], "p90": h["p90"], "p99": h["p99"],
            "max": h["max"], "bytes": nbytes}


def _key_fn(by: str | None) -> Callable[[Exchange], str]:
    if by is None:
        return lambda ex: "*"
    if by == "code":
        return lambda ex: codes.request_name(ex.request.command.code) if ex.protocol in _REMOTING \
            else f"{ex.protocol}:{CLASSIFIERS.get(ex.protocol, GENERIC).request_name(ex.request.command.code)}"
    if by == "client":
        return lambda ex: ex.connection.client[0]
    if by == "broker":
        return lambda ex: _ep(ex.connection.server)
    g = getter(by)
    return lambda ex: g(ex) or NONE


def interval_rows(exchanges: Iterable[Exchange], interval: float, by: str | None = None,
                  classify: Callable[[Exchange], bool] | None = None) -> list[dict[str, Any]]:
    """Per-interval rows (rate over time): start, key, requests, rate (/s), errors,
    error_pct, p50/p90/p99/max (ms), bytes.  Intervals are aligned to multiples of
    ``interval`` seconds; only exchanges with a request count (as in the stats)."""
    if interval <= 0:
        raise ValueError("the interval must be positive")
    key_of = _key_fn(by)
    is_err = classify or _is_error
    acc: dict[tuple[int, str], list] = {}
    for ex in exchanges:
        if ex.request is None:
            continue
        slot = math.floor(ex.request.ts / interval)
        k = (slot, key_of(ex))
        a = acc.get(k)
        if a is None:
            a = acc[k] = [0, 0, 0, 0, 0, {}]  # requests, errors, bytes, n_lat, max_us, buckets
        a[0] += 1
        a[1] += is_err(ex)
        a[2] += ex.request.size + (ex.response.size if ex.response is not None else 0)
        lat = ex.latency_ms
        if lat is not None and ex.status == "answered":
            us = max(0, int(lat * 1000 + 0.5))
            a[3] += 1
            a[4] = max(a[4], us)
            b = bucket_of(us)
            a[5][b] = a[5].get(b, 0) + 1
    rows = []
    for (slot, key), (n, errs, nbytes, n_lat, max_us, bk) in sorted(acc.items(), key=lambda kv: (kv[0][0], -kv[1][0])):
        p50, p90, p99 = bucket_percentiles(bk, n_lat, max_us)
        start = slot * interval
        row: dict[str, Any] = {"start": start,
                               "time": _dt.datetime.fromtimestamp(start, _dt.timezone.utc).isoformat(
                                   timespec="milliseconds")}
        if by is not None:
            row["key"] = key
        row |= {"requests": n, "rate": round(n / interval, 3), "errors": errs,
                "error_pct": round(100.0 * errs / n, 3), "p50": p50, "p90": p90, "p99": p99,
                "max": max_us / 1000.0, "bytes": nbytes}
        rows.append(row)
    return rows


def _is_error(ex: Exchange) -> bool:
    if ex.request is None or ex.response is None:
        return False
    cl = CLASSIFIERS.get(ex.protocol, GENERIC)
    return cl.classify(ex.request.command.code, ex.response.command.code) == "error"
