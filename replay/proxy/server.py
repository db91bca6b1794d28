"""The proxy: listeners (given and discovered), sessions, stats, recording, admin."""
from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from rmqsniff.lag import LagTable
from rmqsniff.pairing import PairingSink
from rmqsniff.sinks import Lag, Recent
from rmqsniff.stats import Stats

from .accept import Acceptor, error_name
from .config import (
    BROKER,
    GRPC,
    NAMESRV,
    TRANSPARENT,
    ConfigError,
    Endpoint,
    Mapping,
    ProxyConfig,
    endpoint_text,
    parse_endpoint,
)
from .grpc import GrpcRouteAnswer
from .recorder import Recorder
from .remoting import RouteAnswer
from .session import Session
from .tls import OFF, LocalCA, ServerTls, TlsGate, open_keylog, upstream_context
from .transparent import allow_tproxy

if TYPE_CHECKING:
    from .admin import AdminServer

ALPN_FOR: dict[str, list[str]] = {NAMESRV: [], BROKER: [], GRPC: ["h2"], TRANSPARENT: ["h2"]}
"""ALPN a TLS listener of each kind offers: what its upstream speaks."""
VIP_OFFSET = 2  # a broker's "fast" (VIP) port is its port - 2
DRAIN_DELAY = 0.01  # forwarded bytes wait at most this long to be decoded ...
DRAIN_SLICE = 16  # ... in slices of this many reads, the sockets looked at in between ...
DRAIN_BACKLOG = 128  # ... or of half the queue when it is longer than this ...
DEFER_LIMIT = 4 * 1024 * 1024  # ... or at once when this much waits
ACCEPT_ERRORS = "accept_errors"  # transport counter: accept errors on any listener (admin included)


LISTENER_FOR: dict[type, str] = {RouteAnswer: BROKER, GrpcRouteAnswer: GRPC}
"""The kind of listener that stands in for the addresses of each kind of route answer."""


class ProxyError(RuntimeError):
    """The proxy cannot start or run (one line for the user)."""


@dataclass(slots=True)
class Listener:
    """One listening socket and where its connections go."""

    kind: str
    listen: Endpoint  # the bound address
    upstream: Endpoint | None
    advertised: str | None  # "host:port" written into route answers (brokers)
    server: Acceptor | None = None
    discovered: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "listen": endpoint_text(self.listen),
                "upstream": endpoint_text(self.upstream) if self.upstream else "original destination",
                "advertised": self.advertised, "discovered": self.discovered}


class Proxy:
    """A transparent RocketMQ proxy; every coroutine runs on one event loop."""

    def __init__(self, config: ProxyConfig, notify: Callable[[str], None] | None = None,
                 stats: Stats | None = None) -> None:
        config.validate()
        self.config = config
        self.notify = notify or (lambda line: None)
        self.stats = stats if stats is not None else Stats(prefix=config.stat_prefix)
        self.recent = Recent(config.max_exchanges)
        # none kept (max_exchanges 0): peeked frames are counted, decoded only for the lag table
        if self.stats.lag is None:  # consumer lag gauges, fed every exchange
            self.stats.lag = LagTable()
        self.sink = PairingSink(self.stats, ordered=False,
                                sinks=([self.recent] if config.max_exchanges else []) + [Lag(self.stats.lag)])
        self.recent.next_index = self.sink.next_index
        self.recorder: Recorder | None = None
        self.listeners: list[Listener] = []
        self.brokers: dict[str, str] = {}  # upstream "host:port" -> advertised "host:port"
        self.grpc_endpoints: dict[str, str] = {}  # the same for gRPC endpoints
        self._opening: dict[tuple[str, str], asyncio.Future] = {}
        self._own: set[Endpoint] = set()
        self._sessions: set[Session] = set()
        self._next_conn = 0
        self._flusher: asyncio.Task | None = None
        self.admin: AdminServer | None = None
        self.server_tls: dict[str, ServerTls] = {}  # per listener kind, when TLS clients are taken
        self._upstream_tls: dict[tuple[str, ...], ssl.SSLContext] = {}  # per ALPN offered
        self._ca: LocalCA | None = None
        self._unsettled: set[asyncio.Transport] = set()  # TLS listeners' connections before their session
        self.failures: deque[str] = deque(maxlen=50)
        self.started = 0.0
        # decoding deferred by the sessions, in arrival order: (feed, bytes, timestamp)
        self._later: deque[tuple[Callable[[bytes, float], Any], bytes, float]] = deque()
        self.deferred_bytes = 0
        self._drainer: asyncio.Handle | None = None
        self.stats.feeders.append(self.drain)  # whoever reads the stats sees everything forwarded
        self.stats.tcp(ACCEPT_ERRORS, 0)  # shown in /stats and /metrics from the start
        self._accept_errors_told: set[str] = set()
        self._accept_tasks: set[asyncio.Task] = set()

    # -- lifecycle -------------------------------------------------------------------
    async def start(self) -> None:
        """Open every listener (and the admin endpoint, the recording); raises ProxyError."""
        cfg = self.config
        self.started = time.time()
        try:
            if cfg.record:
                try:
                    self.recorder = Recorder(cfg.record)
                except OSError as e:
                    raise ProxyError(f"cannot write {cfg.record}: {e.strerror or e}") from None
            self._tls_setup()
            for m in cfg.mappings:
                adv = None
                if m.kind == BROKER:
                    adv = None  # known once bound (port 0 = any)
                lst = await self._listen(m.kind, m.listen, m.upstream, adv)
                if m.kind in (BROKER, GRPC):
                    assert m.upstream is not None  # only TRANSPARENT mappings have none
                    lst.advertised = endpoint_text((cfg.advertise_host(lst.listen[0]), lst.listen[1]))
                    self._routes(m.kind)[endpoint_text(m.upstream)] = lst.advertised
            if cfg.admin is not None:
                from .admin import AdminServer

                self.admin = AdminServer(self)
                await self.admin.start(cfg.admin)
        except BaseException:
            await self.stop()
            raise
        if self.recorder is not None:
            self._flusher = asyncio.ensure_future(self._flush_loop())

    def _tls_setup(self) -> None:
        """Key log, local CA, server contexts per listener kind, the upstream context."""
        cfg = self.config
        try:
            if cfg.tls_keylog:
                open_keylog(cfg.tls_keylog)
            if cfg.tls != OFF:
                ca = self._ca = None if cfg.tls_cert else LocalCA(cfg.tls_ca_dir)
                for kind in {m.kind for m in cfg.mappings}:
                    self.server_tls[kind] = ServerTls(cfg, ALPN_FOR[kind], ca)
                if ca is not None:
                    self.notify(f"TLS: certificates from the local CA {ca.cert_path}")
            if cfg.upstream_tls:
                self.upstream_tls(tuple(ALPN_FOR[GRPC]))  # fails here, not per connection
        except (OSError, ValueError) as e:
            raise ProxyError(f"TLS set-up: {getattr(e, 'strerror', None) or e}") from None

    def upstream_tls(self, alpn: tuple[str, ...]) -> ssl.SSLContext:
        """The context for upstream TLS connections offering ``alpn``."""
        ctx = self._upstream_tls.get(alpn)
        if ctx is None:
            ctx = self._upstream_tls[alpn] = upstream_context(self.config, alpn)
        return ctx

    def upstream_hello(self, kind: str, client: asyncio.BaseTransport) -> tuple[str | None, tuple[str, ...]]:
        """SNI and ALPN for an upstream TLS connection: the client's own when it spoke
        TLS, else what a listener of ``kind`` speaks."""
        obj = client.get_extra_info("ssl_object")
        if obj is None:
            return None, tuple(ALPN_FOR[kind])
        tls = self.server_tls.get(kind)
        chosen = obj.selected_alpn_protocol()
        return (tls.sni.get(obj) if tls is not None else None), ((chosen,) if chosen else ())

    def _accepting(self, lst: Listener) -> Callable[[], asyncio.Protocol]:
        """What a listener makes of each accepted connection: a session's client leg, or
        a :class:`TlsGate` in front of it."""
        if self.config.tls == OFF:
            return lambda: Session(self, lst).cleg
        tls = self.server_tls.get(lst.kind)
        if tls is None:  # a kind first seen in a route answer (brokers behind a name server)
            tls = self.server_tls[lst.kind] = ServerTls(self.config, ALPN_FOR[lst.kind], self._ca)

        def note(counter: str, peer: str, why: str | None) -> None:
            self.stats.tcp(counter, 1)
            if why is not None:
                self.note_failure(f"rmqsniff proxy: {lst.kind} {endpoint_text(lst.listen)}: client {peer}: {why}")
        return lambda: TlsGate(self.config.tls, lambda: Session(self, lst).cleg, tls, note, self._unsettled)

    async def stop(self) -> None:
        """Stop listening, end every session (pending requests end unanswered), close the recording."""
        for lst in self.listeners:
            if lst.server is not None:
                lst.server.close()
        if self.admin is not None:
            await self.admin.stop()
        for t in list(self._unsettled):
            t.abort()
        waiting = [s.done for s in self._sessions if s.done is not None]
        for s in list(self._sessions):
            s.abort()
        if waiting:
            await asyncio.wait(waiting, timeout=5.0)
        if self._flusher is not None:
            self._flusher.cancel()
        self.drain()
        with contextlib.suppress(ValueError):
            self.stats.feeders.remove(self.drain)
        if self.recorder is not None:
            self.recorder.close()

    async def _flush_loop(self) -> None:
        rec = self.recorder
        assert rec is not None  # the loop runs only when recording
        while True:
            await asyncio.sleep(1.0)
            rec.flush()
            if rec.error:
                self.note_failure(rec.error)
                return

    def note_failure(self, line: str) -> None:
        """Remember (for /routes) and report a problem that did not stop the proxy."""
        self.failures.append(line)
        self.notify(line)

    # -- deferred decoding ------------------------------------------------------------------
    def defer(self, feed: Callable[[bytes, float], Any], data: bytes, ts: float) -> None:
        """Decode forwarded ``data`` (stamped ``ts`` on arrival) a little later, with what
        else arrives meanwhile: batches cost less CPU per frame than one decode per read,
        and the sockets are looked at between slices of a batch, so forwarding waits for at
        most a slice.  Readers of the stats and of recent exchanges catch up first."""
        self._later.append((feed, data, ts))
        self.deferred_bytes += len(data)
        if self._drainer is None:
            self._drainer = asyncio.get_running_loop().call_later(DRAIN_DELAY, self._drain_slice)
        elif self.deferred_bytes > DEFER_LIMIT:
            self.drain()

    def _drain_slice(self) -> None:
        # half the queue when it is long: a backlog shrinks geometrically and cannot outgrow
        # the reads that come in between two slices
        n = len(self._later)
        self._decode(n >> 1 if n > DRAIN_BACKLOG else DRAIN_SLICE)
        self._drainer = asyncio.get_running_loop().call_soon(self._drain_slice) if self._later else None

    def drain(self) -> None:
        """Decode everything deferred, now."""
        self._decode(None)
        if self._drainer is not None:
            self._drainer.cancel()
            self._drainer = None

    def _decode(self, n: int | None) -> None:
        """Decode the first ``n`` deferred reads (None: until none is left)."""
        later = self._later
        while later and (n is None or n > 0):
            if n is not None:
                n -= 1
            feed, data, ts = later.popleft()
            self.deferred_bytes -= len(data)
            feed(data, ts)

    # -- listeners -----------------------------------------------------------------------
    async def _listen(self, kind: str, listen: Endpoint, upstream: Endpoint | None, advertised: str | None,
                      discovered: bool = False) -> Listener:
        host, port = listen
        lst = Listener(kind, listen, upstream, advertised, discovered=discovered)
        sock = None
        try:
            fam = socket.AF_INET6 if ":" in host else socket.AF_INET
            sock = socket.socket(fam, socket.SOCK_STREAM)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if kind == TRANSPARENT:
                allow_tproxy(sock)
            sock.bind((host, port))
            sock.listen(1024)
            sock.setblocking(False)
            lst.server = Acceptor(sock, lambda conn: self.accepted(lst, conn),
                                  lambda e: self.accept_failed(lst.listen, e))
        except OSError as e:
            if sock is not None:
                sock.close()
            raise ProxyError(f"cannot listen on {endpoint_text(listen)}: {e.strerror or e}") from None
        bound = sock.getsockname()
        lst.listen = (bound[0], bound[1])
        self._own.add(lst.listen)
        self.listeners.append(lst)
        up = endpoint_text(upstream) if upstream else "original destination (transparent)"
        self.notify(f"{kind} {endpoint_text(lst.listen)} -> {up}" + (" (discovered)" if discovered else ""))
        return lst

    def accepted(self, lst: Listener, conn: socket.socket) -> None:
        """A connection accepted on a listener: a session for it."""
        task = asyncio.ensure_future(self._session(lst, conn))
        self._accept_tasks.add(task)
        task.add_done_callback(self._accept_tasks.discard)

    async def _session(self, lst: Listener, conn: socket.socket) -> None:
        try:
            await asyncio.get_running_loop().connect_accepted_socket(self._accepting(lst), conn)
        except OSError as e:
            conn.close()
            self.accept_failed(lst.listen, e)

    def accept_failed(self, where: Endpoint, e: OSError) -> None:
        """An accept error (accepting pauses, see :mod:`.accept`): counted in ``transport.accept_errors``,
        told once per kind of error."""
        self.stats.tcp(ACCEPT_ERRORS)
        name = error_name(e)
        if name not in self._accept_errors_told:
            self._accept_errors_told.add(name)
            self.note_failure(f"accepting on {endpoint_text(where)} failed: {name} ({e.strerror or e}); "
                              f"accepting pauses and retries; counted in transport.{ACCEPT_ERRORS}, "
                              "told once per kind")

    def listener(self, kind: str) -> Listener | None:
        """The first listener of a kind (handy for tests and the CLI)."""
        return next((x for x in self.listeners if x.kind == kind), None)

    def routes(self) -> dict[str, Any]:
        return {"listeners": [x.to_dict() for x in self.listeners], "brokers": dict(self.brokers),
                "grpc_endpoints": dict(self.grpc_endpoints)}

    def _routes(self, kind: str) -> dict[str, str]:
        return self.grpc_endpoints if kind == GRPC else self.brokers

    async def listeners_for(self, kind: str, addrs: list[str], near: Endpoint) -> dict[str, str]:
        """Advertised proxy addresses for upstream broker (BROKER) or gRPC endpoint (GRPC)
        addresses, opening listeners on demand on the host of ``near`` (the listener that
        got the route answer)."""
        out: dict[str, str] = {}
        routes = self._routes(kind)
        for a in addrs:
            adv = routes.get(a)
            if adv is None:
                fut = self._opening.get((kind, a))
                if fut is None:
                    fut = self._opening[kind, a] = asyncio.ensure_future(self._open_on_demand(kind, a, near))
                try:
                    adv = await asyncio.shield(fut)
                except ProxyError as e:
                    self.note_failure(str(e))
                    adv = None
                finally:
                    if fut.done():
                        self._opening.pop((kind, a), None)
            if adv is not None:
                out[a] = adv
        return out

    async def _open_on_demand(self, kind: str, addr: str, near: Endpoint) -> str:
        try:
            up = parse_endpoint(addr, what="address in a route answer")
        except ConfigError as e:
            raise ProxyError(str(e)) from None
        host = near[0]
        # brokers: try for a pair of ports (Q, Q-2) so that clients on the VIP channel stay on the proxy too
        main = None
        for _ in range(8 if kind == BROKER else 0):
            lst = await self._listen(BROKER, (host, 0), up, None, discovered=True)
            q = lst.listen[1]
            if q - VIP_OFFSET > 1024 and up[1] - VIP_OFFSET > 0:
                try:
                    await self._listen(BROKER, (host, q - VIP_OFFSET), (up[0], up[1] - VIP_OFFSET), None,
                                       discovered=True)
                    main = lst
                    break
                except ProxyError:
                    pass
            assert lst.server is not None  # _listen returns a bound listener
            lst.server.close()
            self.listeners.remove(lst)
            self._own.discard(lst.listen)
        if main is None:
            main = await self._listen(kind, (host, 0), up, None, discovered=True)
        main.advertised = endpoint_text((self.config.advertise_host(host), main.listen[1]))
        self._routes(kind)[addr] = main.advertised
        self.notify(f"route rewrite: {'gRPC endpoint' if kind == GRPC else 'broker'} {addr} -> {main.advertised}")
        return main.advertised

    async def rewrite(self, answer, near: Endpoint | None = None) -> bytes:
        """The bytes of a route answer (remoting ``RouteAnswer`` or ``GrpcRouteAnswer``) with
        every upstream address replaced by a proxy listener."""
        kind = LISTENER_FOR[type(answer)]
        mapping = await self.listeners_for(kind, answer.addrs, near or self._near()) if answer.addrs else {}
        return answer.apply(mapping)

    def _near(self) -> Endpoint:
        lst = self.listener(NAMESRV) or self.listeners[0]
        return lst.listen

    @property
    def active_sessions(self) -> int:
        return len(self._sessions)


@contextlib.asynccontextmanager
async def running(config: ProxyConfig, notify: Callable[[str], None] | None = None):
    """``async with running(cfg) as proxy:`` start, yield, stop."""
    p = Proxy(config, notify)
    await p.start()
    try:
        yield p
    finally:
        await p.stop()


def new_event_loop() -> asyncio.AbstractEventLoop:
    """uvloop's loop when installed, asyncio's otherwise."""
    try:
        import uvloop
    except ImportError:
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


def mappings(namesrv: list[str], brokers: list[str], grpc: list[str], transparent: list[str]) -> list[Mapping]:
    """Mappings from the command-line forms (raises ConfigError)."""
    out = [Mapping.parse(NAMESRV, t) for t in namesrv]
    out += [Mapping.parse(BROKER, t) for t in brokers]
    out += [Mapping.parse(GRPC, t) for t in grpc]
    out += [Mapping(TRANSPARENT, parse_endpoint(t, what="--transparent listen address")) for t in transparent]
    return out
