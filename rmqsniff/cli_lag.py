"""``rmqsniff lag``: consumer lag per group, topic, broker and queue (a thin shell over :mod:`rmqsniff.lag`)."""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import click

from .cliutil import display_filter, only_ports_option, parse_ports, port_option

COLUMNS = ("group", "topic", "broker", "queue", "broker_offset", "consumer_offset", "lag", "inflight",
           "inflight_oldest_s", "ts")
SORTS = ("lag", "group", "topic", "inflight")


def _sort_key(by: str) -> Any:
    if by in ("lag", "inflight"):  # largest first, unknown last
        return lambda r: (r[by] is None, -(r[by] or 0), r["group"] or "", r["topic"], r["broker"], r["queue"])
    return lambda r: (r[by] or "", r["topic"], r["broker"], r["queue"])


def _cell(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.3f}"
    return str(v)


def print_table(rows: Sequence[dict[str, Any]], interval: bool) -> None:
    """The rows as a rich table (``-`` for unknown)."""
    from rich.table import Table

    from .cli import _console

    cols = (("interval_end",) if interval else ()) + COLUMNS
    t = Table(box=None, pad_edge=False)
    for c in cols:
        t.add_column(c, justify="right" if c not in ("group", "topic", "broker") else "left")
    for r in rows:
        t.add_row(*(_cell(r.get(c)) for c in cols))
    _console().print(t)


@click.command("lag")
@click.argument("captures", nargs=-1, required=True, type=click.Path(dir_okay=False))
@click.option("-Y", "--filter", "expr", metavar="EXPR", help="Only exchanges matching this display filter.")
@click.option("--interval", "interval", metavar="DURATION",
              help="Rows at the end of every interval (e.g. 10s), empty intervals too: values carried with their age.")
@click.option("--format", "fmt", type=click.Choice(["table", "jsonl", "json"]), default="table", show_default=True)
@click.option("--sort", "sort", type=click.Choice(SORTS), default="lag", show_default=True,
              help="Table order (jsonl/json: group, topic, broker, queue).")
@port_option
@only_ports_option
@click.pass_context
def lag(ctx: click.Context, captures: tuple[str, ...], expr: str | None, interval: str | None, fmt: str, sort: str,
        ports: tuple[str, ...], only_ports: bool) -> None:
    """Consumer lag per group, topic, broker and queue: the broker's max offset (pull, pop,
    GET_MAX_OFFSET, query and send answers; gRPC QueryOffset / PullMessage), the group's
    committed offset (UPDATE_CONSUMER_OFFSET, pull commitOffset, QUERY_CONSUMER_OFFSET, gRPC
    UpdateOffset / GetOffset), lag, and for pop / gRPC consumers the messages in flight
    (received, not acked).  Unknown values are shown as - (null in JSON), never guessed.
    Several captures (e.g. one per host) are read as one."""
    from .cli import _guard, _interval, _report, _selected, _write_json
    from .lag import LagTable, lag_over_time
    from .pipeline import Pipeline

    obj = ctx.obj or {}

    def run() -> int:
        flt = display_filter(expr)
        step = _interval(interval)
        p = Pipeline(ports=parse_ports(ports), only_ports=only_ports, max_frame=obj.get("max_frame", 16 << 20))
        table = LagTable()
        exchanges = _selected(p, captures, flt)
        if step is not None:
            rows = list(lag_over_time(exchanges, step, table))
        else:
            for ex in exchanges:
                table.add(ex)
            rows = table.rows()
        rc = _report(p)
        if rc:
            return rc
        for name, n in sorted(table.overflow.items()):
            click.echo(f"rmqsniff: {n} lag facts not kept: the {name} table is full "
                       f"(cap {table.max_inflight if name == 'inflight' else table.max_queues})", err=True)
        if fmt == "table":
            if step is None:
                rows.sort(key=_sort_key(sort))
            print_table(rows, step is not None)
        else:
            _write_json(rows, fmt)
        return 0

    _guard(run, bool(obj.get("debug")))
