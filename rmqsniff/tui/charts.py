"""Text charts for the stats view: a latency histogram and a rate-over-time plot,
computed over the exchanges a view holds."""
from __future__ import annotations

import datetime as _dt
import math
from collections.abc import Sequence
from dataclasses import dataclass

from rich.text import Text

from ..model import ANSWERED, Exchange
from .store import View, result_of

_BLOCKS = " ▁▂▃▄▅▆▇█"


def latency_buckets(exchanges: Sequence[Exchange], view: View) -> list[tuple[float, int]]:
    """(upper bound in ms, count) per power-of-two bucket, from 1/16 ms up to the
    largest latency seen; answered exchanges only."""
    counts: dict[int, int] = {}
    for i in view:
        ex = exchanges[i]
        if ex.status != ANSWERED or ex.response is None or ex.request is None:
            continue
        ms = (ex.response.ts - ex.request.ts) * 1000.0
        b = max(-4, math.ceil(math.log2(ms))) if ms > 0 else -4
        counts[b] = counts.get(b, 0) + 1
    if not counts:
        return []
    return [(2.0 ** b, counts.get(b, 0)) for b in range(min(counts), max(counts) + 1)]


def _ms_label(ms: float) -> str:
    if ms >= 1000:
        return f"{ms / 1000:g} s"
    return f"{ms:g} ms"


def render_histogram(buckets: list[tuple[float, int]], width: int = 60) -> Text:
    """Horizontal bars, one line per bucket: ``<= 4 ms  ████ 123``."""
    out = Text()
    if not buckets:
        return Text("no answered exchanges in this view")
    top = max(c for _, c in buckets) or 1
    total = sum(c for _, c in buckets)
    for le, c in buckets:
        bar = "█" * round(width * c / top) if c else ""
        out.append(f"<= {_ms_label(le):>9} ", style="bold")
        out.append(bar, style="cyan")
        out.append(f" {c} ({100.0 * c / total:.1f} %)\n")
    return out


@dataclass
class Series:
    start: float  # epoch seconds of the first bin
    step: float  # seconds per bin
    counts: list[int]
    errors: list[int]


def _nice_step(span: float, bins: int) -> float:
    raw = max(span / max(1, bins), 1e-3)
    for s in (0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2, 5, 10, 15, 30, 60, 120, 300, 600,
              900, 1800, 3600, 7200, 21600, 43200, 86400):
        if s >= raw:
            return float(s)
    return float(math.ceil(raw / 86400) * 86400)


def rate_series(exchanges: Sequence[Exchange], view: View, bins: int = 60) -> Series | None:
    """Requests (and error answers) per time bin over the view, at most ``bins`` bins."""
    ts = [exchanges[i].ts for i in view]
    if not ts:
        return None
    lo, hi = min(ts), max(ts)
    step = _nice_step(hi - lo, bins)
    start = math.floor(lo / step) * step
    n = int((hi - start) // step) + 1
    counts = [0] * n
    errors = [0] * n
    for t, i in zip(ts, view, strict=False):  # a view still being filled may have grown since ts was read
        b = int((t - start) // step)
        counts[b] += 1
        if result_of(exchanges[i]) == "error":
            errors[b] += 1
    return Series(start, step, counts, errors)


def render_rate(s: Series | None, height: int = 10) -> Text:
    """Vertical bars (one column per bin), the peak rate on the axis, time at both ends."""
    if s is None:
        return Text("no exchanges in this view")
    top = max(s.counts) or 1
    out = Text()
    out.append(f"exchanges per {s.step:g} s (peak {top}, {top / s.step:.1f}/s); red: bins with error answers\n",
               style="bold")
    for row in range(height, 0, -1):
        out.append(f"{top * row / height:>8.0f} │" if row in (height, 1) else "         │")
        for c, e in zip(s.counts, s.errors, strict=True):
            level = c * height / top - (row - 1)
            ch = _BLOCKS[max(0, min(8, round(level * 8)))] if level > 0 else " "
            out.append(ch, style="red" if e else "cyan")
        out.append("\n")
    t0 = _dt.datetime.fromtimestamp(s.start, _dt.timezone.utc).strftime("%H:%M:%S.%f")[:-3]
    t1 = _dt.datetime.fromtimestamp(s.start + s.step * len(s.counts), _dt.timezone.utc).strftime("%H:%M:%S.%f")[:-3]
    out.append("         └" + "─" * len(s.counts) + "\n")
    out.append(f"          {t0}{' ' * max(1, len(s.counts) - 2 * len(t0))}{t1}")
    return out


SPARKS = "▁▂▃▄▅▆▇█"


def sparkline(values: Sequence[int | None]) -> str:
    """One character per value, scaled to the largest (a space where the value is unknown)."""
    top = max((v for v in values if v is not None), default=0)
    return "".join(" " if v is None else SPARKS[0 if top <= 0 else min(len(SPARKS) - 1, v * len(SPARKS) // (top + 1))]
                   for v in values)
