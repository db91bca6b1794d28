"""The live tap's HTTP endpoint: :class:`.statsroute.StatsRoute` (the routes ``proxy`` serves
too) on a stdlib ``ThreadingHTTPServer`` in a daemon thread.  Each request takes one reading
(which must be safe from another thread, e.g. :meth:`rmqsniff.live.LiveTap.reading`), then
renders outside any lock."""
from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from .statsroute import StatsRoute


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


class StatsEndpoint:
    """Serve a :class:`StatsRoute` over HTTP until :meth:`close`."""

    def __init__(self, address: tuple[str, int], route: StatsRoute) -> None:
        self.route = route
        handler = _handler(self)
        try:
            self.server = ThreadingHTTPServer(address, handler)
        except OSError as e:
            raise EndpointError(f"cannot serve stats on {address[0]}:{address[1]}: {e.strerror or e} "
                                "(choose another with --prometheus HOST:PORT)") from None
        self.server.daemon_threads = True
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

        def do_GET(self) -> None:  # noqa: N802 - http.server's naming
            code, ctype, body = endpoint.route.respond("GET", self.path)
            self._send(body, ctype, code)

        def _send(self, body: bytes, ctype: str, code: int = 200) -> None:
            self.send_response(code)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - keep the console clean
            pass

    return Handler
