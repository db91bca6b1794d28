"""The ``rmqsniff`` command line: a thin shell over the library."""
from __future__ import annotations

import sys
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any, cast

import click
import orjson

from .cliutil import (
    EXIT_FAILED,
    STDIN,
    BadInput,
    Group,
    TimeText,
    capture_inputs,
    display_filter,
    excludes,
    fail,
    needs,
    only_ports_option,
    parse_ports,
    port_option,
    quiet_broken_pipe,
    time_option,
    tls_keylog_option,
    usage_error,
)
from .filter import describe_fields
from .model import Exchange
from .pipeline import Pipeline

EXIT_NOTHING_READ = EXIT_FAILED
EXIT_BAD_INPUT = EXIT_FAILED


_BadInput = BadInput
_fail = fail


MAX_PROBLEM_LINES = 20
KEPT_PROBLEMS = 1000  # a flow table keeps this many problem lines (rmqsniff.flows)


def summarise_problems(errors: Iterable[str]) -> list[str]:
    """One line per kind of decoding problem: a connection's problem reads
    ``<client> -> <server> <where>: <reason>``; repeats of one reason become
    ``N× <reason> (first: <where>)``.  Other lines (capture files) are kept as they are."""
    kinds: dict[str, list[Any]] = {}
    for e in errors:
        where, sep, reason = e.partition(": ")
        key = reason if sep and " -> " in where else e
        row = kinds.get(key)
        if row is None:
            kinds[key] = [1, e, where]
        else:
            row[0] += 1
    return [first if n == 1 else f"{n}× {key} (first: {where})" for key, (n, first, where) in kinds.items()]


def _report(p: Pipeline, quiet: bool = False) -> int:
    """Print read problems, one line per kind with counts; exit code 1 when nothing could be read."""
    lines = summarise_problems(p.errors)
    for shown, line in enumerate(lines):
        if shown >= MAX_PROBLEM_LINES:
            _fail(f"... and {len(lines) - shown} more kinds of problem (see the stats' decoding-error counters)")
            break
        if not quiet:
            _fail(line)
    if len(p.errors) >= KEPT_PROBLEMS and not quiet:
        _fail(f"counts above are of the first {KEPT_PROBLEMS} problems (see the stats' decoding-error counters)")
    other = p.table.other_flows
    if other and not quiet:
        for why, n in sorted(other.items()):
            _fail(f"{n} connection(s) not decoded: {why}")
    if p.files_read == 0:
        return EXIT_NOTHING_READ
    return 0


_ports = parse_ports
_compile = display_filter


def _selected(p: Pipeline, captures: Sequence[str], flt: Callable[[Exchange], bool] | None) -> Iterator[Exchange]:
    it = p.run(captures)
    return it if flt is None else (ex for ex in it if flt(ex))


def _guard(fn: Callable[[], int], debug: bool) -> None:
    try:
        code = fn()
    except _BadInput:
        code = EXIT_BAD_INPUT
    except click.ClickException as e:  # a usage error found while running: click's message, exit 2
        raise usage_error(e) from None
    except KeyboardInterrupt:
        _fail("interrupted")
        code = 130
    except BrokenPipeError:
        quiet_broken_pipe()
    except Exception as e:  # one clear line, the traceback only with --debug
        if debug:
            raise
        _fail(f"{type(e).__name__}: {e} (run with --debug for details)")
        code = 1
    sys.exit(code)


def _console():
    """Rich for humans (colour, terminal width); plain and unwrapped when piped. A reader that goes
    away (``| head``) ends the run quietly with status 0 (rich's own handler exits 1)."""
    from rich.console import Console

    class _Console(Console):
        def on_broken_pipe(self) -> None:
            quiet_broken_pipe()

    c = _Console(highlight=False, soft_wrap=True)
    if not c.is_terminal:
        c = _Console(highlight=False, soft_wrap=True, width=100_000)
    return c


def _fixed_row(widths: Sequence[int], right: Iterable[int], truncate: bool = True) -> Callable[[Sequence[str]], str]:
    """Cells padded to ``widths``; on a terminal (``truncate``) long left-aligned cells are cut with an
    ellipsis, elsewhere they are whole (grep and awk see every character)."""
    right = set(right)
    fmt = "  ".join(f"{{:>{w}}}" if i in right else f"{{:<{w}}}" for i, w in enumerate(widths))

    def render(cells: Sequence[str]) -> str:
        return fmt.format(*(c if len(c) <= w or i in right or not truncate else c[: w - 1] + "…"
                            for i, (c, w) in enumerate(zip(cells, widths, strict=True))))
    return render


def _write_json(objs: Iterable[Any], fmt: str) -> None:
    """Objects as JSON lines (``jsonl``) or one JSON array written as it goes (``json``)."""
    out = sys.stdout
    if fmt == "jsonl":
        for d in objs:
            out.write(orjson.dumps(d).decode() + "\n")
        return
    arr = _JsonArray(out)
    for d in objs:
        arr.add(d)
    arr.close()


class _JsonArray:
    """Write a JSON array one element at a time."""

    def __init__(self, out) -> None:
        self.out = out
        self.n = 0

    def add(self, obj: Any) -> None:
        self.out.write(("[\n" if self.n == 0 else ",\n") + orjson.dumps(obj).decode())
        self.n += 1

    def close(self) -> None:
        self.out.write("[]\n" if self.n == 0 else "\n]\n")


FILTER_HELP = "Display filter, e.g. 'code == SEND_MESSAGE_V2 and topic ~ \"order.*\" and latency > 5ms'."

@click.group(cls=Group, context_settings={"help_option_names": ["-h", "--help"]},
             epilog="Filter fields (-Y):\n\n\b\n" + describe_fields())
@click.version_option(package_name="rmqsniff")
@click.option("--debug", is_flag=True, help="Show tracebacks for unexpected errors.")
@click.option("--max-frame", default="16MiB", show_default=True, metavar="SIZE",
              help="Largest remoting frame decoded (Java's default limit); larger ones are counted and skipped.")
@click.pass_context
def main(ctx: click.Context, debug: bool, max_frame: str) -> None:
    """rmqsniff: RocketMQ traffic analyzer. Decode captures into request/response exchanges and stats."""
    from .units import parse_size

    limit = parse_size(max_frame)
    if limit is None or limit < 64:
        raise click.BadParameter(f"{max_frame!r} is not a size of at least 64 bytes (e.g. 16MiB)",
                                 param_hint="--max-frame")
    ctx.obj = {"debug": debug, "max_frame": limit}


_port_opt = port_option
_only_opt = only_ports_option
_filter_opt = click.option("-Y", "--filter", "expr", metavar="EXPR", help=FILTER_HELP)
_redact_opt = click.option("--no-redact", is_flag=True, help="Show AccessKey/Signature/SecurityToken values.")
_tls_opt = tls_keylog_option


def _tls_keys(paths: Sequence[str]) -> Any:
    from .protocols.tls import TlsKeys

    return TlsKeys.from_options(paths)


# ---------------------------------------------------------------- read

@main.command()
@capture_inputs()
@click.option("--format", "fmt", type=click.Choice(["table", "jsonl", "json"]), default="table", show_default=True)
@click.option("-T", "output_type", type=click.Choice(["fields"]),
              help="Like tshark: -T fields prints the -e fields of each exchange, separated (see -E).")
@click.option("-e", "fields", multiple=True, metavar="FIELD",
              help="With -T fields: a filter field (code, topic, latency, ...), time, or a JSON path of the "
                   "jsonl form (response.code, request.ext.topic); repeatable.")
@click.option("-E", "field_opts", multiple=True, metavar="KEY=VALUE",
              help="With -T fields: separator=, (default tab; /t /s), header=y, quote=d|s|n, aggregator=;.")
@time_option
@click.option("-c", "--count", type=click.IntRange(min=0), default=0, help="Stop after this many rows (0: all).")
@_filter_opt
@click.option("--messages", is_flag=True, help="One row per message carried (sent, batch-sent, pulled, popped, ...).")
@click.option("--body", is_flag=True, help="With --messages: full bodies (binary as hex) instead of a preview.")
@_redact_opt
@_port_opt
@_only_opt
@_tls_opt
@click.pass_context
def read(ctx: click.Context, captures: tuple[str, ...], fmt: str, output_type: str | None, fields: tuple[str, ...],
         field_opts: tuple[str, ...], time_format: str | None, count: int, expr: str | None, messages: bool,
         body: bool, no_redact: bool, ports: tuple[str, ...], only_ports: bool, tls_keylogs: tuple[str, ...]) -> None:
    """One row (table) or JSON object (jsonl, json) per exchange, in request order; with -T fields,
    the chosen fields of each, like tshark."""
    needs(ctx, "body", "messages")
    needs(ctx, "fields", "output_type")
    needs(ctx, "field_opts", "output_type")
    needs(ctx, "output_type", "fields")
    excludes(ctx, "output_type", "fmt")
    excludes(ctx, "output_type", "messages")
    if fmt != "table" or messages:  # JSON times are epoch seconds; messages show their own times
        excludes(ctx, "time_format", "fmt" if fmt != "table" else "messages")
    columns = _field_text(fields, field_opts, time_format, not no_redact) if output_type else None
    if STDIN in captures:  # a stream (tcpdump -U -w - |): each row leaves as it is decoded
        cast(Any, sys.stdout).reconfigure(line_buffering=True)

    def run() -> int:
        flt = _compile(expr)
        p = Pipeline(ports=_ports(ports), only_ports=only_ports, max_frame=ctx.obj["max_frame"],
                     tls_keys=_tls_keys(tls_keylogs))
        exchanges = _selected(p, captures, flt)
        if columns is not None:
            _read_fields(exchanges, columns, count)
        elif messages:
            _read_messages(exchanges, fmt, count, body, not no_redact)
        else:
            _read_exchanges(exchanges, fmt, count, not no_redact, TimeText(time_format))
        sys.stdout.flush()
        return _report(p)

    _guard(run, ctx.obj["debug"])


def _field_text(fields: Sequence[str], field_opts: Sequence[str], time_format: str | None, redact: bool) -> Any:
    from .exporters.fieldtext import FieldError, FieldOptions, FieldText

    try:
        opts = FieldOptions.parse(field_opts)
    except FieldError as e:
        raise click.BadParameter(str(e), param_hint="-E") from None
    try:
        return FieldText(fields, opts, TimeText(time_format), redact=redact)
    except FieldError as e:
        raise click.BadParameter(str(e), param_hint="-e") from None


def _read_fields(exchanges: Iterable[Exchange], columns: Any, count: int) -> None:
    out = sys.stdout
    head = columns.header()
    if head is not None:
        out.write(head + "\n")
    for ex in _limited(exchanges, count):
        out.write(columns.line(ex) + "\n")


def _limited(rows: Iterable[Any], count: int) -> Iterator[Any]:
    for n, r in enumerate(rows, 1):
        yield r
        if count and n >= count:
            return


def _read_exchanges(exchanges: Iterable[Exchange], fmt: str, count: int, redact: bool, when: TimeText) -> None:
    from .exporters.exchanges import COLUMNS, STATUS_STYLE, exchange_to_dict, result_of, row

    if fmt in ("jsonl", "json"):
        _write_json((exchange_to_dict(ex, redact=redact) for ex in _limited(exchanges, count)), fmt)
        return
    from rich.text import Text

    console = _console()
    render = _fixed_row((6, 26 if when.dated else 15, 44, 26, 28, 10, 22, 9, 8), (0, 1, 7, 8),
                        truncate=console.is_terminal)
    console.print(Text(render(COLUMNS), style="bold"))
    colours = {"success": "green", "no_message": "green", "error": "red"} | STATUS_STYLE
    for ex in _limited(exchanges, count):
        console.print(Text(render(row(ex, when)), style=colours.get(result_of(ex), "")))


def _read_messages(exchanges: Iterable[Exchange], fmt: str, count: int, body: bool, redact: bool) -> None:
    from .text import shown
    from .views import MESSAGE_COLUMNS, full_body, message_row, message_to_dict, messages_of

    rows = (m for ex in exchanges for m in messages_of(ex))
    if fmt in ("jsonl", "json"):
        _write_json((message_to_dict(m, body=body, redact=redact) for m in _limited(rows, count)), fmt)
        return
    from rich.text import Text

    console = _console()
    render = _fixed_row((6, 10, 18, 5, 8, 32, 32, 10, 14, 28, 28, 7, 38, 34), (0, 3, 4, 11),
                        truncate=console.is_terminal)
    console.print(Text(render(MESSAGE_COLUMNS), style="bold"))
    style = {"sent": "green", "batch-sent": "green", "pulled": "cyan", "popped": "cyan"}
    for m in _limited(rows, count):
        console.print(Text(render(message_row(m)), style=style.get(m.kind, "")))
        if body:
            console.print(Text("\n".join(shown(line) for line in full_body(m.body).split("\n"))), style="dim")


# ---------------------------------------------------------------- follow

@main.command()
@capture_inputs()
@click.argument("target")
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text", show_default=True)
@_redact_opt
@_port_opt
@_only_opt
@_tls_opt
@click.pass_context
def follow(ctx: click.Context, captures: tuple[str, ...], target: str, fmt: str, no_redact: bool,
           ports: tuple[str, ...], only_ports: bool, tls_keylogs: tuple[str, ...]) -> None:
    """The conversation of one connection, in order, both directions, decoded.

    TARGET is a connection id (3 or conn:3), an exchange index (#12 or ex:12: its
    connection) or the client's ip:port.
    """
    def run() -> int:
        from .views import conversation, frame_to_dict, render_conversation, resolve_connection

        p = Pipeline(ports=_ports(ports), only_ports=only_ports, max_frame=ctx.obj["max_frame"],
                     tls_keys=_tls_keys(tls_keylogs))
        exchanges = list(p.run(captures))
        rc = _report(p)
        if rc:
            return rc
        conn = resolve_connection(exchanges, target)
        if conn is None:
            _fail(f"no connection matches {target!r} (use a connection id, #<exchange> or the client's ip:port)")
            return EXIT_BAD_INPUT
        frames = conversation(exchanges, conn.id)
        if fmt == "json":
            doc = {"connection": conn.to_dict(), "frames": [frame_to_dict(ex, m, not no_redact) for ex, m in frames]}
            sys.stdout.write(orjson.dumps(doc).decode() + "\n")
        else:
            sys.stdout.write(render_conversation(conn, frames, not no_redact))
        return 0

    _guard(run, ctx.obj["debug"])


# ---------------------------------------------------------------- stats

def _interval(value: str | None) -> float | None:
    if value is None:
        return None
    from .units import parse_duration_ms

    ms = parse_duration_ms(value, bare="s")
    if ms is None or ms <= 0:
        raise click.BadParameter(f"{value!r} is not a positive duration (e.g. 1s, 500ms, 1m)",
                                 param_hint="--interval")
    return ms / 1000.0


@main.command()
@capture_inputs()
@click.option("--format", "fmt", type=click.Choice(["envoy", "prometheus", "json", "table"]), default=None,
              help="envoy (default), prometheus or json; with --by/--interval: table (default) or json.")
@click.option("--stat-prefix", default="rmqsniff", show_default=True, help="Stats are rooted at rocketmq.<prefix>.")
@_filter_opt
@click.option("--by", type=click.Choice(["code", "topic", "group", "client", "broker"]),
              help="A table per group: requests, error %, p50/p90/p99/max latency, bytes.")
@click.option("--top", type=click.IntRange(min=1), help="With --by: only the first N rows.")
@click.option("--sort", "sort", default="requests", show_default=True,
              type=click.Choice(["requests", "errors", "error_pct", "p50", "p90", "p99", "max", "bytes", "key"]),
              help="Sort rows by this column (descending; key ascending).")
@click.option("--interval", "interval", metavar="DURATION", help="Per-interval rows (rate over time), e.g. 1s.")
@time_option
@_port_opt
@_only_opt
@_tls_opt
@click.pass_context
def stats(ctx: click.Context, captures: tuple[str, ...], fmt: str | None, stat_prefix: str, expr: str | None,
          by: str | None, top: int | None, sort: str, interval: str | None, time_format: str | None,
          ports: tuple[str, ...], only_ports: bool, tls_keylogs: tuple[str, ...]) -> None:
    """The Envoy rocketmq_proxy stat set (and breakdowns) over the captures; or, with --by
    and --interval, tables per group and per time interval."""
    needs(ctx, "top", "by")
    needs(ctx, "sort", "by")
    needs(ctx, "time_format", "interval")

    def run() -> int:
        from .exporters.statsfmt import render_envoy, render_json, render_prometheus
        from .views import grouped_rows, interval_rows, restat, sort_rows, totals

        secs = _interval(interval)
        tabular = by is not None or secs is not None
        out_fmt = fmt or ("table" if tabular else "envoy")
        if tabular and out_fmt not in ("table", "json"):
            raise click.UsageError(f"--by and --interval print --format table or json, not --format {out_fmt}")
        if not tabular and out_fmt == "table":
            raise click.UsageError("--format table needs --by or --interval")
        flt = _compile(expr)
        from .stats.journeys import JourneyStats

        # per-message figures (journeys) need every exchange built: not the stats-only lanes
        js = JourneyStats() if by in ("topic", "group") or out_fmt in ("prometheus", "json") else None
        p = Pipeline(stat_prefix=stat_prefix, ports=_ports(ports), only_ports=only_ports, ordered=js is not None,
                     max_frame=ctx.obj["max_frame"], tls_keys=_tls_keys(tls_keylogs),
                     sinks=[js.sink(flt)] if js is not None else ())
        if flt is None and secs is None:
            p.consume(captures)
            st = p.stats
            selected: list[Exchange] = []
        else:
            selected = list(_selected(p, captures, flt))
            st = restat(selected, stat_prefix) if flt is not None else p.stats
        st.journeys = js
        rc = _report(p)
        if rc:
            return rc
        if not tabular:
            render = {"envoy": render_envoy, "prometheus": render_prometheus, "json": render_json}[out_fmt]
            text = render(st)
            sys.stdout.write(text if text.endswith("\n") else text + "\n")
            return 0
        if secs is not None:
            rows = interval_rows(selected, secs, by)
            if by is not None:  # within each interval, the chosen order and --top
                grouped: dict[float, list] = {}
                for r in rows:
                    grouped.setdefault(r["start"], []).append(r)
                rows = [r for g in grouped.values() for r in sort_rows(g, sort, top)]
            doc: dict[str, Any] = {"interval_s": secs, "by": by, "rows": rows}
        else:
            assert by is not None  # tabular without --interval
            doc = {"by": by, "rows": grouped_rows(st, by, top, sort), "total": totals(st)}
        if out_fmt == "json":
            sys.stdout.write(orjson.dumps(doc).decode() + "\n")
        else:
            _print_stats_table(doc, TimeText(time_format))
        return 0

    _guard(run, ctx.obj["debug"])


def _bytes_text(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GiB"


def _print_stats_table(doc: dict[str, Any], when: TimeText) -> None:
    from rich import box
    from rich.table import Table
    from rich.text import Text

    from .text import shown

    console = _console()
    interval = "interval_s" in doc
    t = Table(box=box.SIMPLE_HEAD if console.is_terminal else None, show_edge=False, pad_edge=False)
    cols: list[tuple[str, str]] = []
    if interval:
        cols.append(("time", "time"))
    if doc.get("by"):
        cols.append(("key", doc["by"]))
        if doc["by"] == "broker" and not interval:
            cols.append(("role", "role"))
    cols += [("requests", "requests")] + ([("rate", "req/s")] if interval else []) + [
        ("errors", "errors"), ("error_pct", "error %"), ("p50", "p50 ms"), ("p90", "p90 ms"), ("p99", "p99 ms"),
        ("max", "max ms"), ("bytes", "bytes")]
    if doc["rows"] and "messages_in" in doc["rows"][0]:  # journeys: per-message figures
        cols += [("messages_in", "msgs in"), ("messages_out", "msgs out"), ("in_per_s", "in/s"),
                 ("out_per_s", "out/s"), ("delivery_p50", "deliver p50"), ("delivery_p99", "deliver p99"),
                 ("e2e_p50", "e2e p50"), ("e2e_p99", "e2e p99")]
    for key, title in cols:
        t.add_column(title, justify="left" if key in ("time", "key", "role") else "right", overflow="fold")

    def cells(r: dict[str, Any]) -> list[Text]:
        """Plain Text cells: a key from the wire is neither markup nor terminal control."""
        out = []
        for key, _ in cols:
            v = r.get(key, "")
            if key == "time":
                out.append(when(r["start"]))
            elif key in ("p50", "p90", "p99", "max") or key[:4] in ("deli", "e2e_", "in_p", "out_"):
                out.append("-" if v is None or v == "" else f"{v:.3f}")
            elif key == "error_pct":
                out.append(f"{v:.1f}")
            elif key == "bytes":
                out.append(_bytes_text(v))
            elif key in ("messages_in", "messages_out"):
                out.append("-" if v is None or v == "" else str(v))
            else:
                out.append(shown(v))
        return [Text(c) for c in out]

    for r in doc["rows"]:
        t.add_row(*cells(r), style="red" if r["errors"] else None)
    if "total" in doc:
        t.add_section()
        t.add_row(*cells(doc["total"] | {"role": ""}), style="bold")
    console.print(t)


# ---------------------------------------------------------------- export

@main.command()
@capture_inputs()
@_filter_opt
@click.option("--format", "fmt", type=click.Choice(["jsonl", "csv", "pcapng", "parquet", "otlp"]), default="jsonl",
              show_default=True, help="otlp: message journeys as OpenTelemetry traces (OTLP/JSON), a span per hop.")
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False, allow_dash=True),
              help="Output file ('-' for stdout; not for pcapng or parquet).")
@click.option("--messages", is_flag=True,
              help="jsonl/parquet: the messages the selected exchanges carry, one row each (as read --messages).")
@click.option("--with-handshake", is_flag=True,
              help="pcapng: also copy the SYN/FIN/RST packets of the selected exchanges' connections.")
@click.option("--with-secrets", is_flag=True,
              help="pcapng: embed the TLS key log lines of the exported connections (a Decryption Secrets "
                   "Block: the file opens decrypted; it is created 0600).")
@_redact_opt
@_port_opt
@_only_opt
@_tls_opt
@click.pass_context
def export(ctx: click.Context, captures: tuple[str, ...], expr: str | None, fmt: str, output: str, messages: bool,
           with_handshake: bool, with_secrets: bool, no_redact: bool, ports: tuple[str, ...], only_ports: bool,
           tls_keylogs: tuple[str, ...]) -> None:
    """Write the selected exchanges as JSON lines, CSV, Parquet, or the capture packets that carried
    them (pcapng)."""
    def run() -> int:
        from .exporters import export as ex_mod

        flt = _compile(expr)
        pcapng = fmt == "pcapng"
        if pcapng and "-" in captures:  # the packets are read back from the files: a second pass
            raise click.UsageError("--format pcapng reads its captures twice: give files, not '-' (stdin)")
        if pcapng and output == "-" and sys.stdout.isatty():
            _fail("will not write a pcapng to a terminal; use -o FILE")
            return EXIT_BAD_INPUT
        refusal = ex_mod.refusal(fmt, output, messages)
        if refusal:
            raise click.UsageError(refusal)
        p = Pipeline(ports=_ports(ports), only_ports=only_ports, track_packets=pcapng,
                     max_frame=ctx.obj["max_frame"], tls_keys=_tls_keys(tls_keylogs))
        if with_secrets and not pcapng:
            raise click.UsageError("--with-secrets needs --format pcapng")
        if (no_redact or with_secrets) and output != "-" and fmt != "csv":
            ex_mod.private_file(output)  # it will hold AccessKey/Signature values or TLS key material
        if pcapng:
            scrub = None if no_redact else ex_mod.Scrub()
            seen = p.run(captures) if scrub is None else scrub.watch(p.run(captures))
            chosen: Iterable[Exchange] = seen if flt is None else filter(flt, seen)
            if with_secrets:
                chosen = list(chosen)  # walked twice: packets, then the connections' key log lines
            wanted = ex_mod.packets_of(chosen, control=with_handshake)
            secrets = ex_mod.tls_secrets(chosen, p.tls_keys) if with_secrets else ""
            rc = _report(p)
            if rc:
                return rc
            if scrub is not None:
                scrub.locate(captures, wanted)
            with click.open_file(output, "wb") as f:
                n = ex_mod.write_pcapng(captures, wanted, f, scrub, secrets)
            click.echo(scrub.line() if scrub is not None else "secrets kept as captured (--no-redact)", err=True)
            if output != "-":
                click.echo(f"wrote {n} packets to {output}", err=True)
            return 0
        if fmt == "otlp":
            return _export_otlp(captures, flt, output, lambda: Pipeline(
                ports=_ports(ports), only_ports=only_ports, max_frame=ctx.obj["max_frame"], tls_keys=p.tls_keys))
        n = ex_mod.write_records(_selected(p, captures, flt), fmt, output, messages, redact=not no_redact)
        rc = _report(p)
        if rc == 0 and output != "-":
            click.echo(f"wrote {n} {'messages' if messages else 'exchanges'} to {output}", err=True)
        return rc

    _guard(run, ctx.obj["debug"])


def _export_otlp(captures: Sequence[str], flt: Callable[[Exchange], bool] | None, output: str,
                 make: Callable[[], Pipeline]) -> int:
    """``export --format otlp``: the captures' journeys (rmqsniff.journey), a span per hop."""
    from .exporters.otlp import write_otlp
    from .journey.run import journeys

    pipelines: list[Pipeline] = []
    with click.open_file(output, "w", encoding="utf-8") as f:
        n = write_otlp(journeys(captures, make, flt, pipelines=pipelines), f)
    rc = max((_report(q) for q in pipelines), default=EXIT_NOTHING_READ)
    if rc == 0 and output != "-":
        click.echo(f"wrote {n} spans to {output}", err=True)
    return rc


def _register() -> None:
    """Commands that live in their own modules (each a thin shell over its library)."""
    from .cli_doctor import doctor
    from .cli_lag import lag
    from .cli_live import live
    from .cli_proxy import proxy
    from .cli_replay import replay
    from .cli_trace import trace
    from .cli_tui import tui

    main.add_command(doctor)
    main.add_command(lag)
    main.add_command(live)
    main.add_command(proxy)
    main.add_command(replay)
    main.add_command(trace)
    main.add_command(tui)


_register()

if __name__ == "__main__":  # pragma: no cover
    main()
