"""Replay against the real RocketMQ 5.3 cluster: a captured producer session re-sent to
another topic; a real consumer then reads exactly the captured messages, twice."""
from __future__ import annotations

import json
import uuid
from collections import Counter

import pytest
from click.testing import CliRunner

from rmqsniff.cli_replay import replay
from rmqsniff.pipeline import analyze
from tests.support.replay_cluster import PRODUCER_CAPTURE as CAPTURE
from tests.support.replay_cluster import PRODUCER_TRUTH as TRUTH
from tests.support.replay_cluster import consume, prod_flag

pytestmark = pytest.mark.rocketmq


def test_replay_producer_capture_twice_into_another_topic(rocketmq_cluster, tmp_path):
    cluster = rocketmq_cluster
    topic = f"ReplayTopic_{uuid.uuid4().hex[:6]}"
    cluster.admin(f"topic={topic}")
    report_file = tmp_path / "report.json"
    res = CliRunner().invoke(replay, [
        str(CAPTURE), "--target", cluster.namesrv_addr, "--allow-target", "127.0.0.1",
        "--map-topic", f"TopicTest={topic}", "--scale", "2", "--max", "--report", str(report_file),
        "--format", "json", "--no-progress", *prod_flag(cluster)])
    assert res.exit_code == 0, res.output
    rep = json.loads(report_file.read_text())

    truth = json.loads(TRUTH.read_text())
    captured = Counter((m["body_sha256"], m["tags"], m["keys"]) for m in truth["sent"])
    got = consume(cluster, topic, expected=2 * len(truth["sent"]))
    consumed = Counter((m["body_sha256"], m["tags"], m["keys"]) for m in got)
    assert consumed == Counter({k: 2 * n for k, n in captured.items()})
    # ids are kept per copy (see replay.engine.rewrite): every consumed id is a captured UNIQ_KEY
    captured_ids = {m["msg_id"] for m in truth["sent"]}
    batch_id = next(ex.response.command.ext["transactionId"] for ex in analyze([str(CAPTURE)]).exchanges
                    if ex.request and ex.request.command.code == 320 and ex.response)
    assert {m["msgId"] for m in got} <= captured_ids | {batch_id}

    # the report's counts: 42 V2 sends + 1 batch per copy; oneway sends have no answer
    codes = {r["name"]: r for r in rep["codes"]}
    assert codes["SEND_MESSAGE_V2"]["count"] == 2 * 42
    assert codes["SEND_BATCH_MESSAGE"]["count"] == 2
    assert codes["SEND_MESSAGE_V2"]["success"] == 2 * (42 - 5)
    assert codes["SEND_MESSAGE_V2"]["errors"] == 0 and codes["SEND_BATCH_MESSAGE"]["errors"] == 0
    assert rep["sent"] == rep["planned"] == rep["answered"] + rep["oneway"] + rep["unanswered"]
    assert rep["oneway"] == 2 * 5 and rep["unanswered"] == 0
    topics = {r["name"]: r for r in rep["topics"]}
    assert topics[topic]["count"] >= 2 * 43
    # the proxy saw exactly what the report counts
    proxy = rep["proxy"]["counters"]
    assert rep["via"] == "proxy"
    assert proxy["request"] == rep["sent"]
    assert proxy["answered"] == rep["answered"] and proxy["oneway"] == rep["oneway"]
    assert proxy["response_error"] == rep["errors"]
    # every send answered like the recording (ids/offsets/queues are noise)
    assert not any(k.startswith("code") and "SEND" in str(rep["diff"]["examples"][k][0]["request"])
                   for k in rep["diff"]["mismatches"])


def test_replay_direct_with_rate_and_duration(rocketmq_cluster):
    cluster = rocketmq_cluster
    topic = f"ReplayRate_{uuid.uuid4().hex[:6]}"
    cluster.admin(f"topic={topic}")
    res = CliRunner().invoke(replay, [
        str(CAPTURE), "--target", cluster.namesrv_addr, "--allow-target", "127.0.0.1", "--direct",
        "--map-topic", f"TopicTest={topic}", "--rate", "200/s", "--loop", "50", "--duration", "2s",
        "--format", "json", "--no-progress", *prod_flag(cluster)])
    assert res.exit_code == 0, res.output
    rep = json.loads(res.stdout)
    assert rep["via"] == "direct" and rep["proxy"] is None
    assert rep["not_sent"].get("--duration reached", 0) > 0
    # ~2 s at 200/s: about 400 requests, none dropped for being late
    assert 300 <= rep["sent"] <= 420
    assert rep["rate"]["requested"] == 200.0
    assert 0.8 <= rep["rate"]["ratio"] <= 1.1
    # the only errors: route lookups of a consumer's retry topic that staging does not have
    for row in rep["codes"]:
        if row["name"] != "GET_ROUTEINFO_BY_TOPIC":
            assert row["errors"] == 0, row
        else:
            assert set(row["errors_by_response"]) <= {"TOPIC_NOT_EXIST"}
