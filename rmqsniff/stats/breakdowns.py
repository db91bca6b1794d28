"""The rows of the breakdowns and per-code tables: a row's layout, :class:`Table` (a
bounded key -> row map whose new keys fold into ``<other>`` once it is full), and a row
as the dict the outputs show."""
from __future__ import annotations

from typing import Any

from .buckets import bucket_percentiles
from .names import ENVOY_QUANTILES, quantile_name

OTHER = "<other>"  # the row new keys fold into once a table is full
NONE = "<none>"  # the row key of requests without a topic or group

# row layout (lists for speed): requests, errors, bytes, lat_n, lat_sum_us, lat_max_us, buckets
REQ, ERR, BYTES, LAT_N, LAT_SUM, LAT_MAX, BUCKETS = range(7)


def new_row() -> list:
    return [0, 0, 0, 0, 0, 0, {}]


def merge_row(dst: list, src: list) -> None:
    for i in (REQ, ERR, BYTES, LAT_N, LAT_SUM):
        dst[i] += src[i]
    dst[LAT_MAX] = max(dst[LAT_MAX], src[LAT_MAX])
    bk = dst[BUCKETS]
    for k, v in src[BUCKETS].items():
        bk[k] = bk.get(k, 0) + v


class Table:
    """A bounded key -> row map of at most ``cap`` rows; once ``cap - 1`` keys exist,
    new keys fold into ``<other>`` and ``overflow`` counts the folded events."""

    __slots__ = ("rows", "cap", "overflow")

    def __init__(self, cap: int) -> None:
        self.rows: dict[Any, list] = {}
        self.cap = cap
        self.overflow = 0

    def new(self, key: Any, n: int = 1) -> list:
        """Row for a key not yet present (called only on a miss, for ``n`` events)."""
        rows = self.rows
        if len(rows) >= self.cap - 1:  # keep the last slot for <other>
            self.overflow += n
            key = OTHER
            row = rows.get(key)
            if row is not None:
                return row
        row = rows[key] = new_row()
        return row


def merge_table(dst: Table, src: Table) -> None:
    for key, row in src.rows.items():
        merge_row(dst.rows.get(key) or dst.new(key, row[REQ]), row)
    dst.overflow += src.overflow


def row_dict(row: list, quantiles: bool = False) -> dict[str, Any]:
    """A row as the outputs show it: requests, errors, error_pct, bytes, answered, sum and
    mean, p50/p90/p99/max latency in ms (and Envoy's quantiles when asked)."""
    p50, p90, p99 = bucket_percentiles(row[BUCKETS], row[LAT_N], row[LAT_MAX])
    req = row[REQ]
    d = {
        "requests": req, "errors": row[ERR],
        "error_pct": round(100.0 * row[ERR] / req, 3) if req else 0.0,
        "bytes": row[BYTES], "answered": row[LAT_N], "sum": row[LAT_SUM] / 1000.0,
        "mean": (row[LAT_SUM] / row[LAT_N] / 1000.0) if row[LAT_N] else 0.0,
        "p50": p50, "p90": p90, "p99": p99, "max": row[LAT_MAX] / 1000.0,
    }
    if quantiles:
        vals = bucket_percentiles(row[BUCKETS], row[LAT_N], row[LAT_MAX], ENVOY_QUANTILES)
        d["quantiles"] = {quantile_name(q): v for q, v in zip(ENVOY_QUANTILES, vals, strict=True)}
    return d
