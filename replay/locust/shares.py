"""One machine's share of a replay: disjoint (session, copy) units, the whole run's pacing,
and one JSON line per finished request for a driver (Locust) to report.

Units are every (session index, copy) of the plan. :func:`assign` gives each to one of
``n`` shares by longest-processing-time: heaviest unit first (its request count), each to
the least loaded share, ties to the lower share index and the earlier unit. It depends only
on the plan and ``n``, so every worker computes the same split on its own: the shares are
disjoint, together complete, and stable from run to run.

A share keeps the due times the whole run would give its requests (``Schedule`` over the
full plan), so ``n`` shares started together send at the requested rate or speed and each
at its part of it.
"""
from __future__ import annotations

import asyncio
import heapq
import sys
import time
from collections.abc import Callable, Sequence
from typing import IO

import orjson

from dissectors.remoting.command import RemotingCommand
from rmqsniff.model import Connection, Exchange
from rmqsniff.protocols import protocol_of

from ..engine.plan import Plan, Session
from ..engine.runner import Options, Replay
from ..report import Report

Unit = tuple[int, int]  # (session index in the plan, copy)
FLUSH_S = 0.05  # events are written at least this often
FLUSH_LINES = 256


def parse_share(text: str) -> tuple[int, int]:
    """``I/N`` (0-based share I of N) -> (I, N); ValueError otherwise."""
    i, sep, n = text.strip().partition("/")
    if not sep or not i.strip().isdigit() or not n.strip().isdigit():
        raise ValueError(f"--share {text!r}: expected I/N, e.g. 0/2")
    idx, count = int(i), int(n)
    if not 0 <= idx < count:
        raise ValueError(f"--share {text!r}: I must be in 0..N-1")
    return idx, count


def assign(weights: Sequence[int], n: int) -> list[int]:
    """The share (0..n-1) of each unit, balancing the summed weights (see module doc)."""
    if n < 1:
        raise ValueError("need at least one share")
    owner = [0] * len(weights)
    heap = [(0, k) for k in range(n)]  # (load, share)
    for u in sorted(range(len(weights)), key=lambda u: (-weights[u], u)):
        load, k = heapq.heappop(heap)
        owner[u] = k
        heapq.heappush(heap, (load + weights[u], k))
    return owner


def units(plan: Plan, copies: int) -> list[Unit]:
    return [(si, copy) for si in range(len(plan.sessions)) for copy in range(max(1, copies))]


def share_units(plan: Plan, copies: int, index: int, n: int) -> list[Unit]:
    """The units of share ``index`` of ``n``, in plan order."""
    us = units(plan, copies)
    owner = assign([len(plan.sessions[si].steps) for si, _ in us], n)
    return [u for u, k in zip(us, owner, strict=True) if k == index]


def share_count(total: int | None, index: int, n: int) -> int | None:
    """``--count`` split evenly over the shares."""
    if total is None:
        return None
    return total // n + (1 if index < total % n else 0)


class EventReport(Report):
    """A :class:`Report` that also writes one JSON line per request when it is done.

    ``{"ev": "req", "type": PROTOCOL or PROTOCOL-oneway, "name": CODE, "ms": latency,
    "len": response bytes, "err": None|RESPONSE_CODE|TIMEOUT|CONNECTION_FAILED}``;
    requests not sent: ``{"ev": "skip", "reason": ..., "n": ...}``; the share first:
    ``{"ev": "share", "index": I, "of": N, "units": [[session, copy], ...], "requests": R}``.
    """

    def __init__(self, out: IO[bytes], *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.out: IO[bytes] | _Null = out
        self._lines: list[bytes] = []
        self._flush_at: asyncio.TimerHandle | None = None

    def emit(self, ev: dict) -> None:
        self._lines.append(orjson.dumps(ev) + b"\n")
        if len(self._lines) >= FLUSH_LINES:
            self.flush()
        elif self._flush_at is None:
            try:
                self._flush_at = asyncio.get_running_loop().call_later(FLUSH_S, self.flush)
            except RuntimeError:  # no loop: write now
                self.flush()

    def flush(self) -> None:
        if self._flush_at is not None:
            self._flush_at.cancel()
            self._flush_at = None
        if self._lines:
            try:
                self.out.write(b"".join(self._lines))
                self.out.flush()
            except (BrokenPipeError, ValueError):  # the driver went away: the report still counts
                self.notes.append("event stream closed early")
                self.out = _Null()
            self._lines.clear()

    def request_sent(self, conn: Connection, cmd: RemotingCommand, size: int, ts: float,
                     late_s: float, *args, **kwargs) -> Exchange:
        ex = super().request_sent(conn, cmd, size, ts, late_s, *args, **kwargs)
        if cmd.is_oneway:
            self.emit({"ev": "req", "type": f"{ex.protocol}-oneway", "name": _k(ex).request_name(cmd.code),
                       "ms": 0.0, "len": 0, "err": None})
        return ex

    def answered(self, ex: Exchange, resp, ts: float, size: int, recorded) -> None:
        super().answered(ex, resp, ts, size, recorded)
        k = _k(ex)
        assert ex.request is not None  # an exchange of request_sent()
        code = ex.request.command.code
        err = k.response_name(resp.code) if k.classify(code, resp.code) == "error" else None
        self.emit({"ev": "req", "type": ex.protocol, "name": k.request_name(code),
                   "ms": round(ex.latency_ms or 0.0, 3), "len": size, "err": err})

    def failed(self, ex: Exchange, why: str, recorded) -> None:
        super().failed(ex, why, recorded)
        assert ex.request is not None  # an exchange of request_sent()
        ms = (self._wall(time.monotonic()) - ex.request.ts) * 1000.0
        self.emit({"ev": "req", "type": ex.protocol, "name": _k(ex).request_name(ex.request.command.code),
                   "ms": round(ms, 3), "len": 0, "err": why})

    def skipped(self, reason: str, n: int = 1) -> None:
        super().skipped(reason, n)
        self.emit({"ev": "skip", "reason": reason, "n": n})


def _k(ex: Exchange):
    return protocol_of(ex).classifier


class _Null:
    def write(self, b: bytes) -> int:
        return len(b)

    def flush(self) -> None:
        return None


class ShareReplay(Replay):
    """Replay only ``units`` of the plan, on the whole run's schedule."""

    def __init__(self, plan: Plan, opts: Options, index: int, n: int,
                 events: IO[bytes] | None = None) -> None:
        self.units = share_units(plan, opts.copies, index, n)
        self.index, self.n = index, n
        requests = sum(len(plan.sessions[si].steps) for si, _ in self.units) * opts.loops
        super().__init__(plan, opts)
        b = self.report  # the whole run's; this share's requests and rate are its part of it
        total = max(1, b.planned)
        rate = b.requested_rate * requests / total if b.requested_rate else None
        args = (b.rules, rate, requests, b.mode, b.target, b.via)
        self.report = EventReport(events, *args) if events is not None else Report(*args)
        self._mine = set(self.units)
        self.report.notes.append(f"share {index}/{n}: {len(self.units)} of {len(plan.sessions) * max(1, opts.copies)} "
                                 f"(session, copy) units, {requests} request(s)")

    async def run(self, progress: Callable[[Report], None] | None = None) -> Report:
        rep = self.report
        if isinstance(rep, EventReport):
            rep.emit({"ev": "share", "index": self.index, "of": self.n, "units": [list(u) for u in self.units],
                      "requests": rep.planned})
        try:
            if not self.units:
                rep.finished = time.monotonic()
                return rep
            return await super().run(progress)
        finally:
            if isinstance(rep, EventReport):
                rep.flush()

    async def _session_copy(self, si: int, s: Session, copy: int) -> None:
        if (si, copy) in self._mine:
            await super()._session_copy(si, s, copy)


def open_events(target: str) -> IO[bytes]:
    """``-`` is stdout; anything else a file."""
    return sys.stdout.buffer if target == "-" else open(target, "wb")  # noqa: SIM115 - closed by the caller


__all__ = ["EventReport", "ShareReplay", "assign", "open_events", "parse_share", "share_count",
           "share_units", "units"]
