"""``rmqsniff replay --workers N``: N local processes, process *i* replaying share *i*/N
(:class:`replay.locust.shares.ShareReplay`: disjoint (session, copy) units on the whole run's
schedule), their reports merged into one. For when one core cannot keep the rate.

The processes are forked once the plan is built (the captures are read once). A worker that
ends without a report is named in the notes and its share counted as not sent.
"""
from __future__ import annotations

import multiprocessing
import signal
from collections.abc import Callable
from multiprocessing.connection import Connection as Pipe

from .engine.plan import Plan
from .engine.runner import Options, Replay
from .locust.shares import ShareReplay, share_count
from .report import Report


def run_workers(plan: Plan, opts: Options, n: int, execute: Callable[[Replay], Report]) -> Report:
    """Replay ``plan`` in ``n`` forked processes (``execute`` runs one engine to its report);
    the merged report."""
    ctx = multiprocessing.get_context("fork")
    procs: list[tuple[multiprocessing.context.ForkProcess, Pipe, ShareReplay]] = []
    for i in range(n):
        rd, wr = ctx.Pipe(duplex=False)
        engine = ShareReplay(plan, _share_opts(opts, i, n), i, n)
        p = ctx.Process(target=_child, args=(engine, execute, wr), name=f"rmqsniff-replay-{i}")
        p.start()
        wr.close()
        procs.append((p, rd, engine))
    old = signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the workers: they stop and report
    try:
        merged: Report | None = None
        for i, (p, rd, engine) in enumerate(procs):
            got = _receive(rd)
            p.join()
            if not isinstance(got, Report):
                got, why = engine.report, got or f"ended (exit {p.exitcode}) without a report"
                got.skipped(f"worker {i} failed", got.planned)
                got.notes.append(f"worker {i}/{n}: {why}")
            if merged is None:
                merged = got
            else:
                merged.merge(got)
        assert merged is not None  # n >= 1 workers
        merged.notes.append(f"{n} worker processes, one share each, reports merged")
        return merged
    finally:
        signal.signal(signal.SIGINT, old)


def _share_opts(opts: Options, i: int, n: int) -> Options:
    from dataclasses import replace

    return replace(opts, max_requests=share_count(opts.max_requests, i, n))


def _receive(rd: Pipe) -> Report | str | None:
    try:
        return rd.recv()
    except (EOFError, OSError):
        return None
    finally:
        rd.close()


def _child(engine: ShareReplay, execute: Callable[[Replay], Report], wr: Pipe) -> None:
    try:
        out: Report | str = execute(engine)
    except BaseException as e:  # noqa: BLE001 - told to the parent, which reports it
        out = f"{type(e).__name__}: {e}"
    try:
        wr.send(out)
    finally:
        wr.close()
