"""``export --format parquet``: every bundled capture (both protocols) read back by DuckDB and
pyarrow, counts equal to ``stats`` and ``read``, columns of the stated types."""
from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from rmqsniff.exporters import parquet
from rmqsniff.pipeline import Pipeline
from tests.support.captures import plaintext_pcaps

PCAPS = plaintext_pcaps()


def sql(query: str) -> list[tuple]:
    rel = duckdb.sql(query)
    assert rel is not None
    return rel.fetchall()


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "rmqsniff", *args], capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize("pcap", PCAPS, ids=[p.stem for p in PCAPS])
def test_duckdb_counts_per_code_equal_stats(tmp_path: Path, pcap: Path) -> None:
    out = tmp_path / "x.parquet"
    r = cli("export", str(pcap), "--format", "parquet", "-o", str(out))
    assert r.returncode == 0, r.stderr
    stats = json.loads(cli("stats", str(pcap), "--by", "code", "--format", "json").stdout)
    want = {(row["protocol"], row["code"]): (row["requests"], row["errors"]) for row in stats["rows"]}
    got = {(p, c): (n, e) for p, c, n, e in sql(
        f"SELECT protocol, code, count(*), count(*) FILTER (WHERE result = 'error') "
        f"FROM '{out}' WHERE code IS NOT NULL GROUP BY ALL")}
    assert got == want and sum(n for n, _ in got.values()) > 0


def test_types_and_values(tmp_path: Path) -> None:
    """Times are timestamps, latency a duration (BIGINT µs in DuckDB: Parquet has no duration
    type), codes and names dictionary strings; the values are the jsonl export's."""
    for pcap in (p for p in PCAPS if p.stem in ("remoting_json", "grpc_java")):
        out = tmp_path / f"{pcap.stem}.parquet"
        assert cli("export", str(pcap), "--format", "parquet", "-o", str(out)).returncode == 0
        types = {name: t for name, t, *_ in sql(f"DESCRIBE SELECT * FROM '{out}'")}
        assert types["ts"] == "TIMESTAMP WITH TIME ZONE" and types["code"] == "INTEGER"
        assert types["latency_us"] == "BIGINT" and types["name"] == "VARCHAR"
        schema = pq.read_schema(out)
        assert schema.field("latency_us").type == pa.duration("us")
        assert pa.types.is_dictionary(schema.field("name").type)
        assert pa.types.is_timestamp(schema.field("ts").type)
        jl = [json.loads(line) for line in cli("read", str(pcap), "--format", "jsonl").stdout.splitlines()]
        rows = pq.read_table(out).to_pylist()
        assert len(rows) == len(jl)
        for row, d in zip(rows, jl, strict=True):
            assert row["index"] == d["index"]
            first = d["request"] or d["response"]
            assert abs(row["ts"].timestamp() - first["ts"]) < 1e-6
            lat = row["latency_us"]
            assert (lat is None) == (d["latency_ms"] is None)
            if lat is not None:
                assert abs(lat.total_seconds() * 1000 - d["latency_ms"]) < 0.001


@pytest.mark.parametrize("pcap", [p for p in PCAPS if p.stem in ("remoting_json", "remoting_pop", "grpc_java",
                                                                    "grpc_python")], ids=lambda p: p.stem)
def test_messages_equal_read_messages(tmp_path: Path, pcap: Path) -> None:
    out = tmp_path / "m.parquet"
    r = cli("export", str(pcap), "--format", "parquet", "--messages", "-o", str(out))
    assert r.returncode == 0, r.stderr
    rows = [json.loads(line) for line in cli("read", str(pcap), "--messages", "--format", "jsonl").stdout.splitlines()]
    want = Counter((d["kind"], d["topic"], d["unique_key"]) for d in rows)
    got = Counter(sql(f"SELECT kind, topic, unique_key FROM '{out}'"))
    assert got == want and want
    keys = {tuple(k) for (k,) in sql(f"SELECT keys FROM '{out}' WHERE len(keys) > 0")}
    assert keys == {tuple(d["keys"]) for d in rows if d["keys"]}
    types = {name: t for name, t, *_ in sql(f"DESCRIBE SELECT * FROM '{out}'")}
    assert types["keys"] == "VARCHAR[]" and types["properties"] == "MAP(VARCHAR, VARCHAR)"
    assert types["store_ts"] == "TIMESTAMP WITH TIME ZONE" and types["offset"] == "BIGINT"


def test_streamed_in_row_groups(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Rows go out a row group at a time (the memory bound), the content unchanged."""
    pcap = next(p for p in PCAPS if p.stem == "remoting_json")
    whole, pieces = tmp_path / "whole.parquet", tmp_path / "pieces.parquet"
    n = parquet.write_exchanges(Pipeline().run([str(pcap)]), whole)
    monkeypatch.setattr(parquet, "ROW_GROUP", 10)
    assert parquet.write_exchanges(Pipeline().run([str(pcap)]), pieces) == n
    assert pq.ParquetFile(whole).metadata.num_row_groups == 1
    assert pq.ParquetFile(pieces).metadata.num_row_groups == -(-n // 10)
    assert pq.read_table(whole).to_pylist() == pq.read_table(pieces).to_pylist()


def test_refusals(tmp_path: Path) -> None:
    pcap = str(PCAPS[0])
    r = cli("export", pcap, "--format", "parquet", "-o", "-")
    assert r.returncode == 2 and "parquet" in r.stderr and not r.stdout  # a usage error
    r = cli("export", pcap, "--format", "csv", "--messages", "-o", str(tmp_path / "x.csv"))
    assert r.returncode == 2 and "--messages" in r.stderr and "csv" in r.stderr
