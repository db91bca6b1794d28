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
from typing import Any

from . import build, tls
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
    # TLS: "" plaintext; "default" the client's own TLS default; "1.2"/"1.3" the client offers only
    # that version. A TLS scenario's client runs the extract-tls-secrets agent (NAME.keys)
    tls: str = ""

    @property
    def remoting_tls(self) -> bool:
        """Needs a cluster with remoting TLS enforcing (:attr:`Cluster.remoting_tls`)."""
        return bool(self.tls) and self.protocol == "remoting"


SECRET_ACCESS_KEY = "RMQSNIFFak7Q2w9ZleakMe"
SECRET_SECRET_KEY = "rmqsniffSK-3f9c2e1d0b"
SECRET_SECURITY_TOKEN = "STSrmqsniffTok3n9XvQ7bW2kL5pZ8rT4yH6"
SECRETS_JVM = (f"-Drmqsniff.accessKey={SECRET_ACCESS_KEY}", f"-Drmqsniff.secretKey={SECRET_SECRET_KEY}",
               f"-Drmqsniff.securityToken={SECRET_SECURITY_TOKEN}")

TRACE_TOPIC = "RMQ_SYS_TRACE_TOPIC"  # the clients' default message-trace topic

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
    Scenario("grpc_java_tls", "grpc-java", "all", "GrpcTopic", protocol="grpc", tls="default",
             jvm=("-Drmqsniff.tls=true",),
             description="as grpc_java with the client's default TLS (sslEnabled, any server certificate "
                         "trusted, ALPN h2) to the proxy's permissive gRPC port; client on the JDK TLS "
                         "engine, its secrets in grpc_java_tls.keys (extract-tls-secrets agent)"),
    Scenario("remoting_tls13", "remoting", "produce-consume", "TopicTls13", tls="1.3",
             description="as remoting_json over remoting TLS 1.3 (-Dtls.enable=true, "
                         "jdk.tls.client.protocols=TLSv1.3) to name server and broker with "
                         "tls.server.mode=enforcing; client secrets in remoting_tls13.keys, the servers' "
                         "(inter-server connections too) in remoting_tls13.server.keys",
             extra={"admin": ("topic=TopicTls13",)}),
    Scenario("remoting_tls12", "remoting", "produce-consume", "TopicTls12", tls="1.2",
             description="as remoting_tls13 with the client limited to TLS 1.2 "
                         "(jdk.tls.client.protocols=TLSv1.2); inter-server connections stay TLS 1.3",
             extra={"admin": ("topic=TopicTls12",)}),
    Scenario("grpc_python", "grpc-python", "all", "PyTopic", protocol="grpc",
             description="Python rocketmq-python-client via proxy: producer + SimpleConsumer"),
    Scenario("grpc_late_preface", "grpc-python", "all", "LateTopic", protocol="grpc",
             description="Python rocketmq-python-client to a second real proxy whose gRPC port is "
                         "unusual (8081+10000 by default); a relay holds the client's bytes back "
                         "200 ms after each connect: the proxy stays silent until the client's "
                         "preface arrives. Producer ×5 + SimpleConsumer receive/ack",
             extra={"admin": ("topic=LateTopic:NORMAL", "group=GID_late"), "extra_proxy": "late",
                    # routes name the port the client used (the relay's), not grpcServerPort, so
                    # every connection the client makes goes through the relay
                    "extra_proxy_config": {"useEndpointPortFromRequest": True},
                    "client_args": ("--group", "GID_late", "--messages", "5", "--late-preface-ms", "200")}),
    Scenario("remoting_tracectx", "remoting", "trace-context", "TopicTrace", jvm=("-Drmqsniff.msgTrace=true",),
             description="Java remoting producer + push consumer with enableMsgTrace (Pub, SubBefore and "
                         "SubAfter records sent to RMQ_SYS_TRACE_TOPIC); the messages carry traceparent + "
                         "tracestate, sw8 or b3 user properties by turns"),
    Scenario("grpc_tracectx", "grpc-python", "all", "PyTraceTopic", protocol="grpc",
             description="Python rocketmq-python-client via proxy: messages carrying traceparent + tracestate, "
                         "sw8, b3, X-B3-* or uber-trace-id user properties by turns; SimpleConsumer receive/ack",
             extra={"admin": ("topic=PyTraceTopic:NORMAL", "group=GID_py_trace"),
                    "client_args": ("--group", "GID_py_trace", "--messages", "10", "--trace-context")}),
    Scenario("remoting_txtrace", "remoting", "transaction", "TopicTxTrace", jvm=("-Drmqsniff.msgTrace=true",),
             description="as remoting_transaction with enableMsgTrace: Pub and EndTransaction records (the "
                         "immediate COMMIT/ROLLBACK/UNKNOW and the check-back answers) in RMQ_SYS_TRACE_TOPIC"),
    Scenario("remoting_journey", "remoting", "journey", "TopicJourney",
             description="message journeys: 40 keyed sync sends (traceparent on 10, sw8 on 10); push "
                         "consumer CG_journey (1 thread, maxReconsumeTimes 2, retry delay level 1) fails "
                         "the first attempt of 5 (redelivered from %RETRY%CG_journey), every attempt of "
                         "1 (dead-lettered to %DLQ%CG_journey, read back by a lite pull consumer) and "
                         "sleeps 1.5 s on each of a burst of 10; 6 more sends after it stopped (lag)",
             extra={"admin": ("topic=TopicJourney",), "consumer_progress": "CG_journey"}),
    Scenario("remoting_journey_trace", "remoting", "journey-trace", "TopicJourneyTrace",
             description="as remoting_journey (group CG_journey_trace) with enableMsgTrace on producer "
                         "and consumer: Pub/SubBefore/SubAfter records sent to RMQ_SYS_TRACE_TOPIC",
             extra={"admin": ("topic=TopicJourneyTrace",),
                    "consumer_progress": "CG_journey_trace", "trace_topic": TRACE_TOPIC}),
    # ACL credentials on the wire (opt-in switches of the client programs): for tests that no
    # secret leaks.  The keys are made up and distinctive so a leak is easy to find in output.
    Scenario("secrets_remoting", "remoting", "pop", "TopicSecret", jvm=SECRETS_JVM,
             description="Java remoting client signing every request with AclClientRPCHook (extFields "
                         "AccessKey, Signature, SecurityToken), JSON headers: 10 sync sends + POP push consumer"),
    Scenario("secrets_remoting_bin", "remoting", "pop", "TopicSecretBin",
             jvm=(*SECRETS_JVM, "-Drocketmq.serialize.type=ROCKETMQ"),
             description="as secrets_remoting with ROCKETMQ binary headers on the client"),
    Scenario("secrets_grpc", "grpc-java", "all", "GrpcTopic", protocol="grpc", jvm=SECRETS_JVM,
             description="Java 5.x gRPC client with StaticSessionCredentialsProvider: every call carries "
                         "authorization: MQv2-HMAC-SHA1 Credential=AK, ..., Signature=... and x-mq-session-token"),
]}


def extra_proxy_ports(cluster: Cluster) -> tuple[int, int]:
    """(gRPC, remoting) ports of a scenario's extra proxy: ``$RMQSNIFF_LATE_GRPC_PORT`` or the
    cluster's gRPC port + 10000 (18081 by default: no decoder's default), remoting one below."""
    grpc = int(os.environ.get("RMQSNIFF_LATE_GRPC_PORT", cluster.ports.grpc + 10000))
    return grpc, grpc - 1


def capture_ports(cluster: Cluster) -> list[int]:
    """Every cluster port that carries client or inter-server traffic (not the HA port)."""
    p = cluster.ports
    return [p.namesrv, p.broker, p.broker - 2, p.proxy, p.grpc]


def tls_jvm(sc: Scenario, keylog: Path) -> list[str]:
    """A Java TLS scenario's extra JVM options: the agent, the version limit; for the gRPC client
    the JDK engine instead of its bundled tcnative (see :mod:`tests.rocketmq.tls`)."""
    if not sc.tls:
        return []
    if sc.kind == "grpc-java":
        return [tls.JDK_ENGINE_GRPC_CLIENT, tls.agent(keylog)]
    version = [tls.client_protocol(sc.tls)] if sc.tls in tls.PROTOCOLS else []
    return [*version, tls.agent(keylog), *tls.SLOW_HANDSHAKE]  # remoting: the JDK engine already


def client_command(cluster: Cluster, sc: Scenario, truth_path: Path, grpc_addr: str,
                   keylog: Path | None = None) -> list[str]:
    jvm = [*sc.jvm, *tls_jvm(sc, keylog)] if keylog else list(sc.jvm)
    if sc.kind == "remoting":
        classes = build.build_remoting_programs()
        return cluster.java_cmd(f"clients/{sc.name}", classes, "RemotingScenario", sc.mode,
                                cluster.namesrv_addr, sc.topic, str(truth_path), jvm=jvm)
    if sc.kind == "remoting-go":
        return [str(build.build_go_scenario()), cluster.namesrv_addr, sc.topic, str(truth_path)]
    if sc.kind == "grpc-java":
        classes = build.build_grpc_programs()
        return cluster.java_cmd(f"clients/{sc.name}", classes, "GrpcScenario", grpc_addr,
                                str(truth_path), lib=build.grpc_lib(),
                                jvm=[*jvm, f"-Drmqsniff.client.version={build.GRPC_CLIENT_VERSION}"])
    if sc.kind == "grpc-python":
        py = build.python_client_venv()
        return [str(py), str(HERE / "py_client_scenario.py"), grpc_addr, sc.topic, str(truth_path),
                *sc.extra.get("client_args", ())]
    raise ValueError(sc.kind)


def tls_truth(sc: Scenario, keylog: Path | None, server_keylog: Path | None) -> dict:
    """What the truth says about TLS: the client's version limit, its key log(s) and the sessions
    in it (client randoms; TLS 1.2 session ids, as the agent names those)."""
    assert keylog is not None and keylog.stat().st_size > 0, f"the TLS agent wrote no secrets to {keylog}"
    return {"client_versions": tls.PROTOCOLS.get(sc.tls, "default"), "engine": "JDK (JSSE)",
            "keylog": keylog.name, **({"server_keylog": server_keylog.name} if server_keylog else {}),
            "sessions": tls.keylog_sessions(keylog.read_text())}


def _admin_table(out: str) -> list[dict[str, str]]:
    """The rows of an mqadmin table (header ``#Name  #Other Name ...``; the last column, a time
    with a space in it, is dropped) as dicts keyed by column name."""
    cols: list[str] = []
    rows = []
    for line in out.splitlines():
        if line.startswith("#"):
            cols = [c.strip() for c in line.split("#")[1:]]
        elif cols and len(line.split()) >= len(cols) - 1:
            rows.append(dict(zip(cols[:-1], line.split()[:len(cols) - 1], strict=True)))
    return rows


def consumer_progress(cluster: Cluster, group: str) -> dict:
    """``mqadmin consumerProgress -g GROUP``: per queue the broker offset, consumer offset and
    diff, and its output as printed."""
    out = cluster.mqadmin("consumerProgress", "-g", group)
    rows = [{"topic": r["Topic"], "broker": r["Broker Name"], "queue": int(r["QID"]),
             "broker_offset": int(r["Broker Offset"]), "consumer_offset": int(r["Consumer Offset"]),
             "diff": int(r["Diff"])} for r in _admin_table(out) if r.get("QID", "").isdigit()]
    if not rows:
        raise ScenarioError(f"mqadmin consumerProgress -g {group} listed no queue:\n{out}")
    return {"command": f"mqadmin consumerProgress -g {group}", "rows": rows, "output": out.splitlines()}


def topic_status(cluster: Cluster, topic: str) -> dict:
    """``mqadmin topicStatus -t TOPIC``: min/max offset per queue and the messages held in all."""
    out = cluster.mqadmin("topicStatus", "-t", topic)
    rows: list[dict[str, Any]] = [
        {"broker": r["Broker Name"], "queue": int(r["QID"]), "min_offset": int(r["Min Offset"]),
         "max_offset": int(r["Max Offset"])} for r in _admin_table(out)
        if r.get("QID", "").isdigit() and r.get("Max Offset", "").isdigit()]
    return {"command": f"mqadmin topicStatus -t {topic}", "topic": topic, "rows": rows,
            "messages": sum(r["max_offset"] - r["min_offset"] for r in rows), "output": out.splitlines()}


def run_scenario(cluster: Cluster, name: str, out_dir: Path, timeout: float = 240.0) -> tuple[Path, dict]:
    """Capture scenario ``name``; returns the pcap path and the ground truth (also saved beside it)."""
    sc = SCENARIOS[name]
    out_dir = Path(out_dir).resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    if sc.remoting_tls != cluster.remoting_tls:
        raise ScenarioError(f"scenario {name} needs a cluster with remoting_tls={sc.remoting_tls}")
    pcap = out_dir / f"{name}.pcap"
    truth_path = out_dir / f"{name}.truth.json"
    keylog = out_dir / f"{name}.keys" if sc.tls else None
    server_keylog = out_dir / f"{name}.server.keys" if cluster.remoting_tls else None
    for p in (pcap, truth_path, keylog, server_keylog):
        if p is not None:
            p.unlink(missing_ok=True)
    grpc_port, remoting_port = cluster.ports.grpc, cluster.ports.proxy
    extra_proxy = sc.extra.get("extra_proxy")
    if extra_proxy:
        grpc_port, remoting_port = extra_proxy_ports(cluster)
    cmd = client_command(cluster, sc, truth_path, f"{cluster.host}:{grpc_port}", keylog)  # build before capturing
    if sc.extra.get("admin"):
        cluster.admin(*sc.extra["admin"])  # e.g. the topic a client cannot auto-create
    home = cluster.dir(f"clients/{sc.name}")
    home.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, HOME=str(home))
    env.pop("NAMESRV_ADDR", None)
    if extra_proxy:  # started before the capture, stopped after it, like the cluster's own proxy
        cluster.start_extra_proxy(extra_proxy, grpc_port, remoting_port, **sc.extra.get("extra_proxy_config", {}))
    try:
        cap = Capture(pcap, sorted({*capture_ports(cluster), grpc_port}))
        keys_before = cluster.server_keylog_sizes()
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
    finally:
        if extra_proxy:
            cluster.stop_component(f"proxy-{extra_proxy}")
    elapsed = time.monotonic() - t0
    (home / "client-output.log").write_text(proc.stdout + proc.stderr)
    if proc.returncode != 0 or not truth_path.exists():
        tail = "\n".join((proc.stdout + proc.stderr).splitlines()[-40:])
        raise ScenarioError(f"scenario {name} failed (exit {proc.returncode}):\n{tail}")
    truth = json.loads(truth_path.read_text())
    if server_keylog is not None:  # every server JVM's secrets, the inter-server connections' too
        tls.new_keylog(server_keylog).write_text(cluster.server_keylogs(since=keys_before))
    if sc.extra.get("consumer_progress"):  # after the capture: what the broker itself says
        truth["consumer_progress"] = consumer_progress(cluster, sc.extra["consumer_progress"])
    if sc.extra.get("trace_topic"):
        truth["trace_topic"] = topic_status(cluster, sc.extra["trace_topic"])
        # the clients' trace dispatchers send each trace message with one SEND_MESSAGE_V2
        truth["counts"]["msg_trace"] = truth["trace_topic"]["messages"]
    if sc.tls:
        truth["tls_capture"] = tls_truth(sc, keylog, server_keylog)
    truth["scenario"] = name
    truth["description"] = sc.description
    truth["rocketmq_version"] = build.ROCKETMQ_VERSION
    truth["capture"] = {
        "file": pcap.name,
        "filter": cap.filter,
        "ports": {"namesrv": cluster.ports.namesrv, "broker": cluster.ports.broker,
                  "broker_fast": cluster.ports.broker - 2, "proxy_remoting": cluster.ports.proxy,
                  "proxy_grpc": grpc_port},
        **({"extra_proxy": {"grpc": grpc_port, "remoting": remoting_port,
                            "note": "the scenario's own proxy; the cluster's proxy_remoting and "
                                    f"gRPC {cluster.ports.grpc} carry no client traffic"}}
           if extra_proxy else {}),
        "seconds": round(elapsed, 1),
        "bytes": pcap.stat().st_size,
    }
    truth_path.write_text(json.dumps(truth, indent=2, sort_keys=False) + "\n")
    return pcap, truth
