"""Rows of the stats view (Envoy stat set, grouped tables, connections) and the
filter expression each row drills down to."""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ..exporters.statsfmt import render_envoy
from ..lag import LagTable, lag_over_time
from ..model import Exchange, endpoint_text
from ..stats import NONE, OTHER
from ..text import shown
from ..views import GROUPS, grouped_rows
from .charts import sparkline
from .store import Store, result_of

GROUP_COLUMNS = ("key", "requests", "errors", "error %", "p50 ms", "p90 ms", "p99 ms", "max ms", "bytes")
CONN_COLUMNS = ("conn", "client", "server", "protocol", "exchanges", "errors", "bytes", "roles by")


@dataclass
class Table:
    """One table of the stats view: its rows (text as shown: wire text escaped) and, per row,
    the filter it drills down to (None: not a drill-down row)."""

    columns: tuple[str, ...]
    rows: list[tuple[str, ...]]
    filters: list[str | None]


def quote(value: str) -> str:
    """``value`` as a filter-language string literal."""
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def drill_filter(by: str, row: dict[str, Any]) -> str | None:
    """The filter that selects the exchanges of one grouped-stats row."""
    key = str(row["key"])
    if key == OTHER:
        return None
    if by == "code":
        return f"protocol == {row['protocol']} and code == {row['code']}"
    if by in ("topic", "group"):
        return f"not {by}" if key == NONE else f"{by} == {quote(key)}"
    if by in ("client", "broker"):
        return f"{by} == {quote(key)}"
    return None


def envoy_table(store: Store) -> Table:
    """The Envoy stat set as (stat, value) rows (per-code stats are in the code table)."""
    with store.lock:
        text = render_envoy(store.stats)
    rows: list[tuple[str, ...]] = []
    for line in text.splitlines():
        name, _, value = line.partition(": ")
        if ".request_code." in name or ".response_code." in name:
            continue
        rows.append((name, value))
    return Table(("stat", "value"), [tuple(shown(c) for c in r) for r in rows], [None] * len(rows))


def grouped_table(store: Store, by: str) -> Table:
    """Requests, errors and latency per code, topic, group, client or broker."""
    with store.lock:
        rows = grouped_rows(store.stats, by)
    out: list[tuple[str, ...]] = []
    for r in rows:
        key = r["key"] + (f" ({r['role']})" if r.get("role") == "nameserver" else "")
        out.append((shown(key), str(r["requests"]), str(r["errors"]), f"{r['error_pct']:.1f}", f"{r['p50']:.3f}",
                    f"{r['p90']:.3f}", f"{r['p99']:.3f}", f"{r['max']:.3f}", str(r["bytes"])))
    return Table(GROUP_COLUMNS, out, [drill_filter(by, r) for r in rows])


def connections_table(exchanges: Sequence[Exchange]) -> Table:
    """One row per connection: endpoints, exchanges, error answers, bytes."""
    acc: dict[int, list[Any]] = {}
    for ex in list(exchanges):
        c = ex.connection
        a = acc.get(c.id)
        if a is None:
            a = acc[c.id] = [c, ex.protocol, 0, 0, 0]
        a[2] += 1
        a[3] += result_of(ex) == "error"
        a[4] += (ex.request.size if ex.request else 0) + (ex.response.size if ex.response else 0)
    rows: list[tuple[str, ...]] = []
    filters: list[str | None] = []
    for cid in sorted(acc):
        c, proto, n, errs, nbytes = acc[cid]
        rows.append((str(cid), endpoint_text(c.client), endpoint_text(c.server), proto, str(n), str(errs),
                     str(nbytes), shown(c.role_source)))
        filters.append(f"conn == {cid}")
    return Table(CONN_COLUMNS, rows, filters)


LAG_COLUMNS = ("group", "topic", "broker", "queue", "broker offset", "consumer offset", "lag", "in flight",
               "lag over time")
LAG_BINS = 30  # sparkline points over the listed exchanges' time span


def _largest_first(cell: str) -> tuple[bool, int]:
    try:
        return False, -int(cell)
    except ValueError:  # "-": unknown, last
        return True, 0


def _text(cell: str) -> str:
    return cell


LAG_SORTS = (("lag", _largest_first), ("in flight", _largest_first), ("group", _text), ("topic", _text))


def lag_table(exchanges: Sequence[Exchange]) -> Table:
    """Consumer lag per group, topic, broker and queue (:mod:`rmqsniff.lag`), largest lag first,
    with a sparkline of its lag (in flight for pop / gRPC consumers) over the capture."""
    exs = sorted(list(exchanges), key=lambda ex: ex.ts)
    table = LagTable()
    history: dict[tuple[Any, ...], list[int | None]] = {}
    if exs:
        step = max((exs[-1].ts - exs[0].ts) / LAG_BINS, 0.001)
        for r in lag_over_time(exs, step, table):
            key = (r["group"], r["topic"], r["broker"], r["queue"])
            history.setdefault(key, []).append(r["lag"] if r["lag"] is not None else r["inflight"])
    rows = sorted(table.rows(), key=lambda r: (r["lag"] is None, -(r["lag"] or 0), -(r["inflight"] or 0)))
    out: list[tuple[str, ...]] = []
    filters: list[str | None] = []
    for r in rows:
        cells = [r["group"] or "-", r["topic"], r["broker"], r["queue"], r["broker_offset"], r["consumer_offset"],
                 r["lag"], r["inflight"]]
        trend = sparkline(history.get((r["group"], r["topic"], r["broker"], r["queue"]), []))
        out.append(tuple(shown("-" if c is None else str(c)) for c in cells) + (trend,))
        topic = f"topic == {quote(r['topic'])}"
        filters.append(topic if r["group"] is None else f"group == {quote(r['group'])} and {topic}")
    return Table(LAG_COLUMNS, out, filters)


TABS = ("envoy",) + GROUPS + ("conns", "lag")


def build(store: Store, tab: str) -> Table:
    """The table of one stats tab."""
    if tab == "envoy":
        return envoy_table(store)
    if tab == "conns":
        return connections_table(store.exchanges)
    return grouped_table(store, tab)
