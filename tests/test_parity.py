"""Every command and view over every bundled capture, remoting and gRPC alike.

Each capture was made from real RocketMQ with real clients (captures/README.md); the
truth files were written by the clients.  Commands run as a user runs them (a
subprocess); the TUI through textual's pilot."""
from __future__ import annotations

import asyncio
import csv
import hashlib
import io
import json
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

import orjson
import pytest

from rmqsniff.filter import compile_filter
from rmqsniff.pipeline import analyze
from rmqsniff.protocols import protocol_of
from rmqsniff.views import messages_of
from tests.support.captures import plaintext_pcaps
from tests.support.pilot import until

CAPTURES = Path(__file__).resolve().parent.parent / "captures"
ALL = [p.stem for p in plaintext_pcaps()]
GRPC = [n for n in ALL if n.startswith("grpc_")]


def truth(name: str) -> dict:
    return json.loads((CAPTURES / f"{name}.truth.json").read_text())


def cli(*args: str) -> subprocess.CompletedProcess:
    r = subprocess.run([sys.executable, "-m", "rmqsniff", *args], capture_output=True, text=True, timeout=120,
                       cwd=CAPTURES.parent)
    assert "Traceback" not in r.stderr, r.stderr
    return r


def shape(ex) -> tuple:
    """What must survive a pcapng export and re-read: protocol, codes, status."""
    return (ex.protocol, ex.status, ex.request.command.code if ex.request else None,
            ex.response.command.code if ex.response else None)


@pytest.fixture(scope="module", params=ALL)
def capture(request):
    name = request.param
    return name, CAPTURES / f"{name}.pcap", analyze([str(CAPTURES / f"{name}.pcap")])


def test_both_protocols_are_bundled():
    assert GRPC and [n for n in ALL if n.startswith("remoting_")]


def test_read_in_every_format(capture):
    name, path, a = capture
    table = cli("read", str(path))
    assert table.returncode == 0, table.stderr
    lines = cli("read", str(path), "--format", "jsonl").stdout.splitlines()
    assert len(lines) == len(a.exchanges)
    docs = [orjson.loads(x) for x in lines]
    assert [d["index"] for d in docs] == [ex.index for ex in a.exchanges]
    assert all(d["request"] is not None or d["status"] == "orphan" for d in docs)
    whole = json.loads(cli("read", str(path), "--format", "json").stdout)
    assert whole == docs or whole.get("exchanges") == docs


def test_messages_view_lists_the_clients_messages(capture):
    name, path, a = capture
    t = truth(name)
    r = cli("read", str(path), "--messages", "--format", "jsonl")
    assert r.returncode == 0, r.stderr
    rows = [orjson.loads(x) for x in r.stdout.splitlines()]
    out = cli("read", str(path), "--messages", "--body", "--format", "jsonl").stdout
    full = [orjson.loads(x) for x in out.splitlines()]
    assert len(full) == len(rows)
    digests = {s["msg_id"]: s["body_sha256"] for s in t["sent"] if "body_sha256" in s}

    def sha(text: str) -> str:
        return hashlib.sha256(bytes.fromhex(text[4:]) if text.startswith("hex:") else text.encode()).hexdigest()
    checked = [f for f in full if f["kind"] == "sent" and f["unique_key"] in digests]
    assert checked and all(sha(f["body"]) == digests[f["unique_key"]] for f in checked)
    table = cli("read", str(path), "--messages")
    assert table.returncode == 0 and len(table.stdout.splitlines()) > len(rows)
    sent_ids = {s["msg_id"] for s in t["sent"]}
    seen = {row["unique_key"] for row in rows if row["kind"] in ("sent", "batch-sent")}
    seen |= {row["msg_id"] for row in rows if row["kind"] in ("sent", "batch-sent")}
    # every message the client sent is listed as sent (batch members change id: README)
    assert sent_ids - seen <= {s["msg_id"] for s in t["sent"] if s.get("kind") == "batch"}
    if name in GRPC:
        proto = {ex.index: ex.protocol for ex in a.exchanges}
        by_id = {row["unique_key"]: row for row in rows if row["kind"] == "sent" and proto[row["exchange"]] == "grpc"}
        for s in t["sent"]:
            row = by_id[s["msg_id"]]
            assert row["topic"] == s["topic"] and row["tags"] == s["tags"] and row["keys"] == s["keys"]
            assert row["body_size"] == s["body_len"]
            if s.get("message_group"):
                assert row["message_group"] == s["message_group"]
        received = {m["msg_id"] for lst in t["received"].values() for m in lst}
        delivered = {row["unique_key"] for row in rows if row["kind"] == "received"}
        assert delivered and all(proto[row["exchange"]] == "grpc" for row in rows if row["kind"] == "received")
        # SimpleConsumers receive over gRPC; push consumers too (5.x push is receive + ack)
        assert received and received <= delivered | seen


def test_msgid_filter_finds_every_hop_of_a_sent_message(capture):
    name, path, a = capture
    t = truth(name)
    s = t["sent"][0]
    flt = compile_filter(f'msgid == "{s["msg_id"]}"')
    hits = [ex for ex in a.exchanges if flt(ex)]
    names = {protocol_of(ex).classifier.request_name(ex.request.command.code) for ex in hits if ex.request}
    assert names & {"SendMessage", "SEND_MESSAGE", "SEND_MESSAGE_V2", "SEND_BATCH_MESSAGE"}, names
    if name in GRPC:
        keys = s["keys"][0]
        assert any(flt(ex) for ex in a.exchanges if compile_filter(f'keys == "{keys}"')(ex))
        tag = compile_filter(f'protocol == grpc and tag == "{s["tags"]}"')
        assert any(tag(ex) for ex in a.exchanges)


def test_msgid_of_a_transactional_message_finds_its_end_transaction():
    t = truth("remoting_transaction")
    a = analyze([str(CAPTURES / "remoting_transaction.pcap")])
    for s in t["sent"]:
        flt = compile_filter(f'msgid == "{s["msg_id"]}"')
        names = {protocol_of(ex).classifier.request_name(ex.request.command.code)
                 for ex in a.exchanges if ex.request and flt(ex)}
        assert "END_TRANSACTION" in names, (s["msg_id"], names)
    g = truth("grpc_java")
    ga = analyze([str(CAPTURES / "grpc_java.pcap")])
    for s in (x for x in g["sent"] if x["kind"] == "transaction"):
        flt = compile_filter(f'msgid == "{s["msg_id"]}"')
        names = {ex.request.command.method for ex in ga.exchanges if ex.request and ex.protocol == "grpc"
                 and flt(ex)}
        assert {"SendMessage", "EndTransaction"} <= names, names


def test_follow_decodes_each_message_of_a_connection(capture):
    name, path, a = capture
    main = "grpc" if name in GRPC else "remoting"
    busiest = Counter(ex.connection.id for ex in a.exchanges if ex.protocol == main).most_common(1)[0][0]
    r = cli("follow", str(path), str(busiest))
    assert r.returncode == 0, r.stderr
    assert f"connection {busiest}" in r.stdout
    doc = json.loads(cli("follow", str(path), str(busiest), "--format", "json").stdout)
    frames = doc["frames"]
    assert len(frames) == sum((ex.request is not None) + (ex.response is not None)
                              for ex in a.exchanges if ex.connection.id == busiest)
    if name in GRPC:
        assert "message(s)" not in r.stdout
        assert any(f["body"].split(" (")[0].endswith("Request") for f in frames)
        assert all(f["body"] for f in frames if f["role"] == "request" and f["name"] != "Telemetry")


@pytest.mark.parametrize("by", ["code", "topic", "group", "client", "broker"])
def test_stats_by_group(capture, by):
    name, path, a = capture
    r = cli("stats", str(path), "--by", by, "--format", "json")
    assert r.returncode == 0, r.stderr
    rows = json.loads(r.stdout)
    rows = rows["rows"] if isinstance(rows, dict) else rows
    total = sum(1 for ex in a.exchanges if ex.request is not None)
    assert sum(x["requests"] for x in rows) == total
    if name in GRPC and by in ("topic", "group"):
        keys = {x["key"] for x in rows}
        t = truth(name)
        assert (t["sent"][0]["topic"] in keys) if by == "topic" else len(keys) > 1


def test_export_jsonl_csv_and_pcapng_reread(capture, tmp_path):
    name, path, a = capture
    out = tmp_path / "x.jsonl"
    assert cli("export", str(path), "--format", "jsonl", "-o", str(out)).returncode == 0
    assert len(out.read_text().splitlines()) == len(a.exchanges)
    out = tmp_path / "x.csv"
    assert cli("export", str(path), "--format", "csv", "-o", str(out)).returncode == 0
    assert len(list(csv.reader(io.StringIO(out.read_text())))) == len(a.exchanges) + 1
    out = tmp_path / "x.pcapng"
    r = cli("export", str(path), "--format", "pcapng", "-o", str(out))
    assert r.returncode == 0, r.stderr
    again = analyze([str(out)])
    assert Counter(map(shape, again.exchanges)) == Counter(map(shape, a.exchanges))
    if shutil.which("tshark"):
        t = subprocess.run(["tshark", "-r", str(out), "-q"], capture_output=True, text=True, timeout=60)
        assert t.returncode == 0, t.stderr


def test_export_pcapng_of_selected_grpc_calls(tmp_path):
    path = CAPTURES / "grpc_java.pcap"
    a = analyze([str(path)])
    flt = "protocol == grpc and code == SendMessage"
    want = [ex for ex in a.exchanges if compile_filter(flt)(ex)]
    out = tmp_path / "send.pcapng"
    assert cli("export", str(path), "-Y", flt, "--format", "pcapng", "-o", str(out)).returncode == 0
    again = [ex for ex in analyze([str(out)]).exchanges if ex.protocol == "grpc"]
    assert Counter(map(shape, again)) == Counter(map(shape, want))
    ids = lambda exs: sorted((r.unique_key for ex in exs for r in messages_of(ex)), key=str)  # noqa: E731
    assert ids(again) == ids(want)


# ---------------------------------------------------------------- the TUI, both protocols

@pytest.mark.parametrize("name", ALL)
def test_tui_detail_hex_and_copy(name):
    pytest.importorskip("textual")
    from textual.widgets import Static

    from rmqsniff.tui import RmqSniffApp
    from rmqsniff.tui.app import DetailTree
    from rmqsniff.tui.detail import exchange_json

    path = CAPTURES / f"{name}.pcap"
    ref = analyze([str(path)]).exchanges

    async def main():
        app = RmqSniffApp([str(path)])
        async with app.run_test(size=(160, 48)) as pilot:
            await until(pilot, lambda: not app.store.loading and app.view_ready.is_set())
            assert len(app.store.exchanges) == len(ref)
            for ex in app.store.exchanges[:40]:  # the first 40 rows, in list order
                await pilot.press("enter")
                tree = app.query_one(DetailTree)
                labels = [str(n.label) for n in _walk(tree.root)]
                assert labels[0].startswith(f"#{ex.index} {ex.protocol} "), labels[0]
                assert any(lbl.startswith(("Request", "Response")) for lbl in labels), labels[:5]
                caption = str(app.query_one("#hex-caption", Static).render())
                assert "as captured" in caption or "no request" in caption, caption
                assert exchange_json(ex)["protocol"] == ex.protocol
                await pilot.press("y")
                await pilot.press("escape")
                await pilot.press("j")
    asyncio.run(main())


def _walk(node):
    yield node
    for c in node.children:
        yield from _walk(c)


def test_tui_follow_and_export_a_grpc_connection(tmp_path):
    """The TUI's follow (f) and :export (jsonl, pcapng) on gRPC calls, as for remoting (test_tui)."""
    pytest.importorskip("textual")
    from textual.widgets import Input, Log

    from rmqsniff.tui import RmqSniffApp
    from rmqsniff.tui.screens import FollowScreen

    path = CAPTURES / "grpc_java.pcap"
    ref = analyze([str(path)]).exchanges
    sends = [ex for ex in ref if ex.protocol == "grpc" and ex.request and ex.request.command.method == "SendMessage"]
    conn = sends[0].connection.id

    async def main():
        app = RmqSniffApp([str(path)])
        async with app.run_test(size=(160, 48)) as pilot:
            await until(pilot, lambda: not app.store.loading and app.view_ready.is_set())
            assert app.apply_filter("protocol == grpc and code == SendMessage")
            for _ in range(100):
                if app.view_ready.is_set() and len(app.view) == len(sends):
                    break
                await pilot.pause(0.05)
            for name in ("sends.jsonl", "sends.pcapng"):
                await pilot.press("colon")
                app.query_one("#line", Input).value = f"export {tmp_path / name}"
                await pilot.press("enter")
                for _ in range(200):
                    if f"to {tmp_path / name}" in app.last_export or "failed" in app.last_export:
                        break
                    await pilot.pause(0.05)
                assert "failed" not in app.last_export and f"to {tmp_path / name}" in app.last_export
            await pilot.press("f")
            for _ in range(200):
                if isinstance(app.screen, FollowScreen) and app.screen.query_one(Log).line_count > 3:
                    break
                await pilot.pause(0.05)
            text = "\n".join(app.screen.query_one(Log).lines)
            assert f"Follow: rocketmq connection {conn}" in text
            assert "SendMessageRequest (" in text and "SendMessageResponse (" in text
    asyncio.run(main())
    lines = (tmp_path / "sends.jsonl").read_text().splitlines()
    assert sorted(orjson.loads(x)["index"] for x in lines) == [ex.index for ex in sends]
    again = [ex for ex in analyze([str(tmp_path / "sends.pcapng")]).exchanges if ex.protocol == "grpc"]
    assert sorted(r.unique_key or "" for ex in again for r in messages_of(ex)) == \
        sorted(r.unique_key or "" for ex in sends for r in messages_of(ex))


def test_tui_stats_view_drills_down_to_a_grpc_method():
    """The TUI's stats view (s) lists gRPC methods beside remoting codes; Enter on one filters the
    list to exactly its calls (the drill-down filter names the protocol)."""
    pytest.importorskip("textual")
    from textual.widgets import DataTable

    from rmqsniff.tui import RmqSniffApp
    from rmqsniff.tui.screens import StatsScreen

    path = CAPTURES / "grpc_java.pcap"
    ref = analyze([str(path)]).exchanges
    n_send = sum(1 for ex in ref if ex.protocol == "grpc" and ex.request and ex.request.command.method == "SendMessage")

    async def main():
        app = RmqSniffApp([str(path)])
        async with app.run_test(size=(160, 48)) as pilot:
            await until(pilot, lambda: not app.store.loading and app.view_ready.is_set())
            await pilot.press("s")
            await until(pilot, lambda: isinstance(app.screen, StatsScreen))
            await pilot.press("l")  # the code tab
            code_t = app.screen.query_one("#t-code", DataTable)
            await until(pilot, lambda: code_t.row_count > 0)
            keys = [str(code_t.get_row_at(i)[0]) for i in range(code_t.row_count)]
            assert "SEND_MESSAGE_V2" in keys  # the proxy's own remoting traffic, in the same table
            row = keys.index("grpc:SendMessage")
            assert str(code_t.get_row_at(row)[1]) == str(n_send)
            code_t.move_cursor(row=row)
            await pilot.press("enter")
            await until(pilot, lambda: not isinstance(app.screen, StatsScreen) and app.view_ready.is_set()
                       and len(app.view) == n_send)
            from dissectors.grpc.schema import BY_NAME

            assert app.filter_text == f"protocol == grpc and code == {BY_NAME['SendMessage'].code}"
    asyncio.run(main())


@pytest.mark.parametrize("field", ["topic", "group"])
def test_topic_and_group_filters_see_grpc_calls(field):
    a = analyze([str(CAPTURES / "grpc_java.pcap")])
    t = truth("grpc_java")
    value = t["sent"][0]["topic"] if field == "topic" else "GID_push"
    hits = [ex for ex in a.exchanges if compile_filter(f'protocol == grpc and {field} == "{value}"')(ex)]
    methods = {ex.request.command.method for ex in hits if ex.request}
    assert hits and (("SendMessage" in methods) if field == "topic" else ("ReceiveMessage" in methods))
