"""The admin HTTP endpoint (HTTP/1.1, one request per connection, GET only): the routes
``live`` serves too (:mod:`rmqsniff.exporters.statsroute`: ``/stats``, ``/metrics``,
``/stats/prometheus``, ``/exchanges?filter=EXPR&limit=N``, ``/ready``), plus ``/routes``
(listeners, the broker address mapping, active sessions and asyncio tasks).

It shares the event loop with forwarding and never holds it for long:

* at most :data:`ADMIN_MAX_CONNECTIONS` connections at once, and none that would leave
  fewer than :data:`ADMIN_FD_RESERVE` file descriptors to the data path; others are
  answered 503 and closed at once (counted in ``transport.admin_refused``);
* a client has :data:`ADMIN_TIMEOUT` seconds to send its request and as long to read the
  answer;
* answers are worked out one at a time, in steps (:meth:`StatsRoute.steps`) of about
  :data:`ADMIN_SLICE` seconds with :data:`ADMIN_PAUSE` seconds of forwarding in between
  (one step is longer: the stats snapshot of ``/stats`` and ``/metrics``, ``Stats.snapshot``,
  7-30 ms on a loaded 2-core machine, most of it hdrh's percentiles);
* bound to an address other than loopback it asks for ``Authorization: Bearer TOKEN``
  (401 otherwise): the configured token, or one made up and told once.
"""
from __future__ import annotations

import asyncio
import contextlib
import resource
import socket
import time
from collections.abc import Generator
from typing import TYPE_CHECKING

import orjson

from rmqsniff.exporters.statsroute import (
    BUSY,
    JSON,
    MAX_CONNECTIONS,
    REQUEST_TIMEOUT,
    TEXT,
    Reading,
    Response,
    StatsRoute,
    Steps,
    authorized,
    guard,
)

from .accept import Acceptor
from .config import Endpoint, endpoint_text

if TYPE_CHECKING:
    from .server import Proxy

ADMIN_MAX_CONNECTIONS = MAX_CONNECTIONS  # admin connections open at once; more are answered 503 and closed
ADMIN_FD_RESERVE = 128  # file descriptors (below the soft RLIMIT_NOFILE) the admin endpoint leaves to the data path
ADMIN_TIMEOUT = REQUEST_TIMEOUT  # seconds to send the request, and again to read the answer
ADMIN_SLICE = 0.001  # an answer is worked on for about this long at a time ...
ADMIN_PAUSE = 0.004  # ... then forwarding has the loop for at least this long
ADMIN_MAX_HEAD = 16 * 1024  # bytes of request line and headers
ADMIN_REFUSED = "admin_refused"  # transport counter: admin connections answered 503 (cap or fd reserve)

_REASONS = {200: "OK", 400: "Bad Request", 401: "Unauthorized", 404: "Not Found", 405: "Method Not Allowed",
            408: "Request Timeout", 500: "Internal Server Error", 503: "Service Unavailable"}


def _fd_ceiling() -> int:
    """The lowest descriptor number the admin endpoint does not keep (file descriptors are
    numbered lowest-free-first, so a connection numbered N means N are in use below it)."""
    soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return 1 << 30
    return max(soft - ADMIN_FD_RESERVE, soft // 2)


class AdminServer:
    """Serves the proxy's stats and recent exchanges."""

    def __init__(self, proxy: Proxy) -> None:
        self.proxy = proxy
        # the routes live serves too, plus /routes
        self.route = StatsRoute(lambda: Reading(proxy.stats.snapshot()), read_steps=self._reading,
                                recent=proxy.recent if proxy.config.max_exchanges else None,
                                redact=proxy.config.redact, extra={"/routes": self._routes},
                                why_none="this proxy keeps no recent exchanges (started with --recent 0)")
        self.server: Acceptor | None = None
        self.address: Endpoint | None = None
        self.token = proxy.config.admin_token
        self.active = 0  # connections being served
        self._tasks: set[asyncio.Task] = set()
        self._turn = asyncio.Lock()  # one answer worked out at a time
        self._fd_ceiling = _fd_ceiling()
        proxy.stats.tcp(ADMIN_REFUSED, 0)
        _warm_up()

    async def start(self, listen: Endpoint) -> None:
        from .server import ProxyError

        sock = None
        try:
            sock = socket.socket(socket.AF_INET6 if ":" in listen[0] else socket.AF_INET, socket.SOCK_STREAM)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(listen)
            sock.listen(128)
            sock.setblocking(False)
        except OSError as e:
            if sock is not None:
                sock.close()
            raise ProxyError(f"cannot open the admin endpoint on {endpoint_text(listen)}: "
                             f"{e.strerror or e}") from None
        sockname = sock.getsockname()
        where = self.address = (sockname[0], sockname[1])
        self.server = Acceptor(sock, self._accepted, lambda e: self.proxy.accept_failed(where, e))
        self.proxy.notify(f"admin http://{endpoint_text(self.address)}/stats")
        self.token, lines = guard(self.address[0], self.token, "admin endpoint")
        for line in lines:
            self.proxy.notify(line)

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()
        for t in list(self._tasks):
            t.cancel()

    def _accepted(self, conn: socket.socket) -> None:
        if self.active >= ADMIN_MAX_CONNECTIONS or conn.fileno() >= self._fd_ceiling:
            self.proxy.stats.tcp(ADMIN_REFUSED)
            with contextlib.suppress(OSError):
                conn.send(BUSY)
            conn.close()
            return
        self.active += 1
        task = asyncio.ensure_future(self._serve(conn))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _serve(self, conn: socket.socket) -> None:
        try:
            reader, writer = await asyncio.open_connection(sock=conn, limit=ADMIN_MAX_HEAD)
        except OSError:
            conn.close()
            self.active -= 1
            return
        try:
            await self._handle(reader, writer)
        finally:
            writer.close()
            self.active -= 1

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        extra = ""
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), ADMIN_TIMEOUT)
            status, ctype, body = await self.respond(head)
        except asyncio.TimeoutError:
            status, ctype, body = 408, TEXT, f"no request within {ADMIN_TIMEOUT:g} s\n".encode()
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, OSError):
            status, ctype, body = 400, TEXT, b"bad request\n"
        except Exception as e:  # noqa: BLE001 - one line to the client, the proxy goes on
            status, ctype, body = 500, TEXT, f"error: {type(e).__name__}: {e}\n".encode()
        if status == 401:
            extra = 'WWW-Authenticate: Bearer realm="rmqsniff"\r\n'
        hdr = (f"HTTP/1.1 {status} {_REASONS.get(status, '')}\r\nContent-Type: {ctype}\r\n"
               f"Content-Length: {len(body)}\r\n{extra}Connection: close\r\n\r\n").encode()
        with contextlib.suppress(OSError, asyncio.TimeoutError):
            writer.write(hdr + body)
            await asyncio.wait_for(writer.drain(), ADMIN_TIMEOUT)

    async def respond(self, head: bytes) -> Response:
        """(status, content type, body) for one request head."""
        lines = head.decode("latin-1").split("\r\n")
        parts = lines[0].split()
        if len(parts) != 3:
            return 400, TEXT, b"bad request line\n"
        if self.token is not None:
            auth = next((v for k, _, v in (ln.partition(":") for ln in lines[1:])
                         if k.strip().lower() == "authorization"), None)
            if not authorized(auth, self.token):
                return 401, TEXT, b"this admin endpoint needs 'Authorization: Bearer TOKEN'\n"
        method, target, _version = parts
        async with self._turn:
            self.proxy.drain()  # everything forwarded so far is in the answer
            return await _stepwise(self.route.steps(method, target))

    def _reading(self) -> Generator[None, None, Reading]:
        """The stats snapshot in steps (its percentiles are worked out a row at a time)."""
        return Reading((yield from self.proxy.stats.snapshot_steps()))

    def _routes(self, _q: dict[str, str]) -> Response:
        p = self.proxy
        return 200, JSON, orjson.dumps(p.routes() | {"sessions": p.active_sessions, "failures": list(p.failures),
                                                     "tasks": len(asyncio.all_tasks())})


def _warm_up() -> None:
    """Import what the first /exchanges needs now: a first import would hold the loop for
    a tenth of a second."""
    import rmqsniff.pairing  # noqa: F401 - decodes kept exchanges
    from rmqsniff.filter import compile_filter

    compile_filter('topic ~ "^warm(up)+$"')


async def _stepwise(steps: Steps) -> Response:
    """Run ``steps`` to its answer, pausing :data:`ADMIN_PAUSE` after each :data:`ADMIN_SLICE` of work."""
    t0 = time.perf_counter()
    while True:
        try:
            next(steps)
        except StopIteration as done:
            return done.value
        if time.perf_counter() - t0 >= ADMIN_SLICE:
            await asyncio.sleep(ADMIN_PAUSE)
            t0 = time.perf_counter()
