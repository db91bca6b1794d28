"""Tests for the one stats model and its exporters."""
from __future__ import annotations

import math
import random
import re

import orjson
import pytest
from prometheus_client.parser import text_string_to_metric_families

from dissectors.remoting.command import FLAG_ONEWAY, FLAG_RESPONSE, RemotingCommand
from rmqsniff.exporters.statsfmt import render_envoy, render_json, render_prometheus
from rmqsniff.model import ANSWERED, ONEWAY, ORPHAN, UNANSWERED, Connection, Exchange, Message
from rmqsniff.pairing import Pairing, PairingSink
from rmqsniff.stats import OTHER, Stats, bucket_of, bucket_value

BROKER = ("10.0.0.9", 10911)
C1 = Connection(1, ("10.0.0.1", 50000), BROKER)
C2 = Connection(2, ("10.0.0.2", 50001), BROKER)
NS = Connection(3, ("10.0.0.1", 50002), ("10.0.0.8", 9876))
NS_ODD = Connection(4, ("10.0.0.5", 50003), ("10.0.0.7", 19876))  # name server, odd port


def exact_pct(values: list[float], p: float) -> float:
    """Value at rank ceil(p/100*n) of the sorted values."""
    v = sorted(values)
    return v[max(1, math.ceil(p / 100 * len(v))) - 1]


class Driver:
    """Feeds a Stats following the pairing contract; remembers what it fed."""

    def __init__(self, stats: Stats) -> None:
        self.stats = stats
        self.opaque = 0
        self.t = 1000.0
        self.bytes = 0

    def request(self, conn: Connection, code: int, ext: dict | None = None,
                oneway: bool = False, size: int = 100) -> Exchange:
        self.opaque += 1
        self.t += 0.5
        cmd = RemotingCommand(code=code, flag=FLAG_ONEWAY if oneway else 0,
                              opaque=self.opaque, ext=ext)
        ex = Exchange(self.opaque, conn, "remoting", ONEWAY if oneway else UNANSWERED,
                      Message(self.t, cmd, True, size=size))
        self.bytes += size
        self.stats.request_started(ex)
        return ex

    def answer(self, ex: Exchange, rcode: int, latency_ms: float, size: int = 50) -> None:
        assert ex.request is not None
        cmd = RemotingCommand(code=rcode, flag=FLAG_RESPONSE, opaque=ex.request.command.opaque)
        ex.response = Message(ex.request.ts + latency_ms / 1000.0, cmd, False, size=size)
        ex.status = ANSWERED
        self.bytes += size
        self.stats.exchange_done(ex)

    def call(self, conn, code, rcode, latency_ms, ext=None) -> Exchange:
        ex = self.request(conn, code, ext)
        self.answer(ex, rcode, latency_ms)
        return ex


SEND_EXT = {"a": "PG_A", "b": "TopicA", "c": "TBW102", "d": "4", "e": "0"}
PULL_EXT = {"consumerGroup": "CG_B", "topic": "TopicB", "queueId": "0", "queueOffset": "0"}
SEND_V1_EXT = {"producerGroup": "PG_A", "topic": "TopicA", "queueId": "0"}
SEND_LAT = [1.0, 2.0, 3.0, 4.0, 50.0]


@pytest.fixture()
def scenario() -> tuple[Stats, Driver]:
    """Mixed traffic; the expected numbers in the tests are counted by hand from here."""
    s = Stats()
    d = Driver(s)
    sends = [d.request(C1, 310, SEND_EXT) for _ in SEND_LAT]  # 5 in flight together
    for ex, lat in zip(sends, SEND_LAT, strict=True):
        d.answer(ex, 0, lat)
    d.call(C2, 310, 1, 7.0, SEND_EXT)  # SYSTEM_ERROR answer to a send
    for lat in (10.0, 20.0, 30.0):
        d.call(C2, 11, 19, lat, PULL_EXT)  # PULL_NOT_FOUND: no_message -> success
    d.call(C1, 34, 0, 0.5)
    d.call(C1, 34, 0, 0.7)
    d.call(C1, 34, 1, 0.9)  # failed heartbeat -> maintenance_failure
    d.call(NS, 105, 0, 1.5, {"topic": "TopicA"})
    ow = d.request(C1, 10, SEND_V1_EXT, oneway=True)
    s.exchange_done(ow)
    lost = d.request(C1, 10, SEND_V1_EXT)  # never answered
    dup_old = d.request(C2, 320, SEND_EXT)  # batch; its opaque is then reused
    s.duplicate(dup_old)
    s.exchange_done(dup_old)
    s.exchange_done(lost)
    orphan = Exchange(999, C1, "remoting", ORPHAN, None,
                      Message(2000.0, RemotingCommand(code=0, flag=FLAG_RESPONSE), False, size=40))
    s.exchange_done(orphan)
    s.decoding_error(True, "bad header length", C1)
    s.decoding_error(False, "bad header length", C1)
    s.decoding_error(False, "frame too large", C2)
    return s, d


def test_envoy_counters(scenario):
    s, _ = scenario
    c = s.snapshot()["counters"]
    # 5+1 sends v2, 3 pulls, 3 heartbeats, 1 route, 1 oneway, 1 lost, 1 batch = 16 decoded
    assert c["request_decoding_success"] == 16
    assert c["request_decoding_error"] == 1
    assert c["request"] == 17
    # 13 answers + 1 orphan decoded, 2 failed to decode
    assert c["response_decoding_success"] == 14
    assert c["response_decoding_error"] == 2
    assert c["response"] == 16
    assert c["response_error"] == 2  # send SYSTEM_ERROR + heartbeat error
    assert c["response_success"] == 12  # incl. 3 PULL_NOT_FOUND and the orphan
    assert c["response_no_message"] == 3
    assert c["send_message_v2"] == 6  # 320 is not counted here
    assert c["send_message_v1"] == 2  # oneway + unanswered
    assert c["heartbeat"] == 3
    assert c["get_topic_route"] == 1
    assert c["maintenance_failure"] == 1
    assert c["pop_message"] == c["ack_message"] == c["unregister"] == 0
    assert (c["answered"], c["unanswered"], c["oneway"], c["orphan"], c["duplicate"]) == (
        13, 2, 1, 1, 1)


def test_gauges_track_in_flight_and_max(scenario):
    s, d = scenario
    g = s.snapshot()["gauges"]
    assert g["send_message_v2_active"] == {"value": 0, "max": 5}
    assert g["request_active"]["value"] == 0
    assert g["request_active"]["max"] == 5
    assert g["send_message_v1_active"]["max"] == 1  # oneway is never in flight
    assert g["total_pending"] == {"value": 0, "max": 0}
    ex = d.request(C1, 200050, {"consumerGroup": "CG", "topic": "T"})
    assert s.gauge("pop_message_active") == 1 and s.gauge("request_active") == 1
    d.answer(ex, 0, 3.0)
    assert s.gauge("pop_message_active") == 0 and s.counter("pop_message") == 1


def test_pending_gauges():
    s = Stats()
    s.pending_changed("send_message", 2)
    s.pending_changed("pop_message", 1)
    s.pending_changed("send_message", -1)
    g = s.snapshot()["gauges"]
    assert g["send_message_pending"] == {"value": 1, "max": 2}
    assert g["pop_message_pending"] == {"value": 1, "max": 1}
    assert g["total_pending"] == {"value": 2, "max": 3}
    with pytest.raises(ValueError):
        s.pending_changed("pull_message", 1)


def test_latency_histogram_matches_fed_values():
    s = Stats()
    d = Driver(s)
    rnd = random.Random(7)
    lats = [round(rnd.lognormvariate(1.5, 1.2), 3) for _ in range(500)]
    for lat in lats:
        d.call(C1, 310, 0, lat, SEND_EXT)
    h = s.snapshot()["histograms"]["request_time_ms"]
    assert h["count"] == len(lats)
    assert h["mean"] == pytest.approx(sum(lats) / len(lats), rel=1e-3, abs=2e-3)
    assert h["max"] == pytest.approx(max(lats), abs=2e-3)
    for p in (50, 90, 99):
        assert h[f"p{p}"] == pytest.approx(exact_pct(lats, p), rel=2e-3, abs=2e-3)
    below = [c for le, c in h["buckets"] if le == 10][0]
    assert below == pytest.approx(sum(1 for v in lats if v <= 10), abs=1)
    # per-code and breakdown percentiles use log buckets (~3 %)
    code = s.snapshot()["codes"]["310"]
    topic = s.snapshot()["breakdowns"]["by_topic"]["rows"]["TopicA"]
    for row in (code, topic):
        for p in (50, 90, 99):
            assert row[f"p{p}"] == pytest.approx(exact_pct(lats, p), rel=0.035, abs=2e-3)
        assert row["max"] == pytest.approx(max(lats), abs=2e-3)


def test_codes_and_responses(scenario):
    s, _ = scenario
    snap = s.snapshot()
    send = snap["codes"]["310"]
    assert (send["name"], send["requests"], send["errors"], send["answered"]) == (
        "SEND_MESSAGE_V2", 6, 1, 6)
    assert send["max"] == pytest.approx(50.0, abs=2e-3)
    assert snap["codes"]["320"]["name"] == "SEND_BATCH_MESSAGE"
    assert snap["codes"]["320"]["requests"] == 1 and snap["codes"]["320"]["answered"] == 0
    assert snap["codes"]["34"]["errors"] == 1
    assert snap["responses"]["PULL_NOT_FOUND"]["count"] == 3
    assert snap["responses"]["SUCCESS"]["count"] == 9  # 5 sends, 2 heartbeats, route, orphan
    assert snap["responses"]["SYSTEM_ERROR"]["count"] == 2
    assert snap["decoding_errors"] == {"bad header length": 2, "frame too large": 1}


def test_breakdowns_sum_to_totals(scenario):
    s, d = scenario
    snap = s.snapshot()
    ex = snap["exchanges"]
    total = ex["answered"] + ex["unanswered"] + ex["oneway"]
    errors = snap["counters"]["response_error"]
    bd = snap["breakdowns"]
    for name in ("by_topic", "by_group", "by_client"):
        rows = bd[name]["rows"].values()
        assert sum(r["requests"] for r in rows) == total, name
        assert sum(r["errors"] for r in rows) == errors, name
        assert sum(r["bytes"] for r in rows) == d.bytes, name  # orphans left out
    servers = list(bd["by_broker"]["rows"].values()) + list(bd["by_nameserver"]["rows"].values())
    assert sum(r["requests"] for r in servers) == total
    topics = bd["by_topic"]["rows"]
    assert topics["TopicB"]["requests"] == 3 and topics["TopicB"]["errors"] == 0
    assert topics["TopicA"]["requests"] == 10  # 6 v2 + oneway + lost + batch + route
    assert topics["TopicA"]["error_pct"] == pytest.approx(10.0)
    assert topics["<none>"]["requests"] == 3  # heartbeats
    assert bd["by_group"]["rows"]["CG_B"]["requests"] == 3
    assert set(bd["by_client"]["rows"]) == {"10.0.0.1", "10.0.0.2"}
    assert list(bd["by_nameserver"]["rows"]) == ["10.0.0.8:9876"]
    assert list(bd["by_broker"]["rows"]) == ["10.0.0.9:10911"]
    assert bd["by_broker"]["rows"]["10.0.0.9:10911"]["requests"] == total - 1


def test_nameserver_detected_by_code_moves_rows():
    s = Stats()
    d = Driver(s)
    d.call(NS_ODD, 322, 0, 1.0)  # QUERY_DATA_VERSION: not name-server-only
    assert "10.0.0.7:19876" in s.snapshot()["breakdowns"]["by_broker"]["rows"]
    d.call(NS_ODD, 103, 0, 2.0)  # REGISTER_BROKER: only name servers serve it
    d.call(NS_ODD, 322, 0, 3.0)
    bd = s.snapshot()["breakdowns"]
    assert bd["by_broker"]["rows"] == {}
    row = bd["by_nameserver"]["rows"]["10.0.0.7:19876"]
    assert row["requests"] == 3 and row["max"] == pytest.approx(3.0, abs=2e-3)


def test_breakdown_keys_are_bounded():
    s = Stats(max_keys=5)
    d = Driver(s)
    for i in range(20):
        d.call(C1, 310, 0, 1.0, {"a": "PG", "b": f"Topic{i}"})
    bd = s.snapshot()["breakdowns"]["by_topic"]
    assert len(bd["rows"]) == 5
    assert bd["rows"][OTHER]["requests"] == 16  # 4 real keys, then everything folds
    assert bd["overflow"] == 16
    assert sum(r["requests"] for r in bd["rows"].values()) == 20


def test_log_buckets_bound_error():
    for us in list(range(0, 40)) + [100, 999, 1000, 12345, 10**6, 3 * 10**9]:
        assert abs(bucket_value(bucket_of(us)) - us) <= max(0.5, us / 32), us
    assert bucket_of(31) < bucket_of(32) == bucket_of(33) < bucket_of(34) < bucket_of(10**6)


def test_transport_and_unknown_protocol():
    s = Stats()
    s.tcp("gap")
    s.tcp("gap_bytes", 300)
    s.tcp("packets", 10)
    ex = Exchange(1, C1, "mqtt", UNANSWERED, Message(1.0, RemotingCommand(code=5), True))
    s.request_started(ex)
    ex.response = Message(1.002, RemotingCommand(code=0, flag=FLAG_RESPONSE), False)
    ex.status = ANSWERED
    s.exchange_done(ex)
    snap = s.snapshot()
    assert snap["transport"]["gap"] == 1 and snap["transport"]["gap_bytes"] == 300
    assert snap["transport"]["packets"] == 10
    assert snap["codes"]["mqtt:5"]["name"] == "CODE_5"
    assert snap["counters"]["response_success"] == 1


def test_real_pairing_keeps_gauges_balanced():
    s = Stats()
    out: list[Exchange] = []
    sink = PairingSink(s, out.append)
    p = Pairing(C1, sink)
    p.frame(Message(1.0, RemotingCommand(code=310, opaque=1, ext=SEND_EXT), True, size=10))
    p.frame(Message(1.1, RemotingCommand(code=310, opaque=1, ext=SEND_EXT), True, size=10))
    p.frame(Message(1.2, RemotingCommand(code=10, flag=FLAG_ONEWAY, opaque=2), True))
    p.frame(Message(1.3, RemotingCommand(code=0, flag=FLAG_RESPONSE, opaque=1), False))
    p.frame(Message(1.4, RemotingCommand(code=0, flag=FLAG_RESPONSE, opaque=7), False))
    p.close()
    sink.flush()
    snap = s.snapshot()
    assert snap["exchanges"] == {"answered": 1, "unanswered": 1, "oneway": 1, "orphan": 1,
                                 "duplicate": 1, "in_flight": 0}
    assert snap["gauges"]["send_message_v2_active"] == {"value": 0, "max": 2}
    assert snap["histograms"]["request_time_ms"]["p50"] == pytest.approx(200.0, abs=0.2)


# ---------------------------------------------------------------- exporters
def test_envoy_text(scenario):
    s, _ = scenario
    text = render_envoy(s)
    lines = text.splitlines()
    plain = [ln for ln in lines if " P0(" not in ln and "No recorded values" not in ln]
    hist = [ln for ln in lines if ln not in plain]
    assert lines == plain + hist
    assert [ln.split(":")[0] for ln in plain] == sorted(ln.split(":")[0] for ln in plain)
    for ln in plain:
        assert re.fullmatch(r"rocketmq\.rmqsniff\.[A-Za-z0-9_.]+: -?[0-9.]+", ln), ln
    assert "rocketmq.rmqsniff.request: 17" in lines
    assert "rocketmq.rmqsniff.send_message_v2_active_max: 5" in lines
    assert "rocketmq.rmqsniff.request_code.SEND_BATCH_MESSAGE.requests: 1" in lines
    assert "rocketmq.rmqsniff.response_code.PULL_NOT_FOUND: 3" in lines
    main = [ln for ln in hist if ln.startswith("rocketmq.rmqsniff.request_time_ms: ")][0]
    terms = re.findall(r"P([0-9.]+)\(nan,([0-9.]+)\)", main)
    assert [q for q, _ in terms] == ["0", "25", "50", "75", "90", "95", "99", "99.5", "99.9", "100"]
    assert float(dict(terms)["100"]) == pytest.approx(50.0, abs=2e-3)
    assert "rocketmq.rmqsniff.request_code.SEND_BATCH_MESSAGE.request_time_ms: " \
           "No recorded values" in hist
    assert "rocketmq.x.request_time_ms: No recorded values" in render_envoy(Stats("x"))


def _samples(text: str) -> dict[tuple, float]:
    out = {}
    for fam in text_string_to_metric_families(text):
        for smp in fam.samples:
            out[(smp.name, tuple(sorted(smp.labels.items())))] = smp.value
    return out


def test_prometheus_parses_and_matches_snapshot(scenario):
    s, _ = scenario
    snap = s.snapshot()
    got = _samples(render_prometheus(s))
    sp = (("stat_prefix", "rmqsniff"),)
    for name, v in snap["counters"].items():
        assert got[(f"rocketmq_{name}_total", sp)] == v
    for name, g in snap["gauges"].items():
        assert got[(f"rocketmq_{name}", sp)] == g["value"]
        assert got[(f"rocketmq_{name}_max", sp)] == g["max"]
    h = snap["histograms"]["request_time_ms"]
    assert got[("rocketmq_request_time_ms_count", sp)] == h["count"] == 13
    assert got[("rocketmq_request_time_ms_sum", sp)] == pytest.approx(h["sum"])
    key = lambda labels: tuple(sorted(labels))  # noqa: E731
    assert got[("rocketmq_request_time_ms_bucket", key(sp + (("le", "+Inf"),)))] == 13
    # <= 5 ms: 4 sends, 3 heartbeats, route; <= 10 ms adds the 7 ms send and 10 ms pull
    assert got[("rocketmq_request_time_ms_bucket", key(sp + (("le", "10"),)))] == 10
    assert got[("rocketmq_request_time_ms_bucket", key(sp + (("le", "5"),)))] == 8
    code = sp + (("code", "310"), ("name", "SEND_MESSAGE_V2"), ("protocol", "remoting"))
    assert got[("rocketmq_requests_by_code_total", key(code))] == 6
    assert got[("rocketmq_request_errors_by_code_total", key(code))] == 1
    assert got[("rocketmq_request_time_by_code_ms", key(code + (("quantile", "1"),)))] == \
        pytest.approx(snap["codes"]["310"]["max"])
    topic = key(sp + (("by", "topic"), ("key", "TopicB")))
    assert got[("rocketmq_breakdown_requests_total", topic)] == 3
    assert got[("rocketmq_transport_events_total", key(sp + (("kind", "gap"),)))] == 0


def test_json_round_trip(scenario):
    s, _ = scenario
    assert orjson.loads(render_json(s)) == orjson.loads(orjson.dumps(s.snapshot()))
    loaded = orjson.loads(render_json(s))
    assert render_envoy(loaded) == render_envoy(s)


def _mixed_traffic(s: Stats) -> None:
    d = Driver(s)
    rnd = random.Random(11)
    for _ in range(400):
        conn = rnd.choice((C1, C2, NS))
        code, ext = rnd.choice(((310, SEND_EXT), (11, PULL_EXT), (34, None), (105, {"topic": "TopicA"})))
        d.call(conn, code, rnd.choice((0, 0, 0, 1, 19)), round(rnd.lognormvariate(1.0, 1.5), 3), ext)


def test_bulk_row_updates_do_not_depend_on_when_they_are_folded(monkeypatch):
    """Exchanges are accumulated per row key and folded into rows and histograms in bulk:
    folding after every few exchanges gives the same numbers as folding once."""
    import rmqsniff.stats.model as stats_mod

    once = Stats()
    _mixed_traffic(once)
    monkeypatch.setattr(stats_mod, "_AGG_FLUSH", 2)
    monkeypatch.setattr(stats_mod, "_AGG_VALS_FLUSH", 3)
    often = Stats()
    _mixed_traffic(often)
    assert often.snapshot() == once.snapshot()
    assert often.snapshot()["histograms"]["request_time_ms"]["count"] == 400


def test_latencies_outside_the_histogram_range_are_clamped():
    """A response stamped before its request (a clock step) counts as 0 ms; one after more
    than an hour as one hour, the histogram's top."""
    s = Stats()
    d = Driver(s)
    d.call(C1, 310, 0, -5.0, SEND_EXT)
    d.call(C1, 310, 0, 2 * 3600 * 1000.0, SEND_EXT)
    d.call(C1, 310, 0, 3.0, SEND_EXT)
    snap = s.snapshot()
    h = snap["histograms"]["request_time_ms"]
    assert h["count"] == 3
    assert h["max"] == pytest.approx(3600 * 1000.0, rel=1e-3)
    assert h["mean"] == pytest.approx((0 + 3600 * 1000.0 + 3.0) / 3, rel=1e-3)
    assert snap["codes"]["310"]["max"] == pytest.approx(3600 * 1000.0, rel=1e-3)


def test_collected_events_count_as_if_each_were_applied_at_once():
    """started / finished are applied in batches: interleaved with direct ``apply`` calls,
    other protocols, other kinds of counts and reads at any point, every counter, gauge
    maximum, row and histogram must come out as when each event is applied on its own."""
    rng = random.Random(7)
    batched, each = Stats(), Stats()
    open_: dict[str, list[int]] = {"remoting": [], "grpc": []}
    # (code, oneway, response code, status, latency, size, topic, group, client, server)
    ev: tuple[int, bool, int | None, str, float, int, str, str | None, str, tuple[str, int]]
    for i in range(5000):
        proto = rng.choice(("remoting", "remoting", "grpc"))
        roll = rng.random()
        if roll < (0.6 if i // 500 % 2 else 0.3) or not open_[proto]:  # in-flight rises, then falls
            code = rng.choice((10, 310, 200050))
            oneway = rng.random() < 0.05
            batched.started(proto, code, oneway)
            each.apply(proto, ((code,),) if oneway else (code,))
            if oneway:
                ev = (code, True, None, ONEWAY, 0.0, 100, "T", None, "10.0.0.1", ("10.0.0.2", 10911))
            else:
                open_[proto].append(code)
                continue
        elif roll < 0.92:
            code = open_[proto].pop(rng.randrange(len(open_[proto])))
            ev = (code, False, rng.choice((0, 1, 17)), ANSWERED, rng.random() / 50, 300,
                  rng.choice(("T", "U")), "G", "10.0.0.1", ("10.0.0.2", 10911))
        else:  # a direct batch (the capture path's), another kind of count, or a read
            if roll < 0.95:
                batched.apply(proto, [200050])
                each.apply(proto, [200050])
                open_[proto].append(200050)
            elif roll < 0.97:
                batched.tcp("flows", 1)
                each.tcp("flows", 1)
            else:  # (maxima too: events applied out of order would show in them)
                assert batched.snapshot()["gauges"] == each.snapshot()["gauges"]
            continue
        batched.finished(proto, *ev)
        each.apply(proto, (ev,))
    assert batched.snapshot() == each.snapshot()
    assert batched.latency_summary() == each.latency_summary()
