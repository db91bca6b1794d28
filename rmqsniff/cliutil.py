"""Helpers shared by the command modules: one-line errors, port lists, ``-Y`` filters."""
from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

import click

from .filter import Filter

if TYPE_CHECKING:
    from .flows import PortSpec


class BadInput(Exception):
    """A usage problem already explained to the user (the command exits with 1)."""


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
