"""``rmqsniff lag`` against the real RocketMQ 5.3 cluster's own figures.

A real push consumer (``tests/rocketmq/consumer/OffsetScenario.java``) consumes the first
messages of a fresh topic and stops (its offsets persisted); the producer then sends more
that nobody consumes, so every queue lags.  All of it is captured with tcpdump.  Queue by
queue, the lag rows of the capture equal what ``mqadmin consumerProgress`` (rocketmq-tools'
MQAdminStartup) reports for the group: broker offset, consumer offset and their difference.
"""
from __future__ import annotations

import json
import re
import subprocess
import time
import uuid
from pathlib import Path

import pytest
from click.testing import CliRunner

from rmqsniff.cli import main

SRC = Path(__file__).resolve().parent / "rocketmq" / "consumer" / "OffsetScenario.java"
CONSUMED, LEFT = 12, 9  # consumed by the push consumer / sent after it stopped

pytestmark = pytest.mark.rocketmq


def _scenario(cluster, mode: str, topic: str, group: str, n: int) -> list[dict]:
    from tests.rocketmq import build

    classes = build._javac([SRC], build.build_server(), build.cache_dir() / "offset-scenario-classes")
    cmd = cluster.java_cmd("clients/offset", classes, "OffsetScenario", mode, cluster.namesrv_addr, topic, group,
                           str(n))
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=200)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    return [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]


def consumer_progress(cluster, group: str) -> dict[tuple[str, str, int], tuple[int, int, int]]:
    """``mqadmin consumerProgress -g GROUP``: (topic, broker, queue) -> (broker offset,
    consumer offset, diff), from its table."""
    from tests.rocketmq import build

    cmd = cluster.java_cmd("tools", build.build_remoting_programs(), "org.apache.rocketmq.tools.command.MQAdminStartup",
                           "consumerProgress", "-n", cluster.namesrv_addr, "-g", group)
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    out = {}
    for line in proc.stdout.splitlines():
        f = line.split()
        # #Topic #Broker Name #QID #Broker Offset #Consumer Offset #Client IP #Diff ...
        if len(f) >= 7 and f[2].isdigit() and re.fullmatch(r"-?\d+", f[3]) and re.fullmatch(r"-?\d+", f[4]):
            diff = next(int(x) for x in f[5:] if re.fullmatch(r"-?\d+", x))
            out[(f[0], f[1], int(f[2]))] = (int(f[3]), int(f[4]), diff)
    assert out, proc.stdout
    return out


def test_lag_equals_mqadmin_consumer_progress_queue_by_queue(rocketmq_cluster, tmp_path):
    from tests.rocketmq.capture import Capture
    from tests.rocketmq.scenarios import capture_ports

    cluster = rocketmq_cluster
    sfx = uuid.uuid4().hex[:6]
    topic, group = f"LagTopic_{sfx}", f"CG_lag_{sfx}"
    cluster.admin(f"topic={topic}", f"group={group}")
    pcap = tmp_path / "lag.pcap"
    ports = capture_ports(cluster)
    cap = Capture(pcap, ports)
    cap.start()
    try:
        lines = _scenario(cluster, "produce-push", topic, group, CONSUMED)
        lines += _scenario(cluster, "produce", topic, group, LEFT)
        time.sleep(1.0)  # the last answers reach the capture
    finally:
        cap.stop()
    assert sum(x["op"] == "sent" for x in lines) == CONSUMED + LEFT

    progress = consumer_progress(cluster, group)
    r = CliRunner().invoke(main, ["lag", str(pcap), "--port", ",".join(map(str, ports)), "--format", "jsonl",
                                  "-Y", f'topic == "{topic}" or code == GET_ROUTEINFO_BY_TOPIC'])
    assert r.exit_code == 0, r.output
    rows = [json.loads(x) for x in r.stdout.splitlines()]
    got = {(x["topic"], x["broker"], x["queue"]): (x["broker_offset"], x["consumer_offset"], x["lag"])
           for x in rows if x["group"] == group}
    want = {k: v for k, v in progress.items() if k[0] == topic}
    assert got == want
    assert sum(v[2] for v in want.values()) == LEFT
