"""The admin HTTP endpoint (HTTP/1.1, one request per connection, GET only).

``/stats`` Envoy admin text, ``/stats/prometheus``, ``/stats?format=json``,
``/exchanges?filter=EXPR&limit=N`` (recent exchanges as JSON, oldest first),
``/routes`` (listeners, the broker address mapping, active sessions and asyncio tasks), ``/ready``.
"""
from __future__ import annotations

import asyncio
import contextlib
from typing import TYPE_CHECKING
from urllib.parse import parse_qs, urlsplit

import orjson

from rmqsniff.exporters.exchanges import exchange_to_dict
from rmqsniff.exporters.statsfmt import render_envoy, render_json, render_prometheus

from .config import Endpoint, endpoint_text

if TYPE_CHECKING:
    from .server import Proxy

MAX_REQUEST = 16 * 1024
TEXT = "text/plain; charset=utf-8"
PROMETHEUS = "text/plain; version=0.0.4; charset=utf-8"
JSON = "application/json"
_REASONS = {200: "OK", 400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed", 500: "Internal Server Error"}


class AdminServer:
    """Serves the proxy's stats and recent exchanges."""

    def __init__(self, proxy: Proxy) -> None:
        self.proxy = proxy
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
        if method not in ("GET", "HEAD"):
            return 405, TEXT, b"only GET\n"
        url = urlsplit(target)
        q = {k: v[-1] for k, v in parse_qs(url.query, keep_blank_values=True).items()}
        p = self.proxy
        path = url.path.rstrip("/") or "/"
        if path == "/stats":
            if q.get("format") == "json":
                return 200, JSON, render_json(p.stats).encode()
            if q.get("format") == "prometheus":
                return 200, PROMETHEUS, render_prometheus(p.stats).encode()
            return 200, TEXT, render_envoy(p.stats).encode()
        if path == "/stats/prometheus":
            return 200, PROMETHEUS, render_prometheus(p.stats).encode()
        if path == "/exchanges":
            return self._exchanges(q)
        if path == "/routes":
            return 200, JSON, orjson.dumps(p.routes() | {"sessions": p.active_sessions, "failures": list(p.failures),
                                                         "tasks": len(asyncio.all_tasks())})
        if path == "/ready":
            return 200, TEXT, b"LIVE\n"
        return 404, TEXT, b"not found: try /stats, /stats/prometheus, /exchanges?filter=..., /routes\n"

    def _exchanges(self, q: dict[str, str]) -> tuple[int, str, bytes]:
        if not self.proxy.config.max_exchanges:
            return 404, JSON, orjson.dumps({"error": "this proxy keeps no recent exchanges (started with --recent 0)"})
        flt = None
        expr = q.get("filter", "").strip()
        if expr:
            from rmqsniff.filter import FilterError, compile_filter

            try:
                flt = compile_filter(expr)
            except FilterError as e:
                return 400, JSON, orjson.dumps({"error": f"bad filter: {e.message}", "position": e.position})
        try:
            limit = int(q.get("limit", "100"))
        except ValueError:
            return 400, JSON, orjson.dumps({"error": "limit must be an integer"})
        redact = self.proxy.config.redact
        items = [exchange_to_dict(ex, redact=redact) for ex in self.proxy.recent.select(flt, limit)]
        return 200, JSON, orjson.dumps({"count": len(items), "exchanges": items},
                                       option=orjson.OPT_NON_STR_KEYS, default=str)
