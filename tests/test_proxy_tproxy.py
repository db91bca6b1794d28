"""Transparent mode with real TPROXY: a real Java client in a network namespace of its own is
given a RocketMQ 5.3 cluster's real name server; its packets reach the host through a veth
pair, where an iptables ``mangle PREROUTING`` TPROXY rule (and the policy route it needs) hands
its connections, name server and broker alike, to ``rmqsniff proxy --transparent``. The proxy
reads each original destination from the accepted socket's own address, connects there and
counts the traffic.

TPROXY only takes packets that arrive on an interface, so this test starts a cluster of its
own on an address the client reaches through the veth (on the host's loopback), not the
session's 127.0.0.1 cluster. Needs root (CAP_NET_ADMIN), ``ip`` and ``iptables`` with the
TPROXY target; skipped, with the reason, when they are not usable. Everything it sets up is
removed."""
from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import subprocess
import sys

import pytest

from tests.support.java_clients import run_java
from tests.support.proxy import ProxyProcess
from tests.support.transparent import check_transparent_run

pytestmark = [pytest.mark.rocketmq, pytest.mark.timeout(600)]

TAG = f"rq{os.getpid() % 100000}"  # names of this test's namespace, veth ends and chain
NETNS, VETH_HOST, VETH_NS, CHAIN = TAG, f"{TAG}h", f"{TAG}c", f"RMQSNIFF_TP{os.getpid()}"
HOST_IP, NS_IP = "10.213.7.1", "10.213.7.2"  # the veth pair
CLUSTER_IP = "10.213.8.5"  # where the cluster listens (host loopback), reached through the veth
MARK, TABLE = "0x1/0x1", "213"


def _sh(*cmd: str, check: bool = True) -> subprocess.CompletedProcess:
    r = subprocess.run(list(cmd), capture_output=True, text=True)
    if check and r.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)}: {(r.stderr or r.stdout).strip()}")
    return r


def tproxy_problem() -> str | None:
    """Why TPROXY cannot be set up here, or None."""
    if not sys.platform.startswith("linux"):
        return "TPROXY is Linux only"
    if os.geteuid() != 0:
        return "needs root (CAP_NET_ADMIN) for namespaces, policy routing and the mangle table"
    for tool in ("ip", "iptables"):
        if shutil.which(tool) is None:
            return f"`{tool}` not installed (Debian: apt-get install -y iproute2 iptables)"
    chain = f"{CHAIN}_probe"
    r = _sh("iptables", "-t", "mangle", "-N", chain, check=False)
    if r.returncode != 0:
        return f"iptables mangle table unusable: {r.stderr.strip()}"
    try:
        r = _sh("iptables", "-t", "mangle", "-A", chain, "-p", "tcp", "-j", "TPROXY", "--on-port", "1",
                "--tproxy-mark", MARK, check=False)
        if r.returncode != 0:
            return f"no TPROXY target: {r.stderr.strip()}"
    finally:
        _sh("iptables", "-t", "mangle", "-F", chain, check=False)
        _sh("iptables", "-t", "mangle", "-X", chain, check=False)
    return None


@contextlib.contextmanager
def namespace_behind_tproxy():
    """A namespace whose only way out is a veth to the host, with CLUSTER_IP on the host's
    loopback; yields a function that installs the TPROXY rule for a proxy port. The rule, the
    policy route and the mark are the ones docs/proxy.md gives."""
    undo: list[tuple[str, ...]] = []
    try:
        _sh("ip", "netns", "add", NETNS)
        undo.append(("ip", "netns", "del", NETNS))
        _sh("ip", "link", "add", VETH_HOST, "type", "veth", "peer", "name", VETH_NS)
        undo.append(("ip", "link", "del", VETH_HOST))
        _sh("ip", "link", "set", VETH_NS, "netns", NETNS)
        _sh("ip", "addr", "add", f"{HOST_IP}/24", "dev", VETH_HOST)
        _sh("ip", "link", "set", VETH_HOST, "up")
        for ns_cmd in (("ip", "addr", "add", f"{NS_IP}/24", "dev", VETH_NS), ("ip", "link", "set", VETH_NS, "up"),
                       ("ip", "link", "set", "lo", "up"), ("ip", "route", "add", "default", "via", HOST_IP)):
            _sh("ip", "netns", "exec", NETNS, *ns_cmd)
        _sh("ip", "addr", "add", f"{CLUSTER_IP}/32", "dev", "lo")
        undo.append(("ip", "addr", "del", f"{CLUSTER_IP}/32", "dev", "lo"))
        # marked packets are delivered locally, to the socket TPROXY picked
        _sh("ip", "rule", "add", "fwmark", MARK, "lookup", TABLE)
        undo.append(("ip", "rule", "del", "fwmark", MARK, "lookup", TABLE))
        _sh("ip", "route", "add", "local", "0.0.0.0/0", "dev", "lo", "table", TABLE)
        undo.append(("ip", "route", "flush", "table", TABLE))
        _sh("iptables", "-t", "mangle", "-N", CHAIN)
        undo.append(("iptables", "-t", "mangle", "-X", CHAIN))
        undo.append(("iptables", "-t", "mangle", "-F", CHAIN))
        _sh("iptables", "-t", "mangle", "-A", "PREROUTING", "-i", VETH_HOST, "-j", CHAIN)
        undo.append(("iptables", "-t", "mangle", "-D", "PREROUTING", "-i", VETH_HOST, "-j", CHAIN))

        def intercept(port: int) -> None:
            _sh("iptables", "-t", "mangle", "-A", CHAIN, "-p", "tcp", "-d", CLUSTER_IP, "-j", "TPROXY",
                "--on-port", str(port), "--on-ip", "0.0.0.0", "--tproxy-mark", MARK)

        yield intercept
    finally:
        for cmd in reversed(undo):
            _sh(*cmd, check=False)
        left = _sh("iptables", "-t", "mangle", "-S", check=False).stdout
        assert CHAIN not in left, "iptables rules left behind"
        assert NETNS not in _sh("ip", "netns", "list", check=False).stdout, "namespace left behind"


@pytest.fixture(scope="module")
def tproxy_cluster(tmp_path_factory):
    """A second real cluster, on CLUSTER_IP, with the namespace in front of it."""
    problem = tproxy_problem()
    if problem:
        pytest.skip(f"TPROXY unusable here: {problem}")
    from tests.rocketmq import build
    from tests.rocketmq.cluster import Cluster, Ports

    build.build_remoting_programs()
    with namespace_behind_tproxy() as intercept:
        main = Ports.from_env()  # other ports than the session cluster's, although the address differs
        cluster = Cluster(tmp_path_factory.mktemp("rocketmq-tproxy"), host=CLUSTER_IP,
                          ports=Ports(main.namesrv + 3, main.broker + 10, main.proxy + 3, main.grpc + 3))
        cluster.start()
        try:
            yield cluster, intercept
        finally:
            cluster.stop()


def test_java_client_in_a_namespace_sent_by_tproxy_to_the_transparent_proxy(tproxy_cluster, rocketmq_capture,
                                                                             tmp_path):
    cluster, intercept = tproxy_cluster
    direct_pcap, direct = rocketmq_capture("remoting_json")
    p = ProxyProcess("--transparent", "0.0.0.0:0", "--admin", "127.0.0.1:0", "--stat-prefix", "tp")
    try:
        listen = next(m[1] for ln in p.lines if (m := re.match(r"transparent (\S+) -> ", ln)))
        intercept(int(listen.rsplit(":", 1)[1]))
        truth_path = tmp_path / "truth.json"
        # the client is given the cluster's real name server; only the kernel sends it to the proxy
        run_java(cluster, "clients/proxy_tproxy", "produce-consume", cluster.namesrv_addr, "TopicProxy",
                  str(truth_path), prefix=("ip", "netns", "exec", NETNS))
        seen = check_transparent_run(p, cluster, json.loads(truth_path.read_text()), direct, direct_pcap)
        # and they came from the namespace, through the veth
        assert {e["connection"]["client"].rsplit(":", 1)[0] for e in seen} == {NS_IP}
    finally:
        code = p.stop()
    assert code == 0, "\n".join(p.lines[-20:])
