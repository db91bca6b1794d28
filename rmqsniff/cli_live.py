"""``rmqsniff live``: decode an interface as traffic flows (a thin shell over :mod:`rmqsniff.live`)."""
from __future__ import annotations

import os
import signal
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any, Literal

import click

from . import cliutil, units
from .flows import PortSpec
from .live import DEFAULT_IDLE, LiveSnapshot, LiveTap
from .model import Exchange
from .protocols.tls import TlsKeys
from .sources.afpacket import DEFAULT_BUFFER, DEFAULT_SNAPLEN, AfPacketSource, CaptureSetupError, PcapngWriter
from .text import shown

TOP = 5
EXIT_SETUP = 1


# ---------------------------------------------------------------- option values

def parse_duration(text: str) -> float:
    """``30s``, ``500ms``, ``2m``, ``1h``; a bare number is seconds (tcpdump's habit)."""
    ms = units.parse_duration_ms(text, bare="s")
    if ms is None or ms <= 0:
        raise click.BadParameter(f"{text!r} is not a positive duration (e.g. 30s, 500ms, 2m)")
    return ms / 1000.0


def parse_size(text: str, bare_unit: int) -> int:
    """``100MB`` (10^6), ``64MiB`` (2^20), ``512k``...; a bare number is in ``bare_unit`` bytes."""
    t = text.strip()
    n = int(float(t) * bare_unit) if t.replace(".", "", 1).isdigit() else units.parse_size(t)
    if n is None or n <= 0:
        raise click.BadParameter(f"{text!r} is not a positive size (e.g. 100MB, 64MiB)")
    return n


def display_filter(expr: str | None) -> Callable[[Exchange], bool] | None:
    """The ``-Y`` filter (rmqsniff.filter); a bad one is explained with a caret and exits."""
    try:
        return cliutil.display_filter(expr)
    except cliutil.BadInput:
        raise SystemExit(EXIT_SETUP) from None


_ports = cliutil.parse_ports
_fail = cliutil.fail


# ---------------------------------------------------------------- console view

class Rates:
    """Per-second rates of packets, payload bytes and requests between two snapshots."""

    def __init__(self) -> None:
        self.prev: tuple[float, dict[str, float]] | None = None
        self.now: dict[str, float] = {"packets": 0.0, "bytes": 0.0, "requests": 0.0}

    def update(self, snap: LiveSnapshot) -> dict[str, float]:
        t = time.monotonic()
        cur = {"packets": float(snap.packets), "bytes": float(snap.stats["transport"].get("bytes", 0)),
               "requests": float(snap.stats["counters"]["request"])}
        if self.prev is not None and t > self.prev[0]:
            dt = t - self.prev[0]
            self.now = {k: (v - self.prev[1][k]) / dt for k, v in cur.items()}
        self.prev = (t, cur)
        return self.now


def _si(n: float) -> str:
    for unit in ("", "k", "M", "G"):
        if abs(n) < 1000 or unit == "G":
            return f"{n:.0f}{unit}" if unit == "" else f"{n:.1f}{unit}"
        n /= 1000
    return f"{n:.1f}G"


def render_view(snap: LiveSnapshot, rates: dict[str, float], paused: bool = False, final: bool = False,
                width: int = 160) -> Any:
    """The rich renderable of the console view: capture line, Envoy stats, latency, top lists
    (three columns from ``width`` 130 on, else two)."""
    from rich.console import Group
    from rich.table import Table
    from rich.text import Text

    s = snap.stats
    c = s["counters"]
    ifaces = ", ".join(cap.name for cap in snap.captures)
    received = sum(cap.counters.received for cap in snap.captures)
    drops = snap.dropped
    pct = 100.0 * drops / received if received else 0.0
    state = "final" if final else ("PAUSED - p: resume, q: quit" if paused else "p: pause, q: quit")
    head = Text.assemble(
        ("rmqsniff live ", "bold"), f"{ifaces}  {time.strftime('%H:%M:%S')}  up {snap.elapsed:.0f}s  [{state}]\n",
        f"packets {snap.packets:,} ({_si(rates['packets'])}/s)  "
        f"payload {_si(s['transport'].get('bytes', 0))}B ({_si(rates['bytes'])}B/s)  "
        f"requests {c['request']:,} ({_si(rates['requests'])}/s)  ",
        (f"kernel drops {drops:,} ({pct:.2f}%)", "bold red" if drops else "green"),
    )
    envoy = Table(title="Envoy stats", show_header=False, box=None, pad_edge=False)
    envoy.add_column(style="dim", no_wrap=True, min_width=23)
    envoy.add_column(justify="right")
    for name in ("request", "response", "response_success", "response_error", "response_no_message",
                 "request_decoding_error", "response_decoding_error", "answered", "unanswered", "oneway",
                 "orphan", "send_message_v2", "pop_message", "ack_message", "heartbeat", "get_topic_route",
                 "maintenance_failure"):
        envoy.add_row(name, f"{c[name]:,}", style="red" if c[name] and "error" in name else None)
    for name in ("request_active", "send_message_v2_active", "pop_message_active"):
        g = s["gauges"][name]
        envoy.add_row(name, f"{g['value']} (max {g['max']})")
    h = s["histograms"]["request_time_ms"]
    lat = Table(title="request_time_ms", show_header=False, box=None, pad_edge=False)
    lat.add_column(style="dim", no_wrap=True)
    lat.add_column(justify="right")
    for k in ("count", "p50", "p90", "p99", "max", "mean"):
        lat.add_row(k, f"{h[k]:,}" if k == "count" else f"{h[k]:.3f}")
    tops = [_top_table("request code", {r["name"]: r for r in s["codes"].values()})]
    for by, title in (("by_topic", "topic"), ("by_group", "group"), ("by_client", "client")):
        tops.append(_top_table(title, s["breakdowns"][by]["rows"]))
    grid = Table.grid(padding=(0, 3))
    if width >= 130:
        grid.add_row(envoy, Group(lat, *tops[:1]), Group(*tops[1:]))
    else:
        grid.add_row(envoy, Group(lat, *tops))
    parts: list[Any] = [head, grid]
    if snap.errors:
        parts.append(Text(f"last decoding problem: {shown(snap.errors[-1])}", style="yellow"))
    return Group(*parts)


def _top_table(title: str, rows: dict[str, dict[str, Any]]) -> Any:
    from rich.table import Table
    from rich.text import Text

    t = Table(title=f"top {title}s", box=None, pad_edge=False, header_style="dim")
    columns: tuple[tuple[str, Literal["left", "right"]], ...] = (
        (title, "left"), ("req", "right"), ("err", "right"), ("p99 ms", "right"))
    for col, just in columns:
        t.add_column(col, justify=just, overflow="ellipsis", no_wrap=True, max_width=28 if just == "left" else None)
    for key, r in sorted(rows.items(), key=lambda kv: -kv[1]["requests"])[:TOP]:
        t.add_row(Text(shown(key)), f"{r['requests']:,}", f"{r['errors']:,}", f"{r['p99']:.2f}",
                  style="red" if r["errors"] else None)
    return t


class Keyboard:
    """Single keys from a terminal (cbreak mode) while the view runs: p/space pause, q quit."""

    def __init__(self) -> None:
        import termios
        import tty

        self.fd = sys.stdin.fileno()
        self._saved = termios.tcgetattr(self.fd)
        tty.setcbreak(self.fd)

    def read(self) -> str:
        try:
            return os.read(self.fd, 32).decode(errors="ignore")
        except OSError:
            return ""

    def close(self) -> None:
        import termios

        termios.tcsetattr(self.fd, termios.TCSADRAIN, self._saved)


# ---------------------------------------------------------------- the command

@click.command("live", context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-i", "--interface", "interfaces", multiple=True, required=True, metavar="IFACE",
              help="Interface to capture on; repeat for several; 'any' for all (cooked, SLL).")
@click.option("-f", "bpf", metavar="BPF", help="Kernel capture filter, tcpdump syntax (default: tcp).")
@click.option("--port", "ports", multiple=True, metavar="P[=PROTO][,…]",
              help="Decode these TCP ports as RocketMQ servers (besides 9876/10911/10909/8080/8081); "
                   "P=grpc or P=remoting forces the protocol.")
@click.option("--only-ports", is_flag=True, help="With --port: decode only those ports.")
@click.option("-c", "--count", type=click.IntRange(min=0), default=0, help="Stop after this many packets.")
@click.option("--duration", metavar="DURATION", help="Stop after this long, e.g. 30s, 5m (bare number: seconds).")
@click.option("-w", "--write", "write", type=click.Path(dir_okay=False), metavar="FILE.pcapng",
              help="Also write every captured packet to this pcapng.")
@click.option("--rotate", metavar="SIZE", help="With -w: start a new file at this size, e.g. 100MB "
              "(bare number: MB); files are named FILE_00001.pcapng, ...")
@click.option("--keep", type=click.IntRange(min=1), help="With --rotate: keep only the newest N files.")
@click.option("--stat-prefix", default="rmqsniff", show_default=True, help="Stats are rooted at rocketmq.<prefix>.")
@click.option("--prometheus", metavar="[HOST:]PORT",
              help="Serve /metrics (Prometheus) and /stats (Envoy text) here, e.g. 127.0.0.1:9108.")
@click.option("--prometheus-token", envvar="RMQSNIFF_ADMIN_TOKEN", metavar="TOKEN",
              help="Bearer token --prometheus asks for (env RMQSNIFF_ADMIN_TOKEN). Off loopback one is made up "
                   "and printed once when none is given.")
@click.option("-Y", "--filter", "expr", metavar="EXPR", help="Count only exchanges matching this display filter.")
@click.option("-s", "--snaplen", type=click.IntRange(min=64, max=DEFAULT_SNAPLEN), default=DEFAULT_SNAPLEN,
              show_default=True, help="Bytes kept of each packet.")
@click.option("-B", "--buffer-size", "buffer", metavar="SIZE", default=str(DEFAULT_BUFFER // 1024),
              show_default=True, help="Kernel ring per interface (bare number: KiB, as tcpdump).")
@click.option("-p", "--no-promiscuous-mode", "no_promisc", is_flag=True, help="Do not put Ethernet interfaces "
              "into promiscuous mode.")
@click.option("--idle", default=f"{DEFAULT_IDLE:.0f}s", show_default=True, metavar="DURATION",
              help="Close connections silent this long (their pending requests count as unanswered).")
@click.option("--refresh", default="1s", show_default=True, metavar="DURATION", help="Console refresh interval.")
@click.option("--capture-mode", type=click.Choice(["ring", "recv"]), default="ring", show_default=True,
              help="ring: TPACKET_V3 mmap ring (fast); recv: one recvmsg per packet.")
@click.option("--recent", type=click.IntRange(min=0), default=1000, show_default=True, metavar="N",
              help="Keep the latest N exchanges for --prometheus' /exchanges (0: none).")
@click.option("--tls-keylog", "tls_keylogs", multiple=True, type=click.Path(dir_okay=False), metavar="FILE",
              help="Decrypt TLS with this NSS key log, re-read as it grows (SSLKEYLOGFILE is read too).")
@click.pass_context
def live(ctx: click.Context, interfaces: tuple[str, ...], bpf: str | None, ports: tuple[str, ...], only_ports: bool,
         count: int, duration: str | None, write: str | None, rotate: str | None, keep: int | None,
         stat_prefix: str, prometheus: str | None, expr: str | None, snaplen: int, buffer: str, no_promisc: bool,
         idle: str, refresh: str, capture_mode: str, recent: int, prometheus_token: str | None,
         tls_keylogs: tuple[str, ...]) -> None:
    """Decode a network interface as traffic flows: the same exchanges and stats as for a
    capture file, on a refreshing console view (p: pause, q or Ctrl-C: stop).

    When stdout is not a terminal, nothing is shown while capturing and the final stats are
    printed in Envoy's text format, as `rmqsniff stats` prints them.
    """
    cliutil.needs(ctx, "only_ports", "ports")
    if rotate and not write:
        raise click.UsageError("--rotate needs -w FILE")
    if keep and not rotate:
        raise click.UsageError("--keep needs --rotate SIZE")
    duration_s = parse_duration(duration) if duration else None
    rotate_bytes = parse_size(rotate, 1_000_000) if rotate else None
    buffer_bytes = parse_size(buffer, 1024)
    idle_s = parse_duration(idle)
    refresh_s = parse_duration(refresh)
    port_specs = _ports(ports)
    select = display_filter(expr)
    debug = bool((ctx.obj or {}).get("debug"))
    try:
        code = _run(list(dict.fromkeys(interfaces)), bpf, only_ports, count, write, keep, stat_prefix, prometheus,
                    select, snaplen, not no_promisc, capture_mode, duration=duration_s, rotate=rotate_bytes,
                    buffer=buffer_bytes, idle=idle_s, refresh=refresh_s, ports=port_specs, recent=recent,
                    token=prometheus_token or None, tls_keylogs=tls_keylogs)
    except CaptureSetupError as e:
        _fail(str(e))
        code = EXIT_SETUP
    except KeyboardInterrupt:  # before the capture loop took over Ctrl-C
        _fail("interrupted")
        code = 130
    except Exception as e:  # one clear line; the traceback only with --debug
        if debug:
            raise
        from .exporters.promhttp import EndpointError

        _fail(str(e) if isinstance(e, EndpointError) else f"{type(e).__name__}: {e} (run with --debug for details)")
        code = EXIT_SETUP
    sys.exit(code)


def _run(interfaces: list[str], bpf: str | None, only_ports: bool, count: int, write: str | None,
         keep: int | None, stat_prefix: str, prometheus: str | None, select: Callable[[Exchange], bool] | None,
         snaplen: int, promisc: bool, mode: str, *, duration: float | None, rotate: int | None, buffer: int,
         idle: float, refresh: float, ports: list[PortSpec], recent: int, token: str | None = None,
         tls_keylogs: Sequence[str] = ()) -> int:
    from .exporters.promhttp import StatsEndpoint, parse_address

    sources: list[AfPacketSource] = []
    endpoint = None
    writer = None
    try:
        for name in interfaces:
            sources.append(AfPacketSource(name, bpf, snaplen=snaplen, buffer_size=buffer, mode=mode,
                                          promisc=promisc))
        if write:
            writer = PcapngWriter(write, [(s.name, s.linktype) for s in sources], snaplen=snaplen,
                                  rotate=rotate, keep=keep)
        tap = LiveTap(sources, stat_prefix=stat_prefix, ports=ports, only_ports=only_ports, select=select,
                      recent=recent, writer=writer, idle=idle, tls_keys=TlsKeys.from_options(tls_keylogs, live=True))
        if prometheus:
            endpoint = StatsEndpoint(parse_address(prometheus), tap.route(), token=token).start()
            for line in endpoint.lines:
                _fail(line)
            _fail(f"serving {endpoint.url}/metrics (Prometheus) and {endpoint.url}/stats (Envoy)")
    except BaseException:
        for s in sources:
            s.close()
        if writer is not None:
            writer.close()
        raise
    for s in sources:
        kind = "EN10MB (Ethernet)" if s.linktype == 1 else "LINUX_SLL (Linux cooked v1)"
        _fail(f"listening on {s.name}, link-type {kind}, capture size {snaplen} bytes, {s.mode} {buffer >> 10} KiB")
    try:
        reason = _capture(tap, count, duration, refresh)
    finally:
        tap.finish()
        if endpoint is not None:
            endpoint.close()
    _summary(tap, reason, writer)
    return 0


def _capture(tap: LiveTap, count: int, duration: float | None, refresh: float) -> str:
    """Run the tap with the console view (on a terminal) until a stop condition or a signal."""
    from rich.console import Console

    stop = {"now": False, "paused": False}

    def on_signal(_sig: int, _frame: Any) -> None:
        stop["now"] = True

    old = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    console = Console(stderr=False)
    view = None
    keys = None
    try:
        if console.is_terminal:
            from rich.live import Live

            if sys.stdin.isatty():
                keys = Keyboard()
            rates = Rates()
            view = Live(console=console, auto_refresh=False, transient=True, redirect_stderr=False)
            view.start()

            def on_tick(t: LiveTap) -> None:
                if not stop["paused"]:
                    snap = t.snapshot(TOP)
                    view.update(render_view(snap, rates.update(snap), width=console.width), refresh=True)

            def on_key(_fd: int) -> None:
                assert keys is not None
                for ch in keys.read():
                    if ch in "pP ":
                        stop["paused"] = not stop["paused"]
                        snap = tap.snapshot(TOP)
                        view.update(render_view(snap, rates.update(snap), paused=stop["paused"], width=console.width),
                                    refresh=True)
                    elif ch in "qQ":
                        stop["now"] = True

            on_tick(tap)
            return tap.run(count=count, duration=duration, tick=refresh, on_tick=on_tick,
                           stop=lambda: stop["now"], fds=(keys.fd,) if keys else (), on_fd=on_key)
        return tap.run(count=count, duration=duration, tick=refresh, stop=lambda: stop["now"])
    finally:
        if view is not None:
            view.stop()
        if keys is not None:
            keys.close()
        for s, h in old.items():
            signal.signal(s, h)


def _summary(tap: LiveTap, reason: str, writer: PcapngWriter | None) -> None:
    """Final stats (view on a terminal, Envoy text otherwise) and one line on capture loss."""
    from rich.console import Console

    from .exporters.statsfmt import render_envoy

    snap = tap.snapshot(TOP)
    console = Console()
    if console.is_terminal:
        console.print(render_view(snap, {"packets": 0.0, "bytes": 0.0, "requests": 0.0}, final=True,
                                  width=console.width))
    else:
        sys.stdout.write(render_envoy(snap.stats))
        sys.stdout.flush()
    for cap in snap.captures:
        c = cap.counters
        pct = 100.0 * c.dropped / c.received if c.received else 0.0
        _fail(f"{cap.name}: {c.received} packets received by filter, {c.dropped} dropped by kernel ({pct:.2f}%)")
    left = sum(c.counters.received - c.counters.dropped for c in snap.captures) - snap.packets
    if left > 0:
        _fail(f"{left} packets were still queued in the kernel when the capture stopped (not decoded)")
    for why, n in sorted(tap.table.other_flows.items()):
        _fail(f"{n} connection(s) not decoded: {why}")
    if tap.errors:
        _fail(f"{len(tap.errors)} decoding problem(s), e.g. {tap.errors[0]}")
    if writer is not None:
        files = list(writer.files)
        where = files[0] if len(files) == 1 else f"{len(files)} files ({files[0]} ... {files[-1]})"
        _fail(f"wrote {writer.packets} packets to {where}")
    _fail(f"stopped: {reason}")


if __name__ == "__main__":  # pragma: no cover
    live()
