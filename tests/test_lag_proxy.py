"""``rmqsniff proxy``'s Prometheus output carries the consumer lag gauges (issue #21).

The proxy runs as its own process with a broker listener whose upstream is a port nobody
listens on; the client's one-way UPDATE_CONSUMER_OFFSET is decoded on the data path all the
same (a one-way request needs no answer), so its commit reaches the lag table and the
gauges.  The real-cluster lag test is tests/rocketmq's (marker ``rocketmq``)."""
from __future__ import annotations

import http.client
import json
import socket
import time

import pytest
from prometheus_client.parser import text_string_to_metric_families

from dissectors.remoting import RemotingCommand, codes, encode
from tests.support.proxy import ProxyProcess, free_port

pytestmark = pytest.mark.timeout(120)
VER = codes.version_ordinal(5, 3, 3)
ONEWAY = 2  # RemotingCommand flag bit


def get(p: ProxyProcess, path: str) -> bytes:
    assert p.admin_url is not None
    conn = http.client.HTTPConnection("127.0.0.1", int(p.admin_url.rsplit(":", 1)[1]), timeout=10)
    try:
        conn.request("GET", path)
        return conn.getresponse().read()
    finally:
        conn.close()


def test_proxy_metrics_carry_the_committed_offset_of_a_one_way_commit() -> None:
    dead = free_port()
    p = ProxyProcess("--broker", f"127.0.0.1:0=127.0.0.1:{dead}", "--admin", "127.0.0.1:0",
                     "--connect-timeout", "1")
    try:
        host, port = p.listeners()["broker"][0][0].rsplit(":", 1)
        ext = {"consumerGroup": "CG_lag", "topic": "TopicLag", "queueId": "1", "commitOffset": "42",
               "bname": "broker-x"}
        with socket.create_connection((host, int(port)), timeout=5) as c:
            c.sendall(encode(RemotingCommand(codes.UPDATE_CONSUMER_OFFSET, ONEWAY, 7, version=VER, ext=ext)))
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                rows = json.loads(get(p, "/stats?format=json")).get("lag", {}).get("rows", [])
                if rows:
                    break
                time.sleep(0.1)
        assert [(r["group"], r["topic"], r["broker"], r["queue"], r["consumer_offset"], r["broker_offset"], r["lag"])
                for r in rows] == [("CG_lag", "TopicLag", "broker-x", 1, 42, None, None)]
        metrics = get(p, "/metrics").decode()
        got = {(s.name, s.labels.get("group"), s.labels.get("queue")): s.value
               for fam in text_string_to_metric_families(metrics) for s in fam.samples
               if s.name.startswith("rocketmq_consumer")}
        assert got[("rocketmq_consumer_offset", "CG_lag", "1")] == 42
        assert ("rocketmq_consumer_lag_messages", "CG_lag", "1") not in got  # max offset unknown: no lag
    finally:
        p.stop()
