"""A replay report that also keeps what it saw, for the stateful-replay assertions."""
from __future__ import annotations

from replay.report import Report


class Recording(Report):
    """The real report, also keeping every replayed request and its answer for the assertions."""

    def __init__(self, *a, **kw) -> None:
        super().__init__(*a, **kw)
        self.pairs: list[tuple] = []

    def answered(self, ex, resp, ts, size, recorded) -> None:
        super().answered(ex, resp, ts, size, recorded)
        self.pairs.append((ex.request.command, resp))
