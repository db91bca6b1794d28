"""Transactional replay against the real RocketMQ 5.3 cluster.

``captures/remoting_transaction.pcap``: 5 half messages of a real TransactionMQProducer, local
states UNKNOW x3 (committed later, on the broker's check-back), COMMIT and ROLLBACK. Replayed
to a fresh topic, every END_TRANSACTION must name the half message *staging* stored (its
commit-log offset and queue offset, from the replayed send's answer or staging's own
check-back), not production's: then a real consumer of the new topic reads exactly the 4
committed messages, and the rolled-back one never appears.
"""
from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest
from click.testing import CliRunner

from rmqsniff.cli_replay import replay
from rmqsniff.pipeline import analyze
from tests.support.replay_cluster import consume

ROOT = Path(__file__).resolve().parent.parent
CAPTURE = ROOT / "captures" / "remoting_transaction.pcap"
TRUTH = ROOT / "captures" / "remoting_transaction.truth.json"

pytestmark = pytest.mark.rocketmq


def test_transaction_replay_commits_exactly_what_was_committed(rocketmq_cluster, tmp_path):
    cluster = rocketmq_cluster
    truth = json.loads(TRUTH.read_text())
    exchanges = analyze([str(CAPTURE)]).exchanges
    servers = {ex.connection.server for ex in exchanges}
    ours = {("127.0.0.1", cluster.ports.namesrv), ("127.0.0.1", cluster.ports.broker)}

    topic = f"TxReplay_{uuid.uuid4().hex[:6]}"
    cluster.admin(f"topic={topic}")
    report_file = tmp_path / "report.json"
    res = CliRunner().invoke(replay, [
        str(CAPTURE), "--target", cluster.namesrv_addr, "--allow-target", "127.0.0.1",
        "--map-topic", f"TopicTrans={topic}", "--max", "--report", str(report_file), "--format", "json",
        "--no-progress", *(["--i-know-this-is-production"] if servers & ours else [])])
    assert res.exit_code == 0, res.output
    rep = json.loads(report_file.read_text())
    codes = {r["name"]: r for r in rep["codes"]}
    assert codes["SEND_MESSAGE_V2"]["count"] == codes["SEND_MESSAGE_V2"]["success"] == 5
    assert codes["END_TRANSACTION"]["count"] == 5 + 3  # the immediate ones and those after check-back
    assert rep["unmapped_state"] == {} and rep["not_sent"] == {}

    committed = set(truth["committed_ids"])
    rolled_back = {m["msg_id"] for m in truth["sent"]} - committed
    assert len(committed) == 4 and len(rolled_back) == 1
    # wait for one more than were committed: the rolled-back message must not turn up meanwhile
    got = consume(cluster, topic, expected=len(committed) + 1, timeout_ms=15_000)
    ids = [m["msgId"] for m in got]
    assert sorted(ids) == sorted(committed), (ids, committed)
    assert not set(ids) & rolled_back

