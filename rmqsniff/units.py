"""Durations and sizes as people type them: ``50ms``, ``1.5s``, ``2m``; ``4KiB``, ``100MB``.

The one parser of each, for the filter language (:mod:`rmqsniff.filter`), the command line
(``--interval``, ``--max-frame``, ``live``'s options) and replay's pacing.  What a bare number
means differs by caller (ms in a filter, seconds on the command line), so it is a parameter.

Durations: a number (``7``, ``1.5``, ``.5``, ``2.``), optionally a space, then optionally a unit:
ns, us (µs), ms, s, m (min), h, in any case.  Sizes: a number, then optionally B, k/kB (10^3),
Ki/KiB (2^10), and likewise M, G, T.
"""
from __future__ import annotations

import re

_DURATION = re.compile(r"(\d+(?:\.\d*)?|\.\d+)\s*(ns|us|µs|ms|s|m|min|h)?", re.I)
_DURATION_MS = {"ns": 1e-6, "us": 1e-3, "µs": 1e-3, "μs": 1e-3, "ms": 1.0, "s": 1000.0, "m": 60000.0,
                "min": 60000.0, "h": 3600000.0}
_DURATION_S = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "μs": 1e-6, "ms": 0.001, "s": 1.0, "m": 60.0,
               "min": 60.0, "h": 3600.0}
_SIZE = re.compile(r"^(\d+(?:\.\d*)?|\.\d+)\s*([kmgt]i?b?|b)?$", re.I)
_SIZE_MULT = {"": 1, "b": 1, "k": 1000, "kb": 1000, "kib": 1024, "ki": 1024, "m": 1000 ** 2,
              "mb": 1000 ** 2, "mib": 1024 ** 2, "mi": 1024 ** 2, "g": 1000 ** 3, "gb": 1000 ** 3,
              "gib": 1024 ** 3, "gi": 1024 ** 3, "t": 1000 ** 4, "tb": 1000 ** 4, "tib": 1024 ** 4,
              "ti": 1024 ** 4}


def _duration(text: str, bare: str, scale: dict[str, float]) -> float | None:
    m = _DURATION.fullmatch(text.strip())
    if not m:
        return None
    # (the micro sign and the Greek mu both mean micro; a case-insensitive match that is no
    # unit once lowered, such as the long s "ſ", is no duration)
    unit = (m.group(2) or bare).lower()
    mult = scale.get(unit)
    return float(m.group(1)) * mult if mult is not None else None


def parse_duration_ms(text: str, bare: str = "ms") -> float | None:
    """``"50ms"`` -> 50.0, ``"1.5s"`` -> 1500.0, ``"7"`` -> 7.0 (a bare number is in
    ``bare`` units: ms unless told); None if not a duration."""
    return _duration(text, bare, _DURATION_MS)


def parse_duration(text: str) -> float:
    """``"30s"`` / ``"5m"`` / ``"250ms"`` / ``"10"`` (a bare number is seconds) -> seconds;
    ValueError if not a duration."""
    s = _duration(text, "s", _DURATION_S)
    if s is None:
        raise ValueError(f"duration {text!r}: expected e.g. 30s, 5m, 250ms")
    return s


def parse_size(text: str) -> int | None:
    """``"4KiB"`` -> 4096, ``"1.5kB"`` -> 1500, ``"100"`` -> 100; None if not a size."""
    m = _SIZE.match(text.strip())
    if not m:
        return None
    mult = _SIZE_MULT.get((m.group(2) or "").lower())
    if mult is None:
        return None
    return int(float(m.group(1)) * mult)
