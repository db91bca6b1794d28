"""Consumer lag (``rmqsniff lag``) on the committed real captures, checked against what the
clients themselves recorded (``captures/NAME.truth.json``) and the capture's own frames."""
from __future__ import annotations

import json
from collections import Counter
from typing import Any

import pytest
from click.testing import CliRunner

from rmqsniff.cli import main
from rmqsniff.lag import LagTable
from rmqsniff.model import ACKED, BROKER_ADDRESS, BROKER_OFFSET, CONSUMER_OFFSET, DELIVERED, OffsetFact
from rmqsniff.pipeline import Pipeline
from rmqsniff.protocols import protocol_of
from tests.support.captures import CAPTURES

OLDER_MS_NAMES = {"rocketmq_request_time_ms", "rocketmq_request_time_by_code_ms", "rocketmq_breakdown_request_time_ms"}
KEYS = {"group", "topic", "broker", "queue", "broker_offset", "consumer_offset", "lag", "ts", "inflight",
        "inflight_oldest_s"}


def lag(*args: str) -> list[dict[str, Any]]:
    r = CliRunner().invoke(main, ["lag", *args, "--format", "jsonl"])
    assert r.exit_code == 0, r.output
    return [json.loads(line) for line in r.stdout.splitlines()]


def truth(name: str) -> dict[str, Any]:
    return json.loads((CAPTURES / f"{name}.truth.json").read_text())


def cap(name: str) -> str:
    return str(CAPTURES / f"{name}.pcap")


def by_queue(rows: list[dict[str, Any]], group: str, topic: str) -> dict[int, dict[str, Any]]:
    return {r["queue"]: r for r in rows if r["group"] == group and r["topic"] == topic}


def ends(received: list[dict[str, Any]]) -> dict[int, int]:
    """Per queue, the offset after the last message a consumer received (its max offset, when
    every message of the queue was received)."""
    out: dict[int, int] = {}
    for m in received:
        out[m["queue_id"]] = max(out.get(m["queue_id"], 0), m["queue_offset"] + 1)
    return out


def test_push_and_lite_pull_groups_caught_up_on_every_queue() -> None:
    """remoting_json: the push and lite-pull consumers received all 47 messages; their last
    commits (UPDATE_CONSUMER_OFFSET / pull commitOffset) equal each queue's max offset."""
    t = truth("remoting_json")
    rows = lag(cap("remoting_json"))
    assert all(set(r) >= KEYS for r in rows)
    want = ends(t["received"]["push"])
    assert sum(want.values()) == 47
    for group in ("CG_push_TopicTest", "CG_lite_TopicTest"):
        got = by_queue(rows, group, "TopicTest")
        assert {q: r["broker_offset"] for q, r in got.items()} == want
        assert {q: r["consumer_offset"] for q, r in got.items()} == want
        assert {r["lag"] for r in got.values()} == {0}
        assert {r["broker"] for r in got.values()} == {"broker-a"}
        assert {r["inflight"] for r in got.values()} == {None}  # not a pop consumer: unknown, not 0


def test_go_client_broker_named_from_route_answers() -> None:
    """remoting_go: the Go client names no broker in its requests; the route answers map
    127.0.0.1:10911 to broker-a.  Its commits equal the queues' ends (17 messages)."""
    t = truth("remoting_go")
    got = by_queue(lag(cap("remoting_go")), "CG_push_TopicGo", "TopicGo")
    want = ends(t["received"]["push"])
    assert sum(want.values()) == 17
    assert {q: (r["broker"], r["broker_offset"], r["consumer_offset"], r["lag"]) for q, r in got.items()} == {
        q: ("broker-a", n, n, 0) for q, n in want.items()}


def test_lag_before_the_commits_is_what_was_sent() -> None:
    """Without the commits (filtered out) the only consumer offsets are the first queries'
    answers (0): lag per queue is everything the queue holds."""
    t = truth("remoting_go")
    rows = lag(cap("remoting_go"), "-Y", "code != UPDATE_CONSUMER_OFFSET and code != PULL_MESSAGE")
    got = by_queue(rows, "CG_push_TopicGo", "TopicGo")
    sent = Counter(m["queue_id"] for m in t["received"]["push"])
    assert {q: r["lag"] for q, r in got.items()} == dict(sent)
    assert {r["consumer_offset"] for r in got.values()} == {0}


def test_pop_in_flight_is_popped_minus_acked() -> None:
    """remoting_pop: 10 popped (truth), all acked: 0 in flight at the end; with the acks left
    out, every popped message is in flight, queue by queue, aged from its pop."""
    t = truth("remoting_pop")
    popped = Counter(m["queue_id"] for m in t["received"]["pop"])
    got = by_queue(lag(cap("remoting_pop")), "CG_pop", "TopicPop")
    assert {q: r["inflight"] for q, r in got.items()} == {q: 0 for q in popped}
    assert {q: r["broker_offset"] for q, r in got.items()} == ends(t["received"]["pop"])
    assert all(r["consumer_offset"] is None and r["lag"] is None for r in got.values())  # not on the wire
    held = by_queue(lag(cap("remoting_pop"), "-Y", "code != ACK_MESSAGE"), "CG_pop", "TopicPop")
    assert {q: r["inflight"] for q, r in held.items()} == dict(popped)
    assert all(r["inflight_oldest_s"] > 0 for r in held.values())


def test_grpc_simple_consumer_in_flight_joins_client_and_proxy() -> None:
    """grpc_python: the SimpleConsumer received 10 and acked 10.  The client's ReceiveMessage /
    AckMessage and the proxy's POP_MESSAGE / ACK_MESSAGE name the same messages (receipt
    handle = pop handle), so each is counted once: 10 in flight with both acks left out,
    still 10 with only one side's acks, 0 with both."""
    t = truth("grpc_python")
    n = len(t["received"]["simple"])
    assert n == 10

    def inflight(*args: str) -> int:
        rows = [r for r in lag(cap("grpc_python"), *args) if r["group"] == "GID_py"]
        assert {r["topic"] for r in rows} == {"PyTopic"} and {r["broker"] for r in rows} == {"broker-a"}
        return sum(r["inflight"] for r in rows)

    assert inflight() == 0
    assert inflight("-Y", "code != ACK_MESSAGE and code != AckMessage") == n
    assert inflight("-Y", "protocol == grpc and code != AckMessage") == n
    assert inflight("-Y", "protocol == remoting and code != ACK_MESSAGE") == n


def test_grpc_java_every_received_message_settled() -> None:
    """grpc_java: push (normal, FIFO) and simple consumers acked all they received (truth:
    19 received); in flight with the gRPC acks left out equals the truth's received count."""
    t = truth("grpc_java")
    received = sum(len(v) for v in t["received"].values())
    rows = lag(cap("grpc_java"))
    assert sum(r["inflight"] or 0 for r in rows) == 0
    held = lag(cap("grpc_java"), "-Y", "protocol == grpc and code != AckMessage")
    assert sum(r["inflight"] or 0 for r in held) == received


def test_facts_agree_with_raw_frames() -> None:
    """Every remoting commit fact is an UPDATE_CONSUMER_OFFSET's commitOffset, a pull's
    commitOffset with the commit bit, or a QUERY_CONSUMER_OFFSET answer's offset, as in the
    exchange's own header fields."""
    seen: Counter[int] = Counter()
    for ex in Pipeline().run([cap("remoting_json")]):
        for f in protocol_of(ex).offset_facts(ex):
            if f.kind != CONSUMER_OFFSET:
                continue
            assert ex.request is not None
            ext = ex.request.command.ext
            name = ex.request.command.code
            seen[name] += 1
            if name == 14:
                assert ex.response is not None
                assert f.offset == int(ex.response.command.ext["offset"])
            else:
                assert f.offset == int(ext["commitOffset"])
                assert name == 15 or int(ext["sysFlag"]) & 1
            assert (f.group, f.topic, f.queue) == (ext["consumerGroup"], ext["topic"], int(ext["queueId"]))
    # the push consumer commits with its pulls and in UPDATE_CONSUMER_OFFSET, the lite pull
    # consumer in UPDATE_CONSUMER_OFFSET only; both ask QUERY_CONSUMER_OFFSET first
    assert seen == {14: 8, 15: 8, 11: 2}


def fact(kind: str, ts: float, offset: int | None, **kw: Any) -> OffsetFact:
    base: dict[str, Any] = {"server": "10.0.0.1:10911", "topic": "T", "queue": 0, "group": "G"}
    return OffsetFact(kind, ts, offset=offset, **(base | kw))


def test_table_rules() -> None:
    """The table's rules, fact by fact: max offset never goes down; the latest commit wins;
    an address becomes a broker name once told; unknown stays None; overflow is counted."""
    t = LagTable(max_queues=2, max_inflight=1)
    t.fact(fact(BROKER_OFFSET, 1.0, 10, group=None))
    t.fact(fact(BROKER_OFFSET, 2.0, 7, group=None))  # a lower bound below what is known
    t.fact(fact(CONSUMER_OFFSET, 3.0, 4))
    t.fact(fact(CONSUMER_OFFSET, 2.5, 9))  # older than the last commit: ignored
    (r,) = t.rows()
    assert (r["broker"], r["broker_offset"], r["consumer_offset"], r["lag"], r["inflight"]) == (
        "10.0.0.1:10911", 10, 4, 6, None)
    t.fact(OffsetFact(BROKER_ADDRESS, 4.0, "10.0.0.1:10911", "broker-x"))
    t.fact(fact(CONSUMER_OFFSET, 5.0, 10, broker="broker-x"))
    (r,) = t.rows()
    assert (r["broker"], r["consumer_offset"], r["lag"], r["ts"]) == ("broker-x", 10, 0, 5.0)
    t.fact(fact(DELIVERED, 6.0, 3, broker="broker-x"))
    t.fact(fact(DELIVERED, 7.0, 4, broker="broker-x"))  # over max_inflight: the oldest goes
    t.fact(fact(ACKED, 8.0, 3, broker="broker-x"))
    (r,) = t.rows(now=10.0)
    assert (r["inflight"], r["inflight_oldest_s"]) == (1, 3.0)
    assert t.overflow["inflight"] == 1
    t.fact(fact(BROKER_OFFSET, 9.0, 1, topic="U", group=None))
    t.fact(fact(BROKER_OFFSET, 9.0, 1, topic="V", group=None))  # third queue: over max_queues
    assert t.overflow["queues"] == 1
    (u,) = [r for r in t.rows() if r["topic"] == "U"]
    assert (u["group"], u["consumer_offset"], u["lag"]) == (None, None, None)


def test_interval_rows_carry_values_through_quiet_intervals() -> None:
    """--interval: every interval has a row per known queue, quiet ones too, values carried
    and aged; the last interval's values equal the whole-capture rows."""
    rows = lag(cap("remoting_go"), "--interval", "500ms", "-Y", 'group == "CG_push_TopicGo"')
    ends_ = sorted({r["interval_end"] for r in rows})
    assert len(ends_) >= 4 and all(round(b - a, 6) == 0.5 for a, b in zip(ends_, ends_[1:], strict=False))
    per = Counter(r["interval_end"] for r in rows)
    assert len(set(per[e] for e in ends_[1:])) == 1  # once known, every queue in every interval
    last = {r["queue"]: r["lag"] for r in rows if r["interval_end"] == ends_[-1]}
    assert last == {r["queue"]: r["lag"] for r in lag(cap("remoting_go"), "-Y", 'group == "CG_push_TopicGo"')}
    aged = [r for r in rows if r["consumer_offset_age_s"] is not None]
    assert all(r["consumer_offset_age_s"] >= 0 for r in aged)


def test_table_format_sorted_by_lag() -> None:
    r = CliRunner().invoke(main, ["lag", cap("remoting_go"), "-Y", "code != UPDATE_CONSUMER_OFFSET and "
                                  "code != PULL_MESSAGE", "--sort", "lag"])
    assert r.exit_code == 0, r.output
    lines = [x for x in r.stdout.splitlines() if "CG_push_TopicGo" in x]
    lags = [int(x.split()[6]) for x in lines]
    assert lags == sorted(lags, reverse=True) and len(lags) == 4


def _tap_stats(name: str) -> Any:
    """The captures fed to a live tap packet by packet (its fast lanes and kept frames
    included), as the ``live`` command would."""
    from rmqsniff.live import LiveTap
    from rmqsniff.sources.pcapfile import open_capture

    r = open_capture(cap(name))
    pk = [(round(ts * 1e9), f, len(f)) for ts, _, f in r]
    r.f.close()
    tap = LiveTap([], stat_prefix="t")
    for i in range(0, len(pk), 50):
        tap.feed(0, pk[i:i + 50])
    tap.finish()
    return tap.stats


def _series(text: str, metric: str) -> dict[tuple[str, str, str, str], float]:
    from prometheus_client.parser import text_string_to_metric_families

    out = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            if s.name == metric:
                lb = s.labels
                out[(lb.get("group", ""), lb["topic"], lb["broker"], lb["queue"])] = s.value
    return out


def test_live_prometheus_lag_gauges_equal_the_lag_command_and_pass_promtool(tmp_path: Any) -> None:
    """``live``'s Prometheus text (the one stats module's renderer) carries the lag gauges with
    the values ``rmqsniff lag`` gives for the same capture, and promtool accepts it."""
    import shutil
    import subprocess

    from rmqsniff.exporters.statsfmt import render_prometheus

    for name in ("remoting_go", "remoting_pop", "grpc_python"):
        text = render_prometheus(_tap_stats(name))
        rows = lag(cap(name))
        want_lag = {(r["group"], r["topic"], r["broker"], str(r["queue"])): r["lag"] for r in rows
                    if r["group"] is not None and r["lag"] is not None}
        want_flight = {(r["group"], r["topic"], r["broker"], str(r["queue"])): r["inflight"] for r in rows
                       if r["group"] is not None and r["inflight"] is not None}
        assert _series(text, "rocketmq_consumer_lag_messages") == want_lag
        assert _series(text, "rocketmq_consumer_inflight_messages") == want_flight
        assert want_lag or want_flight
        brokers = _series(text, "rocketmq_broker_offset")
        assert {k[1:]: v for k, v in brokers.items()} == {
            (r["topic"], r["broker"], str(r["queue"])): r["broker_offset"]
            for r in rows if r["broker_offset"] is not None}
        promtool = shutil.which("promtool")
        if promtool is None:
            pytest.skip("promtool missing (Debian's prometheus package; scripts/test installs it)")
        f = tmp_path / f"{name}.prom"
        f.write_text(text)
        with f.open() as fh:
            p = subprocess.run([promtool, "check", "metrics"], stdin=fh, capture_output=True, text=True)
        # the text parses; the only lint promtool has is about the older latency names ending
        # in _ms (not the lag gauges), which dashboards already use
        problems = [line for line in (p.stdout + p.stderr).splitlines() if line.strip()]
        assert all(line.split()[0] in OLDER_MS_NAMES and "abbreviated units" in line for line in problems), problems


def test_tui_lag_tab_sorts_and_draws_a_sparkline_per_row() -> None:
    """The stats view's lag tab, driven with textual's pilot over two captures: the rows
    ``rmqsniff lag`` gives for the listed exchanges (commits and acks filtered out, so every
    queue lags or holds messages), largest lag first, each with a sparkline; ``o`` sorts by
    in flight next; Enter filters the list to the chosen row's group and topic."""
    import asyncio

    pytest.importorskip("textual")
    from textual.widgets import DataTable, TabbedContent

    from rmqsniff.tui import RmqSniffApp
    from rmqsniff.tui.charts import SPARKS
    from rmqsniff.tui.screens import StatsScreen
    from tests.support.pilot import until

    expr = "code != UPDATE_CONSUMER_OFFSET and code != PULL_MESSAGE and code != ACK_MESSAGE"
    caps = [cap("remoting_go"), cap("remoting_pop")]
    want = [r for r in lag(*caps, "-Y", expr) if r["group"] is not None]
    want_lag = sorted((r["lag"] for r in want if r["lag"] is not None), reverse=True)
    want_flight = sorted((r["inflight"] for r in want if r["inflight"] is not None), reverse=True)
    assert want_lag[0] > 0 and want_flight[0] > 0

    async def main() -> None:
        app = RmqSniffApp(caps, initial_filter=expr)
        async with app.run_test(size=(180, 48)) as pilot:
            await until(pilot, lambda: not app.store.loading)
            await pilot.pause(0.3)
            await pilot.press("s")
            await until(pilot, lambda: isinstance(app.screen, StatsScreen))
            app.screen.query_one(TabbedContent).active = "tab-lag"
            t = app.screen.query_one("#t-lag", DataTable)
            await until(pilot, lambda: t.row_count > 0)

            def rows() -> list[list[str]]:
                return [[str(c) for c in t.get_row_at(i)] for i in range(t.row_count)]
            got = [r for r in rows() if r[0] != "-"]
            assert [int(r[6]) for r in got if r[6] != "-"] == want_lag
            assert rows()[0][0] == "CG_push_TopicGo"
            assert all(r[8].strip() and set(r[8]) <= set(SPARKS + " ") for r in got)
            await pilot.press("o")  # in flight, largest first
            await until(pilot, lambda: rows()[0][0] == "CG_pop")
            assert [int(r[7]) for r in rows() if r[7] != "-"] == want_flight
            t.move_cursor(row=0)
            await pilot.press("enter")
            await until(pilot, lambda: not isinstance(app.screen, StatsScreen))
            assert app.filter_text == 'group == "CG_pop" and topic == "TopicPop"'
    asyncio.run(main())
