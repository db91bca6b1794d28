"""Journeys over capture files: one pipeline per capture (so each hop names its capture), one
engine joining them all."""
from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence

from ..model import Exchange
from ..pipeline import Pipeline
from .engine import MAX_OPEN_JOURNEYS, Journey, JourneyEngine


def journeys(captures: Sequence[str], make_pipeline: Callable[[], Pipeline],
             flt: Callable[[Exchange], bool] | None = None, max_open: int = MAX_OPEN_JOURNEYS,
             pipelines: list[Pipeline] | None = None, engine: JourneyEngine | None = None) -> Iterator[Journey]:
    """Every journey of the captures: those the cap flushes as they go, then the rest.  The
    pipelines used are appended to ``pipelines`` (their problems are the caller's to report)."""
    flushed: list[Journey] = []
    eng = engine if engine is not None else JourneyEngine(max_open)
    eng.emit = flushed.append
    for path in captures:
        p = make_pipeline()
        if pipelines is not None:
            pipelines.append(p)
        for ex in p.run([path]):
            if flt is None or flt(ex):
                eng.feed(ex, path)
            if flushed:
                yield from flushed
                flushed.clear()
    yield from flushed
    flushed.clear()
    yield from eng.finish()
