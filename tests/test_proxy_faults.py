"""Proxy faults: resets mid-frame, half-close, slow readers, 10k short connections, an upstream
restart.  ``rmqsniff proxy`` runs as its own process; after each fault its open file
descriptors, asyncio tasks (``/routes``) and sessions are back where they were, its RSS stays
flat, and the connections that survive got every byte the cluster sent them (sha256 of what
the client read against the upstream leg reassembled from tcpdump, or against the same
request answered directly).

Real cluster (marker ``rocketmq``): the real broker and name server are the upstreams; the
restart is of a name server of the test's own (the session's cluster is shared by other
tests).  A real broker cannot be made to send half a frame and then reset, nor to answer
after the client's FIN: those two faults use small stand-in servers, and say so.
"""
from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import random
import socket
import struct
import threading
import time
from collections import Counter
from pathlib import Path

import pytest

from dissectors.remoting import RemotingCommand, StreamDecoder, codes, decode_frame, encode
from dissectors.remoting.stream import Frame
from tests.rocketmq.capture import Capture
from tests.support.proxy import ProxyProcess, free_port
from tests.support.tcp_streams import frames, tcp_streams
from tests.support.tcpdump import kernel_drops, settle

pytestmark = pytest.mark.timeout(600)
VER = codes.version_ordinal(5, 3, 3)


# ------------------------------------------------------------------ helpers

def proxy(*args: str):
    return ProxyProcess(*args, "--admin", "127.0.0.1:0", "--connect-timeout", "1")


def resources(p) -> dict:
    """The proxy process's sessions, asyncio tasks, open fds and RSS (kB)."""
    routes = json.loads(p.get("/routes")[2])
    pid = p.proc.pid
    status = Path(f"/proc/{pid}/status").read_text()
    rss = int(next(ln.split()[1] for ln in status.splitlines() if ln.startswith("VmRSS:")))
    return {"sessions": routes["sessions"], "tasks": routes["tasks"], "fds": len(os.listdir(f"/proc/{pid}/fd")),
            "rss_kb": rss}


def settled(p, base: dict, timeout: float = 20.0) -> dict:
    """Resources once sessions, tasks and fds are back to ``base`` (or the last seen at the timeout)."""
    deadline = time.monotonic() + timeout
    while True:
        now = resources(p)
        if all(now[k] == base[k] for k in ("sessions", "tasks", "fds")) or time.monotonic() > deadline:
            return now
        time.sleep(0.2)


def rst_close(s: socket.socket) -> None:
    """Close with a RST (SO_LINGER 0)."""
    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    s.close()


def send_cmd(topic: str, opaque: int, body: bytes, queue: int = 0) -> RemotingCommand:
    return RemotingCommand(codes.SEND_MESSAGE, 0, opaque, version=VER, body=body, ext={
        "producerGroup": "PG_proxy_faults", "topic": topic, "defaultTopic": "TBW102",
        "defaultTopicQueueNums": "4", "queueId": str(queue), "sysFlag": "0",
        "bornTimestamp": str(int(time.time() * 1000)), "flag": "0", "properties": "",
        "reconsumeTimes": "0", "unitMode": "false", "batch": "false"})


def pull_cmd(topic: str, opaque: int, offset: int, group: str = "CG_proxy_faults", n: int = 1) -> RemotingCommand:
    return RemotingCommand(codes.PULL_MESSAGE, 0, opaque, version=VER, ext={
        "consumerGroup": group, "topic": topic, "queueId": "0", "queueOffset": str(offset),
        "maxMsgNums": str(n), "sysFlag": "4", "commitOffset": "0", "suspendTimeoutMillis": "0",
        "subscription": "*", "subVersion": "0", "expressionType": "TAG"})


def route_cmd(opaque: int, topic: str) -> RemotingCommand:
    return RemotingCommand(codes.GET_ROUTEINFO_BY_TOPIC, 0, opaque, version=VER, ext={"topic": topic})


class Reader:
    """Everything a client socket receives: the bytes (for the digest) and the frames."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.data = bytearray()
        self.dec = StreamDecoder()
        self.frames: list[RemotingCommand] = []
        self.eof = False

    def until(self, n: int, timeout: float = 20.0) -> list[RemotingCommand]:
        self.sock.settimeout(timeout)
        while len(self.frames) < n and not self.eof:
            chunk = self.sock.recv(65536)
            if not chunk:
                self.eof = True
                break
            self.data += chunk
            self.frames += [ev.command for ev in self.dec.feed(chunk) if isinstance(ev, Frame)]
        return self.frames

    def to_eof(self, timeout: float = 20.0) -> bytes:
        self.until(1 << 30, timeout)
        return bytes(self.data)


def digest(b: bytes) -> str:
    return hashlib.sha256(b).hexdigest()


def answers_by_opaque(stream: bytes) -> dict[int, bytes]:
    """Opaque -> the whole frame (bytes as received) of each answer in a remoting stream."""
    out = {}
    for fr in frames(stream):
        out[decode_frame(fr).opaque] = fr
    return out


def check_upstream_leg(pcap: Path, port_map: dict[int, int], cap: Capture, clients: dict[bytes, bytes]) -> int:
    """For each client connection (keyed by the bytes it sent), what it read == what the
    upstream sent on the upstream connection that carried the same client bytes
    (both legs reassembled from ``pcap``)."""
    assert kernel_drops(cap) == 0, cap.stderr_text
    legs: dict[tuple[bool, str], list] = {}
    for st in tcp_streams(pcap):
        if st.server[1] in port_map or st.server[1] in port_map.values():
            legs.setdefault((st.server[1] in port_map, digest(st.c2s)), []).append(st)
    checked = 0
    for sent, got in clients.items():
        cs, us = legs.get((True, digest(sent)), []), legs.get((False, digest(sent)), [])
        assert len(cs) == 1 and len(us) == 1, (
            f"a connection that sent {len(sent)} bytes: {len(cs)} client leg(s), {len(us)} upstream leg(s) "
            f"with those bytes in the capture ({len(legs)} legs in all)")
        (c,), (u,) = cs, us
        assert u.holes == 0 and c.holes == 0
        assert digest(got) == digest(u.s2c) == digest(c.s2c), \
            f"{c.label}: read {len(got)} bytes, upstream sent {len(u.s2c)}"
        checked += 1
    return checked


# ------------------------------------------------------------------ real cluster

@pytest.mark.rocketmq
def test_resets_mid_frame_and_half_close_leave_survivors_intact(rocketmq_cluster, tmp_path):
    cluster = rocketmq_cluster
    bp = free_port()
    pcap = tmp_path / "faults.pcap"
    cap = Capture(pcap, [bp, cluster.ports.broker]).start()
    p = proxy("--broker", f"127.0.0.1:{bp}={cluster.broker_addr}")
    topic = "TopicProxyFaults"
    clients: dict[bytes, bytes] = {}  # bytes sent -> bytes read, for the digest comparison
    lock = threading.Lock()
    try:
        with socket.create_connection(("127.0.0.1", bp), timeout=20) as s:  # warm: topic auto-created
            s.sendall(encode(send_cmd(topic, 1, b"warm")))
            assert Reader(s).until(1)[0].code == 0
        base = settled(p, resources(p) | {"sessions": 0})
        errors: list[str] = []

        def survivor(k: int) -> None:
            rng = random.Random(k)
            sent = bytearray()
            try:
                with socket.create_connection(("127.0.0.1", bp), timeout=20) as s:
                    r = Reader(s)
                    for i in range(40):
                        for cmd in (send_cmd(topic, 2 * i, rng.randbytes(rng.randrange(1, 16384))),
                                    pull_cmd(topic, 2 * i + 1, rng.randrange(0, 40))):
                            frame = encode(cmd)
                            s.sendall(frame)
                            sent += frame
                        frames = r.until(2 * i + 2)
                        assert len(frames) == 2 * i + 2, f"survivor {k}: connection ended"
                    assert sorted(f.opaque for f in frames) == list(range(80))  # pulls and sends may cross
                    sends = [f for f in frames if f.opaque % 2 == 0]
                    assert all(f.code == 0 for f in sends), [f.remark for f in sends if f.code]
                    s.shutdown(socket.SHUT_WR)
                    data = r.to_eof()
                with lock:
                    clients[bytes(sent)] = data
            except Exception as e:  # noqa: BLE001 - reported by the main thread
                errors.append(f"survivor {k}: {type(e).__name__}: {e}")

        threads = [threading.Thread(target=survivor, args=(k,)) for k in range(3)]
        for t in threads:
            t.start()
        half_closed = 0
        for i in range(120):
            frame = encode(send_cmd(topic, 1000 + i, random.randbytes(4096)))
            s = socket.create_connection(("127.0.0.1", bp), timeout=20)
            if i % 3 == 0:  # client reset mid-frame
                s.sendall(frame[: len(frame) // 2])
                time.sleep(0.005)
                rst_close(s)
            elif i % 3 == 1:  # a whole request, half of the next, then a reset before the answer
                s.sendall(frame + frame[:20])
                rst_close(s)
            else:  # half-close: request, FIN; the answer must still come, then the close
                s.sendall(frame)
                s.shutdown(socket.SHUT_WR)
                r = Reader(s)
                data = r.to_eof()
                s.close()
                with lock:
                    clients[frame] = data
                half_closed += r.eof
        for t in threads:
            t.join(120)
        assert not errors, errors
        assert half_closed == 40  # the close reached every half-closed client (what came before: below)
        after = settled(p, base)
    finally:
        assert p.stop() == 0, "\n".join(p.lines[-20:])
        settle(pcap)  # the last packets reach tcpdump a moment after the proxy exits
        cap.stop()
    assert {k: after[k] for k in ("sessions", "tasks", "fds")} == {k: base[k] for k in ("sessions", "tasks", "fds")}
    assert after["rss_kb"] - base["rss_kb"] < 20_000
    assert check_upstream_leg(pcap, {bp: cluster.ports.broker}, cap, clients) == 43


@pytest.mark.rocketmq
def test_slow_reader_gets_every_byte_while_the_proxy_holds_little(rocketmq_cluster, tmp_path):
    cluster = rocketmq_cluster
    topic, n, size = f"TopicProxySlow{os.getpid()}", 120, 200_000  # 24 MB of answers
    with socket.create_connection(("127.0.0.1", cluster.ports.broker), timeout=30) as s:
        r = Reader(s)
        for i in range(n):
            s.sendall(encode(send_cmd(topic, i, random.randbytes(size))))
        assert all(f.code == 0 for f in r.until(n, timeout=120)) and len(r.frames) == n
    sent = b"".join(encode(pull_cmd(topic, i, i)) for i in range(n))
    for _ in range(2):  # the first round settles the broker's state for the new group (its answers may differ)
        with socket.create_connection(("127.0.0.1", cluster.ports.broker), timeout=30) as s:
            s.sendall(sent)  # the same pulls answered directly: the broker's answers are the same bytes
            r = Reader(s)
            r.until(n, timeout=120)
            direct = answers_by_opaque(bytes(r.data))
    assert len(direct) == n
    bp = free_port()
    p = proxy("--broker", f"127.0.0.1:{bp}={cluster.broker_addr}")
    try:
        base = settled(p, resources(p) | {"sessions": 0})
        s = socket.socket()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 32 * 1024)  # the client's kernel holds little
        s.connect(("127.0.0.1", bp))
        s.sendall(sent)
        got, peak = bytearray(), 0
        s.settimeout(30)
        dec = StreamDecoder()
        frames: list[RemotingCommand] = []
        t0 = time.monotonic()
        while len(frames) < n and time.monotonic() - t0 < 120:
            chunk = s.recv(16384)
            assert chunk, "the proxy closed the slow reader"
            got += chunk
            frames += [ev.command for ev in dec.feed(chunk) if isinstance(ev, Frame)]
            time.sleep(0.002)  # ~8 MB/s at most: the broker could send far faster
            if len(frames) % 20 == 10:
                peak = max(peak, resources(p)["rss_kb"])
        s.shutdown(socket.SHUT_WR)
        s.settimeout(10)
        while chunk := s.recv(65536):
            got += chunk
        s.close()
        assert sorted(f.opaque for f in frames) == list(range(n))
        assert all(f.code == 0 and len(f.body or b"") > size for f in frames), {f.code for f in frames}
        after = settled(p, base)
    finally:
        assert p.stop() == 0, "\n".join(p.lines[-20:])
    # backpressure: the proxy read from the broker only as fast as the client read
    assert peak - base["rss_kb"] < 12_000, (peak, base)
    assert {k: after[k] for k in ("sessions", "tasks", "fds")} == {k: base[k] for k in ("sessions", "tasks", "fds")}
    # every byte: the stream is whole frames, each the same bytes as the direct answer
    mine = answers_by_opaque(bytes(got))
    assert sum(map(len, mine.values())) == len(got)
    assert {k: digest(v) for k, v in mine.items()} == {k: digest(v) for k, v in direct.items()}


@pytest.mark.rocketmq
def test_10k_short_connections_leak_nothing(rocketmq_cluster):
    cluster = rocketmq_cluster
    p = proxy("--namesrv", f"127.0.0.1:0={cluster.namesrv_addr}")
    try:
        host, port = p.listeners()["namesrv"][0][0].rsplit(":", 1)
        ns = (host, int(port))
        topics = [f"NoSuchTopic{i}" for i in range(4)]
        direct = {}
        for t in topics:  # the real name server's own answers, byte for byte
            with socket.create_connection(("127.0.0.1", cluster.ports.namesrv), timeout=10) as s:
                s.sendall(encode(route_cmd(7, t)))
                direct[t] = _one_answer(s)
        assert len(set(direct.values())) == len(topics)

        async def one(i: int) -> bool:
            t = topics[i % len(topics)]
            reader, writer = await asyncio.open_connection(*ns)
            try:
                if i % 5 == 0:  # connect and go away
                    return True
                writer.write(encode(route_cmd(7, t)))
                got = await reader.readexactly(len(direct[t]))
                return got == direct[t]
            finally:
                writer.close()
                with contextlib.suppress(OSError):
                    await writer.wait_closed()

        failed: Counter = Counter()  # how the connections that did not get their answer ended

        async def many(count: int, budget: float) -> tuple[int, int]:
            sem = asyncio.Semaphore(32)
            deadline = time.monotonic() + budget

            async def guarded(i: int) -> bool:
                async with sem:
                    if time.monotonic() > deadline:
                        return False
                    return await asyncio.wait_for(one(i), 20)

            res = await asyncio.gather(*(guarded(i) for i in range(count)), return_exceptions=True)
            failed.update("wrong answer" if r is False else type(r).__name__ for r in res if r is not True)
            return sum(r is True for r in res), len(res)

        ok, total = asyncio.run(many(1000, 60))  # warm-up: stats keys, the exchange ring fill up
        assert ok == total == 1000
        base = settled(p, resources(p) | {"sessions": 0})
        t0 = time.monotonic()
        ok, total = asyncio.run(many(10_000, 240))
        elapsed = time.monotonic() - t0
        assert ok == total == 10_000, (f"{ok} of 10000 in {elapsed:.0f}s: {dict(failed)}; proxy transport: "
                                       f"{json.loads(p.get('/stats?format=json')[2])['transport']}; "
                                       + "; ".join(ln for ln in p.lines if "upstream" in ln)[-2000:])
        after = settled(p, base)
        stats = json.loads(p.get("/stats?format=json")[2])
    finally:
        assert p.stop() == 0, "\n".join(p.lines[-20:])
    assert stats["transport"]["flows"] == 11_000
    assert {k: after[k] for k in ("sessions", "tasks", "fds")} == {k: base[k] for k in ("sessions", "tasks", "fds")}
    assert after["rss_kb"] - base["rss_kb"] < 16_000, (base, after)


def _one_answer(s: socket.socket) -> bytes:
    r = Reader(s)
    r.until(1, timeout=10)
    assert r.frames
    return bytes(r.data)


@pytest.mark.rocketmq
def test_upstream_name_server_restart(rocketmq_cluster, tmp_path):
    """The proxy's upstream is a real name server of this test's own, stopped and started again."""
    from tests.rocketmq.cluster import Cluster, Ports

    ns_port = free_port()
    own = Cluster(tmp_path / "ns", ports=Ports(namesrv=ns_port, broker=free_port(), proxy=free_port(),
                                                grpc=free_port()), lib=rocketmq_cluster.lib)
    own.write_configs()

    def start_ns():
        own._spawn("namesrv")
        own._wait_port("namesrv", ns_port, 120)

    start_ns()
    p = proxy("--namesrv", f"127.0.0.1:0={own.namesrv_addr}")
    try:
        host, port = p.listeners()["namesrv"][0][0].rsplit(":", 1)
        lp = (host, int(port))
        with socket.create_connection(("127.0.0.1", ns_port), timeout=10) as s:
            s.sendall(encode(route_cmd(1, "T")))
            direct = _one_answer(s)
        with socket.create_connection(lp, timeout=10) as s:
            s.sendall(encode(route_cmd(1, "T")))
            assert _one_answer(s) == direct
        base = settled(p, resources(p) | {"sessions": 0})

        held = socket.create_connection(lp, timeout=10)  # open across the restart
        held.sendall(encode(route_cmd(1, "T")))
        r = Reader(held)
        r.until(1)
        own.stop()  # SIGTERM: the name server closes its connections
        rest = r.to_eof(timeout=15)
        assert r.eof and rest == direct  # the answer, then the close: nothing added or lost
        held.close()

        with socket.create_connection(lp, timeout=10) as s:  # while it is down
            s.sendall(encode(route_cmd(5, "T")))
            r = Reader(s)
            r.to_eof(timeout=10)
            assert [(f.code, f.opaque) for f in r.frames] == [(codes.SYSTEM_ERROR, 5)] and r.eof
            assert "cannot connect to upstream" in (r.frames[0].remark or "")

        start_ns()
        with socket.create_connection(lp, timeout=10) as s:  # back
            s.sendall(encode(route_cmd(1, "T")))
            assert _one_answer(s) == direct
        after = settled(p, base)
        t = json.loads(p.get("/stats?format=json")[2])["transport"]
    finally:
        assert p.stop() == 0, "\n".join(p.lines[-20:])
        own.stop()
    assert t["upstream_connect_failure"] == 1
    assert {k: after[k] for k in ("sessions", "tasks", "fds")} == {k: base[k] for k in ("sessions", "tasks", "fds")}


# ------------------------------------------------------------------ stand-ins (say so)

class StandIn:
    """A one-connection TCP server thread running ``handler(conn)``: a stand-in upstream for
    faults the real broker cannot produce."""

    def __init__(self, handler) -> None:
        self.srv = socket.create_server(("127.0.0.1", 0))
        self.port = self.srv.getsockname()[1]
        self.handler = handler
        self.sent = bytearray()
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        self.srv.settimeout(20)
        try:
            conn, _ = self.srv.accept()
            self.handler(self, conn)
        except BaseException as e:  # noqa: BLE001 - checked by the test
            self.error = e
        finally:
            self.srv.close()


@pytest.mark.parametrize("rewrite", [True, False], ids=["default", "no-rewrite"])
def test_upstream_reset_mid_frame_stand_in(rewrite):
    """Stand-in upstream (a real broker never sends half a frame and resets): it answers one
    request, sends half of the next answer, then resets.  The client gets the whole first
    answer exactly, and never an error answer inside a frame: by default the proxy forwards
    whole frames only, so the half frame is dropped and the second request is answered with
    SYSTEM_ERROR; with --no-rewrite bytes go on as they come, so the client gets the half
    frame as sent and then the close, with nothing spliced in."""
    answer = encode(RemotingCommand(0, 1, 1, body=b"a" * 5000))
    second = encode(RemotingCommand(0, 1, 2, body=b"b" * 5000))
    client_read = threading.Event()

    def handler(si: StandIn, conn: socket.socket) -> None:
        r = Reader(conn)
        r.until(2)
        si.sent += answer + second[:3000]
        conn.sendall(answer + second[:3000])
        client_read.wait(10)  # the proxy passed on what it forwards: the reset cannot discard it
        time.sleep(0.3)
        rst_close(conn)

    si = StandIn(handler)
    p = proxy("--broker", f"127.0.0.1:0=127.0.0.1:{si.port}", *([] if rewrite else ["--no-rewrite"]))
    try:
        base = resources(p)
        host, port = p.listeners()["broker"][0][0].rsplit(":", 1)
        with socket.create_connection((host, int(port)), timeout=10) as s:
            ext = {"topic": "T", "queueId": "0"}
            s.sendall(encode(RemotingCommand(codes.GET_MAX_OFFSET, 0, 1, version=VER, ext=dict(ext)))
                      + encode(RemotingCommand(codes.GET_MAX_OFFSET, 0, 2, version=VER, ext=dict(ext))))
            r = Reader(s)
            s.settimeout(10)
            want = len(answer) + (0 if rewrite else 3000)
            while len(r.data) < want and (chunk := s.recv(65536)):
                r.data += chunk
            client_read.set()
            got = r.to_eof(timeout=10)
        si.thread.join(5)
        assert si.error is None
        after = settled(p, base | {"sessions": 0})
        t = json.loads(p.get("/stats?format=json")[2])["transport"]
    finally:
        assert p.stop() == 0, "\n".join(p.lines[-20:])
    assert got.startswith(answer)
    if rewrite:
        rest = StreamDecoder().feed(got[len(answer):])
        assert all(isinstance(f, Frame) for f in rest), rest
        cmds = [f.command for f in rest if isinstance(f, Frame)]
        assert [(cmd.code, cmd.opaque) for cmd in cmds] == [(codes.SYSTEM_ERROR, 2)]
        assert "upstream" in (cmds[0].remark or "")
    else:
        assert got == bytes(si.sent)
    assert t.get("upstream_reset", 0) + t.get("upstream_closed", 0) == 1
    assert (after["sessions"], after["tasks"], after["fds"]) == (0, base["tasks"], base["fds"])


def test_upstream_answering_after_client_half_close_stand_in():
    """Stand-in upstream (the real broker does not wait for the client's FIN before it answers):
    it reads until the client's FIN, then sends 3 MB and closes.  Through the proxy the client,
    which half-closed, reads all 3 MB exactly."""
    blob = random.randbytes(3 * 1024 * 1024)

    def handler(si: StandIn, conn: socket.socket) -> None:
        conn.settimeout(20)
        got = bytearray()
        while chunk := conn.recv(65536):
            got += chunk
        assert got == b"hello upstream"
        conn.sendall(blob)
        si.sent += blob
        conn.close()

    si = StandIn(handler)
    p = proxy("--broker", f"127.0.0.1:0=127.0.0.1:{si.port}")
    try:
        base = resources(p)
        host, port = p.listeners()["broker"][0][0].rsplit(":", 1)
        with socket.create_connection((host, int(port)), timeout=10) as s:
            s.sendall(b"hello upstream")
            s.shutdown(socket.SHUT_WR)
            got = Reader(s).to_eof(timeout=20)
        si.thread.join(5)
        assert si.error is None
        assert digest(got) == digest(blob)
        after = settled(p, base | {"sessions": 0})
    finally:
        assert p.stop() == 0, "\n".join(p.lines[-20:])
    assert (after["sessions"], after["tasks"], after["fds"]) == (0, base["tasks"], base["fds"])
