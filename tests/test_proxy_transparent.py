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

import json
import re
import urllib.parse

import pytest

from tests.support.java_clients import run_java
from tests.support.proxy import ProxyProcess, wait_idle
from tests.support.transparent import AS_GROUP, GID, MARK, check_transparent_run, iptables_problem, redirect

pytestmark = [pytest.mark.rocketmq, pytest.mark.timeout(600)]


def test_java_client_redirected_by_iptables_to_the_transparent_proxy(rocketmq_cluster, rocketmq_capture, tmp_path):
    problem = iptables_problem()
    if problem:
        pytest.skip(f"iptables REDIRECT unusable here: {problem}")
    _redirected_run(rocketmq_cluster, rocketmq_capture, tmp_path, "127.0.0.1", "clients/proxy_transparent")


def _redirected_run(cluster, rocketmq_capture, tmp_path, host: str, home: str) -> list[dict]:
    """``rmqsniff proxy --transparent`` on ``host``, an OUTPUT REDIRECT of the cluster's ports
    on ``host`` to it, and a real Java client given the real name server (only the kernel sends
    it to the proxy), producing and consuming; then :func:`check_transparent_run`."""
    direct_pcap, direct = rocketmq_capture("remoting_json")
    ns_port = int(cluster.namesrv_addr.rsplit(":", 1)[1])
    br_port = int(cluster.broker_addr.rsplit(":", 1)[1])
    p = ProxyProcess("--transparent", f"[{host}]:0" if ":" in host else f"{host}:0", "--mark", hex(MARK),
                     "--admin", "127.0.0.1:0", "--stat-prefix", "tp", prefix=AS_GROUP)
    try:
        listen = next(m[1] for ln in p.lines if (m := re.match(r"transparent (\S+) -> ", ln)))
        truth_path = tmp_path / "truth.json"
        with redirect([ns_port, br_port, br_port - 2], int(listen.rsplit(":", 1)[1]), MARK, GID, dst=host):
            run_java(cluster, home, "produce-consume", cluster.namesrv_addr, "TopicProxy", str(truth_path),
                      prefix=AS_GROUP)
        seen = check_transparent_run(p, cluster, json.loads(truth_path.read_text()), direct, direct_pcap)
    finally:
        code = p.stop()
    assert code == 0, "\n".join(p.lines[-20:])
    return seen


def test_java_grpc_client_redirected_by_iptables_to_the_transparent_proxy(rocketmq_cluster, rocketmq_capture,
                                                                          tmp_path):
    """A real 5.x gRPC client given the cluster's real gRPC endpoint: the REDIRECT sends its
    connection to the transparent listener, which recognises HTTP/2 by its first bytes and
    decodes the calls."""
    problem = iptables_problem()
    if problem:
        pytest.skip(f"iptables REDIRECT unusable here: {problem}")
    cluster = rocketmq_cluster
    _, direct = rocketmq_capture("grpc_java")
    p = ProxyProcess("--transparent", "127.0.0.1:0", "--mark", hex(MARK), "--admin", "127.0.0.1:0",
                     "--stat-prefix", "tp", prefix=AS_GROUP)
    try:
        listen = next(m[1] for ln in p.lines if (m := re.match(r"transparent (\S+) -> ", ln)))
        truth_path = tmp_path / "truth.json"
        with redirect([int(cluster.grpc_addr.rsplit(":", 1)[1])], int(listen.rsplit(":", 1)[1]), MARK, GID):
            run_java(cluster, "clients/proxy_transparent_grpc", cluster.grpc_addr, str(truth_path), grpc=True,
                      prefix=AS_GROUP)
        truth = json.loads(truth_path.read_text())
        assert truth["counts"] == direct["counts"]
        assert sorted(truth["received"]) == sorted(direct["received"])
        assert wait_idle(p)["sessions"] == 0
        s = json.loads(p.get("/stats?format=json")[2])
        assert s["transport"].get("transparent_not_redirected", 0) == 0
        assert s["transport"].get("upstream_connect_failure", 0) == 0
        names = {r["name"] for r in s["codes"].values() if r["protocol"] == "grpc"}
        assert {"QueryRoute", "SendMessage", "ReceiveMessage", "AckMessage"} <= names
        assert s["counters"]["send_message_v2"] >= len(direct["sent"])
        got = json.loads(p.get("/exchanges?limit=1000&filter=" + urllib.parse.quote('protocol == "grpc"'))[2])
        assert got["count"] > 0
        assert {e["connection"]["server"] for e in got["exchanges"]} == {cluster.grpc_addr}
    finally:
        code = p.stop()
    assert code == 0, "\n".join(p.lines[-20:])


@pytest.fixture(scope="module")
def ipv6_cluster(tmp_path_factory):
    """A second real cluster, listening and advertising on ::1 only."""
    problem = iptables_problem("ip6tables")
    if problem:
        pytest.skip(f"ip6tables REDIRECT unusable here: {problem}")
    from tests.rocketmq import build
    from tests.rocketmq.cluster import Cluster, Ports

    build.build_remoting_programs()
    main = Ports.from_env()  # other ports than the session cluster's, although the address differs
    cluster = Cluster(tmp_path_factory.mktemp("rocketmq-ipv6"), host="::1",
                      ports=Ports(main.namesrv + 6, main.broker + 20, main.proxy + 6, main.grpc + 6))
    cluster.start()
    try:
        yield cluster
    finally:
        cluster.stop()


def test_ipv6_java_client_redirected_by_ip6tables_to_the_transparent_proxy(ipv6_cluster, rocketmq_capture, tmp_path):
    """The same over IPv6: a cluster on ::1, an ip6tables OUTPUT REDIRECT, the original
    destinations read with IP6T_SO_ORIGINAL_DST."""
    seen = _redirected_run(ipv6_cluster, rocketmq_capture, tmp_path, "::1", "clients/proxy_transparent_v6")
    assert {e["connection"]["client"].rsplit(":", 1)[0] for e in seen} == {"[::1]"}


