"""What every transparent-mode proxy test (iptables REDIRECT, TPROXY) checks once its client
is done."""
from __future__ import annotations

import json
import urllib.parse

from rmqsniff.exporters.statsfmt import render_envoy
from rmqsniff.pipeline import analyze
from tests.support.java_clients import labels
from tests.support.proxy import ProxyProcess, wait_idle


def check_transparent_run(p: ProxyProcess, cluster, truth: dict, direct: dict, direct_pcap) -> list[dict]:
    """What every transparent-mode test checks once its client is done: the client's results
    equal the direct run's; nothing was rewritten, refused or failed; the sends were counted as
    in the direct capture; each connection went where the client sent it, not to the proxy.
    Returns the exchanges seen (sends and route lookups)."""
    assert truth["counts"] == direct["counts"]
    assert labels(truth["sent"]) == labels(direct["sent"])
    routes = wait_idle(p)
    assert routes["sessions"] == 0
    assert routes["brokers"] == {}  # nothing rewritten in transparent mode
    t = json.loads(p.get("/stats?format=json")[2])["transport"]
    assert t.get("transparent_not_redirected", 0) == 0 and t.get("upstream_connect_failure", 0) == 0
    assert t["flows"] >= 2  # at least the name server and the broker connections
    envoy = dict(ln.split(": ", 1) for ln in p.get("/stats")[2].splitlines())
    d = dict(ln.split(": ", 1) for ln in render_envoy(analyze([str(direct_pcap)]).stats).splitlines())
    for k in ("send_message_v1", "send_message_v2", "request_code.SEND_BATCH_MESSAGE.requests"):
        got, want = envoy.get(f"rocketmq.tp.{k}", "0"), d.get(f"rocketmq.rmqsniff.{k}", "0")
        if got != want:
            # (seen once in CI, not reproduced in 6 runs alone: say what the proxy saw)
            s = json.loads(p.get("/stats?format=json")[2])
            codes = {r["name"]: r["requests"] for r in s["codes"].values()}
            raise AssertionError(f"{k}: proxy {got}, direct capture {want}; proxy transport {s['transport']}; "
                                 f"codes {codes}; routes {routes}; proxy log:\n" + "\n".join(p.lines[-30:]))
    assert int(envoy["rocketmq.tp.request_code.PULL_MESSAGE.requests"]) > 0
    seen = []
    for code, server in (("SEND_MESSAGE_V2", cluster.broker_addr), ("GET_ROUTEINFO_BY_TOPIC", cluster.namesrv_addr)):
        got = json.loads(p.get("/exchanges?limit=1000&filter=" + urllib.parse.quote(f"code == {code}"))[2])
        assert got["count"] > 0, code
        host, port = server.rsplit(":", 1)
        shown = f"[{host}]:{port}" if ":" in host else server  # IPv6 in brackets
        assert {e["connection"]["server"] for e in got["exchanges"]} == {shown}, code
        seen += got["exchanges"]
    return seen
