"""TLS on the transparent listener: connections that an iptables OUTPUT REDIRECT sends to
``rmqsniff proxy --transparent --tls permissive`` are terminated there (TLS 1.3 from the
local CA), forwarded over TLS to their original destination (``--upstream-tls``), decoded,
recorded as plaintext, and both legs' secrets go to the ``--tls-keylog`` file (0600).

Needs root (CAP_NET_ADMIN) and ``iptables`` (``setpriv`` for the real client); skipped, with
the reason, when they are not usable.  The rules only take this test's own connections (a
socket mark or a group of its own, to this test's ports) and are always removed."""
from __future__ import annotations

import json
import os
import re
import socket
import ssl
import stat

import pytest

from replay.proxy import TRANSPARENT, Mapping, ProxyConfig
from replay.proxy.tls import LocalCA
from rmqsniff.exporters.exchanges import exchange_to_dict
from rmqsniff.pipeline import analyze
from tests.support.grpc_truth import check_grpc_recording
from tests.support.java_clients import run_java
from tests.support.proxy import ProxyProcess, ProxyThread, wait_idle
from tests.support.transparent import AS_GROUP, GID, MARK, iptables_problem, redirect
from tests.test_proxy_tls import Upstream, _ask, _client_ctx

pytestmark = pytest.mark.timeout(600)

CLIENT_MARK = 0x524E  # the in-process client's sockets carry it: the only ones the rule redirects
SO_MARK = getattr(socket, "SO_MARK", 36)
CLIENT_RANDOM = re.compile(r"^(?:CLIENT_TRAFFIC_SECRET_0|CLIENT_RANDOM) ([0-9a-f]{64}) ", re.M)


@pytest.fixture
def usable_iptables():
    problem = iptables_problem()
    if problem:
        pytest.skip(f"iptables REDIRECT unusable here: {problem}")


def _marked_connection(port: int) -> socket.socket:
    """A connection to 127.0.0.1:``port`` whose packets carry CLIENT_MARK (so the REDIRECT takes it)."""
    s = socket.socket()
    try:
        s.setsockopt(socket.SOL_SOCKET, SO_MARK, CLIENT_MARK)
        s.settimeout(10)
        s.connect(("127.0.0.1", port))
    except BaseException:
        s.close()
        raise
    return s


def test_python_tls_client_redirected_to_the_transparent_tls_proxy(usable_iptables, tmp_path):
    """Python ``ssl`` (TLS 1.3, verifying the proxy's certificate for its SNI name) and a
    plaintext client, both connecting to a stand-in TLS remoting server (a thread answering
    each request with its opaque: no cluster needed) and redirected to the transparent
    listener: both get their answers; the TLS one is marked TLS 1.3; each connection is shown
    going to the server it was meant for; the upstream legs are TLS with the client's SNI."""
    ca_up = LocalCA(str(tmp_path / "upstream-ca"))
    pem = tmp_path / "upstream.pem"
    pem.write_bytes(ca_up.leaf(["upstream.test", "127.0.0.1"]))
    up_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    up_ctx.load_cert_chain(str(pem))
    up = Upstream(up_ctx)
    keylog, rec = tmp_path / "keys.log", tmp_path / "rec.pcapng"
    pt = ProxyThread(ProxyConfig([Mapping(TRANSPARENT, ("127.0.0.1", 0))], mark=MARK, tls="permissive",
                                 tls_ca_dir=str(tmp_path / "ca"), tls_keylog=str(keylog), upstream_tls=True,
                                 upstream_ca=ca_up.cert_path, record=str(rec)))
    try:
        ctx = _client_ctx(LocalCA(str(tmp_path / "ca")))
        with redirect([up.port], pt.listen(TRANSPARENT)[1], MARK, None, client_mark=CLIENT_MARK):
            with ctx.wrap_socket(_marked_connection(up.port), server_hostname="upstream.test") as s:
                version = s.version()
                answers = [_ask(s, i, b"tls-%d" % i) for i in range(1, 4)]
            with _marked_connection(up.port) as s:
                plain = _ask(s, 7, b"plain")
        stats = pt.stats()
        exs = pt.call(lambda: [exchange_to_dict(ex) for ex in pt.proxy.recent.select(None, 0)])
    finally:
        pt.stop()
        up.close()
    assert version == "TLSv1.3"
    assert [(a.opaque, a.body) for a in answers] == [(i, b"tls-%d" % i) for i in range(1, 4)]
    assert (plain.opaque, plain.body) == (7, b"plain")
    t = stats["transport"]
    assert (t["tls_client"], t["tls_plaintext_client"], t["tls_upstream"], t["flows"]) == (1, 1, 2, 2)
    assert t.get("transparent_not_redirected", 0) == t.get("tls_failed", 0) == 0
    assert up.errors == [] and [h[0] for h in up.hellos] == ["upstream.test", None]  # SNI passed on
    assert len(exs) == 4 and {e["connection"]["server"] for e in exs} == {f"127.0.0.1:{up.port}"}
    assert sorted(e["tls"]["version"] for e in exs if "tls" in e) == ["TLS 1.3"] * 3
    assert stat.S_IMODE(os.stat(keylog).st_mode) == 0o600
    assert len(set(CLIENT_RANDOM.findall(keylog.read_text()))) == 3  # the client leg + two upstream legs
    a = analyze([str(rec)])
    assert a.errors == []
    assert a.stats.snapshot()["counters"]["answered"] == 4


@pytest.mark.rocketmq
def test_java_grpc_client_with_default_tls_redirected_to_the_transparent_tls_proxy(usable_iptables,
                                                                                   rocketmq_cluster, tmp_path):
    """The real Java 5.x gRPC client with its default TLS (``-Drmqsniff.tls=true``: any
    certificate trusted, ALPN h2), given the cluster's real gRPC endpoint: the REDIRECT sends
    it to the transparent listener, which terminates TLS, recognises HTTP/2 in the plaintext
    and speaks TLS to the real RocketMQ proxy (permissive there).  Every call is decoded and
    the ``-w`` recording reads back as the client's truth."""
    cluster = rocketmq_cluster
    rec, keylog = tmp_path / "grpc-tls-transparent.pcapng", tmp_path / "keys.log"
    p = ProxyProcess("--transparent", "127.0.0.1:0", "--mark", hex(MARK), "--admin", "127.0.0.1:0", "-w", str(rec),
                     "--tls", "permissive", "--tls-ca-dir", str(tmp_path / "ca"), "--tls-keylog", str(keylog),
                     "--upstream-tls", "--upstream-insecure", "--stat-prefix", "tp", prefix=AS_GROUP)
    try:
        listen = next(m[1] for ln in p.lines if (m := re.match(r"transparent (\S+) -> ", ln)))
        truth_path = tmp_path / "truth.json"
        with redirect([int(cluster.grpc_addr.rsplit(":", 1)[1])], int(listen.rsplit(":", 1)[1]), MARK, GID):
            run_java(cluster, "clients/proxy_transparent_grpc_tls", cluster.grpc_addr, str(truth_path), grpc=True,
                     jvm=("-Drmqsniff.tls=true",), prefix=AS_GROUP)
        truth = json.loads(truth_path.read_text())
        assert truth["tls"] is True
        assert wait_idle(p)["sessions"] == 0
        s = json.loads(p.get("/stats?format=json")[2])
        recent = json.loads(p.get("/exchanges?limit=1000")[2])
    finally:
        code = p.stop()
    assert code == 0, "\n".join(p.lines[-20:])

    t = s["transport"]
    assert t["tls_client"] == t["flows"] == t["tls_upstream"] > 0
    assert t.get("transparent_not_redirected", 0) == t.get("upstream_connect_failure", 0) == 0
    assert t.get("tls_plaintext_client", 0) == t.get("tls_failed", 0) == 0
    names = {r["name"] for r in s["codes"].values() if r["protocol"] == "grpc"}
    assert {"QueryRoute", "SendMessage", "ReceiveMessage", "AckMessage"} <= names
    assert s["counters"]["send_message_v2"] == len(truth["sent"])
    exs = recent["exchanges"]
    assert exs and {e["connection"]["server"] for e in exs} == {cluster.grpc_addr}  # the original destination
    assert all(e["status"] == "answered" for e in exs if e["request"]["method"] != "Telemetry")
    assert {e["tls"]["version"] for e in exs} == {"TLS 1.3"}
    assert all(e["tls"]["cipher"].startswith("TLS_AES_") for e in exs)

    check_grpc_recording(rec, truth)

    assert stat.S_IMODE(os.stat(keylog).st_mode) == 0o600
    assert len(set(CLIENT_RANDOM.findall(keylog.read_text()))) == 2 * t["tls_client"]  # both legs of each
