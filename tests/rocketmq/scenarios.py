"""Run one real-client scenario against a running cluster while tcpdump records it.

Each client program writes its own ground truth JSON (ids, offsets, body digests, counts);
:func:`run_scenario` adds capture metadata and returns ``(pcap_path, truth)``.
"""
from __future__ import annotations

import json
import os
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from . import build
from .capture import Capture
from .cluster import Cluster

HERE = Path(__file__).resolve().parent


class ScenarioError(RuntimeError):
    """The client program failed (message carries its output tail)."""


@dataclass(frozen=True)
class Scenario:
    name: str
    kind: str            # "remoting", "remoting-go", "grpc-java", "grpc-python"
    mode: str            # program mode
    topic: str
    jvm: tuple[str, ...] = ()
    description: str = ""
    protocol: str = "remoting"
    extra: dict = field(default_factory=dict)


SCENARIOS: dict[str, Scenario] = {s.name: s for s in [
    Scenario("remoting_json", "remoting", "produce-consume", "TopicTest",
             description="Java remoting client, JSON headers: sync/async/oneway/batch/ordered/delay/"
                         "timer/compressed sends; push, lite-pull and broadcast consumers"),
    Scenario("remoting_rocketmq", "remoting", "produce-consume", "TopicTestBin",
             jvm=("-Drocketmq.serialize.type=ROCKETMQ",),
             description="same as remoting_json with ROCKETMQ binary headers on the client"),
    Scenario("remoting_pop", "remoting", "pop", "TopicPop",
             description="Java remoting producer + push consumer in POP mode (group CG_pop)"),
    Scenario("remoting_transaction", "remoting", "transaction", "TopicTrans",
             description="transactional producer: UNKNOW then COMMIT on broker check-back, plus "
                         "immediate COMMIT and ROLLBACK; push consumer for the committed messages"),
    Scenario("remoting_go", "remoting-go", "produce-consume", "TopicGo",
             description="Go remoting client rocketmq-client-go/v2 (language GO, version 317): "
                         "SEND_MESSAGE (10, long header keys) sync/async/oneway; push consumer "
                         "(PULL_MESSAGE, ConsumeFromFirstOffset)",
             extra={"admin": ("topic=TopicGo",)}),
    Scenario("grpc_java", "grpc-java", "all", "GrpcTopic", protocol="grpc",
             description="Java 5.x gRPC client via proxy: normal/FIFO/delay/transaction producer, "
                         "SimpleConsumer (receive, ack, change invisible duration), PushConsumer"),
    Scenario("grpc_python", "grpc-python", "all", "PyTopic", protocol="grpc",
             description="Python rocketmq-python-client via proxy: producer + SimpleConsumer"),
]}


def capture_ports(cluster: Cluster) -> list[int]:
    """Every cluster port that carries client or inter-server traffic (not the HA port)."""
    p = cluster.ports
    return [p.namesrv, p.broker, p.broker - 2, p.proxy, p.grpc]


def client_command(cluster: Cluster, sc: Scenario, truth_path: Path) -> list[str]:
    if sc.kind == "remoting":
        classes = build.build_remoting_programs()
        return cluster.java_cmd(f"clients/{sc.name}", classes, "RemotingScenario", sc.mode,
                                cluster.namesrv_addr, sc.topic, str(truth_path), jvm=list(sc.jvm))
    if sc.kind == "remoting-go":
        return [str(build.build_go_scenario()), cluster.namesrv_addr, sc.topic, str(truth_path)]
    if sc.kind == "grpc-java":
        classes = build.build_grpc_programs()
        return cluster.java_cmd(f"clients/{sc.name}", classes, "GrpcScenario", cluster.grpc_addr,
                                str(truth_path), lib=build.grpc_lib(),
                                jvm=[*sc.jvm, f"-Drmqsniff.client.version={build.GRPC_CLIENT_VERSION}"])
    if sc.kind == "grpc-python":
        py = build.python_client_venv()
        return [str(py), str(HERE / "py_client_scenario.py"), cluster.grpc_addr, sc.topic, str(truth_path)]
    raise ValueError(sc.kind)


def run_scenario(cluster: Cluster, name: str, out_dir: Path, timeout: float = 240.0) -> tuple[Path, dict]:
    """Capture scenario ``name``; returns the pcap path and the ground truth (also saved beside it)."""
    sc = SCENARIOS[name]
    out_dir = Path(out_dir).resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    pcap = out_dir / f"{name}.pcap"
    truth_path = out_dir / f"{name}.truth.json"
    for p in (pcap, truth_path):
        p.unlink(missing_ok=True)
    cmd = client_command(cluster, sc, truth_path)  # build before capturing
    if sc.extra.get("admin"):
        cluster.admin(*sc.extra["admin"])  # e.g. the topic a client cannot auto-create
    home = cluster.dir(f"clients/{sc.name}")
    home.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, HOME=str(home))
    env.pop("NAMESRV_ADDR", None)
    cap = Capture(pcap, capture_ports(cluster))
    cap.start()
    t0 = time.monotonic()
    try:
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env, cwd=home)
        except subprocess.TimeoutExpired as e:
            out = (e.stdout or b"").decode(errors="replace") + (e.stderr or b"").decode(errors="replace")
            raise ScenarioError(f"scenario {name} timed out after {timeout:.0f}s:\n"
                                + "\n".join(out.splitlines()[-40:])) from None
        time.sleep(1.0)  # let the last FIN/ACKs and oneway frames reach the capture
    finally:
        cap.stop()
    elapsed = time.monotonic() - t0
    (home / "client-output.log").write_text(proc.stdout + proc.stderr)
    if proc.returncode != 0 or not truth_path.exists():
        tail = "\n".join((proc.stdout + proc.stderr).splitlines()[-40:])
        raise ScenarioError(f"scenario {name} failed (exit {proc.returncode}):\n{tail}")
    truth = json.loads(truth_path.read_text())
    truth["scenario"] = name
    truth["description"] = sc.description
    truth["rocketmq_version"] = build.ROCKETMQ_VERSION
    truth["capture"] = {
        "file": pcap.name,
        "filter": cap.filter,
        "ports": {"namesrv": cluster.ports.namesrv, "broker": cluster.ports.broker,
                  "broker_fast": cluster.ports.broker - 2, "proxy_remoting": cluster.ports.proxy,
                  "proxy_grpc": cluster.ports.grpc},
        "seconds": round(elapsed, 1),
        "bytes": pcap.stat().st_size,
    }
    truth_path.write_text(json.dumps(truth, indent=2, sort_keys=False) + "\n")
    return pcap, truth
