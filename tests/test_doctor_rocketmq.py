"""rmqsniff doctor on faults made by real clients against the real RocketMQ 5.3 cluster.

Each test runs one mode of tests/rocketmq/java/DoctorFaults.java (the RocketMQ 5.3 Java
client and admin tools) while tcpdump records the cluster's ports on loopback, then checks
the finding, its figures and its evidence.  One cluster for the module (the session's).
"""
from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import pytest

from rmqsniff.doctor import Doctor
from rmqsniff.filter import compile_filter
from rmqsniff.pipeline import analyze

pytestmark = [pytest.mark.rocketmq, pytest.mark.timeout(600)]


def _run_fault(cluster, out: Path, *args: str) -> tuple[Path, str, dict]:
    """Run DoctorFaults ``args`` under tcpdump; (pcap, client output, findings by (id, subject))."""
    from tests.rocketmq import build
    from tests.rocketmq.capture import Capture
    from tests.rocketmq.scenarios import capture_ports
    from tests.support.tcpdump import settle

    classes = build.build_remoting_programs()
    cmd = cluster.java_cmd("clients/doctor", classes, "DoctorFaults", args[0], cluster.namesrv_addr, *args[1:])
    pcap = out / f"{args[0]}.pcap"
    env = dict(os.environ, HOME=str(cluster.dir("clients/doctor")))
    env.pop("NAMESRV_ADDR", None)
    with Capture(pcap, capture_ports(cluster)):
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env,
                              cwd=cluster.dir("clients/doctor"))
        time.sleep(1.0)
        settle(pcap)
    assert proc.returncode == 0, "\n".join((proc.stdout + proc.stderr).splitlines()[-40:])
    a = analyze([str(pcap)])
    found = {(f.id, f.subject): f for f in Doctor().feed_all(a.exchanges).findings()}
    for f in found.values():  # every evidence filter selects its exchanges
        if f.evidence.exchanges:
            flt = compile_filter(f.filter)
            assert set(f.evidence.exchanges) <= {ex.index for ex in a.exchanges if flt(ex)}, f.to_dict()
    return pcap, proc.stdout, found


def test_missing_topic(rocketmq_cluster, tmp_path):
    """A topic nobody created: the producer's route lookups fail, and its send is answered
    TOPIC_NOT_EXIST as with autoCreateTopicEnable=false (the broker is not switched: see
    DoctorFaults.missingTopic, RocketMQ then breaks topic creation for every later test); both
    findings name the topic."""
    topic = f"DoctorMissing{os.getpid()}"
    _, out, found = _run_fault(rocketmq_cluster, tmp_path, "missing-topic", topic)
    assert "SEND_FAILED" in out, out
    assert "AUTO_CREATE_AGAIN SEND_OK" in out, out  # the shared cluster creates topics again afterwards
    route = found[("route-topic-missing", topic)]
    assert route.severity == "warning" and route.evidence.count >= 1
    assert f'topic == "{topic}"' in route.filter
    send = found[("send-topic-missing", topic)]
    assert send.severity == "error" and send.evidence.count >= 1
    assert send.evidence.connections and all(c.endswith(f":{rocketmq_cluster.ports.broker}")
                                             for c in send.evidence.connections)


def test_group_members_with_different_tags(rocketmq_cluster, tmp_path):
    """Two push consumers of one group, one on TagA, one on TagB: mixed-subscriptions names both."""
    topic, group = "TopicTest", f"CG_doctor_mixed{os.getpid()}"
    _, out, found = _run_fault(rocketmq_cluster, tmp_path, "mixed-subscriptions", topic, group)
    ids = out.split("CONSUMERS ", 1)[1].split()
    f = found[("mixed-subscriptions", group)]
    assert f.severity == "error"
    retry = f"%RETRY%{group}:*"  # the push consumer subscribes its group's retry topic too
    assert f.evidence.figures == {ids[0]: f"{retry}, {topic}:TagA", ids[1]: f"{retry}, {topic}:TagB"}
    assert "2 different subscriptions" in f.summary
    assert ("mixed-clients", group) not in found  # one client, one version


def test_transaction_producer_answering_unknown(rocketmq_cluster, tmp_path):
    """A transactional producer answering UNKNOW to every check: the broker checks the same half
    message again and again (transactionCheckInterval=3000 in the test cluster)."""
    _, out, found = _run_fault(rocketmq_cluster, tmp_path, "transaction-unknown", "TopicTrans", "14000")
    checks = int(out.split("CHECKS ", 1)[1].split()[0])
    assert checks >= 3, out
    f = found[("transaction-check-storm", "PG_doctor_tx")]
    assert f.severity == "warning"
    assert f.evidence.figures["max_checks"] == checks
    assert f.evidence.figures["unknow_answers"] == checks + 1  # the send's own UNKNOW, then every check's
    assert f.evidence.count == checks - 2  # the third check and every later one


def test_consumers_joining_and_leaving(rocketmq_cluster, tmp_path):
    """One consumer stays while another joins and leaves 8 times: the broker tells the group's
    members again and again that its consumer ids changed."""
    group = f"CG_doctor_churn{os.getpid()}"
    _, out, found = _run_fault(rocketmq_cluster, tmp_path, "rebalance-churn", "TopicTest", group, "8")
    assert "CHURNED 8" in out, out
    f = found[("rebalance-storm", group)]
    assert f.severity == "warning"
    assert f.evidence.count >= 1 and f.evidence.last - f.evidence.first < 60
    assert f'group == "{group}"' in f.filter
