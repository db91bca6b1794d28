"""The one HTTP stats route (``live`` and ``proxy`` serve it) over real captures of both
protocols: ``/exchanges`` gives exactly ``read --format jsonl``'s objects."""
from __future__ import annotations

import json
import select
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from urllib.parse import quote

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from rmqsniff.exporters.promhttp import StatsEndpoint
from rmqsniff.exporters.statsfmt import StatsCollector
from rmqsniff.exporters.statsroute import (
    MAX_CONNECTIONS,
    REQUEST_TIMEOUT,
    STEP_ITEMS,
    STEP_SAMPLES,
    Reading,
    StatsRoute,
    authorized,
)
from rmqsniff.filter.parser import MAX_DEPTH
from rmqsniff.pipeline import Pipeline
from rmqsniff.sinks import Recent

CAPTURES = Path(__file__).resolve().parent.parent / "captures"


def _route(name: str, maxlen: int = 100_000) -> tuple[StatsRoute, Pipeline]:
    recent = Recent(maxlen)
    p = Pipeline(sinks=[recent])
    list(p.run([str(CAPTURES / f"{name}.pcap")]))
    return StatsRoute(lambda: Reading(p.stats.snapshot()), select=recent.select), p


@pytest.mark.parametrize("name", ["remoting_json", "grpc_java"])
def test_exchanges_route_gives_read_format_json_objects(name):
    route, p = _route(name)
    status, ctype, body = route.respond("GET", "/exchanges?limit=0")
    assert status == 200 and ctype == "application/json"
    got = sorted(json.loads(body)["exchanges"], key=lambda d: d["index"])
    r = subprocess.run([sys.executable, "-m", "rmqsniff", "read", str(CAPTURES / f"{name}.pcap"), "--format", "jsonl"],
                       capture_output=True, text=True, timeout=120)
    want = [json.loads(x) for x in r.stdout.splitlines()]
    assert got == want
    proto = "grpc" if name.startswith("grpc") else "remoting"
    status, _, body = route.respond("GET", f"/exchanges?limit=3&filter=protocol%20%3D%3D%20{proto}")
    doc = json.loads(body)
    assert status == 200 and doc["count"] == 3 and {e["protocol"] for e in doc["exchanges"]} == {proto}


def test_stats_metrics_ready_and_errors():
    route, p = _route("grpc_python")
    status, ctype, body = route.respond("GET", "/metrics")
    assert status == 200 and ctype.startswith("text/plain; version=")
    fams = {f.name: f for f in text_string_to_metric_families(body.decode())}
    total = [s.value for s in fams["rocketmq_request"].samples if s.name == "rocketmq_request_total"]
    assert total == [p.stats.snapshot()["counters"]["request"]]
    assert route.respond("GET", "/stats/prometheus")[2] == body
    assert route.respond("GET", "/stats")[2].decode().startswith("rocketmq.rmqsniff.")
    assert json.loads(route.respond("GET", "/stats?format=json")[2])["counters"]["request"] == total[0]
    assert route.respond("GET", "/ready") == (200, "text/plain; charset=utf-8", b"LIVE\n")
    status, _, body = route.respond("GET", "/exchanges?filter=code%20%3D%3D%20%3D%3D")
    assert status == 400 and json.loads(body)["error"].startswith("bad filter")
    # filters that once froze or crashed the proxy: a 400 with the filter error, at once
    deep = quote("(" * 330 + "topic" + ")" * 330)
    status, _, body = route.respond("GET", f"/exchanges?filter={deep}")
    assert status == 400 and json.loads(body) == {
        "error": f"bad filter: filter nested too deeply (more than {MAX_DEPTH} levels)", "position": MAX_DEPTH}
    status, _, body = route.respond("GET", "/exchanges?filter=" + quote(r'topic ~ "(a)\\1"'))
    assert status == 400 and json.loads(body) == {
        "error": "bad filter: unsupported in filters (RE2): backreference \\1", "position": 8}
    status, _, body = route.respond("GET", "/exchanges?filter=" + quote('topic ~ "(a+)+$"'))
    assert status == 200 and "exchanges" in json.loads(body)
    assert route.respond("GET", "/exchanges?limit=x")[0] == 400
    assert route.respond("GET", "/nope")[0] == 404
    assert route.respond("POST", "/stats")[0] == 405
    none = StatsRoute(lambda: Reading(p.stats.snapshot()), why_none="kept none")
    assert none.respond("GET", "/exchanges") == (404, "application/json", b'{"error":"kept none"}')


def test_recent_is_bounded():
    route, p = _route("remoting_json", maxlen=5)
    doc = json.loads(route.respond("GET", "/exchanges?limit=0")[2])
    assert doc["count"] == 5


@pytest.mark.parametrize("query", ["limit=0", "limit=7", "limit=100", "limit=-1",
                                   "limit=0&filter=" + quote('topic ~ "(a+)+$" or code == SEND_MESSAGE_V2'),
                                   "limit=3&filter=" + quote("status == answered")])
def test_exchanges_in_steps_give_what_select_gives(query):
    """The proxy's way (``recent``: a few kept exchanges a step) and live's (``select``) answer alike."""
    recent = Recent(100_000)
    p = Pipeline(sinks=[recent])
    list(p.run([str(CAPTURES / "remoting_rocketmq.pcap")]))
    stepped = StatsRoute(lambda: Reading(p.stats.snapshot()), recent=recent)
    whole = StatsRoute(lambda: Reading(p.stats.snapshot()), select=recent.select)
    steps = stepped.steps("GET", f"/exchanges?{query}")
    n = 0
    while True:
        try:
            next(steps)
        except StopIteration as done:
            got = done.value
            break
        n += 1
    assert got == whole.respond("GET", f"/exchanges?{query}") and got[0] == 200
    assert n >= len(recent.items) // STEP_ITEMS


def test_metrics_in_parts_are_the_exposition_of_the_whole_registry():
    route, p = _route("remoting_rocketmq")
    reg = CollectorRegistry(auto_describe=False)
    reg.register(StatsCollector(p.stats.snapshot()))
    whole = generate_latest(reg)
    assert route.respond("GET", "/metrics")[2] == whole
    steps = route.steps("GET", "/metrics")
    n = sum(1 for _ in steps)
    assert n > len(list(text_string_to_metric_families(whole.decode())))  # some families came in parts
    assert max(len(f.samples) for f in StatsCollector(p.stats.snapshot()).collect()) > STEP_SAMPLES


@pytest.mark.parametrize("name", ["remoting_rocketmq", "grpc_java"])
def test_stats_snapshot_in_steps_is_the_snapshot(name):
    """The proxy's admin takes the stats snapshot a code row / breakdown at a time: the
    stepped reading gives the same answers, in more than one step per request code."""
    _, p = _route(name)
    whole = p.stats.snapshot()
    stepped = StatsRoute(lambda: Reading({}), read_steps=lambda: _reading(p))
    for path in ("/stats", "/stats?format=json", "/metrics"):
        assert stepped.respond("GET", path) == StatsRoute(lambda: Reading(p.stats.snapshot())).respond("GET", path)
    steps = p.stats.snapshot_steps()
    n = 0
    while True:
        try:
            next(steps)
            n += 1
        except StopIteration as done:
            assert done.value == whole
            break
    assert n > len(whole["codes"]) >= 3


def _reading(p: Pipeline):
    return Reading((yield from p.stats.snapshot_steps()))


def test_bearer_token_check():
    assert authorized(None, None) and authorized("Basic x", None)
    assert authorized("Bearer tok-1", "tok-1") and authorized("bearer  tok-1 ", "tok-1")
    for header in (None, "", "Bearer", "Bearer tok-2", "Bearer tok-1x", "Basic tok-1", "tok-1", "Bearer tök"):
        assert not authorized(header, "tok-1"), header


# ---------------------------------------------------------------- live's endpoint: the proxy admin's rules

def _http(url: str, token: str | None = None) -> int:
    req = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"} if token else {})
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status
    except urllib.error.HTTPError as e:
        return e.code


def _refused(socks: list[socket.socket], quiet: float = 1.0) -> list[socket.socket]:
    """The sockets the server said something on (or closed), once none did for ``quiet`` seconds."""
    out: list[socket.socket] = []
    while readable := select.select([s for s in socks if s not in out], [], [], quiet)[0]:
        out += readable
    return out


def test_live_endpoint_caps_connections_and_cuts_idle_ones_off():
    route, _p = _route("remoting_json")
    ep = StatsEndpoint(("127.0.0.1", 0), route).start()
    assert ep.token is None and ep.lines == []  # loopback, no token given: none asked for
    port = ep.server.server_address[1]
    t0 = time.monotonic()
    idle = [socket.create_connection(("127.0.0.1", port), timeout=10) for _ in range(MAX_CONNECTIONS + 20)]
    try:
        refused = _refused(idle)
        assert len(refused) == 20 and all(s.recv(4096).startswith(b"HTTP/1.1 503 ") for s in refused)
        assert _http(ep.url + "/ready") == 503
        held = [s for s in idle if s not in refused]
        held[0].settimeout(REQUEST_TIMEOUT + 20)
        assert held[0].recv(4096) == b""  # nothing asked: closed after the timeout
        assert time.monotonic() - t0 >= REQUEST_TIMEOUT - 1
    finally:
        for s in idle:
            s.close()
    deadline = time.monotonic() + 10
    while _http(ep.url + "/ready") != 200 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert _http(ep.url + "/ready") == 200
    ep.close()


def test_live_endpoint_off_loopback_asks_for_a_token():
    """Bound to 0.0.0.0 (every interface) and asked over 127.0.0.1."""
    route, _p = _route("remoting_json")
    ep = StatsEndpoint(("0.0.0.0", 0), route).start()
    try:
        assert ep.token is not None and len(ep.token) >= 32
        assert len(ep.lines) == 2
        assert ep.lines[0].startswith("warning: the stats endpoint listens on every interface (0.0.0.0)")
        assert ep.lines[1].startswith("stats endpoint token (send 'Authorization: Bearer TOKEN'")
        assert ep.lines[1].endswith(ep.token)
        url = f"http://127.0.0.1:{ep.server.server_address[1]}"
        assert _http(url + "/metrics") == 401 and _http(url + "/metrics", "wrong") == 401
        assert _http(url + "/metrics", ep.token) == 200
    finally:
        ep.close()
    ep = StatsEndpoint(("127.0.0.1", 0), route, token="given").start()
    try:
        assert ep.lines == [] and _http(ep.url + "/stats") == 401 and _http(ep.url + "/stats", "given") == 200
    finally:
        ep.close()
