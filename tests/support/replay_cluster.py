"""Replay tests on the real cluster: the captured producer session they replay
(``captures/remoting_json.pcap``), the Java consumer that reads what a replay produced
(``tests/test_replay_consumer.java``) and the production-override flag the capture needs."""
from __future__ import annotations

import json
import subprocess
import uuid
from pathlib import Path

from rmqsniff.pipeline import analyze

ROOT = Path(__file__).resolve().parent.parent.parent
PRODUCER_CAPTURE = ROOT / "captures" / "remoting_json.pcap"
PRODUCER_TRUTH = ROOT / "captures" / "remoting_json.truth.json"
CONSUMER_SRC = ROOT / "tests" / "test_replay_consumer.java"


def consumer_classes() -> Path:
    from tests.rocketmq import build

    lib = build.build_server()
    return build._javac([CONSUMER_SRC], lib, build.cache_dir() / "replay-consumer-classes")


def consume(cluster, topic: str, expected: int, timeout_ms: int = 60_000) -> list[dict]:
    cmd = cluster.java_cmd("clients/replay", consumer_classes(), "ReplayConsumer", cluster.namesrv_addr,
                           topic, f"CG_replay_{uuid.uuid4().hex[:6]}", str(expected), str(timeout_ms))
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_ms / 1000 + 60)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    return [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]


def prod_flag(cluster) -> list[str]:
    """The capture was made on the default ports: if this cluster uses them too, its
    addresses are the capture's own servers and replay rightly asks for the override."""
    servers = {c.connection.server for c in analyze([str(PRODUCER_CAPTURE)]).exchanges}
    ours = {("127.0.0.1", cluster.ports.namesrv), ("127.0.0.1", cluster.ports.broker)}
    return ["--i-know-this-is-production"] if servers & ours else []
