"""gRPC through the proxy when the upstream goes away mid-stream: the GOAWAY the proxy makes
up is only ever sent at an HTTP/2 frame boundary of what the client has received.

The upstream here is a stand-in (fault injection): a real RocketMQ proxy never stops in the
middle of an HTTP/2 frame on demand, so a small server sends chosen bytes, then closes or
resets."""
from __future__ import annotations

import random
import socket
import struct
import threading
import time

import pytest

from replay.proxy import GRPC, Mapping, ProxyConfig
from replay.proxy.grpc import GOAWAY, INTERNAL_ERROR, FrameBoundary, frame
from tests.support.proxy import ProxyThread

pytestmark = pytest.mark.timeout(60)

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
SETTINGS, HEADERS, DATA, PING = 4, 1, 0, 6


def h2_frames(data: bytes) -> tuple[list[tuple[int, int, int, bytes]], bytes]:
    """Whole frames in ``data`` and what is left after them (a cut frame)."""
    out, pos = [], 0
    while len(data) - pos >= 9:
        n = int.from_bytes(data[pos:pos + 3], "big")
        if pos + 9 + n > len(data):
            break
        sid = struct.unpack_from(">I", data, pos + 5)[0] & 0x7FFFFFFF
        out.append((data[pos + 3], data[pos + 4], sid, data[pos + 9:pos + 9 + n]))
        pos += 9 + n
    return out, data[pos:]


def test_frame_boundary_tracks_every_cut_of_a_stream():
    rng = random.Random(8)
    frames = [frame(SETTINGS, 0, 0, b""), frame(HEADERS, 4, 1, bytes(40)), frame(DATA, 0, 1, bytes(70000)),
              frame(DATA, 1, 1, b"")] + [frame(PING, 0, 0, bytes(8)) for _ in range(3)]
    stream = b"".join(frames)
    ends = set()
    pos = 0
    for f in frames:
        pos += len(f)
        ends.add(pos)
    for _ in range(300):
        cuts = sorted(rng.sample(range(1, len(stream)), rng.randint(1, 12))) + [len(stream)]
        fb, start = FrameBoundary(), 0
        for cut in cuts:
            fb.feed(stream[start:cut])
            start = cut
            assert fb.at_boundary == (cut in ends), cut


def _serve(send: bytes, how: str):
    """A stand-in HTTP/2 upstream: reads the client's preface, sends ``send``, then closes
    (``how`` = "close") or resets ("reset")."""
    srv = socket.create_server(("127.0.0.1", 0))
    state: dict = {}

    def run() -> None:
        srv.settimeout(20)
        try:
            conn, _ = srv.accept()
            conn.settimeout(20)
            got = b""
            while len(got) < len(PREFACE):
                got += conn.recv(65536)
            conn.sendall(send)
            time.sleep(0.3)  # let the proxy forward it before the end
            if how == "reset":
                conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            conn.close()
        except BaseException as e:  # noqa: BLE001 - checked by the test
            state["error"] = e
        finally:
            srv.close()

    t = threading.Thread(target=run, daemon=True)
    t.start()
    return srv.getsockname()[1], t, state


def _through_proxy(send: bytes, how: str, rewrite: bool) -> tuple[bytes, dict]:
    port, thread, state = _serve(send, how)
    pt = ProxyThread(ProxyConfig([Mapping.parse(GRPC, f"0=127.0.0.1:{port}")], rewrite_routes=rewrite))
    try:
        with socket.create_connection(pt.listen(GRPC), timeout=10) as c:
            c.sendall(PREFACE + frame(SETTINGS, 0, 0, b""))
            c.settimeout(10)
            got = b""
            while chunk := c.recv(65536):
                got += chunk
        thread.join(5)
        assert "error" not in state, state
        time.sleep(0.2)
        return got, pt.stats()
    finally:
        pt.stop()


WHOLE = frame(SETTINGS, 0, 0, b"") + frame(SETTINGS, 1, 0, b"") + frame(HEADERS, 4, 1, bytes(30))
CUT_DATA = frame(DATA, 0, 1, bytes(5000))[:2000]  # a DATA frame cut inside its payload
CUT_HEADER = frame(DATA, 0, 3, bytes(100))[:5]  # ... and inside its 9-byte header


@pytest.mark.parametrize("how", ["close", "reset"])
@pytest.mark.parametrize("cut", [CUT_DATA, CUT_HEADER], ids=["cut-payload", "cut-header"])
def test_no_goaway_inside_a_half_forwarded_frame_with_no_rewrite(cut, how):
    """--no-rewrite (and transparent mode) forward bytes as they come: the client has half a
    frame when the upstream goes; nothing is spliced in after it, the connection just closes."""
    got, stats = _through_proxy(WHOLE + cut, how, rewrite=False)
    assert got == WHOLE + cut
    assert stats["transport"].get("proxy_error_answers", 0) == 0


@pytest.mark.parametrize("how", ["close", "reset"])
def test_goaway_after_whole_frames_with_no_rewrite(how):
    got, stats = _through_proxy(WHOLE, how, rewrite=False)
    assert got.startswith(WHOLE)
    frames, rest = h2_frames(got[len(WHOLE):])
    assert rest == b"" and [(t, sid) for t, _, sid, _ in frames] == [(GOAWAY, 0)]
    last_sid, code = struct.unpack_from(">II", frames[0][3])
    assert code == INTERNAL_ERROR and b"upstream" in frames[0][3][8:]
    assert stats["transport"]["proxy_error_answers"] == 1


@pytest.mark.parametrize("cut", [CUT_DATA, CUT_HEADER], ids=["cut-payload", "cut-header"])
def test_rewrite_mode_forwards_whole_frames_only_then_goaway(cut):
    """With rewriting on, server bytes are cut at frame boundaries: the half frame is never
    forwarded, so the GOAWAY that follows the whole frames is well-formed."""
    got, stats = _through_proxy(WHOLE + cut, "close", rewrite=True)
    frames, rest = h2_frames(got)
    assert rest == b""
    assert got.startswith(WHOLE) and [t for t, _, _, _ in frames[3:]] == [GOAWAY]
    assert stats["transport"]["proxy_error_answers"] == 1
