"""Transparent mode with real iptables: a real Java client is given the cluster's real name
server; an OUTPUT-chain REDIRECT sends its connections (name server and broker) to
``rmqsniff proxy --transparent``, which recovers each destination with SO_ORIGINAL_DST,
connects there (its own connections carry ``--mark`` and are exempt from the rule) and
counts the traffic.  The rule only takes connections of processes in a group of the test's
own (``setpriv --regid``): the client and the proxy (so without the mark the proxy's own
connections would come back to it), not the cluster's own connections.  Needs root
(CAP_NET_ADMIN), ``iptables`` and ``setpriv``; skipped, with the reason, when they are not
usable.  The rules are always removed."""
from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import subprocess
import sys
import urllib.parse

import pytest

from rmqsniff.pipeline import analyze
from rmqsniff.exporters.statsfmt import render_envoy
from tests.test_proxy_rocketmq import ProxyProcess, _labels, _run_java, _wait_idle

pytestmark = [pytest.mark.rocketmq, pytest.mark.timeout(600)]

MARK = 0x524D  # the proxy's upstream connections carry it; the redirect rule skips them
GID = 52877  # the group the client and the proxy run in; only its connections are redirected
AS_GROUP = ("setpriv", f"--regid={GID}", "--clear-groups", "--")


def iptables_problem() -> str | None:
    """Why iptables REDIRECT cannot be used here, or None."""
    if not sys.platform.startswith("linux"):
        return "iptables is Linux only"
    if shutil.which("iptables") is None:
        return "`iptables` not installed (Debian: apt-get install -y iptables)"
    if os.geteuid() != 0:
        return "needs root (CAP_NET_ADMIN) to change the nat table"
    if shutil.which("setpriv") is None:
        return "`setpriv` not installed (Debian: util-linux)"
    r = subprocess.run(["iptables", "-t", "nat", "-S", "OUTPUT"], capture_output=True, text=True)
    if r.returncode != 0:
        return f"`iptables -t nat -S OUTPUT` failed: {(r.stderr or r.stdout).strip()}"
    return None


def ipt(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    r = subprocess.run(["iptables", "-t", "nat", *args], capture_output=True, text=True)
    if check and r.returncode != 0:
        raise AssertionError(f"iptables -t nat {' '.join(args)}: {r.stderr.strip()}")
    return r


@contextlib.contextmanager
def redirect(ports: list[int], to_port: int, mark: int, gid: int):
    """Local connections of group ``gid`` to 127.0.0.1:ports -> 127.0.0.1:to_port, except those
    marked ``mark``.  The commands are the ones docs/proxy.md gives, in a chain of this test's own."""
    chain = f"RMQSNIFF_T{os.getpid()}"
    ipt("-N", chain)
    try:
        ipt("-A", chain, "-m", "mark", "--mark", str(mark), "-j", "RETURN")
        ipt("-A", chain, "-p", "tcp", "-d", "127.0.0.1", "-m", "multiport", "--dports", ",".join(map(str, ports)),
            "-m", "owner", "--gid-owner", str(gid), "-j", "REDIRECT", "--to-ports", str(to_port))
        ipt("-A", "OUTPUT", "-j", chain)
        yield chain
    finally:
        ipt("-D", "OUTPUT", "-j", chain, check=False)
        ipt("-F", chain, check=False)
        ipt("-X", chain, check=False)
        assert chain not in ipt("-S", check=False).stdout, "iptables rules left behind"


def test_java_client_redirected_by_iptables_to_the_transparent_proxy(rocketmq_cluster, rocketmq_capture, tmp_path):
    problem = iptables_problem()
    if problem:
        pytest.skip(f"iptables REDIRECT unusable here: {problem}")
    cluster = rocketmq_cluster
    direct_pcap, direct = rocketmq_capture("remoting_json")
    ns_port = int(cluster.namesrv_addr.rsplit(":", 1)[1])
    br_port = int(cluster.broker_addr.rsplit(":", 1)[1])
    p = ProxyProcess("--transparent", "127.0.0.1:0", "--mark", hex(MARK), "--admin", "127.0.0.1:0",
                     "--stat-prefix", "tp", prefix=AS_GROUP)
    try:
        listen = next(m[1] for ln in p.lines if (m := re.match(r"transparent (\S+) -> ", ln)))
        port = int(listen.rsplit(":", 1)[1])
        truth_path = tmp_path / "truth.json"
        with redirect([ns_port, br_port, br_port - 2], port, MARK, GID):
            # the client is given the real name server: only the kernel sends it to the proxy
            _run_java(cluster, "clients/proxy_transparent", "produce-consume", cluster.namesrv_addr,
                      "TopicProxy", str(truth_path), prefix=AS_GROUP)
        check_transparent_run(p, cluster, json.loads(truth_path.read_text()), direct, direct_pcap)
    finally:
        code = p.stop()
    assert code == 0, "\n".join(p.lines[-20:])


def check_transparent_run(p: ProxyProcess, cluster, truth: dict, direct: dict, direct_pcap) -> list[dict]:
    """What every transparent-mode test checks once its client is done: the client's results
    equal the direct run's; nothing was rewritten, refused or failed; the sends were counted as
    in the direct capture; each connection went where the client sent it, not to the proxy.
    Returns the exchanges seen (sends and route lookups)."""
    assert truth["counts"] == direct["counts"]
    assert _labels(truth["sent"]) == _labels(direct["sent"])
    routes = _wait_idle(p)
    assert routes["sessions"] == 0
    assert routes["brokers"] == {}  # nothing rewritten in transparent mode
    t = json.loads(p.get("/stats?format=json")[2])["transport"]
    assert t.get("transparent_not_redirected", 0) == 0 and t.get("upstream_connect_failure", 0) == 0
    assert t["flows"] >= 2  # at least the name server and the broker connections
    envoy = dict(ln.split(": ", 1) for ln in p.get("/stats")[2].splitlines())
    d = dict(ln.split(": ", 1) for ln in render_envoy(analyze([str(direct_pcap)]).stats).splitlines())
    for k in ("send_message_v1", "send_message_v2", "request_code.SEND_BATCH_MESSAGE.requests"):
        assert envoy.get(f"rocketmq.tp.{k}", "0") == d.get(f"rocketmq.rmqsniff.{k}", "0"), k
    assert int(envoy["rocketmq.tp.request_code.PULL_MESSAGE.requests"]) > 0
    seen = []
    for code, server in (("SEND_MESSAGE_V2", cluster.broker_addr), ("GET_ROUTEINFO_BY_TOPIC", cluster.namesrv_addr)):
        got = json.loads(p.get("/exchanges?limit=1000&filter=" + urllib.parse.quote(f"code == {code}"))[2])
        assert got["count"] > 0, code
        assert {e["connection"]["server"] for e in got["exchanges"]} == {server}, code
        seen += got["exchanges"]
    return seen
