"""Running ``rmqsniff proxy`` for the tests: in this process on a background event loop
(:class:`ProxyThread`) or as a subprocess (:class:`ProxyProcess`, with its admin endpoint);
reading remoting frames off a socket; a free local port."""
from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

from dissectors.remoting import RemotingCommand, StreamDecoder
from dissectors.remoting.stream import Frame
from replay.proxy import Proxy, ProxyConfig
from replay.proxy.server import new_event_loop

REPO = Path(__file__).resolve().parent.parent.parent


class ProxyThread:
    """A :class:`Proxy` on its own event loop in a background thread."""

    def __init__(self, cfg: ProxyConfig) -> None:
        self.lines: list[str] = []
        self.loop = new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.proxy = self.call(lambda: Proxy(cfg, notify=self.lines.append))
        self.run(self.proxy.start())

    def run(self, coro, timeout: float = 20.0):
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def call(self, fn):
        async def go():
            return fn()
        return self.run(go())

    def listen(self, kind: str) -> tuple[str, int]:
        return self.call(lambda: self.proxy.listener(kind).listen)

    def stats(self) -> dict:
        return self.call(lambda: self.proxy.stats.snapshot())

    def stop(self) -> None:
        try:
            self.run(self.proxy.stop())
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(5)
            self.loop.close()


def read_frames(sock: socket.socket, n: int, timeout: float = 5.0) -> tuple[list[RemotingCommand], bool]:
    """Up to ``n`` frames from ``sock``; also whether the peer closed."""
    sock.settimeout(timeout)
    dec = StreamDecoder()
    out: list[RemotingCommand] = []
    while len(out) < n:
        data = sock.recv(65536)
        if not data:
            return out, True
        out += [ev.command for ev in dec.feed(data) if isinstance(ev, Frame)]
    try:
        closed = sock.recv(1) == b""
    except (TimeoutError, OSError):
        closed = False
    return out, closed


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ProxyProcess:
    """``rmqsniff proxy`` as a subprocess; listener addresses are read from its stderr."""

    def __init__(self, *args: str, prefix: tuple[str, ...] = ()) -> None:
        env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
        self.proc = subprocess.Popen([*prefix, sys.executable, "-m", "rmqsniff.cli_proxy", *args], cwd=REPO, env=env,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.lines: list[str] = []
        self.ready = threading.Event()
        threading.Thread(target=self._read, daemon=True).start()
        wanted = sum(1 for a in args if a in ("--namesrv", "--broker", "--grpc", "--admin"))
        deadline = time.monotonic() + 20
        while len(self.listeners()) + bool(self.admin_url) < wanted:
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError("proxy did not start:\n" + "\n".join(self.lines))
            time.sleep(0.05)

    def _read(self) -> None:
        assert self.proc.stderr is not None  # stderr=PIPE
        for line in self.proc.stderr:
            self.lines.append(line.rstrip("\n"))

    def listeners(self) -> dict[str, list[tuple[str, str]]]:
        out: dict[str, list[tuple[str, str]]] = {}
        for line in list(self.lines):
            m = re.match(r"(namesrv|broker|grpc) (\S+) -> (\S+)", line)
            if m:
                out.setdefault(m[1], []).append((m[2], m[3]))
        return out

    @property
    def admin_url(self) -> str | None:
        for line in list(self.lines):
            m = re.match(r"admin (http://\S+)/stats$", line)
            if m:
                return m[1]
        return None

    def get(self, path: str) -> tuple[int, str, str]:
        url = self.admin_url
        assert url is not None, "the proxy has no --admin listener"
        try:
            with urllib.request.urlopen(url + path, timeout=10) as r:
                return r.status, r.headers["Content-Type"], r.read().decode()
        except urllib.error.HTTPError as e:
            return e.code, e.headers["Content-Type"], e.read().decode()

    def stop(self, sig: int = signal.SIGINT) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            return self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait(5)


def wait_idle(p: ProxyProcess, timeout: float = 15.0) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        routes = json.loads(p.get("/routes")[2])
        if routes["sessions"] == 0 or time.monotonic() > deadline:
            return routes
        time.sleep(0.2)
