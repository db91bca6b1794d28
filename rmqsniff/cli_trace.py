"""``rmqsniff trace``: message journeys over captures (a thin shell over rmqsniff.journey)."""
from __future__ import annotations

import os
import sys
from collections.abc import Iterable, Iterator
from typing import Any

import click

from .cliutil import only_ports_option, parse_ports, port_option, tls_keylog_option

_ports = parse_ports


def split_id(args: tuple[str, ...]) -> tuple[list[str], str | None]:
    """``CAPTURE… [ID]``: the last argument is the ID when there are several and it is not a file."""
    if len(args) > 1 and not os.path.exists(args[-1]):
        return list(args[:-1]), args[-1]
    return list(args), None


@click.command("trace")
@click.argument("args", nargs=-1, required=True, metavar="CAPTURE… [ID]")
@click.option("--format", "fmt", type=click.Choice(["table", "jsonl", "json"]), default="table", show_default=True)
@click.option("-Y", "--filter", "expr", metavar="EXPR", help="Only exchanges this display filter selects.")
@port_option
@only_ports_option
@tls_keylog_option
@click.pass_context
def trace(ctx: click.Context, args: tuple[str, ...], fmt: str, expr: str | None, ports: tuple[str, ...],
          only_ports: bool, tls_keylogs: tuple[str, ...]) -> None:
    """Message journeys: every hop of each message (sent, stored, delivered, acked, retried,
    dead-lettered, transaction ends, message-trace records), joined across connections,
    protocols and captures, with latencies.

    ID (optional, last) is a unique key (UNIQ_KEY / gRPC message id), an offset message id, a
    message key, a transaction id or a trace id; without it every message is shown.
    """
    from . import cli
    from .cliutil import display_filter
    from .journey import JourneyEngine, journey_to_dict
    from .journey.run import journeys
    from .pipeline import Pipeline
    from .protocols.tls import TlsKeys

    def run() -> int:
        captures, wanted = split_id(args)
        flt = display_filter(expr)
        keys = TlsKeys.from_options(tls_keylogs)
        obj = ctx.obj or {}
        pipelines: list[Pipeline] = []
        engine = JourneyEngine()

        def make() -> Pipeline:
            return Pipeline(ports=_ports(ports), only_ports=only_ports, max_frame=obj.get("max_frame", 16 << 20),
                            tls_keys=keys)

        found: Iterator[Any] = journeys(captures, make, flt, pipelines=pipelines, engine=engine)
        if wanted is not None:
            found = (j for j in found if wanted in j.message_ids())
        multi = len(captures) > 1
        if fmt == "table":
            n = _print_table(found, multi)
        else:
            counted = _Counted(journey_to_dict(j, multi) for j in found)
            cli._write_json(counted, fmt)
            n = counted.n
        sys.stdout.flush()
        rc = 0
        for p in pipelines:
            rc = max(rc, cli._report(p))
        if engine.flushed_unfinished:
            cli._fail(f"{engine.flushed_unfinished} journey(s) flushed unfinished: more than "
                      f"{engine.max_open} open at once (MAX_OPEN_JOURNEYS)")
        if engine.unmatched:
            cli._fail(f"{engine.unmatched} hop(s) named no message seen (acks or commits of messages "
                      "delivered before the capture)")
        for line in engine.problems:
            cli._fail(line)
        if engine.undecodable > len(engine.problems):
            cli._fail(f"... {engine.undecodable} exchange(s) in all whose hops could not be read")
        if engine.duplicates:
            cli._fail(f"{engine.duplicates} hop(s) seen in more than one capture counted once")
        if wanted is not None and n == 0:
            cli._fail(f"no message matches {wanted!r}")
        return rc

    cli._guard(run, (ctx.obj or {}).get("debug", False))


class _Counted:
    """Iterate and count."""

    def __init__(self, it: Iterable[Any]) -> None:
        self.it, self.n = it, 0

    def __iter__(self) -> Iterator[Any]:
        for x in self.it:
            self.n += 1
            yield x


def _print_table(found: Iterable[Any], multi: bool) -> int:
    """One block per journey: a heading line, then a line per hop."""
    from rich.text import Text

    from .cli import _console
    from .journey.text import journey_lines
    from .text import shown

    console = _console()
    n = 0
    for j in found:
        n += 1
        for line, style in journey_lines(j, multi):
            console.print(Text(shown(line), style=style))
    return n
