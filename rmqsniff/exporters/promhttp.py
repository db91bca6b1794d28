"""The live tap's HTTP endpoint: :class:`.statsroute.StatsRoute` (the routes ``proxy`` serves
too) on a stdlib ``ThreadingHTTPServer`` in a daemon thread.  Each request takes one reading
(which must be safe from another thread, e.g. :meth:`rmqsniff.live.LiveTap.reading`), then
renders outside any lock.  The proxy's admin rules hold here too: at most
:data:`.statsroute.MAX_CONNECTIONS` connections (a thread each), :data:`.statsroute.REQUEST_TIMEOUT`
seconds per read, a bearer token off loopback (:func:`.statsroute.guard`)."""
from __future__ import annotations

import contextlib
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from .statsroute import BUSY, MAX_CONNECTIONS, REQUEST_TIMEOUT, StatsRoute, authorized, guard


class EndpointError(Exception):
    """The endpoint could not start; one line saying why and what to do."""


def parse_address(text: str, default_host: str = "127.0.0.1") -> tuple[str, int]:
    """``HOST:PORT``, ``[V6]:PORT`` or ``PORT`` -> (host, port); port 0 picks a free one."""
    host, sep, port = text.rpartition(":")
    if not sep:
        host, port = default_host, text
    host = host.strip("[]") or default_host
    if not port.isdigit() or not 0 <= int(port) < 65536:
        raise EndpointError(f"{text!r} is not HOST:PORT (e.g. 127.0.0.1:9108)")
    return host, int(port)


class _CappedServer(ThreadingHTTPServer):
    """A thread per connection, at most MAX_CONNECTIONS of them; more are answered BUSY."""

    daemon_threads = True
    request_queue_size = 128  # listen backlog (socketserver's default is 5)

    def __init__(self, *args: Any) -> None:
        self.active = 0
        self.refused = 0
        self._count = threading.Lock()
        super().__init__(*args)

    def process_request(self, request: Any, client_address: Any) -> None:
        with self._count:
            full = self.active >= MAX_CONNECTIONS
            if full:
                self.refused += 1
            else:
                self.active += 1
        if full:
            with contextlib.suppress(OSError):
                request.setblocking(False)
                request.send(BUSY)
            self.shutdown_request(request)
            return
        super().process_request(request, client_address)

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            with self._count:
                self.active -= 1


class StatsEndpoint:
    """Serve a :class:`StatsRoute` over HTTP until :meth:`close`; ``token``: the bearer token
    asked for (None: one is made up when not on loopback, see :attr:`lines`)."""

    def __init__(self, address: tuple[str, int], route: StatsRoute, token: str | None = None) -> None:
        self.route = route
        handler = _handler(self)
        self.token, self.lines = guard(address[0], token, "stats endpoint")  # lines: to tell the user once
        try:
            self.server = _CappedServer(address, handler)
        except OSError as e:
            raise EndpointError(f"cannot serve stats on {address[0]}:{address[1]}: {e.strerror or e} "
                                "(choose another with --prometheus HOST:PORT)") from None
        self._thread = threading.Thread(target=self.server.serve_forever, name="rmqsniff-http",
                                        kwargs={"poll_interval": 0.2}, daemon=True)

    @property
    def url(self) -> str:
        host, port = self.server.server_address[:2]
        host = host.decode() if isinstance(host, bytes) else str(host)
        return f"http://{host}:{port}" if ":" not in host else f"http://[{host}]:{port}"

    def start(self) -> StatsEndpoint:
        self._thread.start()
        return self

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def _handler(endpoint: StatsEndpoint) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        server_version = "rmqsniff"
        timeout = REQUEST_TIMEOUT  # on the socket: each read and write

        def do_GET(self) -> None:  # noqa: N802 - http.server's naming
            if not authorized(self.headers.get("Authorization"), endpoint.token):
                self._send(b"this endpoint needs 'Authorization: Bearer TOKEN'\n", "text/plain; charset=utf-8", 401,
                           {"WWW-Authenticate": 'Bearer realm="rmqsniff"'})
                return
            code, ctype, body = endpoint.route.respond("GET", self.path)
            self._send(body, ctype, code)

        def _send(self, body: bytes, ctype: str, code: int = 200, extra: dict[str, str] | None = None) -> None:
            self.send_response(code)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            for k, v in (extra or {}).items():
                self.send_header(k, v)
            self.end_headers()
            with contextlib.suppress(OSError):  # the client went away or stopped reading (timeout)
                self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - keep the console clean
            pass

    return Handler
