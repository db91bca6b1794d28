"""Views over exchanges that answer operators' questions.

* :func:`messages_of` — the messages an exchange carries (sent, batch-sent, pulled,
  popped, ...), one :class:`MessageRow` each (``rmqsniff read --messages``);
* :func:`conversation` / :func:`render_conversation` — one connection's frames in
  order, both directions, decoded (``rmqsniff follow``);
* :func:`restat`, :func:`grouped_rows` — stats tables per code/topic/group/client/broker
  (``rmqsniff stats --by``); :func:`interval_rows` — the same per time interval.

What each protocol carries is asked of its :mod:`rmqsniff.protocols` object.
"""
from __future__ import annotations

import datetime as _dt
import math
from collections.abc import Callable, Iterable
from typing import Any

from dissectors.remoting import headers
from dissectors.remoting.message import parse_properties

from .filter import getter
from .model import Connection, Exchange, Message, MessageRow, _ep
from .protocols import protocol_named, protocol_of
from .protocols.tracing import records_json, trace_json, trace_text
from .stats import NONE, Stats, bucket_of, bucket_percentiles
from .text import full_body, ms_text, preview, shown

# ---------------------------------------------------------------- messages


def messages_of(ex: Exchange) -> list[MessageRow]:
    """The messages ``ex`` carries (empty for exchanges that carry none)."""
    return protocol_of(ex).messages(ex)


def message_to_dict(r: MessageRow, body: bool = False, redact: bool = True) -> dict[str, Any]:
    """The JSON form of a message row (``body``: full body instead of the preview)."""
    props = {k: (headers.REDACTED if redact and headers.is_secret(k) else v) for k, v in r.properties.items()}
    d: dict[str, Any] = {
        "exchange": r.exchange, "ts": r.ts, "kind": r.kind, "connection": r.connection,
        "topic": r.topic, "queue": r.queue, "offset": r.offset, "msg_id": r.msg_id,
        "unique_key": r.unique_key, "tags": r.tags, "keys": r.keys, "properties": props,
        "born_host": r.born_host, "born_ts": r.born_ts, "born_time": ms_text(r.born_ts),
        "store_host": r.store_host, "store_ts": r.store_ts, "store_time": ms_text(r.store_ts),
        "body_size": len(r.body), "result": r.result, "trace": trace_json(r),
    }
    recs = records_json(r)
    if recs is not None:
        d["trace_records"] = recs
    for k, v in (("message_group", r.message_group), ("delivery_ts", r.delivery_ts), ("reconsume", r.reconsume)):
        if v is not None:
            d[k] = v
    if r.delivery_ts is not None:
        d["delivery_time"] = ms_text(r.delivery_ts)
    if body:
        d["body"] = full_body(r.body)
    else:
        d["preview"] = preview(r.body)
    if r.notes:
        d["notes"] = r.notes
    return d


MESSAGE_COLUMNS = ("#", "kind", "topic", "queue", "offset", "unique key", "msg id", "tags", "keys",
                   "born", "stored", "bytes", "trace", "preview")


def message_row(r: MessageRow) -> tuple[str, ...]:
    """A table row for a message (``MESSAGE_COLUMNS``), wire text with controls escaped."""
    def t(ms: int | None) -> str:
        s = ms_text(ms)
        return s[11:23] if s else "-"
    born = f"{r.born_host or '-'} {t(r.born_ts)}"
    stored = f"{r.store_host or '-'} {t(r.store_ts)}"
    cells = (str(r.exchange), r.kind, r.topic or "-", "-" if r.queue is None else str(r.queue),
             "-" if r.offset is None else str(r.offset), r.unique_key or "-", r.msg_id or "-",
             r.tags or "-", " ".join(r.keys) or "-", born, stored, str(len(r.body)), trace_text(r), preview(r.body, 32))
    return tuple(shown(c) for c in cells)


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


def frame_to_dict(ex: Exchange, m: Message, redact: bool = True) -> dict[str, Any]:
    """One frame of a conversation as JSON (for gRPC: one side of a call)."""
    return protocol_of(ex).follow(ex, m, redact)


def _printable(v: str) -> str:
    """A header value on one line: message properties as ``{K=V; ...}``, controls escaped."""
    if "\x01" in v:
        return "{" + "; ".join(f"{shown(k)}={shown(x)}" for k, x in parse_properties(v).items()) + "}"
    return shown(v)


def render_conversation(conn: Connection, frames: list[tuple[Exchange, Message]], redact: bool = True) -> str:
    """tshark ``-z follow`` style text: a header, then one block per frame (for a terminal:
    wire text has its control characters escaped)."""
    bar = "=" * 72
    how = f"  ({frames[0][0].protocol}, known by {conn.recognised_by})" if frames and conn.recognised_by else ""
    lines = [bar, shown(f"Follow: rocketmq connection {conn.id}  {conn.label}{how}")]
    if conn.tls:  # decoded from TLS: how
        tls = conn.tls
        lines.append(shown("TLS: " + ", ".join(str(tls[k]) for k in ("status", "version", "cipher") if tls.get(k))
                           + "".join(f", {k} {tls[k]}" for k in ("sni", "alpn") if tls.get(k))))
    lines.append(bar)
    for ex, m in frames:
        d = frame_to_dict(ex, m, redact)
        t = _dt.datetime.fromtimestamp(m.ts, _dt.timezone.utc).strftime("%H:%M:%S.%f")
        arrow = ">>" if m.from_client else "<<"
        indent = "" if m.from_client else "    "
        head = f"{indent}{t} {arrow} #{ex.index} {d['role']} {d['name']} ({d['code']}) opaque={d['opaque']}"
        if d["remark"]:
            head += f" remark={d['remark']!r}"
        lines.append(shown(head))
        if d["ext"]:
            lines.append(indent + "      " + " ".join(f"{shown(k)}={_printable(v)}" for k, v in d["ext"].items()))
        for line in d["body"].split("\n") if d["body"] else ():  # at LF only: other controls show escaped
            lines.append(indent + "      " + shown(line))
    lines.append(bar)
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------- grouped stats

GROUPS = ("code", "topic", "group", "client", "broker")
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
            key = protocol_named(r["protocol"]).code_prefix + r["name"]
            rows.append({"key": key, "code": r["code"], "protocol": r["protocol"]} | {k: r[k] for k in keep})
    elif by == "broker":
        for name, role in (("by_broker", "broker"), ("by_nameserver", "nameserver")):
            for key, r in stats.breakdown(name)["rows"].items():
                rows.append({"key": key, "role": role} | {k: r[k] for k in keep})
    else:
        for key, r in stats.breakdown(f"by_{by}")["rows"].items():
            rows.append({"key": key} | {k: r[k] for k in keep})
        if stats.journeys is not None:  # per-message figures of the same key
            per = stats.journeys.rows(by)
            blank = dict.fromkeys(next(iter(per.values()), {}))
            for row in rows:
                row |= per.get(row["key"], blank)
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
        return lambda ex: protocol_of(ex).code_key(ex.code or 0)
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
    return protocol_of(ex).result(ex) == "error"
