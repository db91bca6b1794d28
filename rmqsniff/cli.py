"""The ``rmqsniff`` command line: a thin shell over the library."""
from __future__ import annotations

import sys
from collections.abc import Callable, Sequence

import click
import orjson

from .pipeline import Pipeline

EXIT_NOTHING_READ = 2


def _fail(msg: str) -> None:
    click.echo(f"rmqsniff: {msg}", err=True)


def _report(p: Pipeline, quiet: bool = False) -> int:
    """Print read problems as one line each; exit code 2 when nothing could be read."""
    shown = 0
    for e in p.errors:
        if shown >= 20:
            _fail(f"... and {len(p.errors) - shown} more problems (see the stats' decoding-error counters)")
            break
        if not quiet:
            _fail(e)
        shown += 1
    other = p.table.other_flows
    if other and not quiet:
        for why, n in sorted(other.items()):
            _fail(f"{n} connection(s) not decoded: {why}")
    if p.files_read == 0:
        return EXIT_NOTHING_READ
    return 0


def _ports(values: Sequence[str]) -> list[int]:
    out = []
    for v in values:
        for part in v.split(","):
            part = part.strip()
            if not part:
                continue
            if not part.isdigit() or not 0 < int(part) < 65536:
                raise click.BadParameter(f"{part!r} is not a TCP port")
            out.append(int(part))
    return out


def _guard(fn: Callable[[], int], debug: bool) -> None:
    try:
        code = fn()
    except KeyboardInterrupt:
        _fail("interrupted")
        code = 130
    except BrokenPipeError:
        code = 0
    except Exception as e:  # one clear line, the traceback only with --debug
        if debug:
            raise
        _fail(f"{type(e).__name__}: {e} (run with --debug for details)")
        code = 1
    sys.exit(code)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="rmqsniff")
@click.option("--debug", is_flag=True, help="Show tracebacks for unexpected errors.")
@click.pass_context
def main(ctx: click.Context, debug: bool) -> None:
    """rmqsniff: RocketMQ traffic analyzer. Decode captures into request/response exchanges and stats."""
    ctx.obj = {"debug": debug}


_port_opt = click.option("--port", "ports", multiple=True, metavar="P[,P…]",
                         help="Decode these TCP ports as RocketMQ remoting servers (besides 9876/10911/10909/8080).")
_only_opt = click.option("--only-ports", is_flag=True, help="With --port: decode only those ports.")


@main.command()
@click.argument("captures", nargs=-1, required=True, type=click.Path(dir_okay=False))
@click.option("--format", "fmt", type=click.Choice(["table", "jsonl"]), default="table", show_default=True)
@click.option("-c", "--count", type=int, default=0, help="Stop after this many exchanges.")
@click.option("--no-redact", is_flag=True, help="Show AccessKey/Signature/SecurityToken values.")
@_port_opt
@_only_opt
@click.pass_context
def read(ctx: click.Context, captures: tuple[str, ...], fmt: str, count: int, no_redact: bool,
         ports: tuple[str, ...], only_ports: bool) -> None:
    """One row (table) or JSON object (jsonl) per exchange, in request order."""
    def run() -> int:
        from .exporters.exchanges import COLUMNS, STATUS_STYLE, exchange_to_dict, result_of, row

        p = Pipeline(ports=_ports(ports), only_ports=only_ports)
        out = sys.stdout
        n = 0
        if fmt == "jsonl":
            for ex in p.run(captures):
                out.write(orjson.dumps(exchange_to_dict(ex, redact=not no_redact)).decode() + "\n")
                n += 1
                if count and n >= count:
                    break
        else:
            from rich.console import Console
            from rich.text import Text

            console = Console(highlight=False, soft_wrap=True)
            widths = (6, 12, 44, 26, 28, 10, 22, 9, 8)
            fmt_row = "  ".join(f"{{:<{w}}}" if i not in (0, 7, 8) else f"{{:>{w}}}" for i, w in enumerate(widths))
            console.print(Text(fmt_row.format(*COLUMNS), style="bold"))
            colours = {"success": "green", "no_message": "green", "error": "red"} | STATUS_STYLE
            for ex in p.run(captures):
                cells = row(ex)
                line = fmt_row.format(*(c[: w] if len(c) > w and i in (2, 3, 4, 6) else c
                                        for i, (c, w) in enumerate(zip(cells, widths, strict=True))))
                console.print(Text(line, style=colours.get(result_of(ex), "")))
                n += 1
                if count and n >= count:
                    break
        out.flush()
        return _report(p)

    _guard(run, ctx.obj["debug"])


@main.command()
@click.argument("captures", nargs=-1, required=True, type=click.Path(dir_okay=False))
@click.option("--format", "fmt", type=click.Choice(["envoy", "prometheus", "json"]), default="envoy",
              show_default=True)
@click.option("--stat-prefix", default="rmqsniff", show_default=True, help="Stats are rooted at rocketmq.<prefix>.")
@_port_opt
@_only_opt
@click.pass_context
def stats(ctx: click.Context, captures: tuple[str, ...], fmt: str, stat_prefix: str, ports: tuple[str, ...],
          only_ports: bool) -> None:
    """The Envoy rocketmq_proxy stat set (and breakdowns) over the captures."""
    def run() -> int:
        from .exporters.statsfmt import render_envoy, render_json, render_prometheus

        p = Pipeline(stat_prefix=stat_prefix, ports=_ports(ports), only_ports=only_ports, ordered=False)
        for _ in p.run(captures):
            pass
        rc = _report(p)
        if rc:
            return rc
        render = {"envoy": render_envoy, "prometheus": render_prometheus, "json": render_json}[fmt]
        text = render(p.stats)
        sys.stdout.write(text if text.endswith("\n") else text + "\n")
        return 0

    _guard(run, ctx.obj["debug"])


if __name__ == "__main__":  # pragma: no cover
    main()
