"""Pacing: when each replayed request is due (seconds after the replay started).

* ``speed`` - the captured timeline divided by the speed, idle gaps capped by ``max_gap``;
  every copy (``--scale``) follows the same timeline.
* ``rate``  - fixed rate over all requests of all copies in capture order (request k of
  the run is due at k / rate). Requests that cannot go out on time (a dependency is
  slow, the loop is busy) are sent late and counted, never dropped.
* ``max``   - everything is due at once: as fast as dependencies and the target allow.

Loops follow each other on the same clock.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

from .plan import Plan

SPEED, RATE, MAX = "speed", "rate", "max"
LATE_AFTER = 0.002  # a request sent more than this after its due time counts as late
_UNITS = {"s": 1.0, "sec": 1.0, "m": 60.0, "min": 60.0, "h": 3600.0}


def parse_speed(text: str) -> float:
    """``2.5x`` / ``2.5`` -> 2.5 (ValueError when not > 0)."""
    t = text.strip().lower().rstrip("x").strip()
    v = float(t)
    if not v > 0:
        raise ValueError(f"speed {text!r} must be > 0")
    return v


def parse_rate(text: str) -> float:
    """``2000/s``, ``2000``, ``120/m``, ``1k/s`` -> requests per second."""
    m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*(k?)\s*(?:/\s*([a-z]+))?\s*", text.lower())
    if not m:
        raise ValueError(f"rate {text!r}: expected N/s, e.g. 2000/s")
    v = float(m.group(1)) * (1000.0 if m.group(2) else 1.0)
    unit = m.group(3) or "s"
    if unit not in _UNITS:
        raise ValueError(f"rate {text!r}: unknown unit {unit!r} (s, m, h)")
    v /= _UNITS[unit]
    if not v > 0:
        raise ValueError(f"rate {text!r} must be > 0")
    return v


def parse_duration(text: str) -> float:
    """``30s`` / ``5m`` / ``250ms`` / ``10`` (seconds) -> seconds."""
    m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*(ms|s|m|h)?\s*", text.lower())
    if not m:
        raise ValueError(f"duration {text!r}: expected e.g. 30s, 5m, 250ms")
    return float(m.group(1)) * {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}[m.group(2) or "s"]


@dataclass(slots=True)
class Pacing:
    mode: str = SPEED
    speed: float = 1.0
    rate: float = 0.0
    max_gap: float | None = None


class Schedule:
    """Due times for (loop, copy, session, step) of a plan."""

    def __init__(self, plan: Plan, pacing: Pacing, copies: int = 1) -> None:
        self.pacing = pacing
        self.copies = max(1, copies)
        order = sorted(((st.at, si, st.index) for si, s in enumerate(plan.sessions) for st in s.steps))
        self.n = len(order)
        self._k: dict[tuple[int, int], int] = {}
        self._t: dict[tuple[int, int], float] = {}
        t = 0.0
        prev = order[0][0] if order else 0.0
        gap_cap = pacing.max_gap
        for k, (at, si, idx) in enumerate(order):
            gap = at - prev
            if gap_cap is not None and gap > gap_cap:
                gap = gap_cap
            t += gap
            prev = at
            self._k[(si, idx)] = k
            self._t[(si, idx)] = t / pacing.speed if pacing.mode == SPEED else t
        self.timeline = t / pacing.speed if pacing.mode == SPEED else t

    def due(self, loop: int, copy: int, session: int, step: int) -> float:
        p = self.pacing
        if p.mode == MAX:
            return 0.0
        if p.mode == RATE:
            slot = (loop * self.n + self._k[(session, step)]) * self.copies + copy
            return slot / p.rate
        return loop * (self.timeline + 0.001) + self._t[(session, step)]

    def span(self, loops: int) -> float:
        """When the last request of ``loops`` loops is due."""
        if self.n == 0 or self.pacing.mode == MAX:
            return 0.0
        if self.pacing.mode == RATE:
            return (loops * self.n * self.copies - 1) / self.pacing.rate
        return (loops - 1) * (self.timeline + 0.001) + self.timeline

    def requested_rate(self, loops: int) -> float | None:
        """Requests per second the pacing asks for (None for ``max``)."""
        if self.pacing.mode == RATE:
            return self.pacing.rate
        span = self.span(loops)
        if self.pacing.mode == MAX or span <= 0:
            return None
        return loops * self.n * self.copies / span
