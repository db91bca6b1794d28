"""The streaming engine: every exchange once, the catalogue's rules, findings ranked."""
from __future__ import annotations

from collections.abc import Iterable

from ..model import Exchange
from ..protocols import protocol_of
from .detectors import Rules
from .finding import Finding


class Doctor:
    """Feed exchanges (:meth:`feed`, or use it as a sink's ``exchange_done``), then ask :meth:`findings`."""

    def __init__(self) -> None:
        self.rules = Rules()
        self.exchanges = 0

    def feed(self, ex: Exchange) -> None:
        self.exchanges += 1
        proto = protocol_of(ex)
        self.rules.feed(ex, proto.doctor_facts(ex), proto)

    exchange_done = feed

    def feed_all(self, exchanges: Iterable[Exchange]) -> Doctor:
        for ex in exchanges:
            self.feed(ex)
        return self

    def findings(self) -> list[Finding]:
        """Every finding, errors first, then by how many exchanges show it."""
        return sorted(self.rules.findings(), key=Finding.rank)
