"""Every byte the broker sent reaches the client: both legs of the proxy on the wire.

A real Java remoting client (produce, push/broadcast/lite-pull consume) runs against the
real cluster through ``rmqsniff proxy`` while tcpdump records the client<->proxy leg (the
proxy's name-server and broker listeners) and the proxy<->cluster leg (the real name server
and broker ports).  Each TCP connection is reassembled from the packets (dpkt and a small
sequence-number reassembly in ``tests/support/tcp_streams.py``, not rmqsniff's), proxied
connections are paired by their client->server bytes (which the proxy forwards unchanged),
and then:

* broker connections: the server->client stream is the same, sha256 for sha256;
* name-server connections: the streams frame for frame are the same, except route answers
  (GET_ROUTEINFO_BY_TOPIC / GET_BROKER_CLUSTER_INFO), which differ only in broker addresses.
"""
from __future__ import annotations

import hashlib
import json
import struct

import pytest

from dissectors.remoting import codes, decode_frame
from dissectors.remoting.command import FLAG_RESPONSE
from tests.rocketmq.capture import Capture
from tests.support.java_clients import run_java
from tests.support.proxy import ProxyProcess, free_port, wait_idle
from tests.support.tcp_streams import TcpStream, frames, tcp_streams
from tests.support.tcpdump import kernel_drops, settle

ROUTE_CODES = {codes.GET_ROUTEINFO_BY_TOPIC, codes.GET_BROKER_CLUSTER_INFO}
_SEQ = 1 << 32


# ------------------------------------------------------------------ pairing the legs

def pair_legs(streams: list[TcpStream], port_map: dict[int, int]) -> list[tuple[TcpStream, TcpStream]]:
    """(client leg, upstream leg) pairs: ``port_map`` is proxy listener port -> upstream port;
    the upstream connection of a client connection is the one that carried the same client bytes."""
    client_leg = [s for s in streams if s.server[1] in port_map]
    upstream: dict[tuple[int, bytes], list[TcpStream]] = {}
    for s in streams:
        if s.server[1] in port_map.values():
            upstream.setdefault((s.server[1], hashlib.sha256(s.c2s).digest()), []).append(s)
    pairs = []
    for c in client_leg:
        assert c.c2s, f"{c.label}: the client sent nothing"
        cands = upstream.get((port_map[c.server[1]], hashlib.sha256(c.c2s).digest()), [])
        assert len(cands) == 1, f"{c.label}: {len(cands)} upstream connections carried its {len(c.c2s)} bytes"
        pairs.append((c, cands[0]))
    return pairs


def _route_body_only_differs(client_frame: bytes, upstream_frame: bytes, addr_map: dict[str, str]) -> None:
    """Same serialize mark and header; the body equals the upstream's with addresses replaced."""
    (_, cmark), (_, umark) = struct.unpack_from(">iI", client_frame), struct.unpack_from(">iI", upstream_frame)
    assert cmark == umark
    hend = 8 + (cmark & 0xFFFFFF)
    assert client_frame[8:hend] == upstream_frame[8:hend], "the header of a route answer changed"
    body = upstream_frame[hend:]
    for up, adv in addr_map.items():
        body = body.replace(f'"{up}"'.encode(), f'"{adv}"'.encode())
    assert client_frame[hend:] == body, "a route answer differs in more than broker addresses"
    assert struct.unpack_from(">i", client_frame)[0] == len(client_frame) - 4


# ------------------------------------------------------------------ the real run

@pytest.mark.rocketmq
@pytest.mark.timeout(600)
def test_every_byte_the_cluster_sent_reaches_the_client(rocketmq_cluster, tmp_path):

    cluster = rocketmq_cluster
    ns_port, broker_port = free_port(), free_port()
    pcap = tmp_path / "legs.pcap"
    cap = Capture(pcap, [ns_port, broker_port, cluster.ports.namesrv, cluster.ports.broker])
    cap.start()
    try:
        p = ProxyProcess("--namesrv", f"127.0.0.1:{ns_port}={cluster.namesrv_addr}",
                         "--broker", f"127.0.0.1:{broker_port}={cluster.broker_addr}", "--admin", "127.0.0.1:0")
        try:
            truth_path = tmp_path / "truth.json"
            run_java(cluster, "clients/proxy_legs", "produce-consume", f"127.0.0.1:{ns_port}", "TopicLegs",
                      str(truth_path))
            truth = json.loads(truth_path.read_text())
            assert wait_idle(p)["sessions"] == 0
            flows = json.loads(p.get("/stats?format=json")[2])["transport"]["flows"]
        finally:
            assert p.stop() == 0, "\n".join(p.lines[-20:])
        settle(pcap)  # the closing FIN/RST packets reach tcpdump a moment after the proxy exits
    finally:
        cap.stop()
    assert truth["counts"] and truth["received"]["push"]
    assert kernel_drops(cap) == 0, cap.stderr_text

    streams = tcp_streams(pcap)
    port_map = {ns_port: cluster.ports.namesrv, broker_port: cluster.ports.broker}
    pairs = pair_legs(streams, port_map)
    assert len(pairs) == flows  # every connection the proxy took is on the wire, on both legs
    for c, u in pairs:
        assert c.holes == 0 and u.holes == 0, f"capture lost bytes of {c.label} / {u.label}"
        # Closing packets are not required: in some fresh-clone CI runs the FINs of many legs were
        # missing from the capture although the proxy had closed every session (cause not found; the
        # bytes before them are complete, holes == 0, and compared below on both legs).
    broker_pairs = [(c, u) for c, u in pairs if c.server[1] == broker_port]
    ns_pairs = [(c, u) for c, u in pairs if c.server[1] == ns_port]
    assert len(broker_pairs) >= 2 and ns_pairs  # producer and consumers; route lookups

    # broker listener: no rewriting, so every server byte arrives as sent
    total = 0
    for c, u in broker_pairs:
        assert len(c.s2c) == len(u.s2c), c.label
        assert hashlib.sha256(c.s2c).hexdigest() == hashlib.sha256(u.s2c).hexdigest(), c.label
        total += len(u.s2c)
    assert total > 50_000  # pulled messages, not only heartbeats

    # name-server listener: frame for frame the same, except route answers (broker addresses only)
    addr_map = {cluster.broker_addr: f"127.0.0.1:{broker_port}"}
    rewritten = 0
    for c, u in ns_pairs:
        requests = {}
        for fr in frames(c.c2s):
            cmd = decode_frame(fr)
            requests[cmd.opaque] = cmd.code
        cf, uf = frames(c.s2c), frames(u.s2c)
        assert len(cf) == len(uf), c.label
        for a, b in zip(cf, uf, strict=True):
            if a == b:
                continue
            cmd = decode_frame(b)
            assert cmd.flag & FLAG_RESPONSE and requests.get(cmd.opaque) in ROUTE_CODES, \
                f"{c.label}: a frame that is not a route answer was changed (opaque {cmd.opaque})"
            _route_body_only_differs(a, b, addr_map)
            assert f'"{cluster.broker_addr}"'.encode() not in a
            rewritten += 1
    assert rewritten > 0
