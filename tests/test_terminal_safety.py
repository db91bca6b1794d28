"""Wire text never drives the terminal: a topic, group, tag or key holding escape sequences,
a bare CR, C1 controls or rich markup is shown escaped and literal in every human output
(tables, follow, stderr lines, the TUI); JSON keeps the exact value.

The capture is built here (remoting through the project's frame encoder, gRPC through h2),
one connection of each protocol."""
from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

import orjson
import pytest

from dissectors.remoting.command import JSON, RemotingCommand
from dissectors.remoting.frame import encode
from rmqsniff.capwriter import CaptureWriter, TcpSession
from rmqsniff.text import shown
from tests.support.grpc_wire import Wire, f, heartbeat_request, rmq_message, send_response, status_only
from tests.support.pilot import until

ROOT = Path(__file__).resolve().parent.parent
MARKUP = "[bold red]x[/]"
TOPIC = MARKUP + "\x1b]0;pwned\x07\x1b[2J\rY\x9bZ"
GROUP = "[red]g[/]\x1b[31m\r\x9b"
TAG = "t\x1b[5m\x07"
KEY = "k\x1b]0;key\x07"
FORBIDDEN = ("\x1b", "\x07", "\x9b", "\r")


def remoting_conversation() -> list[tuple[bool, bytes]]:
    props = f"KEYS\x01{KEY}\x02TAGS\x01{TAG}\x02"
    send = RemotingCommand(310, 0, 1, "JAVA", 479, None, {"a": GROUP, "b": TOPIC, "e": "1", "i": props},
                           b"payload", JSON)
    ok = RemotingCommand(0, 1, 1, "JAVA", 479, None, {"msgId": "M1", "queueId": "1"}, None, JSON)
    return [(True, encode(send)), (False, encode(ok))]


def grpc_wire() -> Wire:
    w = Wire()
    w.unary("SendMessage", f(1, rmq_message(TOPIC, 0, b"hello", tag=TAG)), send_response(0), 10)
    w.unary("Heartbeat", heartbeat_request(GROUP), status_only(), 11)
    return w


@pytest.fixture(scope="module")
def hostile(tmp_path_factory) -> str:
    path = tmp_path_factory.mktemp("hostile") / "hostile.pcap"
    with open(path, "wb") as out:
        cw = CaptureWriter(out)
        s = TcpSession(cw, ("10.0.0.1", 40001), ("10.0.0.10", 10911), mss=1460)
        ts = 1_700_000_000.0
        s.handshake(ts)
        for fc, data in remoting_conversation():
            ts += 0.001
            s.send(ts, fc, data, ack=True)
        s.close(ts + 0.001)
        w = grpc_wire()
        g = TcpSession(cw, ("10.0.0.1", 50123), ("10.0.0.2", 8081), mss=1400)
        g.handshake(w.chunks[0][2] - 0.001)
        for fc, data, t in w.chunks:
            g.send(t, fc, data)
        g.close(w.t + 0.01)
        cw.close()
    return str(path)


def _values(obj):
    """Every string value (and dict key) in a JSON document."""
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield k
            yield from _values(v)
    elif isinstance(obj, list):
        for v in obj:
            yield from _values(v)
    elif isinstance(obj, str):
        yield obj


def cli(*args: str) -> subprocess.CompletedProcess:
    r = subprocess.run([sys.executable, "-m", "rmqsniff", *args], capture_output=True, timeout=120, cwd=ROOT)
    assert b"Traceback" not in r.stderr, r.stderr
    return r


def assert_safe(r: subprocess.CompletedProcess) -> str:
    """No terminal control from the wire in stdout or stderr; the stdout text."""
    for stream in (r.stdout, r.stderr):
        text = stream.decode("utf-8")
        bad = [c for c in FORBIDDEN if c in text]
        assert not bad, (bad, text)
        assert all(c.isprintable() for line in text.split("\n") for c in line), text
    return r.stdout.decode("utf-8")


def test_shown_escapes_controls_and_keeps_printable_text():
    assert shown(TOPIC) == MARKUP + "\\x1b]0;pwned\\x07\\x1b[2J\\rY\\x9bZ"
    assert shown("a\nb\tc\x7f\u202e") == "a\\nb\\tc\\x7f\\u202e"
    assert shown("普通の topic-1 %RETRY%") == "普通の topic-1 %RETRY%"
    assert shown(shown(TOPIC)) == shown(TOPIC)


def test_the_capture_carries_the_hostile_names_exactly(hostile):
    """Machine formats stay exact: JSONL holds the original topic, group, tag and key."""
    r = cli("read", hostile, "--format", "jsonl")
    assert r.returncode == 0, r.stderr
    docs = [orjson.loads(x) for x in r.stdout.splitlines()]
    assert {d["protocol"] for d in docs} == {"remoting", "grpc"}
    assert sum(1 for d in docs for v in _values(d) if v == TOPIC) >= 2  # both protocols' request
    msgs = [orjson.loads(x) for x in cli("read", hostile, "--messages", "--format", "jsonl").stdout.splitlines()]
    sent = [m for m in msgs if m["kind"] == "sent"]
    assert len(sent) == 2 and all(m["topic"] == TOPIC and m["tags"] == TAG for m in sent)
    assert any(KEY in m["keys"] for m in sent)
    by_topic = orjson.loads(cli("stats", hostile, "--by", "topic", "--format", "json").stdout)
    assert TOPIC in {r["key"] for r in by_topic["rows"]}


@pytest.mark.parametrize("args", [
    ("read",),
    ("read", "--messages"),
    ("read", "--messages", "--body"),
    ("stats", "--by", "topic"),
    ("stats", "--by", "group"),
    ("stats", "--interval", "1s", "--by", "topic"),
    ("stats", "--interval", "1s", "--by", "group"),
], ids=lambda a: " ".join(a))
def test_human_tables_show_wire_text_escaped_and_markup_literal(hostile, args):
    r = cli(args[0], hostile, *args[1:])
    assert r.returncode == 0, r.stderr
    out = assert_safe(r)
    assert ("[red]g[/]" if "group" in args else MARKUP) in out  # printed as written, not styled away
    if args[0] == "stats" and "topic" in args:
        assert shown(TOPIC) in out
    if args[0] == "stats" and "group" in args:
        assert shown(GROUP) in out


def test_follow_shows_wire_text_escaped(hostile):
    conns = {orjson.loads(x)["connection"]["id"] for x in cli("read", hostile, "--format", "jsonl").stdout.splitlines()}
    assert len(conns) == 2
    for conn in sorted(conns):
        r = cli("follow", hostile, str(conn))
        assert r.returncode == 0, r.stderr
        assert "pwned" in assert_safe(r)


def test_stderr_lines_show_controls_escaped(hostile, tmp_path):
    bad = cli("read", hostile, "-Y", 'topic == "\x1b]0;pwned\x07\x1b[2J" and \x1b[2J')
    assert bad.returncode == 1
    assert_safe(bad)
    assert b"bad filter" in bad.stderr
    missing = cli("read", str(tmp_path / "no\x1b[2Jsuch\x07.pcap"))
    assert missing.returncode != 0 and missing.stderr
    assert_safe(missing)


# ---------------------------------------------------------------- the TUI


def _walk(node):
    yield node
    for c in node.children:
        yield from _walk(c)


def test_tui_list_detail_and_stats_show_wire_text_escaped(hostile):
    pytest.importorskip("textual")
    from textual.widgets import DataTable

    from rmqsniff.tui import RmqSniffApp
    from rmqsniff.tui.app import DetailTree
    from rmqsniff.tui.exchange_list import ExchangeTable
    from rmqsniff.tui.screens import StatsScreen

    async def main():
        app = RmqSniffApp([hostile])
        async with app.run_test(size=(200, 48)) as pilot:
            await until(pilot, lambda: not app.store.loading and app.view_ready.is_set())
            table = app.query_one(ExchangeTable)
            rows = [table.row_text(n) for n in range(len(app.view))]
            assert rows and not any(c in row for row in rows for c in FORBIDDEN), rows
            assert any(MARKUP + "\\x1b]0;pwned" in row for row in rows), rows
            labels: list[str] = []
            for _ in rows:
                await pilot.press("enter")
                labels += [str(n.label) for n in _walk(app.query_one(DetailTree).root)]
                await pilot.press("escape")
                await pilot.press("j")
            assert not [lbl for lbl in labels if any(c in lbl for c in FORBIDDEN)]
            assert sum("\\x1b]0;pwned\\x07" in lbl for lbl in labels) >= 2, labels  # both protocols' topic
            await pilot.press("s")
            await until(pilot, lambda: isinstance(app.screen, StatsScreen))
            await pilot.press("l")  # code; then topic, group
            for tab in ("topic", "group"):
                await pilot.press("l")
                t = app.screen.query_one(f"#t-{tab}", DataTable)
                await until(pilot, lambda t=t: t.row_count > 0)
                keys = [str(t.get_row_at(i)[0]) for i in range(t.row_count)]
                want = shown(TOPIC if tab == "topic" else GROUP)
                assert want in keys, keys  # the markup shown as written, controls escaped
    asyncio.run(main())
