"""The proxy without a cluster: configuration, route rewriting, and the faults a real
broker cannot be made to produce (connect timeout, a side that stops reading) — those
tests use small stand-in servers and say so.  The real-cluster tests are in
``test_proxy_rocketmq.py``."""
from __future__ import annotations

import hashlib
import socket
import threading
import time

import pytest

from dissectors.remoting import JSON, ROCKETMQ, RemotingCommand, codes, decode_frame, encode
from replay.proxy import BROKER, TRANSPARENT, ConfigError, Mapping, Proxy, ProxyConfig, ProxyError
from replay.proxy.remoting import broker_addrs, rewrite_frame
from replay.proxy.server import new_event_loop
from replay.proxy.transparent import original_dst
from tests.support.proxy import ProxyThread, free_port, read_frames

pytestmark = pytest.mark.timeout(60)


# ------------------------------------------------------------------ configuration

def test_mapping_forms_and_errors():
    m = Mapping.parse("namesrv", "19876=127.0.0.1:9876")
    assert m.listen == ("127.0.0.1", 19876) and m.upstream == ("127.0.0.1", 9876)
    assert Mapping.parse("broker", "[::1]:0=10.0.0.1:10911").listen == ("::1", 0)
    for bad in ("127.0.0.1:9876", "a=b", "1=2:x", "=127.0.0.1:1"):
        with pytest.raises(ConfigError):
            Mapping.parse("namesrv", bad)
    with pytest.raises(ConfigError, match="--advertise"):
        ProxyConfig([Mapping.parse("namesrv", "0.0.0.0:1=127.0.0.1:9876")]).validate()
    with pytest.raises(ConfigError, match="nothing to proxy"):
        ProxyConfig([]).validate()


def test_listen_failure_is_one_clear_error():
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        loop = new_event_loop()
        try:
            p = Proxy(ProxyConfig([Mapping.parse("namesrv", f"{port}=127.0.0.1:9")]))
            with pytest.raises(ProxyError, match=f"cannot listen on 127.0.0.1:{port}: Address already in use"):
                loop.run_until_complete(p.start())
        finally:
            loop.close()


# ------------------------------------------------------------------ route rewriting

ROUTE_BODY = (b'{"brokerDatas":[{"brokerAddrs":{0:"127.0.0.1:10911",1:"127.0.0.1:20911"},"brokerName":"b",'
              b'"cluster":"C","enableActingMaster":false}],"filterServerTable":{},"queueDatas":[{"brokerName":"b",'
              b'"perm":6,"readQueueNums":4,"topicSysFlag":0,"writeQueueNums":4}],"note":"127.0.0.1:10911x"}')


@pytest.mark.parametrize("serialize", [JSON, ROCKETMQ])
def test_rewrite_replaces_addresses_recomputes_length_and_keeps_the_rest(serialize):
    resp = RemotingCommand(0, 1, 42, language="JAVA", version=473, remark=None,
                           ext={"k": "v"}, body=ROUTE_BODY, serialize=serialize)
    frame = encode(resp)
    assert broker_addrs(ROUTE_BODY) == ["127.0.0.1:10911", "127.0.0.1:20911"]
    out = rewrite_frame(frame, {"127.0.0.1:10911": "127.0.0.1:40001", "127.0.0.1:20911": "10.1.2.3:5"})
    got = decode_frame(out)
    assert got.body == ROUTE_BODY.replace(b'"127.0.0.1:10911"', b'"127.0.0.1:40001"').replace(
        b'"127.0.0.1:20911"', b'"10.1.2.3:5"')
    assert b'"127.0.0.1:10911x"' in got.body  # only whole quoted addresses are replaced
    hlen = int.from_bytes(frame[5:8], "big")
    assert out[4:8 + hlen] == frame[4:8 + hlen]  # header bytes untouched
    assert int.from_bytes(out[:4], "big") == len(out) - 4
    assert (got.code, got.opaque, got.flag, got.ext) == (0, 42, 1, {"k": "v"})


def test_cluster_info_addresses_are_found():
    body = (b'{"brokerAddrTable":{"broker-a":{"brokerAddrs":{0:"127.0.0.1:10911"},"brokerName":"broker-a",'
            b'"cluster":"DefaultCluster"}},"clusterAddrTable":{"DefaultCluster":["broker-a"]}}')
    assert broker_addrs(body) == ["127.0.0.1:10911"]
    assert broker_addrs(b"not json") == []


# ------------------------------------------------------------------ upstream failures (stand-ins)

def test_connect_refused_answers_each_request_with_system_error_then_closes():
    """No server behind the upstream port: nothing real to talk to, by construction."""
    dead = free_port()
    pt = ProxyThread(ProxyConfig([Mapping.parse(BROKER, f"0=127.0.0.1:{dead}")], connect_timeout=2))
    try:
        with socket.create_connection(pt.listen(BROKER), timeout=5) as c:
            t0 = time.monotonic()
            reqs = [RemotingCommand(codes.SEND_MESSAGE_V2, 0, 7, ext={"a": "PG", "b": "T"}, body=b"x"),
                    RemotingCommand(codes.HEART_BEAT, 2, 8, body=b"{}"),  # oneway: no answer
                    RemotingCommand(codes.PULL_MESSAGE, 0, 9, serialize=ROCKETMQ)]
            c.sendall(b"".join(encode(r) for r in reqs))
            frames, closed = read_frames(c, 3)
            assert time.monotonic() - t0 < 3.0
        assert [(f.code, f.opaque, f.flag, f.serialize) for f in frames] == [
            (codes.SYSTEM_ERROR, 7, 1, JSON), (codes.SYSTEM_ERROR, 9, 1, ROCKETMQ)]
        assert f"cannot connect to upstream 127.0.0.1:{dead}" in (frames[0].remark or "")
        assert closed
        time.sleep(0.2)
        s = pt.stats()
        assert s["transport"]["upstream_connect_failure"] == 1
        assert s["counters"]["response_error"] == 2 and s["counters"]["oneway"] == 1
        assert s["gauges"]["total_pending"]["value"] == 0 and s["gauges"]["request_active"]["value"] == 0
    finally:
        pt.stop()


def test_requests_waiting_for_upstream_are_pending_then_fail_on_connect_timeout():
    """Stand-in: a listener whose accept queue is full drops SYNs, so connecting hangs —
    a real broker cannot be made to do that on demand."""
    hog = socket.socket()
    hog.bind(("127.0.0.1", 0))
    hog.listen(0)
    fillers = []
    for _ in range(4):
        f = socket.socket()
        f.setblocking(False)
        f.connect_ex(hog.getsockname())
        fillers.append(f)
    time.sleep(0.2)
    pt = ProxyThread(ProxyConfig([Mapping.parse(BROKER, f"0=127.0.0.1:{hog.getsockname()[1]}")],
                                 connect_timeout=1.5))
    try:
        with socket.create_connection(pt.listen(BROKER), timeout=5) as c:
            c.sendall(encode(RemotingCommand(codes.SEND_MESSAGE_V2, 0, 1, ext={"b": "T"}, body=b"m"))
                      + encode(RemotingCommand(codes.GET_ROUTEINFO_BY_TOPIC, 0, 2, ext={"topic": "T"})))
            deadline = time.monotonic() + 1.0
            while time.monotonic() < deadline and pt.stats()["gauges"]["total_pending"]["value"] < 2:
                time.sleep(0.05)
            g = pt.stats()["gauges"]
            assert g["send_message_pending"]["value"] == 1 and g["get_topic_route_pending"]["value"] == 1
            assert g["total_pending"]["value"] == 2
            frames, closed = read_frames(c, 2)
        assert [(f.code, f.opaque) for f in frames] == [(codes.SYSTEM_ERROR, 1), (codes.SYSTEM_ERROR, 2)]
        assert "timed out" in (frames[0].remark or "") and closed
        time.sleep(0.2)
        g = pt.stats()["gauges"]
        assert g["total_pending"] == {"value": 0, "max": 2}
    finally:
        pt.stop()
        for f in fillers:
            f.close()
        hog.close()


def test_slow_upstream_slows_the_client_and_bytes_arrive_exactly():
    """Stand-in upstream that stops reading (a slow side); then it reads everything."""
    up = socket.socket()
    up.bind(("127.0.0.1", 0))
    up.listen(1)
    pt = ProxyThread(ProxyConfig([Mapping.parse(BROKER, f"0=127.0.0.1:{up.getsockname()[1]}")]))
    try:
        c = socket.create_connection(pt.listen(BROKER), timeout=5)
        server, _ = up.accept()
        frame = encode(RemotingCommand(codes.SEND_MESSAGE_V2, 2, 1, ext={"b": "T"}, body=b"z" * (256 * 1024)))
        c.setblocking(False)
        sent, stalled_since, total = 0, None, 64 * 1024 * 1024
        h = hashlib.sha256()
        pending = b""
        while sent < total:
            if not pending:
                pending = frame
            try:
                n = c.send(pending)
            except BlockingIOError:
                n = 0
            if n:
                h.update(pending[:n])
                pending = pending[n:]
                sent += n
                stalled_since = None
            else:
                stalled_since = stalled_since or time.monotonic()
                if time.monotonic() - stalled_since > 1.0:
                    break
                time.sleep(0.01)
        # the client was held back: kernel buffers plus bounded proxy buffers, not all 64 MiB
        assert sent < 40 * 1024 * 1024, sent
        c.setblocking(True)
        got = hashlib.sha256()
        received = 0
        done = threading.Event()

        def drain() -> None:
            nonlocal received
            server.settimeout(10)
            while received < sent:
                data = server.recv(1 << 20)
                if not data:
                    break
                got.update(data)
                received += len(data)
            done.set()

        t = threading.Thread(target=drain)
        t.start()
        if pending:
            c.sendall(pending)
            h.update(pending)
            sent += len(pending)
        done.wait(20)
        t.join(5)
        assert received == sent and got.digest() == h.digest()
        c.close()
        server.close()
    finally:
        pt.stop()
        up.close()


# ------------------------------------------------------------------ transparent mode

def test_original_dst_without_redirect_is_the_local_address():
    with socket.socket() as srv:
        srv.bind(("127.0.0.1", 0))
        srv.listen()
        with socket.create_connection(srv.getsockname()):
            a, _ = srv.accept()
            with a:
                assert original_dst(a) == (srv.getsockname(), "local")


def test_transparent_listener_refuses_connections_that_were_not_redirected():
    pt = ProxyThread(ProxyConfig([Mapping(TRANSPARENT, ("127.0.0.1", 0))]))
    try:
        with socket.create_connection(pt.listen(TRANSPARENT), timeout=5) as c:
            c.settimeout(5)
            assert c.recv(1) == b""  # closed, not looped back into itself
        assert pt.stats()["transport"]["transparent_not_redirected"] == 1
        assert any("was not redirected" in line for line in pt.lines)
    finally:
        pt.stop()


# ------------------------------------------------------------------ gRPC route rewriting (sans-I/O)

def _h2(ftype: int, flags: int, sid: int, payload: bytes) -> bytes:
    return len(payload).to_bytes(3, "big") + bytes((ftype, flags)) + sid.to_bytes(4, "big") + payload


def _h2_frames(data: bytes) -> list[tuple[int, int, int, bytes]]:
    out, pos = [], 0
    while pos < len(data):
        n = int.from_bytes(data[pos:pos + 3], "big")
        out.append((data[pos + 3], data[pos + 4], int.from_bytes(data[pos + 5:pos + 9], "big"),
                    data[pos + 9:pos + 9 + n]))
        pos += 9 + n
    return out


def test_grpc_query_route_answer_is_rewritten_with_even_flow_control():
    hpack = pytest.importorskip("hpack")
    from dissectors.grpc.schema import message_class
    from replay.proxy.grpc import GrpcTap
    from rmqsniff.model import Connection
    from rmqsniff.pairing import PairingSink
    from rmqsniff.stats import Stats

    enc_c, enc_s = hpack.Encoder(), hpack.Encoder()
    req = message_class("QueryRouteRequest")()
    req.topic.name = "T"
    body = req.SerializeToString()
    client = (b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + _h2(4, 0, 0, b"")
              + _h2(1, 4, 1, enc_c.encode([(":method", "POST"), (":scheme", "http"),
                                          (":path", "/apache.rocketmq.v2.MessagingService/QueryRoute"),
                                          (":authority", "127.0.0.1:18081"), ("content-type", "application/grpc"),
                                          ("te", "trailers")]))
              + _h2(0, 1, 1, b"\0" + len(body).to_bytes(4, "big") + body))
    resp = message_class("QueryRouteResponse")()
    resp.status.code = 20000
    for i in range(2):
        mq = resp.message_queues.add()
        mq.topic.name, mq.id = "T", i
        mq.broker.name = "broker-a"
        mq.broker.endpoints.scheme = 1
        a = mq.broker.endpoints.addresses.add()
        a.host, a.port = "127.0.0.1", 28081
    rb = resp.SerializeToString()
    msg = b"\0" + len(rb).to_bytes(4, "big") + rb
    trailers = _h2(1, 5, 1, enc_s.encode([("grpc-status", "0")]))
    server = (_h2(4, 0, 0, b"") + _h2(1, 4, 1, enc_s.encode([(":status", "200"), ("content-type", "application/grpc")]))
              + _h2(0, 0, 1, msg[:20]) + _h2(0, 0, 1, msg[20:]) + trailers)
    stats = Stats()
    tap = GrpcTap(Connection(0, ("127.0.0.1", 1), ("127.0.0.1", 28081)),
                  PairingSink(stats, lambda ex: None, ordered=False), stats, rewrite_routes=True)
    tap.from_client(client, 1.0)
    pieces = tap.from_server(server, 1.5)
    answers = [p for p in pieces if not isinstance(p, bytes)]
    assert len(answers) == 1 and answers[0].addrs == ["127.0.0.1:28081"]
    out = b"".join(p if isinstance(p, bytes) else p.apply({"127.0.0.1:28081": "127.0.0.1:5"}) for p in pieces)
    frames = _h2_frames(out)
    assert frames[-1] == _h2_frames(trailers)[0]  # trailers untouched, after the answer
    data = [f for f in frames if f[0] == 0]
    assert sum(len(f[3]) for f in data) == len(msg)  # flow-controlled size unchanged (padding)
    payload = b"".join(f[3][1:len(f[3]) - f[3][0]] if f[1] & 8 else f[3] for f in data)
    n = int.from_bytes(payload[1:5], "big")
    got = message_class("QueryRouteResponse")()
    got.ParseFromString(payload[5:5 + n])
    assert len(payload) == 5 + n
    assert [(q.broker.endpoints.addresses[0].host, q.broker.endpoints.addresses[0].port)
            for q in got.message_queues] == [("127.0.0.1", 5)] * 2
    assert (got.status.code, [q.id for q in got.message_queues]) == (20000, [0, 1])
    tap.close()
    assert stats.counter("get_topic_route") == 1 and stats.counter("answered") == 1
