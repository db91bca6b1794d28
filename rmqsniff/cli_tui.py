"""``rmqsniff tui``: the terminal UI over capture files (a thin shell over rmqsniff.tui)."""
from __future__ import annotations

import contextlib
import os
import sys

import click

from .cliutil import EXIT_USAGE, capture_inputs, parse_ports

_ports = parse_ports


@click.command("tui")
@capture_inputs(exit_missing=EXIT_USAGE, stdin=False, required=False)  # a missing file: one line, before the UI
@click.option("-i", "--interface", "interfaces", multiple=True, metavar="IFACE",
              help="Capture live on this interface (repeat for more; 'any' for all) instead of reading files.")
@click.option("-f", "bpf", metavar="BPF", help="With -i: kernel capture filter, e.g. 'tcp port 10911'.")
@click.option("-Y", "--filter", "expr", metavar="EXPR", help="Start with this display filter.")
@click.option("--no-redact", is_flag=True, help="Show AccessKey/Signature/SecurityToken values.")
@click.option("--port", "ports", multiple=True, metavar="P[=PROTO][,…]",
              help="Decode these TCP ports as RocketMQ servers (besides 9876/10911/10909/8080/8081); "
                   "P=grpc or P=remoting forces the protocol.")
@click.option("--only-ports", is_flag=True, help="With --port: decode only those ports.")
@click.option("--tls-keylog", "tls_keylogs", multiple=True, type=click.Path(dir_okay=False), metavar="FILE",
              help="Decrypt TLS with this NSS key log (SSLKEYLOGFILE is read too).")
def tui(captures: tuple[str, ...], interfaces: tuple[str, ...], bpf: str | None, expr: str | None,
        no_redact: bool, ports: tuple[str, ...], only_ports: bool, tls_keylogs: tuple[str, ...]) -> None:
    """Inspect captures (or a live tap, -i) in a terminal UI: exchanges list, decoded
    tree, hex, stats with drill-down, follow, export.

    Opens at once and loads in the background. Press ? inside for every key.
    """
    if bool(captures) == bool(interfaces):
        raise click.UsageError("give capture files or -i IFACE (not both)")
    if bpf and not interfaces:
        raise click.UsageError("-f needs -i")
    if expr:
        from .filter import FilterError, compile_filter

        try:
            compile_filter(expr)
        except FilterError as e:
            click.echo(f"rmqsniff: bad filter: {e.message}\n    " + e.caret().replace("\n", "\n    "), err=True)
            sys.exit(1)
    if not sys.stdout.isatty() and not os.environ.get("RMQSNIFF_TUI_FORCE"):
        click.echo("rmqsniff: tui needs a terminal (use `rmqsniff read` for piped output)", err=True)
        sys.exit(1)
    from .tui import RmqSniffApp

    app = RmqSniffApp(captures, redact=not no_redact, ports=_ports(ports), only_ports=only_ports,
                      initial_filter=expr, interfaces=interfaces, bpf=bpf, tls_keylogs=tls_keylogs)
    with contextlib.suppress(KeyboardInterrupt):
        app.run()
    if app.return_code:
        sys.exit(app.return_code)


if __name__ == "__main__":  # pragma: no cover
    tui()
