"""The admin HTTP endpoint (HTTP/1.1, one request per connection, GET only): the routes
``live`` serves too (:mod:`rmqsniff.exporters.statsroute`: ``/stats``, ``/metrics``,
``/stats/prometheus``, ``/exchanges?filter=EXPR&limit=N``, ``/ready``), plus ``/routes``
(listeners, the broker address mapping, active sessions and asyncio tasks).
"""
from __future__ import annotations

import asyncio
import contextlib
from typing import TYPE_CHECKING

import orjson

from rmqsniff.exporters.statsroute import JSON, TEXT, Reading, StatsRoute

from .config import Endpoint, endpoint_text

if TYPE_CHECKING:
    from .server import Proxy

_REASONS = {200: "OK", 400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed", 500: "Internal Server Error"}


class AdminServer:
    """Serves the proxy's stats and recent exchanges."""

    def __init__(self, proxy: Proxy) -> None:
        self.proxy = proxy
        # the routes live serves too, plus /routes
        self.route = StatsRoute(lambda: Reading(proxy.stats.snapshot()),
                                select=proxy.recent.select if proxy.config.max_exchanges else None,
                                redact=proxy.config.redact, extra={"/routes": self._routes},
                                why_none="this proxy keeps no recent exchanges (started with --recent 0)")
        self.server: asyncio.AbstractServer | None = None
        self.address: Endpoint | None = None

    async def start(self, listen: Endpoint) -> None:
        from .server import ProxyError

        try:
            self.server = await asyncio.start_server(self._handle, listen[0], listen[1])
        except OSError as e:
            raise ProxyError(f"cannot open the admin endpoint on {endpoint_text(listen)}: "
                             f"{e.strerror or e}") from None
        sockname = self.server.sockets[0].getsockname()
        self.address = (sockname[0], sockname[1])
        self.proxy.notify(f"admin http://{endpoint_text(self.address)}/stats")

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10.0)
            status, ctype, body = self.respond(head)
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, asyncio.TimeoutError, OSError):
            status, ctype, body = 400, TEXT, b"bad request\n"
        except Exception as e:  # noqa: BLE001 - one line to the client, the proxy goes on
            status, ctype, body = 500, TEXT, f"error: {type(e).__name__}: {e}\n".encode()
        hdr = (f"HTTP/1.1 {status} {_REASONS.get(status, '')}\r\nContent-Type: {ctype}\r\n"
               f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n").encode()
        with contextlib.suppress(OSError):
            writer.write(hdr + body)
            await writer.drain()
        writer.close()

    def respond(self, head: bytes) -> tuple[int, str, bytes]:
        """(status, content type, body) for one request head."""
        self.proxy.drain()  # everything forwarded so far is in the answer
        line = head.split(b"\r\n", 1)[0].decode("latin-1")
        parts = line.split()
        if len(parts) != 3:
            return 400, TEXT, b"bad request line\n"
        method, target, _version = parts
        return self.route.respond(method, target)

    def _routes(self, _q: dict[str, str]) -> tuple[int, str, bytes]:
        p = self.proxy
        return 200, JSON, orjson.dumps(p.routes() | {"sessions": p.active_sessions, "failures": list(p.failures),
                                                     "tasks": len(asyncio.all_tasks())})
