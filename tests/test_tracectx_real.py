"""Trace context and RocketMQ message trace on real traffic, against the clients' own record.

Scenarios (tests/rocketmq/scenarios.py): ``remoting_tracectx`` (Java remoting producer and
push consumer with ``enableMsgTrace``; its messages carry ``traceparent``/``tracestate``, ``sw8``
or ``b3``), ``grpc_tracectx`` (Python gRPC client through the proxy; ``traceparent``, ``sw8``,
``b3``, ``X-B3-*`` or ``uber-trace-id``) and ``remoting_txtrace`` (a transactional producer with
``enableMsgTrace``: EndTransaction records).  The ``committed`` tests read the bundled captures; the ``rocketmq`` ones
capture the same scenarios afresh from a real cluster.  The expected ids are read from what the
client set (its truth file), split by hand here, not by the decoder under test.
"""
from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import orjson
import pytest
from click.testing import CliRunner

from dissectors.msgtrace import parse_trace_body
from dissectors.tracectx import trace_context
from rmqsniff.cli import main
from rmqsniff.pipeline import analyze
from rmqsniff.views import messages_of
from tests.support.captures import CAPTURES

SCENARIOS = ("remoting_tracectx", "grpc_tracectx")
TX = "remoting_txtrace"
DELIVERED = ("pulled", "popped", "received")


def committed(name: str) -> tuple[Path, dict[str, Any]]:
    pcap, truth = CAPTURES / f"{name}.pcap", CAPTURES / f"{name}.truth.json"
    if not pcap.exists() or not truth.exists():
        pytest.skip(f"{name}.pcap (+ .truth.json) not in captures/")
    return pcap, json.loads(truth.read_text())


def cli_jsonl(*args: str) -> list[dict[str, Any]]:
    r = CliRunner().invoke(main, [*args, "--format", "jsonl"])
    assert r.exit_code == 0, r.output
    return [orjson.loads(line) for line in r.output.splitlines() if line.startswith("{")]


def expected(props: dict[str, str]) -> tuple[str, str, str]:
    """(format, trace id, span id) of what the client set."""
    if "traceparent" in props:
        _, tid, sid, _ = props["traceparent"].split("-")
        return "w3c", tid, sid
    if "sw8" in props:
        parts = props["sw8"].split("-")
        return "sw8", base64.b64decode(parts[1]).decode(), parts[3]
    if "b3" in props:
        tid, sid = props["b3"].split("-")[:2]
        return "b3", tid, sid
    if "uber-trace-id" in props:
        tid, sid = props["uber-trace-id"].split(":")[:2]
        return "jaeger", tid, sid
    return "b3-multi", props["X-B3-TraceId"], props["X-B3-SpanId"]


def check_trace_context(pcap: Path, truth: dict[str, Any]) -> None:
    rows = cli_jsonl("read", str(pcap), "--messages")
    sent = {r["unique_key"]: r for r in rows if r["kind"] == "sent" and r["topic"] == truth["topic"]}
    assert sorted(sent) == sorted(s["msg_id"] for s in truth["sent"])
    formats = set()
    for s in truth["sent"]:
        fmt, tid, sid = expected(s["user_properties"])
        t = sent[s["msg_id"]]["trace"]
        assert (t["format"], t["trace_id"], t["span_id"]) == (fmt, tid, sid), s["msg_id"]
        assert "problem" not in t and t["sampled"] is True
        formats.add(fmt)
        if fmt == "w3c":
            assert t["extra"]["tracestate"] == s["user_properties"]["tracestate"]
        if fmt == "sw8":  # every base64 part decoded
            parts = s["user_properties"]["sw8"].split("-")
            assert [t["extra"][k] for k in ("segment_id", "service", "instance", "endpoint", "target_address")] \
                == [base64.b64decode(p).decode() for p in parts[2:3] + parts[4:]]
    assert {"w3c", "sw8", "b3"} <= formats
    # the consumer got the same context
    delivered = [r for r in rows if r["kind"] in DELIVERED and r["unique_key"] in sent]
    assert {r["unique_key"] for r in delivered} == set(sent)
    for r in delivered:
        assert r["trace"] == sent[r["unique_key"]]["trace"]
    # -Y 'trace_id == …' selects exactly the exchanges that carry a message with that trace id
    for s in truth["sent"][:4]:
        tid = expected(s["user_properties"])[1]
        carriers = {r["exchange"] for r in rows if r["trace"] and r["trace"]["trace_id"] == tid}
        assert len(carriers) >= 2  # the send and at least one delivery
        picked = cli_jsonl("read", str(pcap), "-Y", f'trace_id == "{tid}"')
        assert {d["index"] for d in picked} == carriers
        assert cli_jsonl("read", str(pcap), "--messages", "-Y", f'trace_id == "{tid}"')


def check_message_trace(pcap: Path, truth: dict[str, Any]) -> None:
    rows = cli_jsonl("read", str(pcap), "--messages")
    carriers = [r for r in rows if r["kind"] == "sent" and "trace_records" in r]
    assert carriers and all(r["topic"] == "RMQ_SYS_TRACE_TOPIC" for r in carriers)
    recs = [rec for r in carriers for rec in r["trace_records"]]
    assert all("problem" not in rec for rec in recs)
    by_type: dict[str, dict[str, dict[str, Any]]] = {}
    for rec in recs:
        by_type.setdefault(rec["type"], {})[rec["msg_id"]] = rec
    ids = {s["msg_id"] for s in truth["sent"]}
    assert set(by_type["Pub"]) == ids
    assert set(by_type["SubBefore"]) == ids and set(by_type["SubAfter"]) == ids
    tag = truth["topic"]
    for s in truth["sent"]:
        pub = by_type["Pub"][s["msg_id"]]
        assert (pub["offset_msg_id"], pub["topic"], pub["tags"], pub["keys"], pub["group"], pub["success"]) == (
            s["offset_msg_id"], s["topic"], s["tags"], [s["keys"]], f"PG_{tag}", True)
        assert pub["cost_ms"] >= 0 and pub["store_host"] and pub["extra"]["body_length"] == str(s["body_len"])
        after = by_type["SubAfter"][s["msg_id"]]
        assert (after["success"], after["group"], after["keys"]) == (True, f"CG_trace_{tag}", [s["keys"]])
        assert after["cost_ms"] >= 0 and after["extra"]["consume_return"] == "SUCCESS"
        assert by_type["SubBefore"][s["msg_id"]]["extra"]["retry_times"] == "0"


def check_end_transaction(pcap: Path, truth: dict[str, Any]) -> None:
    """EndTransaction records: one per immediate decision (the planned state) and one per
    check-back answer (fromTransactionCheck), for exactly the client's transactional messages."""
    rows = cli_jsonl("read", str(pcap), "--messages")
    recs = [rec for r in rows if r["kind"] == "sent" for rec in r.get("trace_records") or ()]
    assert recs and all("problem" not in rec for rec in recs)
    ends = [rec for rec in recs if rec["type"] == "EndTransaction"]
    immediate = {(e["msg_id"], e["extra"]["transaction_state"]) for e in ends
                 if e["extra"]["from_transaction_check"] == "false"}
    assert immediate == {(s["msg_id"], s["planned_state"]) for s in truth["sent"]}
    checked = {f'{e["msg_id"]} {e["extra"]["transaction_state"]}' for e in ends
               if e["extra"]["from_transaction_check"] == "true"}
    assert checked == set(truth["check_answers"])
    for e in ends:
        assert e["topic"] == truth["topic"] and e["group"] == f"PG_{truth['topic']}"
        # the client's end-transaction hook writes MessageType Trans_msg_Commit whatever the state
        assert e["extra"]["msg_type"] == "Trans_msg_Commit" and e["extra"]["transaction_id"]
    pubs = {rec["msg_id"]: rec for rec in recs if rec["type"] == "Pub"}
    assert set(pubs) == {s["msg_id"] for s in truth["sent"]}
    assert {p["extra"]["msg_type"] for p in pubs.values()} == {"Trans_Msg_Half"}


def test_committed_end_transaction_records():
    check_end_transaction(*committed(TX))


def test_committed_remoting_trace_context():
    check_trace_context(*committed("remoting_tracectx"))


def test_committed_grpc_trace_context():
    check_trace_context(*committed("grpc_tracectx"))


def test_committed_message_trace_records():
    check_message_trace(*committed("remoting_tracectx"))


def test_committed_table_and_detail_show_trace():
    pcap, truth = committed("remoting_tracectx")
    r = CliRunner().invoke(main, ["read", str(pcap), "--messages"])
    tid = expected(truth["sent"][0]["user_properties"])[1]
    assert "trace" in r.output.splitlines()[0] and f"w3c:{tid}" in r.output
    assert "msgtrace Pub×" in r.output
    from rmqsniff.tui.detail import exchange_tree

    ex = next(ex for ex in analyze([str(pcap)]).exchanges if any(
        m.unique_key == truth["sent"][0]["msg_id"] and m.kind == "sent" for m in messages_of(ex)))
    labels = [n.label for n in exchange_tree(ex).walk()]
    assert any(lb.startswith(f"message 0 trace: w3c trace id {tid}") for lb in labels)


# ---- malformed variants of the real values and bodies

def _real() -> tuple[list[Any], dict[str, dict[str, str]]]:
    pcap, _ = committed("remoting_tracectx")
    rows = [m for ex in analyze([str(pcap)]).exchanges for m in messages_of(ex)]
    props: dict[str, dict[str, str]] = {}
    for m in rows:
        for k in ("traceparent", "sw8", "b3"):
            if k in m.properties:
                props.setdefault(k, m.properties)
    return [m.body for m in rows if m.topic == "RMQ_SYS_TRACE_TOPIC" and m.kind == "sent"], props


def test_malformed_variants_of_real_trace_context():
    _, props = _real()
    tp = props["traceparent"]["traceparent"]
    for bad, why in ((tp.upper(), "lowercase"), ("ff" + tp[2:], "version ff"), (tp[:3] + "0" * 32 + tp[35:], "zeros"),
                     (tp[:-3], "fields")):
        tc = trace_context({"traceparent": bad})
        assert tc is not None and tc.format == "w3c" and why in (tc.problem or ""), bad
    sw8 = props["sw8"]["sw8"].split("-")
    for bad, why in (("-".join(sw8[:7]), "8 expected"), ("-".join([sw8[0], "%%%", *sw8[2:]]), "trace id"),
                     ("-".join([*sw8[:3], "one", *sw8[4:]]), "span id")):
        tc = trace_context({"sw8": bad})
        assert tc is not None and why in (tc.problem or ""), bad
    tid, sid, *_ = props["b3"]["b3"].split("-")
    for bad, why in ((f"{tid}-{sid[:-1]}-1", "span id"), (f"{tid[:-2]}-{sid}", "trace id"),
                     (f"{tid}-{sid}-x", "sampling")):
        tc = trace_context({"b3": bad})
        assert tc is not None and why in (tc.problem or ""), bad


def test_malformed_variants_of_real_trace_bodies():
    bodies, _ = _real()
    body = max(bodies, key=len)
    good = parse_trace_body(body)
    assert good and all(r.problem is None for r in good)
    # cut in the middle of the last record: the ones before decode as before, the cut one is told
    cut = body[: body.rindex(b"\x02", 0, len(body) - 1) + 8]
    recs = parse_trace_body(cut)
    assert recs[:-1] == good[:-1] and recs[-1].problem is not None
    # a number field that is not a number: that record says so, the others are unchanged
    first_end = body.index(b"\x02")
    fields = body[:first_end].split(b"\x01")
    fields[1] = b"soon"
    recs = parse_trace_body(b"\x01".join(fields) + body[first_end:])
    assert "not a number" in (recs[0].problem or "") and recs[1:] == good[1:]
    # bytes that are not UTF-8 do not stop decoding
    assert len(parse_trace_body(body.replace(b"DefaultRegion", b"Default\xffegion"))) == len(good)


@pytest.mark.rocketmq
@pytest.mark.parametrize("name", SCENARIOS)
def test_real_cluster_trace_context(rocketmq_capture, name):
    pcap, truth = rocketmq_capture(name)
    check_trace_context(pcap, truth)


@pytest.mark.rocketmq
def test_real_cluster_message_trace_records(rocketmq_capture):
    check_message_trace(*rocketmq_capture("remoting_tracectx"))


@pytest.mark.rocketmq
def test_real_cluster_end_transaction_records(rocketmq_capture):
    check_end_transaction(*rocketmq_capture(TX))
