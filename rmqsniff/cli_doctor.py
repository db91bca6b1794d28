"""``rmqsniff doctor``: what is wrong in the captures, with the evidence (a thin shell over rmqsniff.doctor)."""
from __future__ import annotations

import sys
import time
from collections.abc import Sequence

import click
import orjson

from .cliutil import only_ports_option, port_option, tls_keylog_option
from .doctor import Doctor, Finding

_STYLE = {"error": "bold red", "warning": "yellow", "note": "cyan"}
SHOWN_EXCHANGES = 8  # exchange indexes shown per finding in the table (JSON has all kept)


@click.command("doctor")
@click.argument("captures", nargs=-1, required=True, type=click.Path(dir_okay=False))
@click.option("-Y", "--filter", "expr", metavar="EXPR", help="Judge only the exchanges this display filter selects.")
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table", show_default=True)
@port_option
@only_ports_option
@tls_keylog_option
@click.pass_context
def doctor(ctx: click.Context, captures: tuple[str, ...], expr: str | None, fmt: str, ports: tuple[str, ...],
           only_ports: bool, tls_keylogs: tuple[str, ...]) -> None:
    """Expert findings: broker busy, send failures by cause, unanswered requests, re-sent
    messages, missing topics, mixed subscriptions, rebalance storms, slow outliers … each
    with its figures, evidence (exchanges, connections, a `read -Y` filter) and what to check."""
    from . import cli

    def run() -> int:
        from .pipeline import Pipeline

        flt = cli._compile(expr)
        p = Pipeline(ports=cli._ports(ports), only_ports=only_ports, ordered=False,
                     max_frame=(ctx.obj or {}).get("max_frame", 16 * 1024 * 1024), tls_keys=cli._tls_keys(tls_keylogs))
        d = Doctor()
        for ex in cli._selected(p, captures, flt):
            d.feed(ex)
        rc = cli._report(p)
        if rc:
            return rc
        findings = d.findings()
        if fmt == "json":
            sys.stdout.write(orjson.dumps([f.to_dict() for f in findings]).decode() + "\n")
        else:
            _table(findings, d.exchanges, captures)
        return 0

    cli._guard(run, (ctx.obj or {}).get("debug", False))


def _when(ts: float) -> str:
    return time.strftime("%H:%M:%S", time.gmtime(ts)) + f".{int(ts * 1000) % 1000:03d}"


def _table(findings: Sequence[Finding], exchanges: int, captures: Sequence[str]) -> None:
    from rich import box
    from rich.table import Table
    from rich.text import Text

    from .cli import _console
    from .text import shown

    con = _console()
    if not findings:
        con.print(f"no findings in {exchanges:,} exchanges")
        return
    t = Table(box=box.SIMPLE, show_lines=True, title=f"{len(findings)} finding(s) in {exchanges:,} exchanges")
    for col in ("severity", "id", "finding", "evidence"):
        t.add_column(col, overflow="fold")
    for f in findings:
        ev = f.evidence
        idx = ", ".join(str(i) for i in ev.exchanges[:SHOWN_EXCHANGES]) + (" …" if ev.count > SHOWN_EXCHANGES else "")
        evidence = [f"{_when(ev.first)} – {_when(ev.last)} UTC" if ev.last else "",
                    f"exchanges {idx}" if idx else "", *list(ev.connections)[:2],
                    f"read -Y '{f.filter}'" if f.filter else ""]
        t.add_row(Text(f.severity, style=_STYLE[f.severity]), f.id,
                  Text(shown(f.summary)) + Text("\ncheck: " + f.hint, style="dim"),
                  Text("\n".join(shown(x) for x in evidence if x)))
    con.print(t)
