"""What every transparent-mode proxy test (iptables REDIRECT, TPROXY) checks once its client
is done, and the scoped iptables REDIRECT the REDIRECT tests set up."""
from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
import urllib.parse

from rmqsniff.exporters.statsfmt import render_envoy
from rmqsniff.pipeline import analyze
from tests.support.java_clients import labels
from tests.support.proxy import ProxyProcess, wait_idle

MARK = 0x524D  # the proxy's upstream connections carry it; the redirect rule skips them
GID = 52877  # the group the client and the proxy run in; only its connections are redirected
AS_GROUP = ("setpriv", f"--regid={GID}", "--clear-groups", "--")


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


def iptables_problem(tool: str = "iptables") -> str | None:
    """Why ``tool`` (iptables or ip6tables) REDIRECT cannot be used here, or None."""
    if not sys.platform.startswith("linux"):
        return f"{tool} is Linux only"
    if shutil.which(tool) is None:
        return f"`{tool}` not installed (Debian: apt-get install -y iptables)"
    if os.geteuid() != 0:
        return "needs root (CAP_NET_ADMIN) to change the nat table"
    if shutil.which("setpriv") is None:
        return "`setpriv` not installed (Debian: util-linux)"
    r = subprocess.run([tool, "-t", "nat", "-S", "OUTPUT"], capture_output=True, text=True)
    if r.returncode != 0:
        return f"`{tool} -t nat -S OUTPUT` failed: {(r.stderr or r.stdout).strip()}"
    return None


def ipt(*args: str, check: bool = True, tool: str = "iptables") -> subprocess.CompletedProcess:
    r = subprocess.run([tool, "-t", "nat", *args], capture_output=True, text=True)
    if check and r.returncode != 0:
        raise AssertionError(f"{tool} -t nat {' '.join(args)}: {r.stderr.strip()}")
    return r


def forget_connections(dst: str, ports: list[int]) -> None:
    """Delete the kernel's connection-tracking entries for ``dst``:ports. NAT is decided on a
    connection's first packet, and only when no entry matches it: a stale ESTABLISHED entry
    (earlier tests leave some, untouched for days) whose source port the client happens to
    reuse takes its SYN past the REDIRECT, straight to the cluster (the likely cause of a
    failure seen once in CI: the proxy counted no sends). Needs ``conntrack`` (Debian: conntrack);
    without it the entries stay, and that rare bypass with them."""
    if shutil.which("conntrack") is None:
        return
    for port in ports:  # exit status 1: nothing to delete
        subprocess.run(["conntrack", "-D", "-f", "ipv6" if ":" in dst else "ipv4", "-p", "tcp", "-d", dst,
                        "--dport", str(port)], capture_output=True)


@contextlib.contextmanager
def redirect(ports: list[int], to_port: int, mark: int, gid: int | None, dst: str = "127.0.0.1",
             client_mark: int | None = None):
    """Local connections of group ``gid`` (or, with ``client_mark``, those whose socket carries
    that mark: a client in the test's own process) to ``dst``:ports -> the same address's
    ``to_port``, except those marked ``mark`` (ip6tables for an IPv6 ``dst``).  The commands are
    the ones docs/proxy.md gives, in a chain of this test's own."""
    assert (gid is None) != (client_mark is None), "scope the rule by group or by client mark"
    who = ("-m", "owner", "--gid-owner", str(gid)) if gid is not None else ("-m", "mark", "--mark", str(client_mark))
    tool = "ip6tables" if ":" in dst else "iptables"
    forget_connections(dst, ports)
    chain = f"RMQSNIFF_T{os.getpid()}"
    ipt("-N", chain, tool=tool)
    try:
        ipt("-A", chain, "-m", "mark", "--mark", str(mark), "-j", "RETURN", tool=tool)
        ipt("-A", chain, "-p", "tcp", "-d", dst, "-m", "multiport", "--dports", ",".join(map(str, ports)),
            *who, "-j", "REDIRECT", "--to-ports", str(to_port), tool=tool)
        ipt("-A", "OUTPUT", "-j", chain, tool=tool)
        yield chain
    finally:
        ipt("-D", "OUTPUT", "-j", chain, check=False, tool=tool)
        ipt("-F", chain, check=False, tool=tool)
        ipt("-X", chain, check=False, tool=tool)
        assert chain not in ipt("-S", check=False, tool=tool).stdout, f"{tool} rules left behind"
