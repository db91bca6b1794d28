"""rmqsniff doctor: the catalogue, the healthy bundled captures, and each finding's rule.

The healthy captures are real (made by the harness from a real RocketMQ 5.3 cluster and
real clients).  :data:`FAULTS` is a stand-in: remoting traffic written by the project's
own encoder, for faults this test module cannot make a real broker produce on demand
(busy, flush timeouts, service not available, heartbeat gaps of minutes, rebalance storms,
a client clock hours off, a 4 MB message); the real cluster reproductions are in
tests/test_doctor_rocketmq.py.
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from dissectors.remoting.frame import encode
from dissectors.remoting.message import properties_to_string
from rmqsniff.capwriter import CaptureWriter, TcpSession
from rmqsniff.cli import main
from rmqsniff.doctor import CATALOGUE, ERROR, WARNING, Doctor, catalogue
from rmqsniff.pipeline import analyze
from tests.support.captures import plaintext_pcaps
from tests.support.remoting_scenario import _req, _resp

REPO = Path(__file__).resolve().parent.parent
BROKER = ("10.0.0.10", 10911)
BROKER_B = ("10.0.0.11", 10911)
NAMESRV = ("10.0.0.9", 9876)
T0 = 1_700_000_000.0
P1, P2, C1, C2, N1 = ("10.0.1.1", 40001), ("10.0.1.2", 40002), ("10.0.1.3", 40003), ("10.0.1.4", 40004), \
    ("10.0.1.5", 40005)


def _send(opaque, topic, uniq, born_ms=None, body=b"x"):
    ext = {"a": "PG1", "b": topic, "i": properties_to_string({"UNIQ_KEY": uniq, "WAIT": "true"})}
    if born_ms is not None:
        ext["g"] = str(born_ms)
    return _req(310, opaque, ext, body)


def _heartbeat(opaque, cid, group, topic, expr, lang="JAVA", version=479):
    body = json.dumps({"clientID": cid, "producerDataSet": [], "consumerDataSet": [{
        "groupName": group, "consumeType": "CONSUME_PASSIVELY", "messageModel": "CLUSTERING",
        "subscriptionDataSet": [{"topic": topic, "subString": expr, "expressionType": "TAG"}]}]}).encode()
    return _req(34, opaque, {}, body, lang=lang, version=version)


def _ok(opaque, **ext):
    return _resp(0, opaque, {"msgId": "M", "queueId": "0", "queueOffset": "0", **ext})


# (client, server, request, response or None, seconds until the answer, seconds after, sent by the server)
def faults() -> list[tuple]:
    born_now = int((T0 + 0.001) * 1000)
    rows: list[tuple] = [
        (P1, BROKER, _send(1, "orders", "U1", born_now), _resp(2, 1, remark="[REJECTREQUEST]system busy"), 0.01, 0, 0),
        (P1, BROKER, _send(2, "orders", "U2"), _resp(1, 2, remark="[PC_SYNCHRONIZED]broker busy"), 0.01, 0, 0),
        (P1, BROKER, _send(3, "nosuch", "U3"), _resp(17, 3, remark="topic not exist"), 0.01, 0, 0),
        (P1, BROKER, _send(4, "locked", "U4"), _resp(16, 4, remark="no permission"), 0.01, 0, 0),
        (P1, BROKER, _send(5, "bad", "U5"), _resp(13, 5, remark="illegal"), 0.01, 0, 0),
        (P1, BROKER, _send(6, "sync", "U6"), _resp(12, 6), 0.01, 0, 0),
        (P1, BROKER, _send(7, "closing", "U7"), _resp(14, 7), 0.01, 0, 0),
        (P1, BROKER, _send(8, "orders", "U8"), _ok(8), 0.01, 0, 0),
        (P1, BROKER, _send(9, "orders", "U8"), _ok(9), 0.01, 0, 0),  # the same message again
        (P1, BROKER, _send(10, "orders", "U9"), _resp(2, 10), 0.01, 0, 0),
        (P1, BROKER, _send(11, "orders", "U9"), _ok(11), 0.01, 0, 0),  # a retry after busy: not a re-send
        (P2, BROKER, _send(20, "skewed", "S1", int(T0 * 1000) + 3_600_000), _ok(20), 0.01, 0, 0),
        (P2, BROKER, _send(21, "big", "B1", None, b"z" * 3_900_000), _ok(21), 0.01, 0, 0),
        (N1, NAMESRV, _req(105, 30, {"topic": "nosuch"}), _resp(17, 30, remark="No topic route info"), 0.01, 0, 0),
        (N1, NAMESRV, _req(105, 31, {"topic": "%RETRY%CG1"}), _resp(17, 31), 0.01, 0, 0),
        (N1, NAMESRV, _req(105, 32, {"topic": "late"}), _resp(17, 32), 0.01, 0, 0),
        (N1, NAMESRV, _req(105, 33, {"topic": "late"}), _resp(0, 33, body=json.dumps({
            "queueDatas": [], "brokerDatas": [{"brokerName": "b", "cluster": "c", "brokerAddrs": {
                "0": "10.0.0.10:10911"}}, {"brokerName": "x", "cluster": "c", "brokerAddrs": {
                    "0": "192.168.99.9:10911", "1": "10.0.0.12:10911"}}]}).encode()), 0.01, 0, 0),
        (C1, BROKER, _heartbeat(40, "c1@1", "CG1", "orders", "TagA"), _ok(40), 0.01, 0, 0),
        (C2, BROKER, _heartbeat(41, "c2@1", "CG1", "orders", "TagB", "GO", 401), _ok(41), 0.01, 0, 0),
    ]
    rows += [(C1, BROKER, _req(40, 50 + i, {"consumerGroup": "CG1"}), None, 0.0, 1.0, 1) for i in range(10)]
    rows += [(C1, BROKER, _req(39, 70 + i, {"msgId": "H1", "transactionId": "H1"}), None, 0.0, 1.0, 1)
             for i in range(3)]
    rows += [(C1, BROKER, _req(11, 80, {"consumerGroup": "CG1", "topic": "orders", "queueId": "0"}),
              _resp(25, 80), 0.01, 61.0, 0),  # start-up: not reported
             (C1, BROKER, _req(11, 81, {"consumerGroup": "CG1", "topic": "orders", "queueId": "0"}),
              _resp(25, 81), 0.01, 0, 0),
             (P1, BROKER, _req(15, 90, {"consumerGroup": "CG1", "topic": "orders"}), None, 0.0, 40.0, 0),
             (C1, BROKER, _heartbeat(91, "c1@1", "CG1", "orders", "TagA"), _ok(91), 0.01, 130.0, 0),
             (C1, BROKER, _heartbeat(92, "c1@1", "CG1", "orders", "TagA"), _ok(92), 0.01, 0, 0)]
    return rows


def write_faults(path: Path) -> None:
    with open(path, "wb") as f:
        w = CaptureWriter(f, "pcap")
        sessions: dict = {}
        ts = T0
        for client, server, req, resp, delay, after, by_server in faults():
            s = sessions.get(client)
            if s is None:
                s = sessions[client] = TcpSession(w, client, server, isn_client=100, isn_server=900)
                s.handshake(ts)
            ts += 0.001
            s.send(ts, not by_server, encode(req))
            if resp is not None:
                s.send(ts + delay, bool(by_server), encode(resp))
            ts += delay + after + 0.001
        for s in sessions.values():
            s.close(ts + 0.01)
        w.close()


@pytest.fixture(scope="module")
def fault_findings(tmp_path_factory):
    path = tmp_path_factory.mktemp("doctor") / "faults.pcap"
    write_faults(path)
    a = analyze([str(path)])
    assert not a.errors
    return path, {(f.id, f.subject): f for f in Doctor().feed_all(a.exchanges).findings()}


@pytest.mark.parametrize("pcap", plaintext_pcaps(), ids=lambda p: p.name)
def test_healthy_captures_give_no_warning_or_error(pcap):
    found = Doctor().feed_all(analyze([str(pcap)]).exchanges).findings()
    assert [f.to_dict() for f in found if f.severity in (ERROR, WARNING)] == []


def test_catalogue_ids_unique_and_in_readme():
    ids = [e.id for e in CATALOGUE]
    assert len(ids) == len(set(ids))
    readme = (REPO / "README.md").read_text()
    assert catalogue.markdown() in readme


def test_send_failures_by_cause(fault_findings):
    _, found = fault_findings
    busy = found[("broker-busy", "10.0.0.10:10911")]
    assert busy.evidence.count == 3 and busy.severity == ERROR
    assert busy.evidence.figures == {"SYSTEM_BUSY": 2, "SYSTEM_ERROR": 1}
    for fid, topic in (("send-topic-missing", "nosuch"), ("send-no-permission", "locked"),
                       ("send-message-illegal", "bad"), ("send-flush-timeout", "sync"),
                       ("send-service-unavailable", "closing")):
        f = found[(fid, topic)]
        assert f.evidence.count == 1, fid
    # one problem, one id: the busy sends are not also send failures
    assert not any(fid.startswith("send-") and subject == "orders" for fid, subject in found)


def test_resend_and_skew_and_size(fault_findings):
    _, found = fault_findings
    resent = found[("resent-message", "orders")]
    assert resent.evidence.count == 1 and resent.filter == 'msgid == "U8"'
    skew = found[("clock-skew", "10.0.1.2")]
    assert 3599 < skew.evidence.figures["max_skew_s"] < 3601
    big = found[("near-size-limit", "big")]
    assert big.evidence.figures["largest_body"] == 3_900_000


def test_routes(fault_findings):
    _, found = fault_findings
    assert found[("route-topic-missing", "nosuch")].evidence.count == 1
    assert ("route-topic-missing", "late") not in found  # resolved later: start-up
    assert ("route-topic-missing", "%RETRY%CG1") not in found
    never = found[("address-never-reached", "192.168.99.9:10911")]
    assert never.evidence.count == 1
    assert ("address-never-reached", "10.0.0.12:10911") not in found  # a slave address is not judged


def test_groups(fault_findings):
    _, found = fault_findings
    mixed = found[("mixed-subscriptions", "CG1")]
    assert mixed.evidence.figures == {"c1@1": "orders:TagA", "c2@1": "orders:TagB"}
    assert found[("mixed-clients", "CG1")].severity == "note"
    assert found[("rebalance-storm", "CG1")].evidence.count == 1
    sub = found[("subscription-not-latest", "CG1")]
    assert sub.evidence.count == 1  # the first one fell in the start-up window
    assert found[("transaction-check-storm", "<none>")].evidence.figures["max_checks"] == 3  # no END_TRANSACTION seen
    gap = found[("heartbeat-gap", "c1@1")]
    assert gap.evidence.figures["longest_gap_s"] > 120


def test_unanswered(fault_findings):
    _, found = fault_findings
    f = found[("unanswered", "UPDATE_CONSUMER_OFFSET to 10.0.0.10:10911")]
    assert f.evidence.count == 1


def test_evidence_filters_select_the_exchanges(fault_findings):
    """Every finding's ``read -Y`` expression selects its evidence exchanges."""
    from rmqsniff.filter import compile_filter

    path, found = fault_findings
    exchanges = analyze([str(path)]).exchanges
    for f in found.values():
        if not f.evidence.exchanges:
            continue
        flt = compile_filter(f.filter)
        selected = {ex.index for ex in exchanges if flt(ex)}
        assert set(f.evidence.exchanges) <= selected, (f.id, f.filter)


def test_cli_json_and_table(fault_findings):
    path, found = fault_findings
    r = CliRunner().invoke(main, ["doctor", "--format", "json", str(path)])
    assert r.exit_code == 0, r.output
    doc = json.loads(r.output)
    assert len(doc) == len(found)
    assert doc[0]["severity"] == ERROR and doc[-1]["severity"] == "note"
    r = CliRunner().invoke(main, ["doctor", str(path), "-Y", "topic == nosuch"])
    assert r.exit_code == 0, r.output
    assert "send-topic-missing" in r.output and "route-topic-missing" in r.output and "broker-busy" not in r.output


def test_unique_key_reads_properties_as_the_full_parser():
    """The doctor's quick UNIQ_KEY look-up agrees with parse_properties on arbitrary strings."""
    import random

    from dissectors.remoting.message import parse_properties
    from rmqsniff.protocols.remoting.doctor import unique_key

    rng = random.Random(3)
    parts = ["UNIQ_KEY", "\x01", "\x02", "a", "K"]
    for _ in range(20000):
        s = "".join(rng.choice(parts) for _ in range(rng.randrange(8)))
        assert unique_key(s) == (parse_properties(s).get("UNIQ_KEY") or None), repr(s)


def test_http2_to_the_remoting_port(tmp_path, monkeypatch):
    """Stand-in: gRPC calls (the project's HTTP/2 generator, benchmarks/grpcgen.py) written to the
    broker's well-known remoting port 10911.  A real broker closes such a connection at its first
    bytes, which leaves no exchange to judge (connection-level findings are not built yet)."""
    from benchmarks import grpcgen

    monkeypatch.setattr(grpcgen, "PORT", 10911)
    path = tmp_path / "h2-to-remoting.pcap"
    grpcgen.write_grpc_capture(str(path), 12, connections=1)
    found = Doctor().feed_all(analyze([str(path)]).exchanges).findings()
    f = next(f for f in found if f.id == "protocol-mismatch")
    assert f.subject == "10.0.2.1:10911 (remoting port)" and f.severity == ERROR
    assert f.filter == 'broker == "10.0.2.1:10911" and protocol == grpc'
    assert f.evidence.count >= 10


def test_slow_outlier_and_slow_broker(tmp_path):
    """Stand-in: 40 route lookups answered in 2 ms by one name server and one in 3 s; 30 sends
    answered in 5 ms by one broker and 30 in 200 ms by another."""
    from tests.support.remoting_scenario import write_scenario

    scenario: dict = {}
    for i in range(40):
        scenario[f"r{i}"] = (N1, NAMESRV, _req(105, 100 + i, {"topic": "orders"}), _resp(0, 100 + i, body=b"{}"),
                             3.0 if i == 20 else 0.002)
    for i in range(30):
        scenario[f"a{i}"] = (P1, BROKER, _send(200 + i, "orders", f"A{i}"), _ok(200 + i), 0.005)
        scenario[f"b{i}"] = (P2, BROKER_B, _send(300 + i, "orders", f"B{i}"), _ok(300 + i), 0.2)
    path = tmp_path / "slow.pcap"
    write_scenario(path, scenario)
    found = {(f.id, f.subject): f for f in Doctor().feed_all(analyze([str(path)]).exchanges).findings()}
    out = found[("slow-outlier", "GET_ROUTEINFO_BY_TOPIC")]
    assert out.evidence.count == 1 and out.evidence.figures["slowest_ms"] > 2900
    assert out.filter == "code == GET_ROUTEINFO_BY_TOPIC and latency > 1000ms"
    slow = found[("slow-broker", "SEND_MESSAGE_V2 at 10.0.0.11:10911")]
    assert slow.evidence.count == 30 and slow.to_dict()["first_ts"] is None
    assert ("slow-broker", "SEND_MESSAGE_V2 at 10.0.0.10:10911") not in found
