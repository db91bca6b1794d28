"""Message view, follow, grouped and per-interval stats: on captures the tests wrote, and
the message view's ids against the real clients' ground truth."""
from __future__ import annotations

import pytest

from rmqsniff.filter import compile_filter
from rmqsniff.pipeline import analyze
from rmqsniff.synth import write_capture
from rmqsniff.views import (
    GROUPS,
    conversation,
    full_body,
    grouped_rows,
    interval_rows,
    message_to_dict,
    messages_of,
    preview,
    render_conversation,
    resolve_connection,
    restat,
    totals,
)
from tests.support.captures import real_params
from tests.support.remoting_scenario import BATCH, label_of, offset_id, write_scenario


@pytest.fixture(scope="module")
def scen(tmp_path_factory):
    path = tmp_path_factory.mktemp("views") / "scenario.pcap"
    write_scenario(path)
    return {label_of(e): e for e in analyze([str(path)]).exchanges}


def test_sent_message_row(scen):
    (r,) = messages_of(scen["a1"])
    assert (r.kind, r.topic, r.queue, r.offset) == ("sent", "orders_eu", 1, 7)
    assert (r.unique_key, r.msg_id, r.tags, r.keys) == ("U1", "M1", "TagA", ["k1", "k2"])
    assert r.born_host == "10.0.1.1:40001" and r.born_ts == 1700000000001
    assert r.body == b"hello orders" and r.result == "SUCCESS"


def test_failed_send_has_no_broker_ids(scen):
    (r,) = messages_of(scen["a2"])
    assert (r.unique_key, r.msg_id, r.offset, r.result) == ("U4", None, None, "SYSTEM_BUSY")


def test_batch_rows_one_per_member(scen):
    rows = messages_of(scen["a5"])
    assert [r.kind for r in rows] == ["batch-sent"] * 3
    assert [r.unique_key for r in rows] == [m.properties["UNIQ_KEY"] for m in BATCH]
    assert [r.msg_id for r in rows] == ["MB0", "MB1", "MB2"]
    assert [r.offset for r in rows] == [10, 11, 12]
    assert [r.queue for r in rows] == [2, 2, 2]
    assert [r.body for r in rows] == [m.body for m in BATCH]


def test_pulled_rows_with_hosts_times_and_decompressed_body(scen):
    rows = messages_of(scen["b1"])
    assert [(r.kind, r.unique_key, r.offset) for r in rows] == [("pulled", "U2", 0), ("pulled", "U3", 1)]
    assert [r.msg_id for r in rows] == [offset_id("10.0.0.10", 10911, 4096), offset_id("10.0.0.10", 10911, 8192)]
    assert rows[0].born_host == "10.0.1.9:5555" and rows[0].store_host == "10.0.0.10:10911"
    assert rows[0].store_ts == 1_700_000_000_600
    assert rows[0].body == b"pulled body"
    assert rows[1].body == b"squeezed text"  # zlib-compressed on the wire
    d = message_to_dict(rows[1])
    assert d["preview"] == "squeezed text" and d["body_size"] == len(b"squeezed text")
    assert d["store_time"] == "2023-11-14T22:13:20.600+00:00"


def test_exchanges_without_messages_give_no_rows(scen):
    for label in ("a4", "b2", "b3", "c1"):
        assert messages_of(scen[label]) == []


def test_preview_and_full_body():
    assert preview(b"plain text") == "plain text"
    assert preview(b"\x00\x01\xff") == "hex:0001ff"
    assert preview(b"a" * 100, 10) == "a" * 10 + "…"
    assert preview(b"\xff" * 100, 10) == "hex:" + "ff" * 5 + "…"
    assert preview(b"two\nlines") == "two\\nlines"
    assert full_body(b"\x00" * 40) == "hex:" + "00" * 40
    assert full_body("héllo\nworld".encode()) == "héllo\nworld"


def test_secret_properties_are_redacted():
    from rmqsniff.views import MessageRow

    r = MessageRow(1, 0.0, "sent", "c", properties={"AccessKey": "AK", "k": "v"})
    assert message_to_dict(r)["properties"] == {"AccessKey": "<redacted>", "k": "v"}
    assert message_to_dict(r, redact=False)["properties"]["AccessKey"] == "AK"


def test_follow_gives_one_connection_in_order(scen):
    exs = sorted(scen.values(), key=lambda e: e.index)
    conn = resolve_connection(exs, f"#{scen['b2'].index}")
    assert conn is not None and conn is scen["b1"].connection
    assert resolve_connection(exs, str(conn.id)) is conn
    assert resolve_connection(exs, f"conn:{conn.id}") is conn
    assert resolve_connection(exs, "10.0.1.2:40002") is conn
    assert resolve_connection(exs, "999") is None
    frames = conversation(exs, conn.id)
    # b1 req, b1 resp, b2 req, b2 resp, b3 req (unanswered)
    assert [(label_of(ex), m.from_client) for ex, m in frames] == [
        ("b1", True), ("b1", False), ("b2", True), ("b2", False), ("b3", True)]
    assert [m.ts for _, m in frames] == sorted(m.ts for _, m in frames)
    text = render_conversation(conn, frames)
    assert "PULL_MESSAGE (11)" in text and "PULL_NOT_FOUND (19)" in text
    assert "GET_CONSUMER_LIST_BY_GROUP" in text and "2 message(s)" in text


def test_follow_redacts_secrets(tmp_path):
    from dissectors.remoting.command import RemotingCommand

    sc = {"x": (("10.0.1.5", 40005), ("10.0.0.10", 10911),
                RemotingCommand(34, 0, 7, "JAVA", 479, None, {"AccessKey": "AKxyz", "Signature": "sig"}, None),
                RemotingCommand(0, 1, 7, "JAVA", 479, None, None, None), 0.001)}
    write_scenario(tmp_path / "s.pcap", sc)
    exs = analyze([str(tmp_path / "s.pcap")]).exchanges
    text = render_conversation(exs[0].connection, conversation(exs, exs[0].connection.id))
    assert "AKxyz" not in text and "sig" not in text.replace("Signature", "")
    assert "AccessKey=<redacted>" in text


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    path = tmp_path_factory.mktemp("synth") / "s.pcap"
    counts = write_capture(str(path), 1500, seed=11, connections=15)
    res = analyze([str(path)])
    return counts, res


@pytest.mark.parametrize("by", GROUPS)
def test_grouped_stats_sum_to_totals(synth, by):
    counts, res = synth
    rows = grouped_rows(res.stats, by)
    tot = totals(res.stats)
    with_request = [e for e in res.exchanges if e.request is not None]
    assert sum(r["requests"] for r in rows) == tot["requests"] == len(with_request) == counts["exchanges"]
    assert sum(r["errors"] for r in rows) == tot["errors"]
    assert sum(r["answered"] for r in rows) == tot["answered"]
    assert sum(r["bytes"] for r in rows) == tot["bytes"] == sum(
        e.request.size + (e.response.size if e.response else 0) for e in with_request)


def test_grouped_by_code_matches_the_generator(synth):
    counts, res = synth
    rows = {r["code"]: r["requests"] for r in grouped_rows(res.stats, "code")}
    assert rows == {k: v for k, v in counts.items() if isinstance(k, int)}


def test_grouped_sort_and_top(synth):
    _, res = synth
    rows = grouped_rows(res.stats, "topic", sort="p99")
    assert [r["p99"] for r in rows] == sorted((r["p99"] for r in rows), reverse=True)
    assert len(grouped_rows(res.stats, "topic", top=2)) == 2
    keys = [r["key"] for r in grouped_rows(res.stats, "topic", sort="key")]
    assert keys == sorted(keys)


def test_restat_counts_only_the_selected(synth):
    _, res = synth
    f = compile_filter("topic == orders")
    chosen = [e for e in res.exchanges if f(e)]
    st = restat(chosen)
    rows = grouped_rows(st, "topic")
    assert [(r["key"], r["requests"]) for r in rows] == [("orders", len(chosen))]
    assert totals(st)["requests"] == len(chosen)


def test_interval_rows_sum_and_rate(synth):
    _, res = synth
    rows = interval_rows(res.exchanges, 0.5)
    with_request = [e for e in res.exchanges if e.request is not None]
    assert sum(r["requests"] for r in rows) == len(with_request)
    starts = [r["start"] for r in rows]
    assert starts == sorted(starts) and all(s % 0.5 == 0 for s in starts)
    for r in rows:
        assert r["rate"] == pytest.approx(r["requests"] / 0.5)
        inside = [e for e in with_request if r["start"] <= e.request.ts < r["start"] + 0.5]
        assert r["requests"] == len(inside)
        lat = [e.latency_ms for e in inside if e.latency_ms is not None]
        assert r["max"] == pytest.approx(max(lat), abs=0.001)
    by = interval_rows(res.exchanges, 1.0, by="code")
    assert sum(r["requests"] for r in by) == len(with_request)


# ---------------------------------------------------------------- real captures

@pytest.mark.parametrize("name", real_params())
def test_real_message_view_ids_equal_client_truth(name):
    import json

    from tests.support.captures import CAPTURES

    truth = json.loads((CAPTURES / f"{name}.truth.json").read_text())
    res = analyze([str(CAPTURES / f"{name}.pcap")])
    topic = truth["topic"]
    rows = [r for e in res.exchanges for r in messages_of(e) if r.topic == topic]
    sent = {(r.unique_key, r.msg_id) for r in rows if r.kind in ("sent", "batch-sent") and r.result != "oneway"}
    sent_ids = {r.unique_key for r in rows if r.kind in ("sent", "batch-sent")}
    assert sent_ids == {s["msg_id"] for s in truth["sent"]}
    want_sent = {(s["msg_id"], s["offset_msg_id"]) for s in truth["sent"] if s.get("offset_msg_id")}
    assert want_sent <= sent
    got = {(r.unique_key, r.msg_id) for r in rows if r.kind in ("pulled", "popped")}
    want = {(r["msg_id"], r["offset_msg_id"]) for b in truth.get("received", {}).values() for r in b
            if r["topic"] == topic}
    assert got == want
