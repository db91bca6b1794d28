"""How connections are recognised: gRPC on any port from its first bytes (the client's preface,
or the server's SETTINGS when the server speaks first), ``--port P=grpc|remoting``.

Two sources of traffic, both real RocketMQ 5.3.3 proxy + Python 5.x client bytes:

* ``captures/grpc_late_preface.pcap`` as recorded (harness scenario ``grpc_late_preface``,
  captures/README.md): a second real proxy serves gRPC on the unusual port 18081 and the client's
  bytes reach it 200 ms after each TCP connect. The proxy says nothing in those 200 ms: it sends
  its SETTINGS only after the client's first bytes (its gRPC server decides PROXY protocol / TLS /
  plaintext from them), so a real RocketMQ proxy is never the first to speak. Decoded with no
  ``--port``: recognised by the client's preface, every call checked against the client's truth;
  and the ``--port`` forcing tests.
* ``captures/grpc_python.pcap`` transformed, for the server-first order, which no real capture
  of the RocketMQ proxy can show (other HTTP/2 servers do send SETTINGS on accept): the proxy's
  port is renumbered to an unusual one and the server's first packet (its SETTINGS) is swapped
  with the client's first data packet. Renumbering and that swap are the only changes.
"""
from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from collections import Counter
from pathlib import Path

import dpkt
import pytest

from rmqsniff.pipeline import analyze

CAPTURES = Path(__file__).resolve().parent.parent / "captures"
LATE = CAPTURES / "grpc_late_preface.pcap"
CAPTURE = CAPTURES / "grpc_python.pcap"
PORT = 28081


# ------------------------------------------------------------ the real capture, client speaks first late

@pytest.fixture(scope="module")
def late():
    truth = json.loads(LATE.with_suffix("").with_suffix(".truth.json").read_text())
    return analyze([str(LATE)]), truth  # default options: no --port


def _ok(status: dict | None) -> bool:
    return status is not None and status.get("code") == "OK"


def test_late_preface_on_an_unusual_port_is_recognised_from_the_preface(late):
    a, t = late
    port = t["capture"]["ports"]["proxy_grpc"]
    assert port not in (8080, 8081)
    relayed = t["late_preface"]["connections"]
    # the client's own record: the proxy sent nothing while the client's bytes were held back
    assert t["late_preface"]["delay_ms"] >= 200 and relayed
    assert all(c["server_bytes_during_delay"] == 0 for c in relayed)
    grpc = [ex for ex in a.exchanges if ex.protocol == "grpc"]
    assert grpc and {ex.connection.server[1] for ex in grpc} == {port}
    conns = {ex.connection.id: ex.connection for ex in a.exchanges if ex.connection.server[1] == port}
    assert {c.client[1] for c in conns.values()} == {c["local_port"] for c in relayed}
    assert {c.recognised_by for c in conns.values()} == {"preface"}
    assert not a.errors


def test_late_preface_capture_agrees_with_the_client_on_every_call(late):
    a, t = late
    grpc = [ex for ex in a.exchanges if ex.protocol == "grpc"]
    methods = Counter(ex.request.command.method for ex in grpc)
    counts = t["counts"]
    assert methods["SendMessage"] == counts["send_normal"] == len(t["sent"])
    assert methods["ReceiveMessage"] == counts["receive_calls"]
    assert methods["AckMessage"] == counts["ack"]
    assert methods["QueryRoute"] == methods["Telemetry"] == methods["NotifyClientTermination"] == 2
    # answered, grpc-status 0; the consumer's last Heartbeat is cancelled by the client itself
    # (RST_STREAM CANCEL) as it shuts down
    assert {ex.request.command.method for ex in grpc if ex.status != "answered"} <= {"Heartbeat"}
    assert all(ex.response.command.grpc_status in (0, None) for ex in grpc if ex.response)

    sends = [ex for ex in grpc if ex.request.command.method == "SendMessage"]
    for ex, s in zip(sends, t["sent"], strict=True):
        [req] = ex.request.command.decoded()
        [m] = req["messages"]
        sp = m["system_properties"]
        assert (m["topic"]["name"], sp["message_id"], sp["tag"], sp["keys"]) == (
            s["topic"], s["msg_id"], s["tags"], s["keys"])
        assert m["user_properties"] == s["user_properties"]
        assert (len(m["body"]), hashlib.sha256(m["body"]).hexdigest()) == (s["body_len"], s["body_sha256"])
        [resp] = ex.response.command.decoded()
        [entry] = resp["entries"]
        assert _ok(resp["status"]) and _ok(entry["status"])
        assert entry["message_id"] == s["msg_id"] and entry.get("offset", 0) == s["queue_offset"]

    received, errors = [], 0
    for ex in grpc:
        if ex.request.command.method != "ReceiveMessage":
            continue
        parts = ex.response.command.decoded()
        if not _ok(parts[0]["status"]):  # the start-up race the client retries (py_client_scenario.py)
            assert '"settings" is null' in parts[0]["status"]["message"]
            errors += 1
            continue
        received += [p["message"] for p in parts if "message" in p]
    assert errors == counts.get("receive_errors", 0)
    want = t["received"]["simple"]
    assert [m["system_properties"]["message_id"] for m in received] == [r["msg_id"] for r in want]
    for m, r in zip(received, want, strict=True):
        sp = m["system_properties"]
        assert (m["topic"]["name"], sp["tag"], sp["keys"], sp["delivery_attempt"]) == (
            r["topic"], r["tags"], r["keys"], r["delivery_attempt"])
        assert hashlib.sha256(m["body"]).hexdigest() == r["body_sha256"]
        assert m["user_properties"] == {"idx": r["idx"], "kind": r["kind"]}

    acked = []
    for ex in grpc:
        if ex.request.command.method == "AckMessage":
            [req], [resp] = ex.request.command.decoded(), ex.response.command.decoded()
            assert _ok(resp["status"]) and all(_ok(e["status"]) for e in resp["entries"])
            acked += [e["message_id"] for e in req["entries"]]
    assert acked == [r["msg_id"] for r in want]


def test_port_option_forces_either_protocol(late):
    a, t = late
    port = t["capture"]["ports"]["proxy_grpc"]
    n = sum(ex.protocol == "grpc" for ex in a.exchanges)

    def run(*args: str) -> list[dict]:
        r = subprocess.run([sys.executable, "-m", "rmqsniff", "read", str(LATE), "--format", "jsonl", *args],
                           capture_output=True, text=True, timeout=120)
        assert r.returncode == 0 and "Traceback" not in r.stderr, r.stderr
        return [json.loads(x) for x in r.stdout.splitlines()]

    grpc = [d for d in run("--port", f"{port}=grpc") if d["protocol"] == "grpc"]
    assert len(grpc) == n
    assert {d["connection"]["recognised_by"] for d in grpc} == {"forced"}
    forced = run("--port", f"{port}=remoting")
    assert not [d for d in forced if d["protocol"] == "grpc"]
    bad = subprocess.run([sys.executable, "-m", "rmqsniff", "read", str(LATE), "--port", f"{port}=mqtt"],
                         capture_output=True, text=True, timeout=60)
    assert bad.returncode != 0 and "not a protocol" in bad.stderr


# ------------------------------------------------------------ server first: grpc_python.pcap transformed

def _rewrite(dst: Path) -> None:
    with CAPTURE.open("rb") as f:
        r = dpkt.pcap.Reader(f)
        link = r.datalink()
        recs = [(ts, bytes(buf)) for ts, buf in r]
    out = []
    for ts, buf in recs:
        eth = dpkt.ethernet.Ethernet(buf)
        tcp = getattr(eth.data, "data", None)
        if isinstance(tcp, dpkt.tcp.TCP):
            if tcp.sport == 8081:
                tcp.sport = PORT
            if tcp.dport == 8081:
                tcp.dport = PORT
        out.append([ts, eth])

    def first(from_server: bool) -> int:
        return next(i for i, (_, e) in enumerate(out) if isinstance(getattr(e.data, "data", None), dpkt.tcp.TCP)
                    and len(e.data.data.data) and (e.data.data.sport == PORT) == from_server)
    c, s = first(False), first(True)
    assert c < s
    out[c][1], out[s][1] = out[s][1], out[c][1]  # the server's SETTINGS first, same timestamps
    # the two segments keep their sequence numbers, so the client's bytes are still in order
    with dst.open("wb") as out_f:
        w = dpkt.pcap.Writer(out_f, linktype=link)
        for ts, eth in out:
            w.writepkt(bytes(eth), ts)


def shape(ex) -> tuple:
    return (ex.status, ex.request.command.code if ex.request else None,
            ex.response.command.code if ex.response else None)


def test_grpc_server_first_on_an_unusual_port_is_recognised_from_its_settings(tmp_path):
    original = [ex for ex in analyze([str(CAPTURE)]).exchanges if ex.protocol == "grpc"]
    path = tmp_path / "g.pcap"
    _rewrite(path)
    got = [ex for ex in analyze([str(path)]).exchanges if ex.protocol == "grpc"]
    assert sorted(map(shape, got)) == sorted(map(shape, original))
    assert {ex.connection.server[1] for ex in got} == {PORT}
    first = min(got, key=lambda ex: ex.connection.id).connection  # the reordered one
    assert first.recognised_by == "settings"
    assert {ex.connection.recognised_by for ex in got} <= {"settings", "preface"}
