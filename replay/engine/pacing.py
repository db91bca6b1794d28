"""Pacing: when each replayed request is due (seconds after the replay started).

* ``speed`` - the captured timeline divided by the speed, idle gaps capped by ``max_gap``;
  every copy (``--scale``) follows the same timeline.
* ``rate``  - fixed rate over all requests of all copies in capture order (request k of
  the run is due at k / rate). Requests that cannot go out on time (a dependency is
  slow, the loop is busy) are sent late and counted, never dropped.
* ``max``   - everything is due at once: as fast as dependencies and the target allow.

Loops follow each other on the same clock. With ``speed`` and ``rate`` the runner hands
requests that need no waiting to one :class:`Ticker` (one timer for all sessions) instead
of one sleep per request.
"""
from __future__ import annotations

import asyncio
import heapq
import re
import time
from collections.abc import Callable
from dataclasses import dataclass

from rmqsniff.units import parse_duration as parse_duration  # re-exported by replay.engine

from .plan import Plan

SPEED, RATE, MAX = "speed", "rate", "max"
LATE_AFTER = 0.002  # a request sent more than this after its due time counts as late
_UNITS = {"s": 1.0, "sec": 1.0, "m": 60.0, "min": 60.0, "h": 3600.0}


def parse_speed(text: str) -> float:
    """``2.5x`` / ``2.5`` / ``250%`` -> 2.5 (ValueError when not > 0)."""
    t = text.strip().lower()
    try:
        v = float(t[:-1].strip()) / 100.0 if t.endswith("%") else float(t.rstrip("x").strip())
    except ValueError:
        raise ValueError(f"speed {text!r}: expected Nx or N%, e.g. 2x or 200%") from None
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


TICK = 0.001  # the ticker wakes at most once per this many seconds


class Ticker:
    """One timer for every session: a heap of ``(due, seq, fn)`` (due in seconds after ``t0``),
    woken at most once per :data:`TICK`, running everything due in due order. ``fn(due)``
    returns the next due time to be run again, or None."""

    def __init__(self, t0: float, tick: float = TICK) -> None:
        self.t0 = t0
        self.tick = tick
        self._heap: list[tuple[float, int, Callable[[float], float | None]]] = []
        self._seq = 0
        self._handle: asyncio.TimerHandle | None = None
        self._armed = float("inf")  # absolute monotonic time the handle fires at
        self._last = 0.0

    def at(self, due: float, fn: Callable[[float], float | None]) -> None:
        self._seq += 1
        heapq.heappush(self._heap, (due, self._seq, fn))
        self._arm()

    def _arm(self) -> None:
        if not self._heap:
            return
        when = max(self.t0 + self._heap[0][0], self._last + self.tick)
        if when >= self._armed:
            return
        if self._handle is not None:
            self._handle.cancel()
        self._armed = when
        self._handle = asyncio.get_running_loop().call_later(max(0.0, when - time.monotonic()), self._fire)

    def _fire(self) -> None:
        self._handle, self._armed = None, float("inf")
        now = time.monotonic()
        self._last = now
        heap, push, pop = self._heap, heapq.heappush, heapq.heappop
        rel = now - self.t0
        while heap and heap[0][0] <= rel:
            due, _seq, fn = pop(heap)
            nxt = fn(due)
            if nxt is not None:
                self._seq += 1
                push(heap, (nxt, self._seq, fn))
        self._arm()

    def close(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
        self._heap.clear()
