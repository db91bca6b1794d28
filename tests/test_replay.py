"""Replay without a cluster: planning, rewriting, pacing, sampling, safety, diff rules, CLI refusals."""
from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import time
from collections import Counter
from pathlib import Path

import orjson
import pytest
from click.testing import CliRunner

from dissectors.remoting import codes as c
from dissectors.remoting.command import RemotingCommand
from dissectors.remoting.message import decode_batch, decode_stored_messages, parse_properties
from replay.engine import (
    MAX,
    RATE,
    SPEED,
    DiffRules,
    Guard,
    Pacing,
    Rewriter,
    Rules,
    SafetyError,
    Schedule,
    build_plan,
    parse_duration,
    parse_percent,
    parse_rate,
    parse_speed,
    sign,
)
from replay.engine.diff import compare, remark_class
from replay.engine.plan import keep
from rmqsniff.cli_replay import replay
from rmqsniff.filter import compile_filter
from rmqsniff.model import ANSWERED, Connection, Exchange, Message
from rmqsniff.pipeline import analyze
from tests.support.exchanges import request_of

CAPTURES = Path(__file__).resolve().parent.parent / "captures"
JSON_CAP = str(CAPTURES / "remoting_json.pcap")


@pytest.fixture(scope="module")
def exchanges():
    return analyze([JSON_CAP]).exchanges


@pytest.fixture(scope="module")
def plan(exchanges):
    return build_plan(exchanges)


def _send(exchanges, code=c.SEND_MESSAGE_V2, kind=None):
    for ex in exchanges:
        if ex.request and ex.request.command.code == code and (
                kind is None or f"kind\x01{kind}\x02" in ex.request.command.ext.get("i", "")):
            return ex
    raise AssertionError("no such request in the capture")


# ------------------------------------------------------------------ planning

def test_default_plan_is_producer_traffic_grouped_per_connection(plan):
    codes = {st.code for s in plan.sessions for st in s.steps}
    assert codes <= {c.GET_ROUTEINFO_BY_TOPIC, c.HEART_BEAT, c.UNREGISTER_CLIENT, c.SEND_MESSAGE_V2,
                     c.SEND_BATCH_MESSAGE}
    producer = next(s for s in plan.sessions if any(st.code == c.SEND_MESSAGE_V2 for st in s.steps))
    assert producer.kind == "broker" and producer.broker_name == "broker-a"
    assert sum(st.code == c.SEND_MESSAGE_V2 for st in producer.steps) == 42
    ts = [st.ex.request.ts for st in producer.steps]
    assert ts == sorted(ts)  # per-session order is capture order
    assert {s.kind for s in plan.sessions if any(st.code == c.GET_ROUTEINFO_BY_TOPIC for st in s.steps)} == {"namesrv"}
    assert plan.skipped["consumer traffic (use --consumers)"] > 0
    assert ("127.0.0.1", 9876) in plan.servers and ("127.0.0.1", 10911) in plan.servers
    # broker registration and cluster queries are never replayed
    assert plan.skipped["not a client request (admin / server traffic)"] == 4


def test_dependencies_follow_the_capture(plan):
    producer = next(s for s in plan.sessions if any(st.code == c.SEND_MESSAGE_V2 for st in s.steps))
    steps = producer.steps
    for st in steps:
        for d in st.deps:  # a step only waits for answers the capture shows before its request
            dep = steps[d].ex
            assert dep.status == ANSWERED and dep.response.ts <= st.ex.request.ts
    sync = [st for st in steps if "kind\x01sync" in (st.ex.request.command.ext or {}).get("i", "")]
    assert all(st.deps for st in sync[1:])  # sync sends wait for the previous answer
    oneway = [st for st in steps if st.oneway]
    assert len(oneway) == 5
    assert not any(st.index in other.deps for st in oneway for other in steps)  # nothing waits for a oneway


def test_pipelined_requests_do_not_wait_for_each_other():
    conn = Connection(1, ("10.0.0.9", 1234), ("10.0.0.1", 10911))

    def ex(i, req_ts, resp_ts, flag=0):
        cmd = RemotingCommand(c.SEND_MESSAGE_V2, flag=flag, opaque=i, ext={"a": "G", "b": "T"})
        e = Exchange(i, conn, "remoting", "oneway" if flag else ANSWERED, Message(req_ts, cmd, True))
        if resp_ts is not None:
            e.response = Message(resp_ts, RemotingCommand(0, 1, i), False)
        return e

    # A and B pipelined (B sent before A's answer), C after both answers, D oneway, E after D
    plan = build_plan([ex(0, 0.0, 5.0), ex(1, 1.0, 6.0), ex(2, 7.0, 8.0), ex(3, 9.0, None, 2), ex(4, 9.5, 10.0)])
    deps = [st.deps for st in plan.sessions[0].steps]
    assert deps == [(), (), (0, 1), (2,), ()]


def test_consumers_and_filter_selection(exchanges):
    with_consumers = build_plan(exchanges, consumers=True)
    codes = {st.code for s in with_consumers.sessions for st in s.steps}
    assert c.PULL_MESSAGE in codes and c.UPDATE_CONSUMER_OFFSET in codes
    assert c.REGISTER_BROKER not in codes
    only = build_plan(exchanges, flt=compile_filter("code == SEND_BATCH_MESSAGE"))
    assert only.requests == 1
    admin = build_plan(exchanges, flt=compile_filter("code == REGISTER_BROKER"))
    assert admin.requests == 0  # the filter never adds what is not replayable


def test_consistent_sampling(exchanges):
    assert keep("order-42", 0.5) == keep("order-42", 0.5)
    kept = sum(keep(f"k{i}", 0.1) for i in range(20000))
    assert 1700 < kept < 2300
    assert all(keep(f"k{i}", 1.0) for i in range(100))
    by_key = build_plan(exchanges, sample_by=("key", 0.5))
    sends = [st for s in by_key.sessions for st in s.steps if st.code == c.SEND_MESSAGE_V2]
    keys = {parse_properties(request_of(st.ex).ext["i"])["KEYS"] for st in sends}
    assert all(keep(k, 0.5) for k in keys)
    assert 0 < len(sends) < 42
    # plumbing without a key (route lookups, heartbeats) is always kept
    assert any(st.code == c.HEART_BEAT for s in by_key.sessions for st in s.steps)
    assert parse_percent("10%") == pytest.approx(0.1)
    with pytest.raises(ValueError):
        parse_percent("0%")


# ------------------------------------------------------------------ rewriting

def test_rewrite_send_v2(exchanges):
    src = _send(exchanges, kind="sync").request.command
    rules = Rules(topics={"TopicTest": "Staging"}, groups={"PG_TopicTest": "PG_staging"},
                  set_properties={"env": "staging"}, drop_properties=("idx",))
    cmd = Rewriter(rules, copy=1).request(src, now_ms=1_900_000_000_000, queue_nums=1, broker_name="broker-s")
    e = cmd.ext
    assert e is not None
    assert e["b"] == "Staging" and e["a"] == "PG_staging" and e["n"] == "broker-s"
    assert e["g"] == "1900000000000" and e["e"] == "0"
    props = parse_properties(e["i"])
    assert props["env"] == "staging" and "idx" not in props
    orig = parse_properties(src.ext["i"])
    assert props["UNIQ_KEY"] == orig["UNIQ_KEY"]  # ids kept by default
    assert props["TAGS"] == orig["TAGS"] and props["KEYS"] == orig["KEYS"]
    assert cmd.body == src.body and src.ext["b"] == "TopicTest"  # the capture is not modified
    fresh = Rewriter(Rules(fresh_ids=True)).request(src, now_ms=0)
    assert fresh.ext is not None
    assert parse_properties(fresh.ext["i"])["UNIQ_KEY"] != orig["UNIQ_KEY"]


def test_rewrite_batch_and_timer(exchanges):
    batch = _send(exchanges, code=c.SEND_BATCH_MESSAGE).request.command
    cmd = Rewriter(Rules(set_properties={"p": "1"}, drop_properties=("kind",))).request(batch, now_ms=5)
    assert cmd.body is not None
    msgs, problems = decode_batch(cmd.body)
    assert not problems and len(msgs) == 5
    assert all(m.properties.get("p") == "1" and "kind" not in m.properties for m in msgs)
    src = RemotingCommand(c.SEND_MESSAGE_V2, ext={"a": "G", "b": "T", "g": "1000",
                                                  "i": "TIMER_DELIVER_MS\x015000\x02UNIQ_KEY\x01AB\x02"})
    out = Rewriter(Rules()).request(src, now_ms=11_000)
    assert out.ext is not None
    assert parse_properties(out.ext["i"])["TIMER_DELIVER_MS"] == "15000"  # moved with the born time


def test_rewrite_heartbeat_client_ids_and_acl():
    body = orjson.dumps({"clientID": "10.0.0.1@inst", "producerDataSet": [{"groupName": "PG"}],
                         "consumerDataSet": [{"groupName": "CG", "subscriptionDataSet": [{"topic": "T"}]}]})
    hb = RemotingCommand(c.HEART_BEAT, ext={"AccessKey": "ak", "Signature": "sig"}, body=body)
    rw = Rewriter(Rules(topics={"T": "S"}, groups={"PG": "PG2", "CG": "CG2"}), copy=3)
    copied = rw.request(hb, 0)
    assert copied.body is not None
    d = orjson.loads(copied.body)
    assert d["clientID"] == "10.0.0.1@inst-replay3"
    assert d["producerDataSet"][0]["groupName"] == "PG2"
    assert d["consumerDataSet"][0]["subscriptionDataSet"][0]["topic"] == "S"
    out = rw.request(hb, 0, producer_only=True)
    assert out.body is not None and out.ext is not None
    assert orjson.loads(out.body)["consumerDataSet"] == []
    assert "AccessKey" not in out.ext and "Signature" not in out.ext  # ACL fields dropped
    signed = Rewriter(Rules(access_key="AK", secret_key="SK")).request(
        RemotingCommand(c.UNREGISTER_CLIENT, ext={"producerGroup": "PG", "clientID": "x", "Signature": "old"}), 0)
    e = signed.ext
    assert e is not None
    assert e["AccessKey"] == "AK"
    expected = base64.b64encode(hmac.new(b"SK", (e["AccessKey"] + e["clientID"] + e["producerGroup"]).encode(),
                                         hashlib.sha1).digest()).decode()
    assert e["Signature"] == expected == sign({k: v for k, v in e.items()}, None, "SK")
    # retry topics follow the group mapping
    assert rw.topic("%RETRY%CG") == "%RETRY%CG2"


# ------------------------------------------------------------------ pacing

def test_pacing_parsing():
    assert parse_speed("2.5x") == 2.5 and parse_speed("200%") == 2.0 and parse_speed("50 %") == 0.5
    assert parse_rate("2000/s") == 2000.0 and parse_rate("1k/s") == 1000.0 and parse_rate("120/m") == 2.0
    assert parse_duration("250ms") == 0.25 and parse_duration("5m") == 300.0
    for bad in ("0x", "-1", "0%", "fast", "%"):
        with pytest.raises(ValueError):
            parse_speed(bad)
    with pytest.raises(ValueError):
        parse_rate("fast")


def _plan_at(times: list[float]):
    conn = Connection(1, ("10.0.0.9", 1234), ("10.0.0.1", 10911))
    exs = [Exchange(i, conn, "remoting", "oneway",
                    Message(t, RemotingCommand(c.SEND_MESSAGE_V2, flag=2, ext={"a": "G", "b": "T"}), True))
           for i, t in enumerate(times)]
    return build_plan(exs)


def test_schedule_speed_max_gap_rate_and_max():
    plan = _plan_at([100.0, 101.0, 111.0, 111.5])
    s = Schedule(plan, Pacing(SPEED, speed=2.0), copies=1)
    assert [s.due(0, 0, 0, i) for i in range(4)] == pytest.approx([0, 0.5, 5.5, 5.75])
    capped = Schedule(plan, Pacing(SPEED, speed=1.0, max_gap=2.0))
    assert [capped.due(0, 0, 0, i) for i in range(4)] == pytest.approx([0, 1, 3, 3.5])
    assert capped.due(1, 0, 0, 0) == pytest.approx(3.501)  # the next loop follows
    assert capped.span(2) == pytest.approx(7.001)
    rate = Schedule(plan, Pacing(RATE, rate=100.0), copies=2)
    dues = sorted(rate.due(lp, cp, 0, i) for lp in range(2) for cp in range(2) for i in range(4))
    assert dues == pytest.approx([k / 100.0 for k in range(16)])  # one slot per request, every copy
    assert rate.requested_rate(2) == 100.0 and rate.span(2) == pytest.approx(0.15)
    assert Schedule(plan, Pacing(MAX)).due(3, 1, 0, 2) == 0.0
    assert Schedule(plan, Pacing(MAX)).requested_rate(1) is None


def test_ticker_runs_every_entry_in_due_order_never_early_and_batches_per_tick():
    from replay.engine.pacing import Ticker

    async def main() -> tuple[list, int]:
        t0 = time.monotonic()

        class CountingTicker(Ticker):
            """A ticker counting its wake-ups."""

            fires = 0

            def _fire(self) -> None:
                self.fires += 1
                super()._fire()

        tk = CountingTicker(t0, tick=0.02)
        ran: list[tuple[str, float, float]] = []

        def session(name: str, dues: list[float]) -> None:
            rest = iter(dues[1:])

            def fn(due: float) -> float | None:
                ran.append((name, due, time.monotonic() - t0))
                return next(rest, None)
            tk.at(dues[0], fn)
        session("a", [0.0, 0.001, 0.002, 0.05])
        session("b", [0.0015, 0.0025])
        session("c", [0.0])
        await asyncio.sleep(0.15)
        tk.close()
        return ran, tk.fires

    ran, fires = asyncio.run(main())
    assert Counter(n for n, _d, _at in ran) == {"a": 4, "b": 2, "c": 1}  # none dropped
    assert all(at >= due for _n, due, at in ran)  # never early; late ones run late
    assert [d for _n, d, _at in ran] == sorted(d for _n, d, _at in ran)  # in due order
    assert fires <= 3  # the first five, due within one tick, went out together


# ------------------------------------------------------------------ safety

def test_guard():
    g = Guard(["127.0.0.1"], {("127.0.0.1", 9876)})
    g.check(("127.0.0.1", 39876), "target")
    with pytest.raises(SafetyError, match="production"):
        g.check(("127.0.0.1", 9876), "target")
    with pytest.raises(SafetyError, match="not allowed"):
        g.check(("10.1.2.3", 9876), "staging broker")
    Guard(["127.0.0.1"], {("127.0.0.1", 9876)}, i_know_this_is_production=True).check(("127.0.0.1", 9876), "t")
    only_port = Guard(["127.0.0.1:39876"])
    only_port.check(("127.0.0.1", 39876), "t")
    with pytest.raises(SafetyError):
        only_port.check(("127.0.0.1", 40911), "broker")
    with pytest.raises(SafetyError, match="--allow-target"):
        Guard([])


def test_cli_refusals_send_nothing():
    r = CliRunner()
    res = r.invoke(replay, [JSON_CAP, "--target", "127.0.0.1:39876"])
    assert res.exit_code == 1 and "--allow-target" in res.output and "Traceback" not in res.output
    res = r.invoke(replay, [JSON_CAP, "--target", "127.0.0.1:9876", "--allow-target", "127.0.0.1"])
    assert res.exit_code == 1 and "--i-know-this-is-production" in res.output
    res = r.invoke(replay, [JSON_CAP, "--target", "127.0.0.1:39876", "--allow-target", "192.0.2.1"])
    assert res.exit_code == 1 and "not allowed" in res.output
    res = r.invoke(replay, [JSON_CAP, "--target", "127.0.0.1:39876", "--allow-target", "127.0.0.1",
                            "--rate", "10/s", "--max"])
    assert res.exit_code == 2 and "--rate and --max exclude each other" in res.output  # a usage error
    res = r.invoke(replay, [JSON_CAP, "--target", "127.0.0.1:39876", "-Y", "code =="])
    assert res.exit_code == 1 and "bad filter" in res.output


def test_cli_dry_run_prints_the_plan():
    res = CliRunner().invoke(replay, [JSON_CAP, "--target", "127.0.0.1:1", "--allow-target", "127.0.0.1",
                                      "--map-topic", "TopicTest=ReplayTopic", "--scale", "2", "--dry-run"])
    assert res.exit_code == 0, res.output
    out = res.output
    assert "8 session(s) x 2 copies x 1 loop(s) = 132 request(s)" in out
    assert "expected duration" in out and "ReplayTopic (broker-a)" in out
    assert "dry run: nothing sent" in out


# ------------------------------------------------------------------ diff

def test_diff_rules():
    rec = RemotingCommand(0, 1, ext={"msgId": "A", "queueId": "1", "queueOffset": "7", "MSG_REGION": "DefaultRegion",
                                     "TRACE_ON": "true", "transactionId": "X"})
    rep = RemotingCommand(0, 1, ext={"msgId": "B", "queueId": "3", "queueOffset": "99", "MSG_REGION": "Other",
                                     "TRACE_ON": "false", "transactionId": "X"})
    assert compare(rec, rep, DiffRules()) == []  # ids, offsets, queues, region: noise
    strict = compare(rec, rep, DiffRules(noise=False))
    assert {k for k, _a, _b in strict} >= {"header msgId", "header queueOffset"}
    assert compare(rec, rep, DiffRules(keep=frozenset({"MSG_REGION"}))) == [
        ("header MSG_REGION", "DefaultRegion", "Other")]
    assert compare(rec, RemotingCommand(17, 1), DiffRules()) == [("code", "SUCCESS", "TOPIC_NOT_EXIST")]
    assert compare(rec, None, DiffRules())[0][0] == "no answer"
    assert compare(None, rep, DiffRules()) == []
    a = "No topic route info in name server for the topic: TopicTest\nSee https://x/y"
    b = "No topic route info in name server for the topic: Staging"
    assert remark_class(a, {"TopicTest": "Staging"}) == remark_class(b)
    assert remark_class("offset 123 at 10.0.0.1:10911 id 7F00000100002A9F0000000000000000") == \
        "offset # at <addr> id <id>"


# ------------------------------------------------------------------ consumer state (pop handles, offsets)

POP_CAP = str(CAPTURES / "remoting_pop.pcap")


@pytest.fixture(scope="module")
def pop_exchanges():
    return analyze([POP_CAP]).exchanges


def _answered(exchanges, code):
    return [ex for ex in exchanges if ex.request and ex.request.command.code == code and ex.response]


def _replayed_pop(recorded: RemotingCommand, order, *, fresh_ids=False, queue_shift=0, offset_shift=0,
                  pop_time="1900000000000") -> RemotingCommand:
    """A POP_MESSAGE answer as another broker would give it: same messages, other order, popTime,
    queues and offsets (``startOffsetInfo`` follows)."""
    import dataclasses

    from dissectors.remoting.message import encode_stored_message
    assert recorded.body is not None and recorded.ext is not None
    msgs, problems = decode_stored_messages(recorded.body)
    assert not problems and len(msgs) == 10
    out = []
    starts: dict[int, int] = {}
    for i in order:
        m = dataclasses.replace(msgs[i], properties=dict(msgs[i].properties), body_crc=None)
        m.queue_id = (m.queue_id + queue_shift) % 4
        m.queue_offset += offset_shift
        if fresh_ids:
            m.properties["UNIQ_KEY"] = f"FRESH{i:04d}"
        starts.setdefault(m.queue_id, m.queue_offset)
        out.append(m)
    ext = dict(recorded.ext, popTime=pop_time, reviveQid="3",
               startOffsetInfo=";".join(f"0 {q} {o}" for q, o in starts.items()))
    return dataclasses.replace(recorded, ext=ext, body=b"".join(encode_stored_message(m) for m in out))


def test_pop_handles_are_what_the_real_client_acked(pop_exchanges):
    from replay.engine.state import pop_handles
    pop = _answered(pop_exchanges, c.POP_MESSAGE)[0]
    handles = {h.extra_info: h for _m, h in pop_handles(pop.response.command, pop.request.command.ext["bname"])}
    acks = _answered(pop_exchanges, c.ACK_MESSAGE)
    assert len(handles) == len(acks) == 10
    for ack in acks:  # the Java client built exactly these receipt handles from the answer
        e = ack.request.command.ext
        h = handles[e["extraInfo"]]
        assert (h.queue_id, h.offset) == (e["queueId"], e["offset"])


def test_pop_pairing_rule(pop_exchanges):
    from replay.engine.state import pair_messages, pop_handles
    rec = _answered(pop_exchanges, c.POP_MESSAGE)[0].response.command
    order = [9, 3, 0, 7, 1, 8, 2, 6, 4, 5]
    recorded = pop_handles(rec, "broker-a")
    # 1. same UNIQ_KEY wins whatever the position, queue and offset
    replayed = pop_handles(_replayed_pop(rec, order, queue_shift=1, offset_shift=5), "broker-b")
    pairs = pair_messages(recorded, replayed)
    assert len(pairs) == 10
    rec_msgs = {h.extra_info: m for m, h in recorded}
    rep_msgs = {h.extra_info: m for m, h in replayed}
    for r, p in pairs:
        assert rec_msgs[r.extra_info].unique_key == rep_msgs[p.extra_info].unique_key
        assert p.extra_info.split()[5] == "broker-b" and p.extra_info.split()[1] == "1900000000000"
    # 2. fresh ids: same position within the same queue, then by position among the rest
    replayed = pop_handles(_replayed_pop(rec, list(range(10)), fresh_ids=True), "broker-a")
    pairs = pair_messages(recorded, replayed)
    assert [(r.queue_id, r.offset) for r, _p in pairs] == [(p.queue_id, p.offset) for _r, p in pairs]
    replayed = pop_handles(_replayed_pop(rec, list(range(4)), fresh_ids=True, queue_shift=2), "broker-a")
    pairs = pair_messages(recorded, replayed)
    assert len(pairs) == 4 and len({p.extra_info for _r, p in pairs}) == 4  # never one replayed message twice


def test_consumer_state_maps_acks_and_change_invisible(pop_exchanges):
    import dataclasses

    from replay.engine.state import ConsumerState
    pop = _answered(pop_exchanges, c.POP_MESSAGE)[0]
    rec = pop.response.command
    replayed = _replayed_pop(rec, list(reversed(range(10))), queue_shift=1, offset_shift=100)
    assert replayed.body is not None
    st = ConsumerState()
    sent = dataclasses.replace(pop.request.command, ext=dict(pop.request.command.ext, bname="broker-z"))
    assert st.expect(c.POP_MESSAGE) and st.pending == 1
    st.learn(pop.request.command, rec, sent, replayed)
    assert st.pending == 0 and not st.errors and len(st.handles) == 10 and len(st.popped) == 10
    rw = Rewriter(Rules(topics={"TopicPop": "T2"}, groups={"CG_pop": "G2"}))
    by_key = {m.unique_key: m for m in decode_stored_messages(replayed.body)[0]}
    rec_by_pos = {(m.queue_id, m.queue_offset): m for m in decode_stored_messages(rec.body)[0]}
    for ack in _answered(pop_exchanges, c.ACK_MESSAGE):
        src = ack.request.command
        assert not st.needs(src)
        cmd = rw.request(src, 0)
        assert st.apply(src, cmd) is None
        e = cmd.ext
        assert e is not None
        assert e["extraInfo"] in st.popped and e["topic"] == "T2" and e["consumerGroup"] == "G2"
        # the same message: the one with the captured message's UNIQ_KEY
        m = by_key[rec_by_pos[(int(src.ext["queueId"]), int(src.ext["offset"]))].unique_key]
        assert (e["queueId"], e["offset"]) == (str(m.queue_id), str(m.queue_offset))
        assert e["extraInfo"].split()[5:] == ["broker-z", str(m.queue_id), str(m.queue_offset)]
    # a handle renewed by CHANGE_MESSAGE_INVISIBLETIME maps to the renewed replayed handle
    ack = _answered(pop_exchanges, c.ACK_MESSAGE)[0].request.command
    chg = RemotingCommand(code=c.CHANGE_MESSAGE_INVISIBLETIME, ext=dict(ack.ext, invisibleTime="9000"))
    cmd = rw.request(chg, 0)
    assert st.apply(chg, cmd) is None
    rec_ans = RemotingCommand(code=c.SUCCESS, flag=1, ext={"popTime": "1795292070000", "invisibleTime": "9000",
                                                            "reviveQid": "1"})
    rep_ans = RemotingCommand(code=c.SUCCESS, flag=1, ext={"popTime": "1900000009999", "invisibleTime": "9000",
                                                            "reviveQid": "2"})
    st.expect(c.CHANGE_MESSAGE_INVISIBLETIME)
    st.learn(chg, rec_ans, cmd, rep_ans)
    f = ack.ext["extraInfo"].split()
    f[1:4] = ["1795292070000", "9000", "1"]
    later = RemotingCommand(code=c.ACK_MESSAGE, ext=dict(ack.ext, extraInfo=" ".join(f)))
    out = rw.request(later, 0)
    assert st.apply(later, out) is None
    assert out.ext is not None
    assert out.ext["extraInfo"].split()[1:4] == ["1900000009999", "9000", "2"]
    assert out.ext["extraInfo"] in st.popped
    # an ack of a message the replayed pop never returned is not sent
    f[1] = "123"
    stray = RemotingCommand(code=c.ACK_MESSAGE, ext=dict(ack.ext, extraInfo=" ".join(f)))
    assert st.needs(stray)
    why = st.apply(stray, rw.request(stray, 0))
    assert why is not None and "did not return" in why


def test_consumer_state_maps_pull_offsets(exchanges):
    import dataclasses

    from replay.engine.state import ConsumerState
    st = ConsumerState()
    pulls = [ex for ex in _answered(exchanges, c.PULL_MESSAGE) if ex.request.command.ext["topic"] == "TopicTest"
             and ex.response.command.code == c.SUCCESS]
    assert pulls
    first = pulls[0]
    rec = first.response.command
    nxt = rec.ext["nextBeginOffset"]
    replayed = dataclasses.replace(rec, ext=dict(rec.ext, nextBeginOffset=str(int(nxt) + 1000)))
    st.expect(c.PULL_MESSAGE)
    st.learn(first.request.command, rec, first.request.command, replayed)
    q = first.request.command.ext["queueId"]
    later = RemotingCommand(code=c.PULL_MESSAGE, ext=dict(first.request.command.ext, queueOffset=nxt,
                                                          commitOffset=nxt))
    cmd = Rewriter(Rules()).request(later, 0)
    assert st.apply(later, cmd) is None
    assert cmd.ext is not None
    assert cmd.ext["queueOffset"] == cmd.ext["commitOffset"] == str(int(nxt) + 1000)
    upd_ext = {"topic": "TopicTest", "queueId": q, "consumerGroup": "g", "commitOffset": nxt}
    upd = RemotingCommand(code=c.UPDATE_CONSUMER_OFFSET, ext=upd_ext)
    cmd = Rewriter(Rules()).request(upd, 0)
    st.apply(upd, cmd)
    assert cmd.ext is not None
    assert cmd.ext["commitOffset"] == str(int(nxt) + 1000)
    other = RemotingCommand(code=c.UPDATE_CONSUMER_OFFSET, ext=dict(upd_ext, queueId=str(int(q) + 1)))
    cmd = Rewriter(Rules()).request(other, 0)
    st.apply(other, cmd)
    assert cmd.ext is not None
    assert cmd.ext["commitOffset"] == nxt  # another queue: never seen, sent as recorded


def test_rewrite_refreshes_pop_born_time(pop_exchanges):
    pop = _answered(pop_exchanges, c.POP_MESSAGE)[0].request.command
    cmd = Rewriter(Rules()).request(pop, 1_900_000_000_000)
    assert cmd.ext is not None
    assert cmd.ext["bornTime"] == "1900000000000" and cmd.ext["pollTime"] == pop.ext["pollTime"]
    kept = Rewriter(Rules(refresh_born=False)).request(pop, 1)
    assert kept.ext is not None
    assert kept.ext["bornTime"] == pop.ext["bornTime"]
