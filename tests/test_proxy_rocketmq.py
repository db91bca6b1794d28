"""The proxy between real RocketMQ 5.3 clients and the real cluster (marker ``rocketmq``).

* Java remoting clients given only the proxy's name-server address produce and consume
  with the same results as going direct; every broker connection went through the proxy
  (route rewriting); the admin endpoints are scraped and parsed; the proxy's stats equal
  ``rmqsniff stats`` on its own ``-w`` recording.
* Upstream killed mid-run: a real long-poll PULL held by the real broker, through a
  second proxy process that is SIGKILLed; the client gets a SYSTEM_ERROR answer at once.
* The Java gRPC client through the ``--grpc`` listener.
"""
from __future__ import annotations

import json
import signal
import socket
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

from dissectors.remoting import RemotingCommand, codes, encode
from replay.proxy import BROKER, Mapping, ProxyConfig
from rmqsniff.exporters.statsfmt import render_envoy
from rmqsniff.pipeline import analyze
from tests.support.java_clients import labels, run_java
from tests.support.proxy import ProxyProcess, ProxyThread, read_frames, wait_idle

pytestmark = [pytest.mark.rocketmq, pytest.mark.timeout(600)]
REPO = Path(__file__).resolve().parent.parent


def _envoy_lines(text: str) -> list[str]:
    """Envoy stat lines that a recording can reproduce: all but the proxy's own
    transport counters and the *_pending gauges (waiting for an upstream leaves no bytes)."""
    return [ln for ln in text.splitlines() if ".transport." not in ln and "_pending" not in ln]


# ------------------------------------------------------------------ Java remoting via the proxy

def test_java_remoting_clients_through_the_proxy(rocketmq_cluster, rocketmq_capture, tmp_path):
    cluster = rocketmq_cluster
    direct_pcap, direct = rocketmq_capture("remoting_json")
    rec = tmp_path / "proxy.pcapng"
    p = ProxyProcess("--namesrv", f"127.0.0.1:0={cluster.namesrv_addr}", "--admin", "127.0.0.1:0",
                     "-w", str(rec), "--stat-prefix", "px")
    try:
        ns = p.listeners()["namesrv"][0][0]
        truth_path = tmp_path / "truth.json"
        run_java(cluster, "clients/proxy_remoting", "produce-consume", ns, "TopicProxy", str(truth_path))
        truth = json.loads(truth_path.read_text())

        # same results as going direct (the direct run is the session's remoting_json scenario)
        assert truth["counts"] == direct["counts"]
        assert sorted(truth["received"]) == sorted(direct["received"])
        for name in direct["received"]:
            assert set(labels(truth["received"][name])) == set(labels(direct["received"][name])), name
        assert labels(truth["sent"]) == labels(direct["sent"])
        assert {e.get("send_status") for e in truth["sent"]} == {e.get("send_status") for e in direct["sent"]}
        assert all(e["topic"] == "TopicProxy" for e in truth["received"]["push"])

        # the broker was reached through a listener opened from the rewritten route
        routes = wait_idle(p)
        assert routes["sessions"] == 0
        brokers = [x for x in routes["listeners"] if x["kind"] == "broker" and x["discovered"]]
        assert routes["brokers"][cluster.broker_addr] in {x["advertised"] for x in brokers}
        assert any(f"route rewrite: broker {cluster.broker_addr} -> " in ln for ln in p.lines)

        # admin endpoints, scraped and parsed
        status, ctype, envoy = p.get("/stats")
        assert status == 200 and ctype.startswith("text/plain")
        vals = {}
        for ln in envoy.splitlines():
            name, _, value = ln.partition(": ")
            assert name.startswith("rocketmq.px."), ln
            vals[name] = value
        sends = ("send_message_v1", "send_message_v2", "request_code.SEND_BATCH_MESSAGE.requests")
        d = {ln.split(": ")[0].split(".", 2)[2]: ln.split(": ")[1]
             for ln in render_envoy(analyze([str(direct_pcap)]).stats).splitlines()}
        assert [vals[f"rocketmq.px.{k}"] for k in sends] == [d.get(k, "0") for k in sends]
        assert int(vals["rocketmq.px.request_code.PULL_MESSAGE.requests"]) > 0
        assert vals["rocketmq.px.request_time_ms"].startswith("P0(nan,")
        status, ctype, prom = p.get("/stats/prometheus")
        from prometheus_client.parser import text_string_to_metric_families

        fams = {f.name: f for f in text_string_to_metric_families(prom)}
        req = [s for s in fams["rocketmq_request"].samples if s.name == "rocketmq_request_total"]
        assert req and req[0].value == float(vals["rocketmq.px.request"])
        by = {s.labels["key"] for s in fams["rocketmq_breakdown_requests"].samples if s.labels["by"] == "broker"}
        assert cluster.broker_addr in by
        flt = urllib.parse.quote('code == SEND_MESSAGE_V2 and topic == "TopicProxy"')
        status, ctype, body = p.get("/exchanges?filter=" + flt + "&limit=5")
        got = json.loads(body)
        assert status == 200 and got["count"] == len(got["exchanges"]) > 0
        assert all(e["request"]["code"] == 310 and e["status"] == "answered" for e in got["exchanges"])
        status, _, body = p.get("/exchanges?filter=" + urllib.parse.quote("code == == 1"))
        assert status == 400 and json.loads(body)["error"].startswith("bad filter")
        proxy_stats = p.get("/stats")[2]
    finally:
        code = p.stop()
    assert code == 0, "\n".join(p.lines[-20:])

    # the proxy's stats equal `rmqsniff stats` on its own recording
    a = analyze([str(rec)], stat_prefix="px")
    assert a.errors == []
    assert _envoy_lines(render_envoy(a.stats)) == _envoy_lines(proxy_stats)


# ------------------------------------------------------------------ upstream killed mid-run

def _rpc(sock: socket.socket, cmd: RemotingCommand) -> RemotingCommand:
    sock.sendall(encode(cmd))
    frames, _ = read_frames(sock, 1, timeout=15)
    assert frames and frames[0].opaque == cmd.opaque, frames
    return frames[0]


def test_upstream_killed_mid_run_answers_pending_requests_at_once(rocketmq_cluster):
    cluster = rocketmq_cluster
    relay = ProxyProcess("--broker", f"127.0.0.1:0={cluster.broker_addr}")  # the upstream we kill
    relay_addr = relay.listeners()["broker"][0][0]
    pt = ProxyThread(ProxyConfig([Mapping.parse(BROKER, f"0={relay_addr}")]))
    try:
        with socket.create_connection(pt.listen(BROKER), timeout=10) as c:
            topic = "TopicProxyKill"
            ver = codes.version_ordinal(5, 3, 3)
            sent = _rpc(c, RemotingCommand(codes.SEND_MESSAGE, 0, 1, version=ver, body=b"hello", ext={
                "producerGroup": "PG_proxy_kill", "topic": topic, "defaultTopic": "TBW102",
                "defaultTopicQueueNums": "4", "queueId": "0", "sysFlag": "0",
                "bornTimestamp": str(int(time.time() * 1000)), "flag": "0", "properties": "",
                "reconsumeTimes": "0", "unitMode": "false", "batch": "false"}))
            assert sent.code == 0, sent.remark
            mx = _rpc(c, RemotingCommand(codes.GET_MAX_OFFSET, 0, 2, version=ver,
                                         ext={"topic": topic, "queueId": "0"}))
            assert mx.code == 0, mx.remark
            assert mx.ext is not None
            pull = RemotingCommand(codes.PULL_MESSAGE, 0, 3, version=ver, ext={
                "consumerGroup": "CG_proxy_kill", "topic": topic, "queueId": "0",
                "queueOffset": mx.ext["offset"], "maxMsgNums": "32", "sysFlag": "6", "commitOffset": "0",
                "suspendTimeoutMillis": "20000", "subscription": "*", "subVersion": "0",
                "expressionType": "TAG"})
            c.sendall(encode(pull))
            c.settimeout(1.0)
            with pytest.raises(socket.timeout):
                c.recv(1)  # the real broker holds the long poll
            t0 = time.monotonic()
            relay.stop(signal.SIGKILL)
            frames, closed = read_frames(c, 1, timeout=5)
            elapsed = time.monotonic() - t0
        assert [(f.code, f.opaque, f.flag) for f in frames] == [(codes.SYSTEM_ERROR, 3, 1)]
        assert "upstream" in (frames[0].remark or "") and closed
        assert elapsed < 3.0  # prompt: the broker would have held the poll for 20 s
        time.sleep(0.2)
        s = pt.stats()
        t = s["transport"]
        assert t.get("upstream_closed", 0) + t.get("upstream_reset", 0) == 1
        assert t["proxy_error_answers"] == 1
        pulls = [r for r in s["codes"].values() if r["name"] == "PULL_MESSAGE"]
        assert pulls[0]["requests"] == 1 and pulls[0]["errors"] == 1
        assert s["counters"]["answered"] == 3 and s["counters"]["response_error"] == 1
    finally:
        pt.stop()
        relay.stop(signal.SIGKILL)


# ------------------------------------------------------------------ --recent

def test_recent_zero_counts_the_same_and_keeps_no_exchanges(rocketmq_cluster):
    """``--recent 0`` drops the ring of recent exchanges (and its CPU), not a single count:
    the same real requests through ``--recent 1`` and ``--recent 0`` give the same stats;
    /exchanges shows the last exchange, or says that none are kept."""
    cluster = rocketmq_cluster
    ver = codes.version_ordinal(5, 3, 3)
    procs = {n: ProxyProcess("--broker", f"127.0.0.1:0={cluster.broker_addr}", "--admin", "127.0.0.1:0",
                             "--stat-prefix", "px", "--recent", str(n)) for n in (1, 0)}
    stats = {}
    try:
        for n, p in procs.items():
            host, _, port = p.listeners()["broker"][0][0].rpartition(":")
            with socket.create_connection((host, int(port)), timeout=10) as c:
                for op in range(1, 4):
                    sent = _rpc(c, RemotingCommand(codes.SEND_MESSAGE, 0, op, version=ver, body=b"m%d" % op, ext={
                        "producerGroup": "PG_proxy_recent", "topic": "TopicProxyRecent", "defaultTopic": "TBW102",
                        "defaultTopicQueueNums": "4", "queueId": "0", "sysFlag": "0",
                        "bornTimestamp": str(int(time.time() * 1000)), "flag": "0", "properties": "",
                        "reconsumeTimes": "0", "unitMode": "false", "batch": "false"}))
                    assert sent.code == 0, sent.remark
                mx = _rpc(c, RemotingCommand(codes.GET_MAX_OFFSET, 0, 9, version=ver,
                                             ext={"topic": "TopicProxyRecent", "queueId": "0"}))
                assert mx.code == 0, mx.remark
            assert wait_idle(p)["sessions"] == 0
            stats[n] = [ln for ln in _envoy_lines(p.get("/stats")[2]) if "request_time_ms" not in ln]
            status, _, body = p.get("/exchanges?limit=10")
            if n:
                got = json.loads(body)
                assert status == 200 and got["count"] == 1
                assert got["exchanges"][0]["request"]["code"] == codes.GET_MAX_OFFSET
            else:
                assert status == 404 and "--recent 0" in json.loads(body)["error"]
    finally:
        for p in procs.values():
            p.stop()
    assert stats[0] == stats[1]
    assert "rocketmq.px.request: 4" in stats[0] and "rocketmq.px.send_message_v1: 3" in stats[0]


# ------------------------------------------------------------------ gRPC via the proxy

def test_java_grpc_client_through_the_proxy(rocketmq_cluster, rocketmq_capture, tmp_path):
    cluster = rocketmq_cluster
    _, direct = rocketmq_capture("grpc_java")
    rec = tmp_path / "grpc.pcapng"
    p = ProxyProcess("--grpc", f"127.0.0.1:0={cluster.grpc_addr}", "--admin", "127.0.0.1:0", "-w", str(rec))
    try:
        ep = p.listeners()["grpc"][0][0]
        truth_path = tmp_path / "truth.json"
        run_java(cluster, "clients/proxy_grpc", ep, str(truth_path), grpc=True)
        truth = json.loads(truth_path.read_text())
        assert truth["counts"] == direct["counts"]
        assert sorted(truth["received"]) == sorted(direct["received"])
        wait_idle(p)
        s = json.loads(p.get("/stats?format=json")[2])
        names = {r["name"] for r in s["codes"].values() if r["protocol"] == "grpc"}
        assert {"QueryRoute", "SendMessage", "ReceiveMessage", "AckMessage"} <= names
        assert s["counters"]["send_message_v2"] >= len(direct["sent"])
        proxy_stats = p.get("/stats")[2]
    finally:
        assert p.stop() == 0
    a = analyze([str(rec)])
    assert _envoy_lines(render_envoy(a.stats)) == _envoy_lines(proxy_stats)
