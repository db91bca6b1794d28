"""The TUI driven with textual's pilot over a real capture: load, filter, drill down,
request/response jump, follow, export, sort, yank, help, errors.

Expected values come from the pipeline and the dissectors read directly, never from
the TUI's own code."""
from __future__ import annotations

import asyncio
import csv
import socket
import threading
from pathlib import Path

import orjson
import pytest

from dissectors.remoting import codes, headers
from dissectors.remoting.command import RemotingCommand
from dissectors.remoting.frame import encode
from rmqsniff.capwriter import CaptureWriter, TcpSession
from rmqsniff.pipeline import analyze
from tests.support.exchanges import request_of

pytest.importorskip("textual")

from textual.widgets import DataTable, Input, Log, Static  # noqa: E402

from rmqsniff.tui import RmqSniffApp  # noqa: E402
from rmqsniff.tui.app import DetailTree  # noqa: E402
from rmqsniff.tui.exchange_list import ExchangeTable  # noqa: E402
from rmqsniff.tui.screens import FollowScreen, HelpScreen, StatsScreen  # noqa: E402

CAPTURE = Path(__file__).resolve().parent.parent / "captures" / "remoting_json.pcap"
needs_capture = pytest.mark.skipif(not CAPTURE.exists(), reason="no real capture in captures/ yet")
SEND_V2 = 310


@pytest.fixture(scope="module")
def reference():
    """The capture read by the pipeline itself (the independent reference)."""
    if not CAPTURE.exists():
        pytest.skip("no real capture in captures/ yet")
    a = analyze([str(CAPTURE)])
    assert a.exchanges, "the capture holds no exchanges"
    return a.exchanges


def run(test, paths=None, size=(160, 48), **kw):
    """Run ``await test(app, pilot)`` once the app has loaded everything (live: at once)."""
    async def main():
        app = RmqSniffApp([str(CAPTURE)] if paths is None else paths, **kw)
        async with app.run_test(size=size) as pilot:
            if not kw.get("interfaces"):
                await settle(app, pilot)
            await test(app, pilot)
    asyncio.run(main())


async def settle(app, pilot, timeout: float = 20.0) -> None:
    """Until loading is over and the list shows the current filter/sort."""
    for _ in range(int(timeout / 0.05)):
        if not app.store.loading and app.view_ready.is_set():
            await pilot.pause()
            return
        await pilot.pause(0.05)
    raise AssertionError("the app did not settle")


async def until(pilot, cond, timeout: float = 10.0) -> None:
    for _ in range(int(timeout / 0.05)):
        if cond():
            return
        await pilot.pause(0.05)
    raise AssertionError("condition not reached")


async def type_text(pilot, text: str) -> None:
    await pilot.press(*["space" if c == " " else c for c in text])


def shown_rows(app) -> list[str]:
    table = app.query_one(ExchangeTable)
    return [table.row_text(i) for i in range(len(table.view))]


def hex_bytes(app) -> bytes:
    """The bytes the hex pane shows (parsed back from its lines)."""
    text = str(app.query_one("#hex-text", Static).render())
    out = bytearray()
    for line in text.splitlines():
        if line.startswith("…"):
            break
        out += bytes.fromhex(line[10:59].replace(" ", ""))
    return bytes(out)


def _topic(ex) -> str | None:
    t = headers.topic_of(ex.request.command) if ex.request else None
    return t if t is not None or ex.response is None else headers.topic_of(ex.response.command)


# ---------------------------------------------------------------- load

@needs_capture
def test_loads_a_real_capture_into_the_list(reference):
    async def t(app, pilot):
        table = app.query_one(ExchangeTable)
        assert len(table.view) == len(reference)
        header = table.render_line(0).text
        assert "request" in header and "topic/group" in header
        first = reference[0]
        line = table.render_line(1).text
        assert line.split()[0] == str(first.index)
        assert codes.request_name(first.request.command.code) in line
        status = str(app.query_one("#status-text", Static).render())
        assert f"loaded {len(reference)} exchanges" in status
        assert not app.query_one("#progress").has_class("-loading")
        # the detail panes show the exchange under the cursor
        tree = app.query_one(DetailTree)
        assert str(tree.root.label).startswith(f"#{first.index} ")
    run(t)


# ---------------------------------------------------------------- filter

@needs_capture
def test_filter_shows_validity_live_and_filters_the_list(reference):
    want = [str(ex.index) for ex in reference if ex.request and ex.request.command.code == SEND_V2]
    assert want

    async def t(app, pilot):
        await pilot.press("slash")
        line = app.query_one("#line", Input)
        assert line.has_focus
        await type_text(pilot, "code ==")
        assert line.has_class("-bad")
        msg = str(app.query_one("#line-msg", Static).render())
        assert "expected a value" in msg and "^" in msg
        await type_text(pilot, " SEND_MESSAGE_V2")
        assert line.has_class("-good") and not line.has_class("-bad")
        await pilot.press("enter")
        await settle(app, pilot)
        assert [r.split()[0] for r in shown_rows(app)] == want
        assert all("SEND_MESSAGE_V2" in r for r in shown_rows(app))
        assert "filter: code == SEND_MESSAGE_V2" in str(app.query_one("#title", Static).render())
        # a bad filter is explained in the UI and changes nothing
        await pilot.press("slash", "ctrl+u")
        await type_text(pilot, "latency > fast")
        await pilot.press("enter")
        assert line.has_class("-open") and line.has_class("-bad")
        assert "not a duration" in str(app.query_one("#line-msg", Static).render())
        await pilot.press("escape")
        assert not line.has_class("-open")
        assert len(app.view) == len(want)
        # escape in the list clears the filter
        await pilot.press("escape")
        await settle(app, pilot)
        assert len(app.view) == len(reference)
    run(t)


# ---------------------------------------------------------------- stats and drill-down

@needs_capture
def test_drill_down_from_the_topic_table(reference):
    topic = "TopicTest"
    want = [str(ex.index) for ex in reference if _topic(ex) == topic]
    assert want

    async def t(app, pilot):
        await pilot.press("colon")
        await type_text(pilot, "topics")
        await pilot.press("enter")
        await until(pilot, lambda: isinstance(app.screen, StatsScreen))
        screen = app.screen
        table = screen.query_one("#t-topic", DataTable)
        await until(pilot, lambda: table.row_count > 0)
        keys = [str(table.get_row_at(i)[0]) for i in range(table.row_count)]
        assert topic in keys
        for _ in range(keys.index(topic)):
            await pilot.press("j")
        await pilot.press("enter")
        await until(pilot, lambda: not isinstance(app.screen, StatsScreen))
        await settle(app, pilot)
        assert app.filter_text == f'topic == "{topic}"'
        assert [r.split()[0] for r in shown_rows(app)] == want
    run(t)


@needs_capture
def test_stats_view_shows_envoy_stats_and_drills_down_by_code(reference):
    n_requests = sum(ex.request is not None for ex in reference)
    n_send = sum(1 for ex in reference if ex.request and ex.request.command.code == SEND_V2)

    async def t(app, pilot):
        await pilot.press("s")
        await until(pilot, lambda: isinstance(app.screen, StatsScreen))
        envoy = app.screen.query_one("#t-envoy", DataTable)
        await until(pilot, lambda: envoy.row_count > 0)
        stats = {str(envoy.get_row_at(i)[0]): str(envoy.get_row_at(i)[1]) for i in range(envoy.row_count)}
        assert stats["rocketmq.rmqsniff.request_decoding_success"] == str(n_requests)
        assert "rocketmq.rmqsniff.request_time_ms" in stats
        await pilot.press("l")  # the code tab
        code_t = app.screen.query_one("#t-code", DataTable)
        await until(pilot, lambda: code_t.row_count > 0)
        keys = [str(code_t.get_row_at(i)[0]) for i in range(code_t.row_count)]
        row = keys.index("SEND_MESSAGE_V2")
        assert str(code_t.get_row_at(row)[1]) == str(n_send)
        code_t.move_cursor(row=row)
        await pilot.press("enter")
        await until(pilot, lambda: not isinstance(app.screen, StatsScreen))
        await settle(app, pilot)
        assert len(app.view) == n_send
    run(t)


@pytest.mark.parametrize("capture", ["remoting_json.pcap", "grpc_java.pcap"])
def test_stats_tabs_change_only_on_a_key(capture):
    """Keys that arrive faster than the screen handles them (queued in the app, as a terminal
    delivers them) step the tabs once each and the tabs then stay put."""
    from textual import events
    from textual.widgets import TabbedContent

    from rmqsniff.tui import stats_tables
    from rmqsniff.tui.screens import CHART_TABS

    order = [f"tab-{t}" for t in stats_tables.TABS + CHART_TABS]

    async def t(app, pilot):
        await pilot.press("s")
        await until(pilot, lambda: isinstance(app.screen, StatsScreen))
        tabs = app.screen.query_one(TabbedContent)
        assert tabs.active == order[0]
        for _ in range(5):
            app.post_message(events.Key("l", "l"))
        seen = []
        for _ in range(40):
            await pilot.pause(0.05)
            seen.append(tabs.active)
        assert seen[-1] == order[5 % len(order)]
        assert all(a == seen[-1] for a in seen[seen.index(seen[-1]):])  # no flipping once there
    run(t, paths=[str(CAPTURE.parent / capture)])


@needs_capture
def test_charts_count_the_listed_exchanges(reference):
    answered = sum(1 for ex in reference if ex.status == "answered")

    async def t(app, pilot):
        await pilot.press("colon")
        await type_text(pilot, "latency")
        await pilot.press("enter")
        await until(pilot, lambda: isinstance(app.screen, StatsScreen))
        chart = app.screen.query_one("#c-latency", Static)
        await until(pilot, lambda: "ms" in str(chart.render()))
        counts = [int(line.rsplit("(", 1)[0].split()[-1]) for line in str(chart.render()).splitlines()
                  if line.startswith("<=")]
        assert sum(counts) == answered
        await pilot.press("l")  # the rate tab
        rate = app.screen.query_one("#c-rate", Static)
        await until(pilot, lambda: "exchanges per" in str(rate.render()))
        await pilot.press("escape")
        assert not isinstance(app.screen, StatsScreen)
    run(t)


# ---------------------------------------------------------------- detail, partner, follow

@needs_capture
def test_enter_opens_and_p_jumps_between_request_and_response(reference):
    pos = next(i for i, ex in enumerate(reference) if ex.request and ex.response
               and ex.request.command.code == SEND_V2)
    ex = reference[pos]

    async def t(app, pilot):
        table = app.query_one(ExchangeTable)
        for _ in range(pos):
            await pilot.press("j")
        assert table.current == pos
        await pilot.press("enter")
        tree = app.query_one(DetailTree)
        assert tree.has_focus
        assert str(tree.cursor_node.label).startswith("Request SEND_MESSAGE_V2")
        assert hex_bytes(app) == encode(ex.request.command)
        await pilot.press("p")
        assert str(tree.cursor_node.label).startswith("Response " + codes.response_name(ex.response.command.code))
        assert hex_bytes(app) == encode(ex.response.command)
        caption = str(app.query_one("#hex-caption", Static).render())
        assert f"response: {len(encode(ex.response.command))} B of TCP payload in 1 packet as captured" in caption
        await pilot.press("p")
        assert hex_bytes(app) == encode(ex.request.command)
        # the tree holds the decoded header with long names
        labels = [str(n.label) for n in _walk(tree.root)]
        assert any(lbl.startswith("producerGroup = ") for lbl in labels)
        # tab cycles the panes
        await pilot.press("tab")
        assert app.focused.id == "hex"
        await pilot.press("tab")
        assert app.focused is table
    run(t)


def _walk(node):
    yield node
    for c in node.children:
        yield from _walk(c)


@needs_capture
def test_follow_shows_the_conversation_and_filters_to_the_connection(reference):
    by_conn: dict[int, list] = {}
    for ex in reference:
        by_conn.setdefault(ex.connection.id, []).append(ex)
    cid, exs = max(by_conn.items(), key=lambda kv: len(kv[1]))
    pos = reference.index(exs[0])

    async def t(app, pilot):
        for _ in range(pos):
            await pilot.press("j")
        await pilot.press("f")
        await until(pilot, lambda: isinstance(app.screen, FollowScreen))
        log = app.screen.query_one(Log)
        await until(pilot, lambda: log.line_count > 3)
        text = "\n".join(log.lines)
        assert f"Follow: rocketmq connection {cid}" in text
        for ex in exs:
            assert f"#{ex.index} request" in text or f"#{ex.index} response" in text
        await pilot.press("escape")
        await settle(app, pilot)
        assert app.filter_text == f"conn == {cid}"
        assert [r.split()[0] for r in shown_rows(app)] == [str(ex.index) for ex in exs]
    run(t)


# ---------------------------------------------------------------- sort

@needs_capture
def test_number_keys_sort_and_r_reverses(reference):
    lats = sorted(-1.0 if ex.latency_ms is None else ex.latency_ms for ex in reference)

    def shown_lat(app):
        out = []
        for r in shown_rows(app):
            cell = r.split()[-2]  # the ms column, before bytes
            out.append(-1.0 if cell == "-" else float(cell))
        return out

    async def t(app, pilot):
        await pilot.press("9")
        await settle(app, pilot)
        got = shown_lat(app)
        assert got == sorted(got) and len(got) == len(lats)
        assert got[-1] == pytest.approx(lats[-1], abs=0.001)
        await pilot.press("r")
        await settle(app, pilot)
        assert shown_lat(app)[0] == pytest.approx(lats[-1], abs=0.001)
        assert "ms ▼" in app.query_one(ExchangeTable).render_line(0).text
    run(t)


# ---------------------------------------------------------------- export

@needs_capture
def test_export_writes_the_listed_exchanges(reference, tmp_path):
    want = [ex.index for ex in reference if ex.request and ex.request.command.code == SEND_V2]

    async def t(app, pilot):
        assert app.apply_filter("code == SEND_MESSAGE_V2")
        await settle(app, pilot)
        for name in ("out.jsonl", "out.csv", "out.pcapng"):
            await pilot.press("colon")
            app.query_one("#line", Input).value = f"export {tmp_path / name}"  # typing is tested elsewhere
            await pilot.press("enter")
            await until(pilot, lambda name=name: f"to {tmp_path / name}" in app.last_export
                        or "failed" in app.last_export)
            assert "failed" not in app.last_export, app.last_export
    run(t)
    lines = (tmp_path / "out.jsonl").read_text().splitlines()
    assert [orjson.loads(x)["index"] for x in lines] == want
    with open(tmp_path / "out.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [int(r["index"]) for r in rows] == want
    # the pcapng holds the packets of exactly those exchanges: read it back
    again = analyze([str(tmp_path / "out.pcapng")]).exchanges
    assert len(again) == len(want)
    assert all(request_of(ex).code == SEND_V2 for ex in again)


# ---------------------------------------------------------------- yank and redaction

SECRET = "s3cr3t-signature-value"


@pytest.fixture
def secret_capture(tmp_path):
    """A capture whose one request carries ACL credentials."""
    path = tmp_path / "acl.pcap"
    req = RemotingCommand(105, 0, 7, "JAVA", 479, None,
                          {"topic": "orders", "AccessKey": "AK-visible-key", "Signature": SECRET}, None)
    resp = RemotingCommand(0, 1, 7, "JAVA", 479, None, {}, b'{"brokerDatas":[]}')
    with open(path, "wb") as f:
        w = CaptureWriter(f)
        s = TcpSession(w, ("10.0.0.1", 50000), ("10.0.0.9", 9876))
        s.handshake(1700000000.0)
        s.send(1700000000.1, True, encode(req))
        s.send(1700000000.2, False, encode(resp))
        s.close(1700000000.3)
        w.close()
    return path


def test_yank_and_every_pane_redact_secrets(secret_capture):
    async def t(app, pilot):
        assert len(app.view) == 1
        await pilot.press("y")
        doc = orjson.loads(app.clipboard)
        assert doc["request"]["ext"]["Signature"] == headers.REDACTED
        assert doc["request"]["ext"]["topic"] == "orders"
        labels = " ".join(str(n.label) for n in _walk(app.query_one(DetailTree).root))
        assert "Signature = <redacted>" in labels
        for shown in (app.clipboard, labels, hex_bytes(app).decode("latin-1")):
            assert SECRET not in shown and "AK-visible-key" not in shown
    run(t, paths=[str(secret_capture)])

    async def unredacted(app, pilot):
        labels = " ".join(str(n.label) for n in _walk(app.query_one(DetailTree).root))
        assert SECRET in labels
        await pilot.press("y")
        assert SECRET in app.clipboard
    run(unredacted, paths=[str(secret_capture)], redact=False)


# ---------------------------------------------------------------- help, commands, errors

@needs_capture
def test_help_lists_every_binding_and_command():
    from rmqsniff.tui.commands import NAMES

    shown_as = {"slash": "/", "colon": ":", "question_mark": "?", "down": "↓", "up": "↑", "pagedown": "pgdn",
                "pageup": "pgup"}

    async def t(app, pilot):
        await pilot.press("question_mark")
        await until(pilot, lambda: isinstance(app.screen, HelpScreen))
        text = str(app.screen.query_one("#help-text", Static).render())
        keys_part, commands_part = text.split("Commands (:)")
        key_words = {w for line in keys_part.splitlines()[1:] for w in line[:32].split()}
        for b in list(app.BINDINGS) + list(ExchangeTable.BINDINGS):
            for key in b.key.split(","):
                if key.isdigit():
                    assert "1-9" in key_words and "0" in key_words
                else:
                    assert shown_as.get(key, key) in key_words, key
        for n in NAMES:
            assert f":{n}" in commands_part
        await pilot.press("escape")
        assert not isinstance(app.screen, HelpScreen)
    run(t)


@needs_capture
def test_command_line_completes_and_reports_unknown_commands():
    async def t(app, pilot):
        await pilot.press("colon")
        await type_text(pilot, "gro")
        line = app.query_one("#line", Input)
        await until(pilot, lambda: line._suggestion == "groups")
        await pilot.press("tab")
        assert line.value == "groups"
        await pilot.press("ctrl+u")
        await type_text(pilot, "frobnicate")
        await pilot.press("enter")
        assert "unknown command 'frobnicate'" in str(app.query_one("#line-msg", Static).render())
        assert app.screen is app.screen_stack[0]
    run(t)


def test_unreadable_capture_is_shown_in_the_ui(tmp_path):
    missing = tmp_path / "nope.pcap"
    junk = tmp_path / "junk.pcap"
    junk.write_bytes(b"this is not a capture file at all")

    async def t(app, pilot):
        status = str(app.query_one("#status-text", Static).render())
        assert "problem" in status and "nothing could be read" in status
        assert any("nope.pcap" in e for e in app.store.errors)
        assert any("junk.pcap" in e for e in app.store.errors)
        await pilot.press("j", "enter", "p", "f", "y", "9")  # nothing to act on: no crash
        assert app.is_running
    run(t, paths=[str(missing), str(junk)])


# ---------------------------------------------------------------- live tap

def _can_capture() -> bool:
    try:
        socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0).close()
        return True
    except (OSError, AttributeError):
        return False


def _talk(server: socket.socket, requests: list[RemotingCommand]) -> None:
    """A client and a server in this process: each request over TCP on loopback, answered with SUCCESS."""
    def serve() -> None:
        conn, _ = server.accept()
        with conn:
            for req in requests:
                n = int.from_bytes(_recv(conn, 4), "big")
                _recv(conn, n)
                conn.sendall(encode(RemotingCommand(0, 1, req.opaque, "JAVA", 479, None, {}, None)))
            conn.recv(1)

    t = threading.Thread(target=serve)
    t.start()
    with socket.create_connection(server.getsockname()) as c:
        for req in requests:
            c.sendall(encode(req))
            _recv(c, int.from_bytes(_recv(c, 4), "big"))
    t.join(10)


def _recv(s: socket.socket, n: int) -> bytes:
    buf = b""
    while len(buf) < n:
        chunk = s.recv(n - len(buf))
        if not chunk:
            raise ConnectionError("closed")
        buf += chunk
    return buf


@pytest.mark.skipif(not _can_capture(), reason="a live tap needs root or CAP_NET_RAW")
def test_live_tap_fills_the_list_as_traffic_arrives():
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    port = server.getsockname()[1]
    requests = [RemotingCommand(105, 0, 1, "JAVA", 479, None, {"topic": "orders"}, None)] + [
        RemotingCommand(310, 0, i, "JAVA", 479, None, {"a": "PG_live", "b": "payments", "c": "TBW102", "d": "4",
                                                          "e": "0", "f": "0", "g": "1", "h": "0", "i": ""},
                        b"body-%d" % i) for i in range(2, 5)]

    async def t(app, pilot):
        await until(pilot, lambda: app.store.capturing or app.store.errors)
        assert not app.store.errors
        talker = threading.Thread(target=_talk, args=(server, requests))
        talker.start()
        await until(pilot, lambda: len(app.view) == len(requests))
        talker.join(10)
        rows = shown_rows(app)
        assert [r.split()[7] for r in rows] == ["GET_ROUTEINFO_BY_TOPIC"] + ["SEND_MESSAGE_V2"] * 3
        assert all(f"→ 127.0.0.1:{port}" in r for r in rows)
        assert "payments/PG_live" in rows[1]
        assert f"capturing: {len(requests)} exchanges" in str(app.query_one("#status-text", Static).render())
        assert "live: lo" in str(app.query_one("#title", Static).render())
    try:
        run(t, paths=[], interfaces=["lo"], bpf=f"tcp port {port}", ports=[port])
    finally:
        server.close()


# ---------------------------------------------------------------- the command

def test_tui_command_explains_bad_usage_in_one_line(tmp_path):
    from click.testing import CliRunner

    from rmqsniff.cli_tui import tui

    cap = str(CAPTURE)
    r = CliRunner().invoke(tui, [cap, "-Y", "latency > fast"])
    assert r.exit_code == 1 and "bad filter: not a duration" in r.output and "^" in r.output
    assert "Traceback" not in r.output
    r = CliRunner().invoke(tui, [])
    assert r.exit_code == 2 and "give capture files or -i IFACE" in r.output
    r = CliRunner().invoke(tui, [cap])  # not a terminal
    assert r.exit_code == 1 and "needs a terminal" in r.output
    r = CliRunner().invoke(tui, [str(tmp_path / "x.pcap")])  # a missing file: one line, before the UI
    assert r.exit_code == 2 and r.output.strip().count("\n") == 0 and "x.pcap: cannot open" in r.output


@needs_capture
def test_screenshot_of_the_main_view(tmp_path):
    from rmqsniff.tui.screenshot import screenshot

    out = asyncio.run(screenshot(str(tmp_path / "main.svg"), [str(CAPTURE)], row=2, size=(120, 40)))
    svg = Path(out).read_text()
    assert svg.startswith("<svg") and "SEND_MESSAGE_V2" in svg and "extFields" in svg
