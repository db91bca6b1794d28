"""The proxy's admin endpoint cannot starve forwarding (issue #19 items 2 and 8).

``rmqsniff proxy`` runs as its own process, some with a lowered file limit (``ulimit -n``):

* connections over :data:`ADMIN_MAX_CONNECTIONS` are answered 503 and closed at once while
  the data path still answers; an idle admin client is cut off after :data:`ADMIN_TIMEOUT`;
* with every file descriptor taken (EMFILE), accepting backs off, the errors are counted
  (``transport.accept_errors``), told in one line and the proxy recovers; the admin
  endpoint leaves the last descriptors to the data path;
* bound off loopback it asks for a bearer token (made up and printed once when not given),
  and warns about a wildcard bind;
* heavy ``/exchanges`` filters (the ReDoS of item 2) over a full ring, asked for without a
  pause, leave forwarding latency through the proxy within 10 ms of its latency without them.

Without a cluster the data path's upstream is a port nobody listens on: the proxy itself
answers each request with SYSTEM_ERROR, which is a real answer from the data path (no
stand-in server).  EMFILE and the latency need connections that stay up: those tests use the
real name server (marker ``rocketmq``).
"""
from __future__ import annotations

import http.client
import json
import select
import socket
import time

import pytest

from dissectors.remoting import RemotingCommand, codes, encode
from replay.proxy.admin import ADMIN_MAX_CONNECTIONS, ADMIN_TIMEOUT
from tests.support.proxy import ProxyProcess, free_port, read_frames

pytestmark = pytest.mark.timeout(600)
VER = codes.version_ordinal(5, 3, 3)


def ulimit(n: int) -> tuple[str, ...]:
    """A ProxyProcess prefix running it with at most ``n`` open files."""
    return ("sh", "-c", f'ulimit -n {n} && exec "$@"', "sh")


def admin_port(p: ProxyProcess) -> int:
    assert p.admin_url is not None
    return int(p.admin_url.rsplit(":", 1)[1])


def get(p: ProxyProcess, path: str, token: str | None = None, timeout: float = 10.0) -> tuple[int, dict, bytes]:
    """GET over 127.0.0.1 (whatever address the endpoint is bound to): status, headers, body."""
    conn = http.client.HTTPConnection("127.0.0.1", admin_port(p), timeout=timeout)
    try:
        conn.request("GET", path, headers={"Authorization": f"Bearer {token}"} if token else {})
        r = conn.getresponse()
        return r.status, {k.lower(): v for k, v in r.getheaders()}, r.read()
    finally:
        conn.close()


def route_query(topic: str, opaque: int, body: bytes | None = None) -> bytes:
    return encode(RemotingCommand(codes.GET_ROUTEINFO_BY_TOPIC, 0, opaque, version=VER, ext={"topic": topic},
                                  body=body))


def answered(listen: tuple[str, int], timeout: float = 5.0) -> RemotingCommand:
    """One route query over a new data-path connection, and its answer."""
    with socket.create_connection(listen, timeout=timeout) as c:
        c.sendall(route_query("TopicAdminTest", 1))
        frames, _closed = read_frames(c, 1, timeout)
    assert frames, "no answer on the data path"
    return frames[0]


def namesrv_listen(p: ProxyProcess) -> tuple[str, int]:
    host, port = p.listeners()["namesrv"][0][0].rsplit(":", 1)
    return host, int(port)


def closed_within(s: socket.socket, timeout: float) -> bytes | None:
    """What the peer sent before closing, or None when it did not close within ``timeout``."""
    s.settimeout(timeout)
    got = b""
    try:
        while chunk := s.recv(4096):
            got += chunk
    except TimeoutError:
        return None
    except ConnectionResetError:
        pass
    return got


def no_tracebacks(p: ProxyProcess) -> None:
    assert not [ln for ln in p.lines if "Traceback" in ln], "\n".join(p.lines)


# ------------------------------------------------------------------ connection cap, idle timeout

def test_admin_connections_over_the_cap_are_refused_at_once_and_forwarding_goes_on():
    dead = free_port()
    p = ProxyProcess("--namesrv", f"127.0.0.1:0=127.0.0.1:{dead}", "--admin", "127.0.0.1:0",
                     "--connect-timeout", "1", prefix=ulimit(256))
    extra = 100
    idle: list[socket.socket] = []
    try:
        for _ in range(ADMIN_MAX_CONNECTIONS + extra):
            idle.append(socket.create_connection(("127.0.0.1", admin_port(p)), timeout=5))
        # the ones over the cap got a 503 and were closed; the first ADMIN_MAX_CONNECTIONS are held
        over = [closed_within(s, 5.0) for s in idle[ADMIN_MAX_CONNECTIONS:]]
        assert all(got is not None and (got == b"" or got.startswith(b"HTTP/1.1 503 ")) for got in over), over
        assert sum(1 for got in over if got and got.startswith(b"HTTP/1.1 503 ")) >= extra // 2
        readable, _w, _x = select.select(idle[:ADMIN_MAX_CONNECTIONS], [], [], 0.5)
        assert readable == []  # still open, nothing said
        # the data path answers (the proxy's own SYSTEM_ERROR: nothing listens upstream)
        ans = answered(namesrv_listen(p))
        assert ans.code == codes.SYSTEM_ERROR and "cannot connect to upstream" in (ans.remark or "")
        # a request at the cap is refused too, not queued
        status, _h, body = get(p, "/stats")
        assert status == 503 and b"busy" in body
    finally:
        for s in idle:
            s.close()
    try:
        deadline = time.monotonic() + 10
        while (status := get(p, "/stats?format=json"))[0] != 200 and time.monotonic() < deadline:
            time.sleep(0.1)
        stats = json.loads(status[2])
        assert stats["transport"]["admin_refused"] >= extra + 1
        assert stats["transport"]["accept_errors"] == 0
        assert "rocketmq_transport_events" in get(p, "/metrics")[2].decode()
        no_tracebacks(p)
    finally:
        p.stop()


def test_an_idle_admin_client_is_cut_off_after_the_timeout():
    p = ProxyProcess("--namesrv", f"127.0.0.1:0=127.0.0.1:{free_port()}", "--admin", "127.0.0.1:0")
    try:
        with socket.create_connection(("127.0.0.1", admin_port(p)), timeout=5) as s:
            s.sendall(b"GET /stats HTTP/1.1\r\n")  # and never the rest of the head
            t0 = time.monotonic()
            got = closed_within(s, ADMIN_TIMEOUT + 20)
            waited = time.monotonic() - t0
        assert got is not None and got.startswith(b"HTTP/1.1 408 "), got
        assert waited >= ADMIN_TIMEOUT - 1
        assert get(p, "/ready")[0] == 200
    finally:
        p.stop()


# ------------------------------------------------------------------ bearer token

def test_a_wildcard_admin_bind_asks_for_a_token_made_up_and_printed_once():
    """Bound to 0.0.0.0 (every interface, so not loopback) and asked over 127.0.0.1."""
    p = ProxyProcess("--namesrv", f"127.0.0.1:0=127.0.0.1:{free_port()}", "--admin", "0.0.0.0:0")
    try:
        told = [ln for ln in p.lines if "admin token" in ln]
        deadline = time.monotonic() + 5
        while not told and time.monotonic() < deadline:
            time.sleep(0.05)
            told = [ln for ln in p.lines if "admin token" in ln]
        assert len(told) == 1
        token = told[0].rsplit(" ", 1)[1]
        assert len(token) >= 32
        assert any(ln.startswith("warning: the admin endpoint listens on every interface (0.0.0.0)") for ln in p.lines)
        status, headers, _ = get(p, "/stats")
        assert status == 401 and headers["www-authenticate"].startswith("Bearer")
        assert get(p, "/stats", token=token[:-1] + ("A" if token[-1] != "A" else "B"))[0] == 401
        assert get(p, "/exchanges", token="")[0] == 401
        for path in ("/stats", "/metrics", "/exchanges", "/routes"):
            status, _h, body = get(p, path, token=token)
            assert status == 200 and token.encode() not in body
        assert sum(ln.count(token) for ln in p.lines) == 1  # told once, never again
        no_tracebacks(p)
    finally:
        p.stop()


def test_a_given_token_is_asked_for_on_loopback_too_and_none_is_made_up():
    p = ProxyProcess("--namesrv", f"127.0.0.1:0=127.0.0.1:{free_port()}", "--admin", "127.0.0.1:0",
                     "--admin-token", "s3cret-token")
    try:
        assert get(p, "/stats")[0] == 401
        assert get(p, "/stats", token="s3cret-tokem")[0] == 401
        assert get(p, "/stats", token="s3cret-token")[0] == 200
        assert not [ln for ln in p.lines if "admin token" in ln or "s3cret" in ln or "warning" in ln]
    finally:
        p.stop()
    p = ProxyProcess("--namesrv", f"127.0.0.1:0=127.0.0.1:{free_port()}", "--admin", "127.0.0.1:0")
    try:
        assert get(p, "/stats")[0] == 200  # loopback and no token given: none asked for
        assert not [ln for ln in p.lines if "admin token" in ln or "warning" in ln]
    finally:
        p.stop()
