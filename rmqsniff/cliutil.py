"""Helpers shared by the command modules: one-line errors, port lists, ``-Y`` filters, and the
operators' habits every command keeps (tshark's ``-r``/``-``/``-t``, exit codes 0/1/2, quiet broken
pipes, options that conflict named as such)."""
from __future__ import annotations

import contextlib
import datetime as _dt
import functools
import sys
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any, NoReturn, TypeVar, cast

import click

from .filter import Filter

if TYPE_CHECKING:
    from .flows import PortSpec

F = TypeVar("F", bound=Callable[..., Any])


class BadInput(Exception):
    """A problem already explained to the user (the command exits with 1)."""


def fail(msg: str) -> None:
    """One line on stderr, prefixed like every rmqsniff message (control characters, e.g. from
    a capture's bytes, shown escaped)."""
    from .text import shown

    click.echo(f"rmqsniff: {shown(msg)}", err=True)


def parse_ports(values: Iterable[str], param_hint: str = "--port") -> list[PortSpec]:
    """``("9876,10911", "8080", "18081=grpc")`` -> ``[9876, 10911, 8080, (18081, "grpc")]``: server
    ports, each optionally with the protocol it carries; a bad value is a usage error."""
    from .protocols import PROTOCOLS

    out: list[PortSpec] = []
    for v in values:
        for part in filter(None, (p.strip() for p in v.split(","))):
            port, _, proto = part.partition("=")
            if not port.isdigit() or not 0 < int(port) < 65536:
                raise click.BadParameter(f"{port!r} is not a TCP port", param_hint=param_hint)
            if proto and proto not in PROTOCOLS:
                raise click.BadParameter(f"{proto!r} is not a protocol (one of {', '.join(PROTOCOLS)})",
                                         param_hint=param_hint)
            out.append((int(port), proto) if proto else int(port))
    return out


def display_filter(expr: str | None) -> Filter | None:
    """The compiled ``-Y`` filter; a bad one is explained with a caret under the problem."""
    if not expr:
        return None
    from .filter import FilterError, compile_filter

    try:
        return compile_filter(expr)
    except FilterError as e:
        fail(f"bad filter: {e.message}")
        for line in e.caret().splitlines():
            click.echo(f"    {line}", err=True)
        raise BadInput() from None


# ---------------------------------------------------------------- habits shared by every command
# (tshark-style inputs and times, exit codes, broken pipes, options that conflict)

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2  # 1: nothing readable or the run failed; 2: usage (click's)
STDIN = "-"  # standard input, as in rmqsniff.sources.pcapfile: a pcap or pcapng stream, never seeked


def quiet_broken_pipe() -> NoReturn:
    """The reader went away (``| head``): stop quietly with status 0, like other Unix tools.
    Standard output is pointed at /dev/null so the interpreter's last flush cannot fail again."""
    import os
    import sys

    with contextlib.suppress(OSError, ValueError):
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    sys.exit(EXIT_OK)


class Group(click.Group):
    """The ``rmqsniff`` group: a broken pipe anywhere below it ends the run with status 0."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except BrokenPipeError:
            quiet_broken_pipe()


def usage_error(exc: click.ClickException) -> click.ClickException:
    """``exc`` tied to the running command, so click prints its usage line and exits 2."""
    if isinstance(exc, click.UsageError) and exc.ctx is None:
        ctx = click.get_current_context(silent=True)
        if ctx is not None:
            exc.ctx, exc.cmd = ctx, ctx.command
    return exc


def _flag(ctx: click.Context, name: str) -> str:
    for p in ctx.command.params:
        if p.name == name and p.opts:
            return max(p.opts, key=len)
    return name


def given(ctx: click.Context, name: str) -> bool:
    """True when the user gave option ``name`` (on the command line or from the environment)."""
    from click.core import ParameterSource

    src = ctx.get_parameter_source(name)
    return src is not None and src not in (ParameterSource.DEFAULT, ParameterSource.DEFAULT_MAP)


def needs(ctx: click.Context, option: str, other: str) -> None:
    """Option ``option`` does nothing without ``other``: a usage error naming both."""
    if given(ctx, option) and not given(ctx, other):
        raise click.UsageError(f"{_flag(ctx, option)} does nothing without {_flag(ctx, other)}", ctx)


def excludes(ctx: click.Context, option: str, other: str) -> None:
    """Options ``option`` and ``other`` cannot go together: a usage error naming both."""
    if given(ctx, option) and given(ctx, other):
        raise click.UsageError(f"{_flag(ctx, option)} and {_flag(ctx, other)} exclude each other", ctx)


def capture_inputs(exit_missing: int = EXIT_FAILED, stdin: bool = True, required: bool = True) -> Callable[[F], F]:
    """The captures a command reads: positional paths and/or ``-r FILE`` (repeatable, like tshark);
    ``-`` is standard input. Every named file is checked before the command prints anything: one
    line per file that is missing or not a capture, then exit ``exit_missing``. The command
    receives them all, in order, as ``captures``."""
    def deco(f: F) -> F:
        @functools.wraps(f)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            paths = tuple(kwargs.pop("read_files", ())) + tuple(kwargs.get("captures", ()))
            ctx = click.get_current_context()
            if not paths and required:
                raise click.UsageError("give a capture file (FILE or -r FILE; '-' reads standard input)", ctx)
            if paths.count(STDIN) > 1:
                raise click.UsageError("standard input ('-') can be read once", ctx)
            if STDIN in paths and not stdin:
                raise click.UsageError(f"{ctx.info_name} cannot read a capture from standard input ('-')", ctx)
            if "only_ports" in kwargs:
                needs(ctx, "only_ports", "ports")
            bad = unreadable(paths)
            for line in bad:
                fail(line)
            if bad:
                sys.exit(exit_missing)
            kwargs["captures"] = paths
            return f(*args, **kwargs)

        opt = click.option("-r", "--read-file", "read_files", multiple=True, metavar="FILE",
                           type=click.Path(dir_okay=False, allow_dash=True),
                           help="Read this capture (repeatable; '-' for standard input: pcap or pcapng).")
        arg = click.argument("captures", nargs=-1, type=click.Path(dir_okay=False, allow_dash=True))
        return cast(F, arg(opt(wrapper)))
    return deco


def unreadable(paths: Iterable[str]) -> list[str]:
    """One line per capture file that cannot be opened or is not a pcap/pcapng (stdin is not checked:
    it is read once, as it comes)."""
    from .sources.pcapfile import CaptureError, open_capture

    out = []
    for path in paths:
        if path == STDIN:
            continue
        try:
            open_capture(path).close()
        except CaptureError as e:
            out.append(str(e))
    return out


# ---------------------------------------------------------------- -t: how times are shown

TIME_FORMATS = {
    "a": "absolute local time of day",
    "ad": "absolute local date and time",
    "r": "seconds since the first row",
    "u": "UTC time of day",
    "ud": "UTC date and time",
    "e": "seconds since the epoch",
}
TIME_HELP = ("Times as tshark's -t: " + ", ".join(f"{k} {v}" for k, v in TIME_FORMATS.items())
             + " (default: local time, with the date once the rows span more than one day).")
time_option = click.option("-t", "time_format", type=click.Choice(list(TIME_FORMATS)), default=None,
                           metavar="a|ad|r|u|ud|e", help=TIME_HELP)


class TimeText:
    """Timestamps (seconds since the epoch) as text in one ``-t`` format, microseconds like tshark.
    The default (None) is local time of day; once a row falls on another day than the first row,
    rows carry the date from there on (a stream cannot know its span in advance)."""

    def __init__(self, fmt: str | None, tz: _dt.tzinfo | None = None) -> None:
        self.fmt = fmt
        self.tz = tz  # None: the local zone
        self.first: float | None = None
        self.first_day: _dt.date | None = None
        self.dated = fmt in ("ad", "ud")

    def __call__(self, ts: float) -> str:
        if self.first is None:
            self.first = ts
        if self.fmt == "e":
            return f"{ts:.6f}"
        if self.fmt == "r":
            return f"{ts - self.first:.6f}"
        zone = _dt.timezone.utc if self.fmt in ("u", "ud") else self.tz
        t = _dt.datetime.fromtimestamp(ts, zone) if zone is not None else _dt.datetime.fromtimestamp(ts)
        if self.fmt is None:
            if self.first_day is None:
                self.first_day = t.date()
            elif t.date() != self.first_day:
                self.dated = True
        return t.strftime("%Y-%m-%d %H:%M:%S.%f" if self.dated else "%H:%M:%S.%f")


# options shared by every command that decodes captures
port_option = click.option("--port", "ports", multiple=True, metavar="P[=PROTO][,…]",
                           help="Decode these TCP ports as RocketMQ servers (besides 9876/10911/10909/8080/8081); "
                                "P=grpc or P=remoting forces the protocol.")
only_ports_option = click.option("--only-ports", is_flag=True, help="With --port: decode only those ports.")
tls_keylog_option = click.option("--tls-keylog", "tls_keylogs", multiple=True, type=click.Path(dir_okay=False),
                                 metavar="FILE",
                                 help="Decrypt TLS with this NSS key log (SSLKEYLOGFILE format; also read from the "
                                      "SSLKEYLOGFILE variable and pcapng Decryption Secrets Blocks).")
