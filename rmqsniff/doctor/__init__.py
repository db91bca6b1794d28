"""``rmqsniff doctor``: expert findings over exchanges, each with its evidence and what to check.

* :mod:`.catalogue` - every finding: id, severity, rule, thresholds, hint (one place);
* :mod:`.detectors` - the rules, fed each exchange's :class:`~rmqsniff.protocols.facts.DoctorFacts` once;
* :mod:`.latency`   - the slow-outlier and slow-broker rules;
* :mod:`.finding`   - a finding and its bounded evidence;
* :mod:`.engine`    - :class:`Doctor`, the streaming pass, ranking.
"""
from __future__ import annotations

from .catalogue import BY_ID, CATALOGUE, ERROR, NOTE, WARNING, Entry
from .engine import Doctor
from .finding import Evidence, Finding

__all__ = ["BY_ID", "CATALOGUE", "ERROR", "NOTE", "WARNING", "Doctor", "Entry", "Evidence", "Finding"]
