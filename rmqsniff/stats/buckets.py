"""The log-bucket latency histogram of a stats row.

Values (us) below 32 are exact; above, 16 sub-buckets per power of two (<=3.2 % error
at the bucket midpoint).  A row stores {bucket: count}: a few dozen entries at most."""
from __future__ import annotations

import math


def bucket_of(us: int) -> int:
    """Log bucket index of a latency in microseconds."""
    if us < 32:
        return us
    b = us.bit_length()
    return (b << 4) | ((us >> (b - 5)) & 15)


def bucket_value(idx: int) -> float:
    """Representative (midpoint) value in microseconds of a bucket index."""
    if idx < 32:
        return float(idx)
    shift = (idx >> 4) - 5
    low = (16 | (idx & 15)) << shift
    return low + ((1 << shift) - 1) / 2.0


def bucket_percentiles(buckets: dict[int, int], n: int, max_us: int,
                       ps: tuple[float, ...] = (50, 90, 99)) -> list[float]:
    """Percentiles (ms) from log buckets; the value at rank ceil(p/100*n), capped by max."""
    if n <= 0:
        return [0.0 for _ in ps]
    items = sorted(buckets.items())
    out: list[float] = []
    for p in ps:
        rank = max(1, math.ceil(p / 100.0 * n))
        seen = 0
        val = float(max_us)
        for idx, cnt in items:
            seen += cnt
            if seen >= rank:
                val = min(bucket_value(idx), float(max_us))
                break
        out.append(val / 1000.0)
    return out
