"""The TUI's data side without widgets: loading, filtering, sorting, drill-down
filters (checked against the stats' own counts) and charts."""
from __future__ import annotations

import threading
from array import array
from pathlib import Path

import pytest

from dissectors.remoting.command import RemotingCommand
from rmqsniff.filter import compile_filter
from rmqsniff.model import Connection, Exchange, Message
from rmqsniff.pipeline import Pipeline, analyze
from rmqsniff.tui import charts, stats_tables
from rmqsniff.tui.store import COLUMNS, Store, filter_into, load, sort_view

CAPTURE = Path(__file__).resolve().parent.parent / "captures" / "remoting_json.pcap"


@pytest.fixture(scope="module")
def loaded():
    if not CAPTURE.exists():
        pytest.skip("no real capture in captures/ yet")
    store = Store()
    batches = []
    load(store, [str(CAPTURE)], Pipeline(stats=store.stats), threading.Event(),
         on_batch=lambda: batches.append(len(store.exchanges)), first_batch=16, batch=40)
    return store, batches


def test_load_publishes_small_batches_then_everything(loaded):
    store, batches = loaded
    ref = analyze([str(CAPTURE)]).exchanges
    assert [ex.index for ex in store.exchanges] == [ex.index for ex in ref]
    assert batches[0] == 16 and batches == sorted(batches) and len(batches) > 2
    assert not store.loading and store.progress == 1.0 and store.files_read == 1 and not store.errors


def test_filter_into_matches_a_plain_loop_and_stops_when_cancelled(loaded):
    store, _ = loaded
    exs = store.exchanges
    pred = compile_filter("code == SEND_MESSAGE_V2 or latency > 5ms")
    out = array("l")
    assert filter_into(exs, pred, 0, len(exs), out, chunk=7)
    assert list(out) == [i for i, ex in enumerate(exs) if (ex.request and ex.request.command.code == 310)
                         or (ex.latency_ms is not None and ex.latency_ms > 5)]
    calls = []
    out2 = array("l")

    def cancelled() -> bool:  # after two checks
        calls.append(1)
        return len(calls) > 2

    assert not filter_into(exs, pred, 0, len(exs), out2, cancelled=cancelled, chunk=7)
    assert len(out2) <= len(out)


def test_sort_view_orders_by_column_and_is_stable(loaded):
    store, _ = loaded
    exs = store.exchanges
    lat = [i for i, c in enumerate(COLUMNS) if c.title == "ms"][0]
    v = sort_view(exs, range(len(exs)), lat)
    keys = [-1.0 if exs[i].latency_ms is None else exs[i].latency_ms for i in v]
    assert keys == sorted(keys)
    ties = [i for i in v if exs[i].latency_ms is None]
    assert ties == sorted(ties)  # capture order kept among equals
    r = sort_view(exs, range(len(exs)), lat, reverse=True)
    assert [-1.0 if exs[i].latency_ms is None else exs[i].latency_ms for i in r] == sorted(keys, reverse=True)


@pytest.mark.parametrize("by", ["code", "topic", "group", "client", "broker"])
def test_every_drill_down_filter_selects_the_rows_requests(loaded, by):
    store, _ = loaded
    t = stats_tables.grouped_table(store, by)
    assert t.rows
    with_request = [ex for ex in store.exchanges if ex.request is not None]
    for row, flt in zip(t.rows, t.filters, strict=True):
        assert flt is not None
        f = compile_filter(flt)
        assert sum(1 for ex in with_request if f(ex)) == int(row[1]), (by, row[0], flt)


def test_connections_table_drills_to_each_connection(loaded):
    store, _ = loaded
    t = stats_tables.connections_table(store.exchanges)
    assert sum(int(r[4]) for r in t.rows) == len(store.exchanges)
    for row, flt in zip(t.rows, t.filters, strict=True):
        assert flt is not None  # every connection row drills down
        f = compile_filter(flt)
        assert sum(1 for ex in store.exchanges if f(ex)) == int(row[4])


def test_quote_survives_the_filter_language():
    nasty = 'a "quoted" \\ topic'
    conn = Connection(0, ("10.0.0.1", 50000), ("10.0.0.9", 9876))

    def ex(topic):
        cmd = RemotingCommand(105, 2, 1, ext={"topic": topic})
        return Exchange(0, conn, "remoting", "oneway", Message(0.0, cmd, True))
    f = compile_filter(f"topic == {stats_tables.quote(nasty)}")
    assert f(ex(nasty)) and not f(ex("a quoted topic"))


def test_charts_count_every_listed_exchange(loaded):
    store, _ = loaded
    exs = store.exchanges
    view = range(len(exs))
    buckets = charts.latency_buckets(exs, view)
    assert sum(c for _, c in buckets) == sum(1 for ex in exs if ex.status == "answered")
    for le, c in buckets:  # each count really is the exchanges in (le/2, le]
        lo = le / 2 if le > 1 / 16 else 0.0
        n = sum(1 for ex in exs if ex.status == "answered" and lo < ex.latency_ms <= le
                or (le == 1 / 16 and ex.status == "answered" and ex.latency_ms <= le))
        assert n == c
    s = charts.rate_series(exs, view, bins=20)
    assert s is not None
    assert sum(s.counts) == len(exs) and len(s.counts) <= 21
    first = min(ex.ts for ex in exs)
    assert s.start <= first < s.start + s.step
