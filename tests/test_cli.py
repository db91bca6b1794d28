"""The ``read`` and ``stats`` commands, driven like a user would (CliRunner and a real
subprocess for piped output), over captures written here with known content."""
from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import orjson
import pytest
from click.testing import CliRunner
from prometheus_client.parser import text_string_to_metric_families

from dissectors.remoting.command import JSON, ROCKETMQ, RemotingCommand
from dissectors.remoting.frame import encode
from rmqsniff.capwriter import CaptureWriter, TcpSession
from rmqsniff.cli import main
from rmqsniff.stats import ENVOY_COUNTERS, GAUGES
from rmqsniff.synth import write_capture

ROOT = Path(__file__).resolve().parent.parent
T0 = 1_700_000_000.0

SECRET_AK, SECRET_SIG = "AK-very-secret-1", "c2lnbmF0dXJlLXNlY3JldA=="
SEND_EXT = {
    "a": "PG_orders", "b": "orders", "c": "TBW102", "d": "4", "e": "2", "f": "0",
    "g": "1700000000123", "h": "0", "i": "TAGS\x01TagA\x02", "j": "0", "k": "false", "m": "false",
    "AccessKey": SECRET_AK, "Signature": SECRET_SIG,
}
SEND = RemotingCommand(310, 0, 11, "JAVA", 373, None, SEND_EXT, b"hello body", JSON)
SEND_OK = RemotingCommand(0, 1, 11, "JAVA", 373, None, {"msgId": "0A00000100002A9F0000000000000001",
                                                        "queueId": "2", "queueOffset": "7"}, None, JSON)
POP = RemotingCommand(200050, 0, 12, "GO", 479, None, {"consumerGroup": "CG_pop", "topic": "orders",
                                                       "queueId": "-1", "maxMsgNums": "32"}, None, ROCKETMQ)
POP_RESP = RemotingCommand(1, 1, 12, "JAVA", 479, "request type 3442 not supported", None, None, ROCKETMQ)
ROUTE = RemotingCommand(105, 0, 13, "JAVA", 373, None, {"topic": "odd"}, None, JSON)
ROUTE_OK = RemotingCommand(0, 1, 13, "JAVA", 373, None, None, b'{"brokerDatas":[]}', JSON)
ODD_PORT = 19876

LAT = {11: 0.0025, 12: 0.004, 13: 0.0015}  # opaque -> latency written (s)


def _conv(w: CaptureWriter, client: tuple[str, int], server: tuple[str, int], t: float,
          pairs: list[tuple[RemotingCommand, RemotingCommand]], handshake: bool = True) -> float:
    s = TcpSession(w, client, server)
    if handshake:
        s.handshake(t)
    for req, resp in pairs:
        t += 0.01
        s.send(t, True, encode(req))
        s.send(t + LAT[req.opaque], False, encode(resp), ack=True)
    s.close(t + 0.02)
    return t + 0.05


@pytest.fixture(scope="module")
def capture(tmp_path_factory) -> str:
    """Three connections: SEND_MESSAGE_V2 + POP to a broker, a route query to a name server
    on an odd port, captured without its handshake (so only --port names the server)."""
    path = tmp_path_factory.mktemp("cli") / "c.pcap"
    with open(path, "wb") as f:
        w = CaptureWriter(f, "pcap", nano=True)
        t = _conv(w, ("10.0.0.1", 40001), ("10.0.0.10", 10911), T0, [(SEND, SEND_OK), (POP, POP_RESP)])
        _conv(w, ("10.0.0.2", 40002), ("10.0.0.9", ODD_PORT), t, [(ROUTE, ROUTE_OK)], handshake=False)
    return str(path)


def run(*args: str) -> tuple[int, str, str]:
    r = CliRunner().invoke(main, list(args))
    return r.exit_code, r.stdout, r.stderr


def jsonl(text: str) -> list[dict]:
    return [orjson.loads(line) for line in text.splitlines() if line.strip()]


# ------------------------------------------------------------------ read --format jsonl


def test_read_jsonl_fields(capture: str) -> None:
    code, out, err = run("read", "--format", "jsonl", "--port", str(ODD_PORT), capture)
    assert code == 0, err
    rows = jsonl(out)
    by_op = {r["request"]["opaque"]: r for r in rows}
    assert set(by_op) == {11, 12, 13}
    send = by_op[11]
    assert {"connection", "protocol", "status", "latency_ms", "request", "response"} <= send.keys()
    assert send["protocol"] == "remoting" and send["status"] == "answered"
    assert send["connection"]["client"] == "10.0.0.1:40001"
    assert send["connection"]["server"] == "10.0.0.10:10911"
    assert send["latency_ms"] == pytest.approx(LAT[11] * 1000, abs=1e-3)
    rq, rs = send["request"], send["response"]
    for side in (rq, rs):
        assert {"ts", "code", "name", "opaque", "flag", "language", "version", "serialize", "remark",
                "ext", "body_len"} <= side.keys()
    assert rs["ts"] - rq["ts"] == pytest.approx(LAT[11], abs=1e-6)
    assert (rq["code"], rq["name"], rq["flag"], rq["language"], rq["version"], rq["serialize"]) == \
        (310, "SEND_MESSAGE_V2", 0, "JAVA", 373, "JSON")
    assert rq["version_name"] == "V4_8_0"
    assert SEND.body is not None
    assert rq["body_len"] == len(SEND.body) and rq["remark"] is None
    # long field names for the V2 short keys
    assert rq["ext"]["producerGroup"] == "PG_orders" and rq["ext"]["topic"] == "orders"
    assert rq["ext"]["properties"] == SEND_EXT["i"]
    assert not {"a", "b", "i"} & rq["ext"].keys()
    assert (rs["code"], rs["name"], rs["flag"], rs["opaque"]) == (0, "SUCCESS", 1, 11)
    assert rs["ext"]["queueOffset"] == "7"


def test_read_redacts_secrets_unless_asked(capture: str) -> None:
    _, out, _ = run("read", "--format", "jsonl", capture)
    assert SECRET_AK not in out and SECRET_SIG not in out
    ext = next(r for r in jsonl(out) if r["request"]["opaque"] == 11)["request"]["ext"]
    assert ext["AccessKey"] != SECRET_AK and ext["Signature"] != SECRET_SIG
    assert "redacted" in ext["AccessKey"].lower()
    _, out, _ = run("read", "--format", "jsonl", "--no-redact", capture)
    ext = next(r for r in jsonl(out) if r["request"]["opaque"] == 11)["request"]["ext"]
    assert (ext["AccessKey"], ext["Signature"]) == (SECRET_AK, SECRET_SIG)


def test_read_pop_with_rocketmq_header_is_restored(capture: str) -> None:
    _, out, _ = run("read", "--format", "jsonl", capture)
    pop = next(r for r in jsonl(out) if r["request"]["opaque"] == 12)
    rq = pop["request"]
    assert encode(POP)[8:10] == (3442).to_bytes(2, "big")  # what really was on the wire
    assert (rq["code"], rq["name"], rq["serialize"]) == (200050, "POP_MESSAGE", "ROCKETMQ")
    assert rq["code_truncated"] is True and rq["wire_code"] == 3442
    assert rq["language"] == "GO" and rq["ext"]["consumerGroup"] == "CG_pop"
    assert pop["response"]["remark"] == POP_RESP.remark
    assert pop["response"]["serialize"] == "ROCKETMQ"
    assert pop["latency_ms"] == pytest.approx(LAT[12] * 1000, abs=1e-3)


def test_read_port_option(capture: str) -> None:
    """--port names the server of a connection seen without its handshake; --only-ports
    restricts decoding to that port."""
    _, out, _ = run("read", "--format", "jsonl", "--port", str(ODD_PORT), capture)
    odd = next(r for r in jsonl(out) if r["request"]["opaque"] == 13)
    assert odd["status"] == "answered"
    assert odd["connection"]["server"] == f"10.0.0.9:{ODD_PORT}"
    assert odd["request"]["name"] == "GET_ROUTEINFO_BY_TOPIC" and odd["request"]["ext"] == {"topic": "odd"}
    _, out, _ = run("read", "--format", "jsonl", "--port", str(ODD_PORT), "--only-ports", capture)
    assert [r["request"]["opaque"] for r in jsonl(out)] == [13]
    code, _, err = run("read", "--port", "70000", capture)
    assert code != 0 and "70000" in err


def test_port_option_makes_a_connection_remoting(tmp_path) -> None:
    """A connection on an odd port whose only frame has a broken JSON header: only with
    --port is it known to be remoting, so only then is the bad frame counted and reported."""
    import struct

    hdr = b'{"code":oops'
    frame = struct.pack(">iI", 4 + len(hdr), len(hdr)) + hdr
    path = tmp_path / "odd.pcap"
    with open(path, "wb") as f:
        w = CaptureWriter(f)
        s = TcpSession(w, ("10.0.0.2", 40002), ("10.0.0.9", ODD_PORT))
        s.handshake(T0)
        s.send(T0 + 0.1, True, frame)
        s.close(T0 + 0.2)
    code, out, err = run("stats", "--port", str(ODD_PORT), str(path))
    vals = _envoy(out, "rmqsniff")
    assert code == 0
    assert (vals["request"], vals["request_decoding_error"], vals["request_decoding_success"]) == ("1", "1", "0")
    assert f"10.0.0.9:{ODD_PORT}" in err
    _, out, _ = run("stats", str(path))
    assert _envoy(out, "rmqsniff")["request_decoding_error"] == "0"


def test_read_count_limits_output(capture: str) -> None:
    _, out, _ = run("read", "--format", "jsonl", "-c", "2", capture)
    assert len(jsonl(out)) == 2


def test_read_table_piped_has_no_ansi(capture: str) -> None:
    r = subprocess.run([sys.executable, "-m", "rmqsniff", "read", "--port", str(ODD_PORT), capture],
                       capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "\x1b[" not in r.stdout
    lines = r.stdout.splitlines()
    assert len(lines) == 1 + 3  # header + one row per exchange
    assert "SEND_MESSAGE_V2" in r.stdout and "POP_MESSAGE" in r.stdout
    assert "orders" in r.stdout and "GET_ROUTEINFO_BY_TOPIC" in r.stdout


# ------------------------------------------------------------------ errors and exit codes


def test_nothing_readable_exits_1(tmp_path) -> None:
    """Exit 1: nothing readable (2 is kept for usage errors, click's)."""
    bad = tmp_path / "notes.txt"
    bad.write_text("not a capture at all\n")
    empty = tmp_path / "empty.pcap"
    empty.write_bytes(b"")
    for cmd in ("read", "stats"):
        code, out, err = run(cmd, str(bad), str(empty))
        assert code == 1
        lines = [ln for ln in err.splitlines() if ln.strip()]
        assert len(lines) == 2 and "notes.txt" in lines[0] and "empty.pcap" in lines[1]
        assert "Traceback" not in err
        assert "rocketmq." not in out


def test_truncated_capture_prints_partial_results(tmp_path, capture: str) -> None:
    data = Path(capture).read_bytes()
    cut = tmp_path / "cut.pcap"
    cut.write_bytes(data[:-7])  # inside the last record (the odd-port connection's final ACK)
    code, out, err = run("read", "--format", "jsonl", "--port", str(ODD_PORT), str(cut))
    assert code == 0
    assert {r["request"]["opaque"] for r in jsonl(out)} == {11, 12, 13}
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1 and "truncated" in lines[0] and "cut.pcap" in lines[0]
    code, out, err = run("stats", str(cut))
    assert code == 0 and "truncated" in err and re.search(r"\.request: 3$", out, re.M)


def test_subprocess_exit_codes(tmp_path, capture: str) -> None:
    bad = tmp_path / "x.pcap"
    bad.write_bytes(b"\x00" * 100)
    r = subprocess.run([sys.executable, "-m", "rmqsniff", "stats", str(bad)], capture_output=True, text=True,
                       cwd=ROOT, timeout=120)
    assert r.returncode == 1 and r.stdout == "" and "not a pcap" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1


# ------------------------------------------------------------------ stats


@pytest.fixture(scope="module")
def synth(tmp_path_factory) -> tuple[str, dict]:
    path = tmp_path_factory.mktemp("synth") / "s.pcapng"
    counts = write_capture(str(path), 120, seed=3, connections=6, fmt="pcapng")
    return str(path), counts


def _envoy(out: str, prefix: str) -> dict[str, str]:
    vals = {}
    for line in out.splitlines():
        m = re.fullmatch(rf"rocketmq\.{re.escape(prefix)}\.([\w.]+): (.+)", line)
        assert m, line
        vals[m.group(1)] = m.group(2)
    return vals


def test_stats_envoy_has_every_stat(synth) -> None:
    path, counts = synth
    code, out, err = run("stats", "--stat-prefix", "edge1", path)
    assert code == 0, err
    vals = _envoy(out, "edge1")
    for name in ENVOY_COUNTERS + GAUGES:
        assert name in vals, name
    assert "request_time_ms" in vals
    assert int(vals["request"]) == counts["exchanges"]
    assert int(vals["send_message_v2"]) == counts.get(310, 0)
    assert int(vals["heartbeat"]) == counts.get(34, 0)
    assert int(vals["get_topic_route"]) == counts.get(105, 0)
    assert int(vals["transport.packets"]) == counts["packets"]
    assert int(vals["request_active"]) == 0  # every request was answered


def test_stats_prometheus_parses(synth) -> None:
    path, counts = synth
    code, out, err = run("stats", "--format", "prometheus", "--stat-prefix", "edge1", path)
    assert code == 0, err
    fams = {f.name: f for f in text_string_to_metric_families(out)}
    for name in ENVOY_COUNTERS:
        assert fams[f"rocketmq_{name}"].type == "counter", name
    for name in GAUGES:
        assert fams[f"rocketmq_{name}"].type == "gauge", name

    def value(family: str) -> float:
        (sample,) = [s for s in fams[family].samples if s.labels.get("stat_prefix") == "edge1"]
        return sample.value

    assert value("rocketmq_request") == counts["exchanges"]
    assert value("rocketmq_send_message_v2") == counts.get(310, 0)
    assert value("rocketmq_request_active") == 0


def test_stats_json_sections(synth) -> None:
    path, counts = synth
    code, out, err = run("stats", "--format", "json", "--stat-prefix", "p", path)
    assert code == 0, err
    d = orjson.loads(out)
    assert {"counters", "gauges", "histograms"} <= d.keys()
    assert d["counters"]["request"] == counts["exchanges"]
    assert d["counters"]["answered"] == counts["exchanges"]
    assert d["histograms"]["request_time_ms"]["count"] == counts["exchanges"]


def test_stats_pop_and_versions(capture: str) -> None:
    code, out, _ = run("stats", "--port", str(ODD_PORT), capture)
    vals = _envoy(out, "rmqsniff")
    assert code == 0
    assert (int(vals["pop_message"]), int(vals["send_message_v2"]), int(vals["get_topic_route"])) == (1, 1, 1)
    assert int(vals["request_code.POP_MESSAGE.requests"]) == 1
