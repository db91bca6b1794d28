"""Real gRPC captures (Java 5.x client and Python client through the real proxy) against
the clients' own ground truth (``captures/<name>.truth.json``)."""
from __future__ import annotations

import hashlib
import io
import json
from pathlib import Path

import dpkt
import pytest

from rmqsniff.model import ANSWERED, ORPHAN, UNANSWERED
from rmqsniff.pipeline import analyze

CAPTURES = Path(__file__).resolve().parent.parent / "captures"
CLIENTS = {"grpc_java": "JAVA", "grpc_python": "PYTHON"}


def load(name: str, path: Path | None = None):
    pcap = path or CAPTURES / f"{name}.pcap"
    truth_file = CAPTURES / f"{name}.truth.json"
    if not (CAPTURES / f"{name}.pcap").exists() or not truth_file.exists():
        pytest.skip(f"real capture {name}.pcap (+ .truth.json) not in captures/ yet")
    a = analyze([str(pcap)])
    return a, [ex for ex in a.exchanges if ex.protocol == "grpc"], json.loads(truth_file.read_text())


def calls(exs, method):
    return [ex for ex in exs if ex.request is not None and ex.request.command.method == method]


def sent_messages(exs):
    return [p.message.messages[i] for ex in calls(exs, "SendMessage") for p in ex.request.command.messages
            for i in range(len(p.message.messages))]


def delivered(exs):
    """Messages the proxy delivered in ReceiveMessage streams."""
    return [p.message.message for ex in calls(exs, "ReceiveMessage") if ex.response
            for p in ex.response.command.messages if p.message.WhichOneof("content") == "message"]


@pytest.mark.parametrize("name", sorted(CLIENTS))
def test_sent_messages_match_the_clients_ground_truth(name):
    a, exs, truth = load(name)
    sent = {m.system_properties.message_id: m for m in sent_messages(exs)}
    assert sorted(sent) == sorted(s["msg_id"] for s in truth["sent"])
    for s in truth["sent"]:
        m = sent[s["msg_id"]]
        assert m.topic.name == s["topic"]
        assert m.system_properties.tag == s["tags"]
        assert list(m.system_properties.keys) == s["keys"]
        assert dict(m.user_properties) == s["user_properties"]
        assert hashlib.sha256(m.body).hexdigest() == s["body_sha256"] and len(m.body) == s["body_len"]
        if s.get("message_group"):
            assert m.system_properties.message_group == s["message_group"]
    # the proxy answered each send with the same id, status OK
    answered = [e.message_id for ex in calls(exs, "SendMessage")
                for e in ex.response.command.messages[0].message.entries]
    assert sorted(answered) == sorted(sent)
    # the capture also holds the proxy's remoting traffic to the broker: the Envoy counter is the sum
    remoting_sends = sum(1 for ex in a.exchanges if ex.protocol == "remoting" and ex.code == 310)
    assert a.stats.counter("send_message_v2") == len(calls(exs, "SendMessage")) + remoting_sends


@pytest.mark.parametrize("name", sorted(CLIENTS))
def test_received_and_acked_messages_match_the_ground_truth(name):
    _, exs, truth = load(name)
    got = {m.system_properties.message_id: m for m in delivered(exs)}
    want = [r for lst in truth["received"].values() for r in lst]
    assert want and {r["msg_id"] for r in want} <= set(got)
    for r in want:
        m = got[r["msg_id"]]
        assert hashlib.sha256(m.body).hexdigest() == r["body_sha256"]
        assert m.system_properties.delivery_attempt >= 1
    acked = {e.message_id for ex in calls(exs, "AckMessage") for e in ex.request.command.messages[0].message.entries}
    assert {r["msg_id"] for r in truth["received"].get("simple", [])} <= acked
    assert len(acked) >= truth["counts"]["ack"]


@pytest.mark.parametrize("name", sorted(CLIENTS))
def test_every_call_decodes_cleanly_with_metadata_and_stats(name):
    a, exs, truth = load(name)
    assert exs and all(ex.status == ANSWERED for ex in exs)
    snap = a.stats.snapshot()
    assert snap["decoding_errors"] == {}
    c = snap["counters"]
    assert c["request_decoding_error"] == c["response_decoding_error"] == 0
    per_rpc = {d["name"]: d for k, d in snap["codes"].items() if k.startswith("grpc:")}
    for method in ("SendMessage", "ReceiveMessage", "AckMessage", "QueryRoute", "NotifyClientTermination"):
        assert per_rpc[method]["requests"] == len(calls(exs, method)) > 0
        assert per_rpc[method]["errors"] == 0
    assert len(calls(exs, "ReceiveMessage")) >= truth["counts"]["receive_calls"]
    # Envoy counters: gRPC calls plus the proxy's own remoting requests of the same meaning
    remoting = [ex.code for ex in a.exchanges if ex.protocol == "remoting" and ex.request is not None]
    assert c["pop_message"] == len(calls(exs, "ReceiveMessage")) + remoting.count(200050)
    assert c["ack_message"] == len(calls(exs, "AckMessage")) + remoting.count(200051)
    assert c["unregister"] == len(calls(exs, "NotifyClientTermination")) + remoting.count(35)
    for ex in exs:
        md = ex.request.command.metadata()
        assert md["language"] == CLIENTS[name]
        assert md["client_id"] and md["request_id"]
        assert ex.request.command.how == "path" and ex.request.command.unresolved == 0
        assert ex.response.command.status_code is not None  # the proxy always sets Status in the body
    version = truth["client"].rsplit(" ", 1)[1]
    assert {ex.request.command.metadata()["client_version"] for ex in exs} == {version}
    assert len(calls(exs, "Telemetry")) >= 1


def test_java_capture_cut_mid_connection_still_decodes(tmp_path):
    name = "grpc_java"
    if not (CAPTURES / f"{name}.pcap").exists():
        pytest.skip("real capture grpc_java.pcap not in captures/ yet")
    with open(CAPTURES / f"{name}.pcap", "rb") as fh:
        r = dpkt.pcap.Reader(fh)
        packets = list(r)
        link = r.datalink()
    buf = io.BytesIO()
    w = dpkt.pcap.Writer(buf, linktype=link)
    for ts, data in packets[int(len(packets) * 0.4):]:
        w.writepkt(data, ts=ts)
    cut = tmp_path / "cut.pcap"
    cut.write_bytes(buf.getvalue())
    a, exs, truth = load(name, cut)
    _, full, _ = load(name)
    assert exs
    assert all(ex.status in (ANSWERED, UNANSWERED, ORPHAN) for ex in exs)
    # Netty indexes every header: after the cut :path is an unknown table entry, so the
    # method comes from trial parsing, and it agrees with the full capture
    inferred = [ex for ex in exs if ex.request and ex.request.command.how == "inferred"]
    assert inferred and all(ex.request.command.unresolved for ex in inferred)
    full_by_id = {(ex.connection.client, ex.request.command.stream_id): ex.request.command.method
                  for ex in full if ex.request}
    for ex in exs:
        if ex.request and ex.request.command.method:
            assert full_by_id[(ex.connection.client, ex.request.command.stream_id)] == ex.request.command.method
    # the delivered messages after the cut are all real, with the right bodies
    truth_rx = {r["msg_id"]: r for lst in truth["received"].values() for r in lst}
    rx = delivered(exs)
    assert rx
    for m in rx:
        r = truth_rx.get(m.system_properties.message_id)
        if r is not None:
            assert hashlib.sha256(m.body).hexdigest() == r["body_sha256"]
    assert a.stats.snapshot()["decoding_errors"] == {}
