"""A finding and the evidence behind it, gathered with bounded memory."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .catalogue import BY_ID, MAX_CONNECTIONS, MAX_EVIDENCE, SEVERITY_RANK

MAX_CLAUSES = 8  # filter clauses kept per finding (more: the expression selects a superset)


def q(text: str) -> str:
    """A string literal of the filter language."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


@dataclass(slots=True)
class Evidence:
    """Exchanges that show one problem: how many, when, which (capped), on which connections."""

    count: int = 0
    first: float = 0.0
    last: float = 0.0
    exchanges: list[int] = field(default_factory=list)
    connections: dict[str, None] = field(default_factory=dict)
    clauses: dict[str, None] = field(default_factory=dict)
    figures: dict[str, Any] = field(default_factory=dict)

    def add(self, index: int, ts: float, conn: str, clause: str | None = None) -> None:
        if self.count == 0 or ts < self.first:
            self.first = ts
        if ts > self.last:
            self.last = ts
        self.count += 1
        if len(self.exchanges) < MAX_EVIDENCE:
            self.exchanges.append(index)
        if len(self.connections) < MAX_CONNECTIONS:
            self.connections[conn] = None
        if clause is not None and len(self.clauses) < MAX_CLAUSES:
            self.clauses[clause] = None

    def tally(self, name: str, n: int = 1) -> None:
        self.figures[name] = self.figures.get(name, 0) + n


@dataclass(slots=True)
class Finding:
    """One problem: catalogue id, severity, a summary with its figures, evidence and a hint."""

    id: str
    subject: str
    summary: str
    evidence: Evidence

    @property
    def severity(self) -> str:
        return BY_ID[self.id].severity

    @property
    def hint(self) -> str:
        return BY_ID[self.id].hint

    @property
    def filter(self) -> str:
        c = list(self.evidence.clauses)
        return c[0] if len(c) == 1 else " or ".join(f"({x})" for x in c)

    def rank(self) -> tuple[int, int, str, str]:
        return SEVERITY_RANK[self.severity], -self.evidence.count, self.id, self.subject

    def to_dict(self) -> dict[str, Any]:
        ev = self.evidence
        return {"id": self.id, "severity": self.severity, "subject": self.subject, "summary": self.summary,
                "count": ev.count, "first_ts": ev.first if ev.last else None, "last_ts": ev.last or None,
                "exchanges": list(ev.exchanges),
                "connections": list(ev.connections), "filter": self.filter, "figures": dict(ev.figures),
                "hint": self.hint}
