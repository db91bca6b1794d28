"""Message journeys (rmqsniff.journey, ``rmqsniff trace``) over the committed captures of real
RocketMQ 5.3.3 traffic, checked against what the clients themselves recorded (``*.truth.json``)."""
from __future__ import annotations

import json
from collections import Counter
from functools import cache
from pathlib import Path
from typing import Any

import dpkt
import orjson
import pytest
from click.testing import CliRunner

from rmqsniff.cli import main
from rmqsniff.journey import Journey, JourneyEngine, journey_to_dict
from rmqsniff.pipeline import analyze
from tests.support.captures import CAPTURES

REMOTING = ["remoting_json", "remoting_rocketmq", "remoting_pop", "remoting_go", "remoting_transaction",
            "secrets_remoting", "secrets_remoting_bin"]
GRPC = ["grpc_java", "grpc_python", "secrets_grpc"]


def truth(name: str) -> dict[str, Any]:
    return json.loads((CAPTURES / f"{name}.truth.json").read_text())


@cache
def journeys(name: str) -> tuple[dict[str, Any], ...]:
    a = analyze([str(CAPTURES / f"{name}.pcap")])
    e = JourneyEngine()
    e.feed_all(a.exchanges)
    return tuple(journey_to_dict(j) for j in e.finish())


def by_key(name: str) -> dict[str, dict[str, Any]]:
    return {j["unique_key"]: j for j in journeys(name) if j["unique_key"]}


def kinds(j: dict[str, Any], protocol: str | None = None) -> Counter[str]:
    return Counter(e["kind"] for e in j["events"] if protocol is None or e["protocol"] == protocol)


def first(j: dict[str, Any], kind: str, protocol: str | None = None) -> dict[str, Any]:
    return next(e for e in j["events"] if e["kind"] == kind and (protocol is None or e["protocol"] == protocol))


@pytest.mark.parametrize("name", REMOTING)
def test_remoting_journeys_equal_the_clients_record(name: str) -> None:
    """Every message the client sent: sent, and stored (or prepared, for a half message) with the
    offset message id, queue and offset the client got back; every message a consumer received:
    delivered to it (from that queue offset) and consumed (ack or offset commit)."""
    t = truth(name)
    got = by_key(name)
    by_omid = {m: j for j in journeys(name) for m in j["offset_msg_ids"]}
    for s in t["sent"]:
        j = got[s["msg_id"]]
        assert j["topic"] == s["topic"] and j["tags"] == s["tags"]
        assert j["keys"] == s["keys"].split(" ")
        assert kinds(j)["sent"] == 1
        if s["kind"] == "oneway" and t.get("oneway_flag", True):
            assert "stored" not in kinds(j)  # no answer on the wire
            continue
        stored = first(j, "prepared" if s["kind"] == "transaction" else "stored")
        if "queue_id" in s:
            assert (stored["queue"], stored["offset"]) == (s["queue_id"], s["queue_offset"])
        if s.get("offset_msg_id"):
            assert s["offset_msg_id"] in j["offset_msg_ids"]
            assert j["latency_ms"]["store"] is not None
    for consumer, received in t["received"].items():
        for r in received:
            j = by_omid[r["offset_msg_id"]]
            d = [e for e in j["events"] if e["kind"] == "delivered" and e["offset"] == r["queue_offset"]
                 and e["queue"] == r["queue_id"]]
            assert d, (consumer, r)
            assert d[0]["reconsume"] == r["reconsume_times"]
            if consumer != "broadcast":  # a broadcast consumer keeps its offsets to itself
                assert j["finished"] and "acked" in kinds(j), (consumer, r)
                assert j["latency_ms"]["ack"] is not None
                # stored -> first delivery, unless the send's answer is not on the wire (oneway)
                assert (j["latency_ms"]["first_delivery"] is None) == ("stored" not in kinds(j) and
                                                                       "prepared" not in kinds(j))


def test_transaction_journeys() -> None:
    """Half messages are prepared; END_TRANSACTION commits or rolls back (also after the broker's
    CHECK_TRANSACTION_STATE, which each checked message shows)."""
    t = truth("remoting_transaction")
    got = by_key("remoting_transaction")
    for key, n in t["checks"].items():
        assert kinds(got[key])["checked"] == n
    for s in t["sent"]:
        j = got[s["msg_id"]]
        k = kinds(j)
        if s["msg_id"] in t["committed_ids"]:
            assert k["committed"] >= 1 and k["delivered"] >= 1 and j["finished"]
        else:
            assert k["rolled_back"] == 1 and j["finished"] and "delivered" not in k


@pytest.mark.parametrize("name", GRPC)
def test_grpc_journeys_join_client_and_proxy_legs(name: str) -> None:
    """A gRPC message is one journey: the client's SendMessage (sent, stored with its offset),
    the proxy's SEND_MESSAGE_V2 with the same UNIQ_KEY (sent, stored), and for the SimpleConsumer's
    messages the proxy's POP_MESSAGE and ACK_MESSAGE legs and the client's ReceiveMessage and
    AckMessage."""
    t = truth(name)
    got = by_key(name)
    for s in t["sent"]:
        j = got[s["msg_id"]]
        g, r = kinds(j, "grpc"), kinds(j, "remoting")
        assert g["sent"] == 1 and r["sent"] == 1, j
        assert (g["stored"] == 1 and r["stored"] == 1) or (g["prepared"] == 1 and r["prepared"] == 1)
        assert j["topic"] == s["topic"] and j["keys"] == s["keys"]
        stored = "stored" if g["stored"] else "prepared"
        if "queue_offset" in s:
            assert first(j, stored, "grpc")["offset"] == s["queue_offset"]
        assert first(j, stored, "remoting")["msg_id"] in j["offset_msg_ids"]
    for m in t["received"]["simple"]:
        j = got[m["msg_id"]]
        g, r = kinds(j, "grpc"), kinds(j, "remoting")
        assert g["delivered"] >= 1 and g["acked"] >= 1 and r["delivered"] >= 1 and r["acked"] >= 1, j
        d = first(j, "delivered", "grpc")
        assert d["delivery_attempt"] == m["delivery_attempt"] and d["consumer"] and d["group"]
        assert j["finished"]
    if name != "grpc_python":
        changed = [j for j in got.values() if "invisible_changed" in kinds(j, "grpc")]
        assert len(changed) == t["counts"]["change_invisible_duration"]
        assert "invisible_changed" in kinds(changed[0], "remoting")  # the proxy's CHANGE_MESSAGE_INVISIBLETIME


def test_cap_flushes_oldest_unfinished_and_counts_them() -> None:
    """With a cap of 3 open journeys the oldest are handed out early (unfinished ones counted),
    and no hop is lost: the hops of all journeys are those of an uncapped run plus the hops of
    late journeys that started again after their first part was flushed."""
    a = analyze([str(CAPTURES / "remoting_pop.pcap")])
    flushed: list[Journey] = []
    e = JourneyEngine(max_open=3, emit=flushed.append)
    e.feed_all(a.exchanges)
    rest = e.finish()
    assert len(rest) <= 3 and flushed
    assert e.flushed == len(flushed)
    assert e.flushed_unfinished == sum(1 for j in flushed if not j.finished) > 0
    assert all(j.flushed for j in flushed)
    capped = Counter(h.event.kind for j in flushed + rest for h in j.hops)
    full = Counter(e["kind"] for j in journeys("remoting_pop") for e in j["events"])
    assert capped == full


def _split(src: Path, a: Path, b: Path, client_ports: set[int]) -> None:
    """Copy a capture into two: the connections from these client ports into ``a``, the rest
    into ``b``, each connection whole (as if captured on the producer's host and elsewhere)."""
    with open(src, "rb") as f:
        packets = list(dpkt.pcap.Reader(f))
    with open(a, "wb") as fa, open(b, "wb") as fb:
        wa, wb = (dpkt.pcap.Writer(x, snaplen=262144, linktype=dpkt.pcap.DLT_EN10MB) for x in (fa, fb))
        for ts, frame in packets:
            tcp = dpkt.ethernet.Ethernet(frame).data.data
            (wa if {tcp.sport, tcp.dport} & client_ports else wb).writepkt(frame, ts=ts)


@pytest.mark.parametrize("name", ["remoting_pop", "grpc_python"])
def test_several_captures_are_joined(tmp_path: Path, name: str) -> None:
    """The capture split in two by connection: ``trace A B`` gives the same journeys (same hops)
    as the one capture, each hop naming the capture it was seen in."""
    a, b = tmp_path / "a.pcap", tmp_path / "b.pcap"
    producers = {int(e["connection"].split(" -> ")[0].rsplit(":", 1)[1])
                 for j in journeys(name) for e in j["events"] if e["kind"] == "sent"}
    _split(CAPTURES / f"{name}.pcap", a, b, producers)
    r = CliRunner().invoke(main, ["trace", str(a), str(b), "--format", "jsonl"])
    assert r.exit_code == 0, r.output
    got = {d["unique_key"]: d for d in map(orjson.loads, r.stdout.splitlines()) if d["unique_key"]}
    whole = by_key(name)
    assert set(got) == set(whole)
    seen = set()
    for k, j in got.items():
        assert kinds(j) == kinds(whole[k])
        assert [e["ts"] for e in j["events"]] == sorted(e["ts"] for e in j["events"])
        assert j["finished"] == whole[k]["finished"]
        seen |= {e["capture"] for e in j["events"]}
    assert seen == {str(a), str(b)}


CONTRACT = {"unique_key", "offset_msg_ids", "topic", "tags", "keys", "events", "latency_ms", "finished", "trace"}


@pytest.mark.parametrize("name", ["remoting_pop", "grpc_python"])
def test_trace_jsonl_json_and_table(name: str) -> None:
    """``trace`` in its three formats, with an ID (a message key, an offset message id) and
    without; the JSONL objects have the contract's keys, events in time order."""
    cap = str(CAPTURES / f"{name}.pcap")
    runner = CliRunner()
    r = runner.invoke(main, ["trace", cap, "--format", "jsonl"])
    assert r.exit_code == 0, r.output
    rows = [orjson.loads(line) for line in r.stdout.splitlines()]
    assert len(rows) == len(journeys(name))
    for d in rows:
        assert set(d) == CONTRACT
        assert set(d["latency_ms"]) == {"store", "first_delivery", "ack"}
        for e in d["events"]:
            assert {"kind", "ts", "exchange", "connection", "protocol"} <= set(e) and "capture" not in e
            assert e["protocol"] in ("remoting", "grpc")
    sent = truth(name)["sent"][1]
    key = sent["keys"] if isinstance(sent["keys"], str) else sent["keys"][0]
    r = runner.invoke(main, ["trace", cap, key, "--format", "json"])
    doc = json.loads(r.stdout)
    assert [d["unique_key"] for d in doc] == [sent["msg_id"]]
    omid = doc[0]["offset_msg_ids"][0]
    r = runner.invoke(main, ["trace", cap, omid, "--format", "jsonl"])
    assert [orjson.loads(x)["unique_key"] for x in r.stdout.splitlines()] == [sent["msg_id"]]
    r = runner.invoke(main, ["trace", cap, sent["msg_id"]])
    assert r.exit_code == 0
    lines = r.stdout.splitlines()
    assert lines[0].startswith(sent["msg_id"]) and "finished" in lines[0]
    assert any(" sent " in x for x in lines[1:]) and any(" acked " in x for x in lines[1:])
    r = runner.invoke(main, ["trace", cap, "no-such-message"])
    assert r.exit_code == 0 and r.stdout == "" and "no message matches" in r.stderr


def test_filter_selects_exchanges() -> None:
    """``-Y`` selects the exchanges fed to the journeys: only the client's gRPC calls, so no
    remoting hop is left and nothing is delivered by the proxy's pops."""
    cap = str(CAPTURES / "grpc_python.pcap")
    r = CliRunner().invoke(main, ["trace", cap, "-Y", 'topic == "PyTopic"', "--format", "jsonl"])
    rows = [orjson.loads(x) for x in r.stdout.splitlines()]
    assert rows and all(d["topic"] == "PyTopic" for d in rows)
    r = CliRunner().invoke(main, ["trace", cap, "-Y", "code == 200051", "--format", "jsonl"])
    rows = [orjson.loads(x) for x in r.stdout.splitlines()]
    assert rows and all({e["kind"] for e in d["events"]} == {"acked"} and d["unique_key"] is None for d in rows)


def _stats(*args: str) -> Any:
    r = CliRunner().invoke(main, ["stats", *args])
    assert r.exit_code == 0, r.output
    return r.stdout


def test_stats_by_topic_and_group_count_messages_not_requests() -> None:
    """``stats --by topic``: 47 messages in for TopicTest (one SEND_BATCH_MESSAGE of 5 counts 5),
    141 out (three consumer groups got each); ``--by group``: 47 in for the producer group,
    47 out for each consumer group, with delivery and end-to-end latencies where measured."""
    cap = str(CAPTURES / "remoting_json.pcap")
    t = truth("remoting_json")
    doc = orjson.loads(_stats(cap, "--by", "topic", "--format", "json"))
    row = next(r for r in doc["rows"] if r["key"] == "TopicTest")
    assert row["messages_in"] == len(t["sent"]) == 47 and t["counts"]["batch_messages"] == 5
    assert row["messages_out"] == sum(len(v) for v in t["received"].values()) == 141
    assert row["in_per_s"] > 0 and row["delivery_p50"] > 0 and row["e2e_p99"] >= row["e2e_p50"] > 0
    doc = orjson.loads(_stats(cap, "--by", "group", "--format", "json"))
    rows = {r["key"]: r for r in doc["rows"]}
    assert rows["PG_TopicTest"]["messages_in"] == 47
    for g in ("CG_push_TopicTest", "CG_lite_TopicTest", "CG_bcast_TopicTest"):
        assert rows[g]["messages_out"] == 47 and rows[g]["delivery_p50"] is not None
    assert rows["CG_bcast_TopicTest"]["e2e_p50"] is None  # broadcast: no offset commit on the wire
    table = _stats(cap, "--by", "topic")
    assert "msgs in" in table.splitlines()[0] and "e2e p99" in table.splitlines()[0]


def test_stats_journeys_in_json_and_prometheus() -> None:
    """gRPC through the proxy: 10 messages in and out of PyTopic (the client's SendMessage and
    the proxy's SEND_MESSAGE_V2 are one message), in the JSON snapshot and as Prometheus
    families that the official parser reads."""
    from prometheus_client.parser import text_string_to_metric_families

    cap = str(CAPTURES / "grpc_python.pcap")
    snap = orjson.loads(_stats(cap, "--format", "json"))
    row = snap["journeys"]["by_topic"]["rows"]["PyTopic"]
    assert (row["messages_in"], row["messages_out"], row["delivery_n"], row["e2e_n"]) == (10, 10, 10, 10)
    assert snap["journeys"]["by_group"]["rows"]["GID_py"]["messages_out"] == 10
    fams = {f.name: f for f in text_string_to_metric_families(_stats(cap, "--format", "prometheus"))}
    got = {(s.labels["by"], s.labels["key"]): s.value for s in fams["rocketmq_journey_messages_in"].samples
           if s.name.endswith("_total")}
    assert got[("topic", "PyTopic")] == 10
    q = {s.labels["quantile"] for s in fams["rocketmq_journey_e2e_latency_ms"].samples
         if s.labels["key"] == "PyTopic"}
    assert q == {"0.5", "0.9", "0.99"}


def _otlp_parsed(path: Path) -> Any:
    """The file read with the official OpenTelemetry protobuf definitions: once as it is (every
    field name, enum and value must be known), once with its hex ids turned into protobuf
    JSON's base64 (OTLP/JSON writes ids in hex) to read the ids' bytes."""
    import base64

    from google.protobuf import json_format
    from opentelemetry.proto.collector.trace.v1 import trace_service_pb2

    text = path.read_text()
    json_format.Parse(text, trace_service_pb2.ExportTraceServiceRequest())
    doc = json.loads(text)
    for rs in doc["resourceSpans"]:
        for ss in rs["scopeSpans"]:
            for s in ss["spans"]:
                for k in ("traceId", "spanId", "parentSpanId"):
                    if k in s:
                        s[k] = base64.b64encode(bytes.fromhex(s[k])).decode()
    return json_format.Parse(json.dumps(doc), trace_service_pb2.ExportTraceServiceRequest())


@pytest.mark.parametrize("name", ["remoting_pop", "grpc_python"])
def test_export_otlp_parses_with_the_official_definitions(tmp_path: Path, name: str) -> None:
    """``export --format otlp``: one span per hop, one trace per message (its spans children of
    its first hop), named by kind and topic, the message id and capture as attributes."""
    out = tmp_path / "spans.json"
    r = CliRunner().invoke(main, ["export", str(CAPTURES / f"{name}.pcap"), "--format", "otlp", "-o", str(out)])
    assert r.exit_code == 0, r.output
    req = _otlp_parsed(out)
    spans = [s for rs in req.resource_spans for ss in rs.scope_spans for s in ss.spans]
    assert len(spans) == sum(len(j["events"]) for j in journeys(name))
    traces: dict[bytes, list[Any]] = {}
    for s in spans:
        assert len(s.trace_id) == 16 and len(s.span_id) == 8
        traces.setdefault(s.trace_id, []).append(s)
    assert len(traces) == len(journeys(name))
    for t in traces.values():
        root = t[0]
        assert not root.parent_span_id and all(s.parent_span_id == root.span_id for s in t[1:])
        assert len({s.span_id for s in t}) == len(t)
    sent = truth(name)["sent"][0]
    mine = next(t for t in traces.values() if any(
        a.key == "messaging.message.id" and a.value.string_value == sent["msg_id"] for a in t[0].attributes))
    assert [s.name for s in mine][:1] == [f"sent {sent['topic']}"]
    assert {s.name.split()[0] for s in mine} >= {"sent", "stored", "delivered", "acked"}


def test_otlp_joins_the_messages_own_trace() -> None:
    """A message carrying a W3C trace context: its hops go into that trace, under its span
    (the journey's ``trace`` set here as the trace-context decoder fills it)."""
    from rmqsniff.exporters.otlp import journey_spans

    a = analyze([str(CAPTURES / "remoting_pop.pcap")])
    e = JourneyEngine()
    e.feed_all(a.exchanges)
    j = e.finish()[0]
    j.trace = {"format": "w3c", "trace_id": "4bf92f3577b34da6a3ce929d0e0e4736", "span_id": "00f067aa0ba902b7"}
    spans = journey_spans(j)
    assert {s["traceId"] for s in spans} == {"4bf92f3577b34da6a3ce929d0e0e4736"}
    assert spans[0]["parentSpanId"] == "00f067aa0ba902b7"
    j.trace = {"format": "sw8", "trace_id": "a1b2.c3d4.5"}  # not 16 bytes of hex: hashed to one
    ids = {s["traceId"] for s in journey_spans(j)}
    assert len(ids) == 1 and len(ids.pop()) == 32


def test_one_connection_captured_on_both_hosts_counts_each_hop_once(tmp_path: Path) -> None:
    """The same traffic in two captures (as on the client's and the broker's host): one journey
    per message, each hop once, named by the capture that showed it first."""
    import shutil

    a, b = tmp_path / "client.pcap", tmp_path / "broker.pcap"
    shutil.copy(CAPTURES / "grpc_python.pcap", a)
    shutil.copy(CAPTURES / "grpc_python.pcap", b)
    r = CliRunner().invoke(main, ["trace", str(a), str(b), "--format", "jsonl"])
    assert r.exit_code == 0, r.output
    got = {d["unique_key"]: d for d in map(orjson.loads, r.stdout.splitlines()) if d["unique_key"]}
    whole = by_key("grpc_python")
    assert set(got) == set(whole)
    for k, j in got.items():
        assert kinds(j) == kinds(whole[k])
        assert {e["capture"] for e in j["events"]} == {str(a)}


DERIVED = sorted((CAPTURES / "derived").glob("*.pcap"))


@pytest.mark.parametrize("path", DERIVED, ids=[p.stem for p in DERIVED])
def test_damaged_captures_never_stop_the_journeys(path: Path) -> None:
    """Captures cut mid-connection (answers whose requests were not captured, HPACK names lost):
    ``trace`` and the stats that join journeys still run to the end."""
    ports = ["--port", "21081=grpc"] if "grpc" in path.stem else []
    r = CliRunner().invoke(main, ["trace", str(path), "--format", "jsonl", *ports])
    assert r.exit_code == 0, r.output
    for line in r.stdout.splitlines():
        assert set(orjson.loads(line)) == CONTRACT
    r = CliRunner().invoke(main, ["stats", str(path), "--format", "json", *ports])
    assert r.exit_code == 0, r.output
    assert "journeys" in orjson.loads(r.stdout)
