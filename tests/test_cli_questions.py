"""The question commands end to end: read -Y / --messages, follow, stats --by/--interval, export."""
from __future__ import annotations

import json

import orjson
import pytest
from click.testing import CliRunner

from rmqsniff.cli import main
from rmqsniff.pipeline import analyze
from tests.support.captures import CAPTURES, real_params
from tests.support.remoting_scenario import SCENARIO, write_scenario


def run(*args: str):
    return CliRunner().invoke(main, list(args))


@pytest.fixture(scope="module")
def cap(tmp_path_factory):
    path = tmp_path_factory.mktemp("cli") / "scenario.pcap"
    write_scenario(path)
    return str(path)


def opaques(out: str) -> set[int]:
    return {(d["request"] or d["response"])["opaque"] for d in map(orjson.loads, out.splitlines())}


def want(*labels: str) -> set[int]:
    return {SCENARIO[k][2].opaque for k in labels}


def test_read_filter_jsonl(cap):
    r = run("read", cap, "--format", "jsonl", "-Y", 'code == SEND_MESSAGE_V2 and topic ~ "order.*" and latency > 5ms')
    assert r.exit_code == 0, r.stderr
    assert opaques(r.stdout) == want("a2")


def test_read_filter_json_array(cap):
    r = run("read", cap, "--format", "json", "-Y", "status == error")
    assert r.exit_code == 0
    assert {d["request"]["opaque"] for d in json.loads(r.stdout)} == want("a2", "c1")
    r = run("read", cap, "--format", "json", "-Y", "topic == nothing")
    assert json.loads(r.stdout) == []


def test_read_filter_table(cap):
    r = run("read", cap, "-Y", "client == 10.0.1.3")
    assert r.exit_code == 0
    lines = r.stdout.splitlines()
    assert len(lines) == 2 and "GET_ROUTEINFO_BY_TOPIC" in lines[1] and "TOPIC_NOT_EXIST" in lines[1]
    assert "\x1b[" not in r.stdout  # plain when not a terminal


def test_bad_filter_gives_a_caret(cap):
    r = run("read", cap, "-Y", "code == SEND_MESAGE_V2")
    assert r.exit_code == 1
    assert r.stdout == ""
    err = r.stderr.splitlines()
    assert "unknown code 'SEND_MESAGE_V2'" in err[0]
    assert err[1].strip() == "code == SEND_MESAGE_V2"
    assert err[2].index("^") - err[1].index("c") == len("code == ")
    assert "Traceback" not in r.stderr


def test_read_messages(cap):
    r = run("read", cap, "--messages", "--format", "jsonl")
    assert r.exit_code == 0
    rows = [orjson.loads(x) for x in r.stdout.splitlines()]
    assert [(d["kind"], d["unique_key"]) for d in rows] == [
        ("sent", "U1"), ("sent", "U4"), ("sent", "U5"), ("batch-sent", "UB0"), ("batch-sent", "UB1"),
        ("batch-sent", "UB2"), ("pulled", "U2"), ("pulled", "U3")]
    assert rows[0]["preview"] == "hello orders" and "body" not in rows[0]
    r = run("read", cap, "--messages", "--body", "--format", "jsonl", "-Y", "topic == payments")
    (d,) = [orjson.loads(x) for x in r.stdout.splitlines()]
    assert d["body"] == "p" * 5000 and d["body_size"] == 5000
    r = run("read", cap, "--messages", "-Y", "msgid == U3")
    assert r.exit_code == 0
    assert "squeezed text" in r.stdout and "U3" in r.stdout and "U1" not in r.stdout


def test_follow(cap):
    r = run("follow", cap, "10.0.1.2:40002")
    assert r.exit_code == 0, r.stderr
    assert r.stdout.count(">>") == 3 and r.stdout.count("<<") == 2
    r = run("follow", cap, "#0", "--format", "json")
    doc = json.loads(r.stdout)
    assert doc["connection"]["client"] == "10.0.1.1:40001"
    # a1..a5: five requests, four answers (a4 is oneway)
    assert [f["role"] for f in doc["frames"]].count("request") == 5
    assert [f["role"] for f in doc["frames"]].count("response") == 4
    r = run("follow", cap, "77")
    assert r.exit_code == 1 and "no connection matches" in r.stderr


def test_stats_by_json_sums_to_total(cap):
    for by in ("code", "topic", "group", "client", "broker"):
        r = run("stats", cap, "--by", by, "--format", "json")
        assert r.exit_code == 0, r.stderr
        doc = json.loads(r.stdout)
        assert sum(x["requests"] for x in doc["rows"]) == doc["total"]["requests"] == len(SCENARIO)
        assert sum(x["errors"] for x in doc["rows"]) == doc["total"]["errors"] == 2  # a2, c1


def test_stats_by_with_filter_top_and_sort(cap):
    doc = json.loads(run("stats", cap, "--by", "topic", "--format", "json", "-Y", "client == 10.0.1.1").stdout)
    assert {x["key"]: x["requests"] for x in doc["rows"]} == {
        "orders_eu": 1, "orders_us": 1, "payments": 1, "batchy": 1, "<none>": 1}
    doc = json.loads(run("stats", cap, "--by", "code", "--format", "json", "--top", "1").stdout)
    assert [(x["key"], x["requests"]) for x in doc["rows"]] == [("SEND_MESSAGE_V2", 3)]
    doc = json.loads(run("stats", cap, "--by", "code", "--format", "json", "--sort", "max").stdout)
    assert doc["rows"][0]["key"] == "PULL_MESSAGE"  # b2 waited 30 ms


def test_stats_table_and_interval(cap):
    r = run("stats", cap, "--by", "code")
    assert r.exit_code == 0
    assert "SEND_MESSAGE_V2" in r.stdout and "total" in r.stdout and "p99 ms" in r.stdout
    r = run("stats", cap, "--interval", "10ms", "--format", "json")
    doc = json.loads(r.stdout)
    assert sum(x["requests"] for x in doc["rows"]) == len(SCENARIO)
    assert all(x["rate"] == pytest.approx(x["requests"] / 0.01) for x in doc["rows"])
    r = run("stats", cap, "--interval", "soon")
    assert r.exit_code == 2 and "not a positive duration" in r.stderr  # a usage error


def test_stats_filtered_envoy(cap):
    r = run("stats", cap, "-Y", "code == SEND_MESSAGE_V2")
    assert r.exit_code == 0
    assert "rocketmq.rmqsniff.send_message_v2: 3\n" in r.stdout
    assert "rocketmq.rmqsniff.request: 3\n" in r.stdout
    assert "rocketmq.rmqsniff.response_error: 1\n" in r.stdout
    r = run("stats", cap, "--by", "code", "--format", "envoy")
    assert r.exit_code == 2 and "--by" in r.stderr  # a usage error


def test_export_pcapng_then_read(cap, tmp_path):
    out = tmp_path / "x.pcapng"
    r = run("export", cap, "-Y", "status == error or tag == TagB", "--format", "pcapng", "-o", str(out))
    assert r.exit_code == 0, r.stderr
    r = run("read", str(out), "--format", "jsonl")
    assert opaques(r.stdout) == want("a2", "c1", "b1")


def test_export_jsonl_csv(cap, tmp_path):
    out = tmp_path / "x.jsonl"
    assert run("export", cap, "-Y", "group == CG1", "-o", str(out)).exit_code == 0
    assert opaques(out.read_text()) == want("b1", "b2", "b3")
    r = run("export", cap, "-Y", "group == CG1", "--format", "csv", "-o", "-")
    assert len(r.stdout.splitlines()) == 4


def test_nothing_read_is_exit_1(tmp_path):
    r = run("read", str(tmp_path / "missing.pcap"), "-Y", "topic == x")
    assert r.exit_code == 1


# ---------------------------------------------------------------- real captures

@pytest.mark.parametrize("name", real_params())
def test_real_grouped_stats_sum_to_totals(name):
    path = str(CAPTURES / f"{name}.pcap")
    res = analyze([path])
    with_request = sum(1 for e in res.exchanges if e.request is not None)
    for by in ("code", "topic", "group", "client", "broker"):
        r = run("stats", path, "--by", by, "--format", "json")
        assert r.exit_code == 0, r.stderr
        doc = json.loads(r.stdout)
        assert sum(x["requests"] for x in doc["rows"]) == doc["total"]["requests"] == with_request, by
        assert sum(x["errors"] for x in doc["rows"]) == doc["total"]["errors"], by
        assert sum(x["bytes"] for x in doc["rows"]) == doc["total"]["bytes"], by


@pytest.mark.parametrize("name", real_params())
def test_real_messages_command_ids(name):
    truth = json.loads((CAPTURES / f"{name}.truth.json").read_text())
    r = run("read", str(CAPTURES / f"{name}.pcap"), "--messages", "--format", "jsonl",
            "-Y", f'topic == "{truth["topic"]}" and code in {{SEND_MESSAGE, SEND_MESSAGE_V2, SEND_BATCH_MESSAGE}}')
    assert r.exit_code == 0, r.stderr
    got = {d["unique_key"] for d in map(orjson.loads, r.stdout.splitlines())}
    assert got == {s["msg_id"] for s in truth["sent"]}


def test_real_grpc_capture_questions(tmp_path):
    path = CAPTURES / "grpc_java.pcap"
    if not path.exists():
        pytest.skip("captures/grpc_java.pcap not there yet (python -m tests.rocketmq writes it)")
    from dissectors.grpc.schema import BY_NAME

    res = analyze([str(path)])
    send = BY_NAME["SendMessage"].code
    grpc_sends = {e.index for e in res.exchanges if e.protocol == "grpc" and e.code == send}
    assert grpc_sends
    r = run("read", str(path), "--format", "jsonl", "-Y", "code == SendMessage")
    assert r.exit_code == 0, r.stderr
    # a gRPC method name selects that method's calls only, never remoting requests with the same number
    assert {d["index"] for d in map(orjson.loads, r.stdout.splitlines())} == grpc_sends
    for args in (["read", str(path), "-Y", "protocol == grpc"], ["follow", str(path), f"#{min(grpc_sends)}"],
                 ["export", str(path), "-Y", "protocol == grpc", "--format", "csv", "-o", str(tmp_path / "g.csv")],
                 ["stats", str(path), "--by", "code", "--format", "json"]):
        r = run(*args)
        assert r.exit_code == 0, (args, r.stderr)
    doc = json.loads(run("stats", str(path), "--by", "code", "--format", "json").stdout)
    assert {x["key"]: x["requests"] for x in doc["rows"]}["grpc:SendMessage"] == len(grpc_sends)
