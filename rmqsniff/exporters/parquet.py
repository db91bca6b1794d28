"""Parquet export (``export --format parquet``) of exchanges or the messages they carry.

Typed columns for DuckDB, pandas, Polars and Spark: times are UTC timestamps (µs), latency a
duration in µs (``latency_us``: an Arrow duration for pyarrow, pandas and Polars; Parquet itself
has no duration type, so DuckDB and Spark read it as a BIGINT of microseconds), codes and names
dictionary-encoded strings, queue/offset integers, keys a list and
properties a map.  Rows are written in row groups of :data:`ROW_GROUP` as they stream in, so
memory stays bounded by one row group whatever the capture's size.
"""
from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from ..model import Exchange, MessageRow
from .exchanges import exchange_record

ROW_GROUP = 65_536  # rows held before a row group is written (the export's memory bound)

_TS = pa.timestamp("us", tz="UTC")
_MS = pa.timestamp("ms", tz="UTC")
_DICT = pa.dictionary(pa.int32(), pa.string())

EXCHANGE_SCHEMA = pa.schema([
    ("index", pa.int64()), ("ts", _TS), ("protocol", _DICT), ("connection", pa.int64()),
    ("client", pa.string()), ("server", pa.string()), ("status", _DICT), ("result", _DICT),
    ("code", pa.int32()), ("name", _DICT), ("response_code", pa.int32()), ("response_name", _DICT),
    ("opaque", pa.int64()), ("topic", _DICT), ("group", _DICT), ("latency_us", pa.duration("us")),
    ("request_bytes", pa.int64()), ("response_bytes", pa.int64()),
])

MESSAGE_SCHEMA = pa.schema([
    ("exchange", pa.int64()), ("ts", _TS), ("kind", _DICT), ("connection", pa.string()), ("topic", _DICT),
    ("queue", pa.int32()), ("offset", pa.int64()), ("msg_id", pa.string()), ("unique_key", pa.string()),
    ("tags", _DICT), ("keys", pa.list_(pa.string())), ("properties", pa.map_(pa.string(), pa.string())),
    ("born_host", pa.string()), ("born_ts", _MS), ("store_host", pa.string()), ("store_ts", _MS),
    ("body_size", pa.int64()), ("result", _DICT), ("message_group", pa.string()), ("delivery_ts", _MS),
    ("reconsume", pa.int32()),
])


def _us(seconds: float | None) -> int | None:
    return None if seconds is None else int(round(seconds * 1_000_000))


def _exchange_row(ex: Exchange) -> dict[str, Any]:
    r = exchange_record(ex)
    r["ts"] = _us(r["ts"])
    ms = r.pop("latency_ms")
    r["latency_us"] = None if ms is None else int(round(ms * 1000))
    return r


def _message_row(m: MessageRow, redact: bool) -> dict[str, Any]:
    from ..views import message_to_dict

    d = message_to_dict(m, redact=redact)
    row = {f.name: d.get(f.name) for f in MESSAGE_SCHEMA}
    row["ts"] = _us(m.ts)
    row["properties"] = list(d["properties"].items())
    return row


def _write(rows: Iterable[dict[str, Any]], schema: pa.Schema, path: Any) -> int:
    n = 0
    with pq.ParquetWriter(path, schema) as w:
        batch: list[dict[str, Any]] = []
        for row in rows:
            batch.append(row)
            n += 1
            if len(batch) >= ROW_GROUP:
                w.write_table(pa.Table.from_pylist(batch, schema=schema))
                batch = []
        if batch or n == 0:
            w.write_table(pa.Table.from_pylist(batch, schema=schema))
    return n


def write_exchanges(exchanges: Iterable[Exchange], path: Any) -> int:
    """The exchanges, one row each (:data:`EXCHANGE_SCHEMA`); returns the count."""
    return _write(map(_exchange_row, exchanges), EXCHANGE_SCHEMA, path)


def write_messages(exchanges: Iterable[Exchange], path: Any, redact: bool = True) -> int:
    """The messages the exchanges carry, one row each (:data:`MESSAGE_SCHEMA`; no bodies, their
    size only); returns the count."""
    from ..views import messages_of

    rows = (_message_row(m, redact) for ex in exchanges for m in messages_of(ex))
    return _write(rows, MESSAGE_SCHEMA, path)
