"""TLS termination in front of the real cluster (marker ``rocketmq``): the real Java 5.x
gRPC client with its default TLS (``-Drmqsniff.tls=true``: TLS on, any certificate
trusted, ALPN h2) through ``rmqsniff proxy --tls permissive --upstream-tls
--upstream-insecure`` to the real RocketMQ proxy's gRPC port (TLS permissive by
default there).  Every call is decoded by the proxy's own tap, and its ``-w``
recording (the plaintext legs) reads back as the client's truth."""
from __future__ import annotations

import json
import os
import re
import shutil
import stat
import subprocess

import pytest

from rmqsniff.pipeline import analyze
from tests.support.grpc_truth import check_grpc_recording
from tests.support.java_clients import labels, run_java
from tests.support.proxy import ProxyProcess, wait_idle
from tests.test_grpc_real import calls

pytestmark = [pytest.mark.rocketmq, pytest.mark.timeout(600)]


def test_java_grpc_client_with_default_tls_through_the_tls_proxy(rocketmq_cluster, tmp_path):
    cluster = rocketmq_cluster
    rec = tmp_path / "grpc-tls.pcapng"
    keylog = tmp_path / "keys.log"
    p = ProxyProcess("--grpc", f"127.0.0.1:0={cluster.grpc_addr}", "--admin", "127.0.0.1:0", "-w", str(rec),
                     "--tls", "permissive", "--tls-ca-dir", str(tmp_path / "ca"), "--tls-keylog", str(keylog),
                     "--upstream-tls", "--upstream-insecure")
    try:
        ep = p.listeners()["grpc"][0][0]
        truth_path = tmp_path / "truth.json"
        run_java(cluster, "clients/proxy_grpc_tls", ep, str(truth_path), grpc=True, jvm=("-Drmqsniff.tls=true",))
        truth = json.loads(truth_path.read_text())
        assert truth["tls"] is True
        wait_idle(p)
        s = json.loads(p.get("/stats?format=json")[2])
        recent = json.loads(p.get("/exchanges?limit=1000")[2])
    finally:
        assert p.stop() == 0, "\n".join(p.lines[-20:])

    # every client connection was TLS, and so was every upstream connection
    t = s["transport"]
    assert t["tls_client"] == t["flows"] == t["tls_upstream"] > 0
    assert t.get("tls_plaintext_client", 0) == t.get("tls_failed", 0) == 0
    names = {r["name"] for r in s["codes"].values() if r["protocol"] == "grpc"}
    assert {"QueryRoute", "SendMessage", "ReceiveMessage", "AckMessage"} <= names
    assert s["counters"]["send_message_v2"] == len(truth["sent"])
    assert recent["count"] > 0 and all(e["status"] == "answered" for e in recent["exchanges"]
                                       if e["request"]["method"] != "Telemetry")
    # marked with the client leg's TLS (the JDK's TLS 1.3 by default)
    assert {e["tls"]["version"] for e in recent["exchanges"]} == {"TLS 1.3"}
    assert all(e["tls"]["cipher"].startswith("TLS_AES_") for e in recent["exchanges"])

    # the recording (plaintext legs) against the client's truth
    exs = check_grpc_recording(rec, truth)

    # Wireshark reads the recording without keys too: the same calls by their HTTP/2 :path
    if shutil.which("tshark") is not None:
        port = cluster.grpc_addr.rsplit(":", 1)[1]
        out = subprocess.run(["tshark", "-n", "-r", str(rec), "-d", f"tcp.port=={port},http2", "-Y",
                              "http2.headers.path", "-T", "fields", "-e", "http2.headers.path"],
                             capture_output=True, text=True, timeout=120, check=True).stdout
        paths = [x for ln in out.splitlines() for x in ln.split(",")]
        for method in ("SendMessage", "ReceiveMessage", "AckMessage", "QueryRoute"):
            assert paths.count(f"/apache.rocketmq.v2.MessagingService/{method}") == len(calls(exs, method)), method

    # both legs' secrets, in a file only its owner reads
    assert stat.S_IMODE(os.stat(keylog).st_mode) == 0o600
    randoms = set(re.findall(r"^(?:CLIENT_TRAFFIC_SECRET_0|CLIENT_RANDOM) ([0-9a-f]{64}) ", keylog.read_text(), re.M))
    assert len(randoms) == 2 * t["tls_client"]


@pytest.mark.parametrize("version", ["TLSv1.3", "TLSv1.2"])
def test_java_remoting_clients_with_tls_through_the_enforcing_proxy(rocketmq_cluster, rocketmq_capture, tmp_path,
                                                                     version):
    """Java remoting clients with ``-Dtls.enable=true`` (TLS 1.3 and, by
    ``jdk.tls.client.protocols``, 1.2) given the proxy's name-server listener
    (``--tls enforcing``: plaintext would be refused) with the real name server and broker
    upstream over TLS (their default permissive mode, test-mode certificate): the same
    results as the plaintext scenario going direct, every connection TLS on both legs,
    including those to the broker listener opened from the rewritten route."""
    cluster = rocketmq_cluster
    _, direct = rocketmq_capture("remoting_json")
    rec = tmp_path / "remoting-tls.pcapng"
    p = ProxyProcess("--namesrv", f"127.0.0.1:0={cluster.namesrv_addr}", "--admin", "127.0.0.1:0", "-w", str(rec),
                     "--tls", "enforcing", "--tls-ca-dir", str(tmp_path / "ca"),
                     "--upstream-tls", "--upstream-insecure", "--stat-prefix", "px")
    try:
        ns = p.listeners()["namesrv"][0][0]
        truth_path = tmp_path / "truth.json"
        run_java(cluster, "clients/proxy_remoting_tls", "produce-consume", ns, "TopicProxyTls", str(truth_path),
                 jvm=("-Dtls.enable=true", f"-Djdk.tls.client.protocols={version}"))
        truth = json.loads(truth_path.read_text())
        routes = wait_idle(p)
        s = json.loads(p.get("/stats?format=json")[2])
        recent = json.loads(p.get("/exchanges?limit=1000")[2])["exchanges"]
    finally:
        assert p.stop() == 0, "\n".join(p.lines[-20:])
    assert truth["counts"] == direct["counts"]
    assert sorted(truth["received"]) == sorted(direct["received"])
    for name in direct["received"]:
        assert set(labels(truth["received"][name])) == set(labels(direct["received"][name])), name
    assert labels(truth["sent"]) == labels(direct["sent"])
    assert any(x["kind"] == "broker" and x["discovered"] for x in routes["listeners"])
    t = s["transport"]
    assert t["tls_client"] == t["flows"] == t["tls_upstream"] > 1
    assert t.get("tls_refused", 0) == t.get("tls_failed", 0) == 0
    assert recent and {e["tls"]["version"] for e in recent} == {version.replace("TLSv", "TLS ")}
    assert all(e["tls"]["cipher"].startswith("TLS_") for e in recent)
    a = analyze([str(rec)], stat_prefix="px")
    assert a.errors == []
    assert a.stats.counter("send_message_v2") + a.stats.counter("send_message_v1") == s["counters"][
        "send_message_v2"] + s["counters"]["send_message_v1"] > 0
    assert a.stats.snapshot()["decoding_errors"] == {}
