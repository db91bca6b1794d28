"""One proxied connection: two asyncio Protocols (client leg, upstream leg) that forward
bytes from the transport's own callback and decode them afterwards (on broker links, in
batches: :meth:`Proxy.defer <replay.proxy.server.Proxy.defer>`), backpressure from
each leg's write buffer to the other's reading, the recording, and a prompt, well-formed
failure when the upstream is down or dies."""
from __future__ import annotations

import asyncio
import contextlib
import socket
import time
import typing
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, cast

from rmqsniff.model import Connection, Exchange
from rmqsniff.protocols import GRPC as GRPC_PROTOCOL
from rmqsniff.protocols import REMOTING, Protocol, protocol_of, recognise

from .config import BROKER, GRPC, NAMESRV, TRANSPARENT, Endpoint, endpoint_text
from .grpc import GrpcRouteAnswer, GrpcTap
from .remoting import RemotingTap, RouteAnswer
from .tls import TlsLink, tls_info
from .transparent import original_dst

if TYPE_CHECKING:
    from .recorder import RecordedConnection
    from .server import Listener, Proxy

HIGH_WATER = 256 * 1024  # a leg's write buffer above this pauses reading the other leg
LOW_WATER = 64 * 1024  # ... and below this resumes it
EARLY_LIMIT = 1024 * 1024  # client bytes held while the upstream connection is being made
FAIL_LINGER = 1.0  # after a failed connect, requests still arriving are answered for this long
CLOSE_GRACE = 1.0  # a closing leg that cannot flush its write buffer in this time is aborted
SO_MARK = getattr(socket, "SO_MARK", 36)
LISTENER_PROTOCOL: dict[str, Protocol] = {NAMESRV: REMOTING, BROKER: REMOTING, GRPC: GRPC_PROTOCOL}
"""What a listener of each kind speaks (TRANSPARENT: what the client's first bytes show)."""

def now() -> float:
    """Wall-clock time at microsecond resolution: the recording's, so that stats computed
    from the recording see exactly the timestamps the proxy's own stats saw."""
    return round(time.time() * 1e6) * 1e-6


def pending_kind(ex: Exchange) -> str | None:
    """Which ``*_pending`` gauge a request waiting for its upstream belongs to."""
    req = ex.request
    return protocol_of(ex).pending_kind(req.command.code) if req is not None else None


class Tap(typing.Protocol):
    """What a session needs of its protocol's tap (:class:`GrpcTap`, :class:`RemotingTap`)."""

    def from_client(self, data: bytes, ts: float) -> None: ...
    def server_fast(self, data: bytes) -> bytes | None: ...
    def server_decoded(self, data: bytes, ts: float) -> bytes: ...
    def from_server(self, data: bytes, ts: float) -> Sequence[bytes | RouteAnswer | GrpcRouteAnswer]: ...
    def failure(self, reason: str, ts: float) -> bytes: ...
    def close(self) -> None: ...


class _SessionSink:
    """The proxy's pairing sink, plus the ``*_pending`` gauges of this connection."""

    __slots__ = ("sink", "stats", "waiting", "counting")

    def __init__(self, sink, stats) -> None:
        self.sink = sink
        self.stats = stats
        self.waiting: list[str] = []
        self.counting = True  # until the upstream connection is made (or failed)

    def next_index(self) -> int:
        return self.sink.next_index()

    def started(self, ex: Exchange) -> None:
        self.sink.started(ex)
        if self.counting and ex.request is not None and ex.request.from_client:
            kind = pending_kind(ex)
            if kind is not None:
                self.stats.pending_changed(kind, 1)
                self.waiting.append(kind)

    def duplicate(self, ex: Exchange) -> None:
        self.sink.duplicate(ex)

    def done(self, ex: Exchange) -> None:
        self.sink.done(ex)

    def release(self) -> None:
        self.counting = False
        for kind in self.waiting:
            self.stats.pending_changed(kind, -1)
        self.waiting.clear()


class Leg(asyncio.Protocol):
    """One socket of a session.  Its bytes go to the session's handler (bound directly as
    ``data_received``); its write buffer crossing the water marks pauses/resumes reading
    on the other leg, so the slower side sets the pace and memory stays bounded."""

    def __init__(self, session: Session, client: bool) -> None:
        self.session = session
        self.client = client
        self.transport: asyncio.Transport | None = None
        self.peer: Leg | None = None
        self.holds: set[str] = set()  # why reading is paused: "peer", "rewrite", "early"
        self.lost = False
        self.eof = False
        self.closer: asyncio.TimerHandle | None = None  # aborts a close that does not finish
        # bound directly: no indirection per chunk
        self.data_received = session.client_data if client else session.server_data  # type: ignore[method-assign]

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        t = self.transport = cast(asyncio.Transport, transport)  # a stream connection's
        t.set_write_buffer_limits(HIGH_WATER, LOW_WATER)
        if self.holds:
            t.pause_reading()
        if self.client:
            self.session.client_made(transport)

    def eof_received(self) -> bool:
        self.eof = True
        return self.session.leg_eof(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        if self.closer is not None:
            self.closer.cancel()
            self.closer = None
        self.session.leg_lost(self, exc)

    def pause_writing(self) -> None:
        if self.peer is not None:
            self.peer.hold("peer")

    def resume_writing(self) -> None:
        if self.peer is not None:
            self.peer.release("peer")

    def hold(self, why: str) -> None:
        """Stop reading this leg (for ``why``)."""
        if not self.holds and self.transport is not None and not self.lost:
            with contextlib.suppress(RuntimeError):  # closing
                self.transport.pause_reading()
        self.holds.add(why)

    def release(self, why: str) -> None:
        """Read again once nothing else holds this leg."""
        if why in self.holds:
            self.holds.discard(why)
            if not self.holds and self.transport is not None and not self.lost and not self.transport.is_closing():
                self.transport.resume_reading()

    def write(self, data: bytes) -> None:
        t = self.transport
        if t is not None and not self.lost and not t.is_closing():
            t.write(data)

    def close(self, grace: float = CLOSE_GRACE) -> None:
        """Flush and close; abort if the peer does not take the bytes within ``grace``."""
        t = self.transport
        if t is None or self.lost:
            return
        if not t.is_closing():
            t.close()
        if self.closer is None:
            self.closer = asyncio.get_running_loop().call_later(grace, self.abort)

    def abort(self) -> None:
        if self.transport is not None and not self.lost:
            self.transport.abort()


class Session:
    """A client connection and its upstream connection."""

    _up: asyncio.Transport  # the upstream leg's transport: set when the session opens, used while ``open``

    def __init__(self, proxy: Proxy, listener: Listener) -> None:
        self.proxy = proxy
        self.listener = listener
        self.cleg = Leg(self, True)
        self.uleg: Leg | None = None
        # transparent: the original destination, known once the client connected
        self.upstream: Endpoint = listener.upstream or ("0.0.0.0", 0)
        self.client: Endpoint = ("0.0.0.0", 0)
        self.conn: Connection | None = None
        self.sink: _SessionSink | None = None
        self.tap: Tap | None = None
        self.rec: RecordedConnection | None = None
        self.early: list[bytes] = []
        self.early_bytes = 0
        self.open = False  # the upstream connection is made and usable
        self.fail_reason: str | None = None
        self.ending = False  # the session is closing its legs
        self.done: asyncio.Future | None = None  # set when both legs are gone
        self._connector: asyncio.Task | None = None
        self._s2c_queue: list[bytes] | None = None  # upstream bytes that came during a rewrite
        self._rewriter: asyncio.Task | None = None
        self._upstream_end: str | None = None  # how the upstream ended, while a rewrite finishes
        self._up_gone = False  # the upstream ended (counted once)
        self._timer: asyncio.TimerHandle | None = None  # the session's deadline (linger, drain)
        # with decoding deferred: the tap's client-bytes feed and the server-bytes one
        self._later_c: Callable[[bytes, float], None] | None = None
        self._later_s: Callable[[bytes, float], None] | None = None

    # -- set-up ------------------------------------------------------------------------
    def client_made(self, transport: asyncio.BaseTransport) -> None:
        p = self.proxy
        peer = transport.get_extra_info("peername") or ("0.0.0.0", 0)
        self.client = (peer[0], peer[1])
        if self.listener.kind == TRANSPARENT:
            upstream, how = original_dst(transport.get_extra_info("socket"))
            if how == "local" and (upstream in p._own or upstream[1] == self.listener.listen[1]):
                p.stats.tcp("transparent_not_redirected", 1)
                p.note_failure(f"transparent: connection from {peer} was not redirected "
                               "(no original destination); closed")
                self.ending = True
                transport.close()
                return
            self.upstream = upstream
        self.done = asyncio.get_running_loop().create_future()
        p._sessions.add(self)
        self.conn = Connection(p._next_conn, self.client, self.upstream, now(), "syn")
        p._next_conn += 1
        obj = transport.get_extra_info("ssl_object")
        if obj is not None:  # a TLS client: its exchanges are marked with the client leg's TLS
            self.conn.tls = tls_info(obj, p.upstream_hello(self.listener.kind, transport)[0])
        p.stats.tcp("flows", 1)
        self.sink = _SessionSink(p.sink, p.stats)
        if self.listener.kind != TRANSPARENT:
            self._make_tap(LISTENER_PROTOCOL[self.listener.kind])
        self.rec = p.recorder.open(self.client, self.upstream, self.conn.first_ts) if p.recorder else None
        self._connector = asyncio.ensure_future(self._connect())

    def _make_tap(self, protocol: Protocol) -> Tap:
        """The tap that decodes (and rewrites) this connection as ``protocol``."""
        p = self.proxy
        assert self.sink is not None and self.conn is not None  # made with them (client_made)
        rewrite = p.config.rewrite_routes and self.listener.kind != TRANSPARENT
        sink = self.sink if self.sink.counting else p.sink  # the gauges' wrapper only while connecting
        tap = self.tap = _TAP_MAKERS[protocol](self, self.conn, sink, rewrite)
        return tap

    def _grpc_tap(self, conn: Connection, sink: Any, rewrite: bool) -> Tap:
        return GrpcTap(conn, sink, self.proxy.stats, rewrite_routes=rewrite)

    def _remoting_tap(self, conn: Connection, sink: Any, rewrite: bool) -> Tap:
        p = self.proxy
        # route answers come from name servers: only there are they looked for and held
        tap = RemotingTap(conn, sink, p.stats, framed=rewrite, rewrite_routes=rewrite and self.listener.kind == NAMESRV,
                          max_frame=p.config.max_frame)
        tap.lite = sink is p.sink
        if tap.lite:
            self._defer_decoding(tap)
        return tap

    def _defer_decoding(self, tap: RemotingTap) -> None:
        """Without route answers to hold, decoding may lag the forwarding, in batches."""
        if not tap.rewrite:
            tap.deferred = True
            cleg = self.cleg

            def server_later(data: bytes, ts: float) -> None:
                """Deferred decoding of upstream bytes already sent on."""
                out = tap.server_later(data, ts)
                if out:
                    cleg.write(out)
            self._later_c, self._later_s = tap.from_client, server_later

    async def _open(self) -> None:
        loop = asyncio.get_running_loop()
        host, port = self.upstream
        leg = Leg(self, False)
        leg.peer, self.cleg.peer = self.cleg, leg
        self.uleg = leg
        mark = self.proxy.config.mark
        link = self._upstream_link(leg) if self.proxy.config.upstream_tls else None
        factory = (lambda: leg) if link is None else (lambda: link)
        if not mark:
            await loop.create_connection(factory, host, port)
        else:
            info = (await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM))[0]
            sock = socket.socket(info[0], socket.SOCK_STREAM)
            try:
                sock.setsockopt(socket.SOL_SOCKET, SO_MARK, mark)  # exempt from the redirect rules
                sock.setblocking(False)
                await loop.sock_connect(sock, info[4])
                await loop.create_connection(factory, sock=sock)
            except BaseException:
                sock.close()
                raise
        if link is not None:
            try:
                await link.ready
            except BaseException:
                if link.raw is not None:
                    link.raw.abort()
                raise
            self.proxy.stats.tcp("tls_upstream", 1)

    def _upstream_link(self, leg: Leg) -> TlsLink:
        """The TLS layer under the upstream leg: SNI and ALPN as the client gave them."""
        p = self.proxy
        assert self.cleg.transport is not None  # the client is connected
        sni, alpn = p.upstream_hello(self.listener.kind, self.cleg.transport)
        host = sni or self.upstream[0]
        return TlsLink(leg, p.upstream_tls(alpn), server_side=False, server_hostname=host)

    async def _connect(self) -> None:
        p, sink = self.proxy, self.sink
        assert sink is not None  # client_made made it before starting this
        try:
            await asyncio.wait_for(self._open(), p.config.connect_timeout)
        except asyncio.CancelledError:  # the client went away (or the proxy stops)
            if self.uleg is not None:
                self.uleg.abort()
            raise
        except (OSError, asyncio.TimeoutError) as e:
            why = "timed out" if isinstance(e, asyncio.TimeoutError) else (e.strerror or str(e))
            self.fail_reason = f"rmqsniff proxy: cannot connect to upstream {endpoint_text(self.upstream)}: {why}"
            p.stats.tcp("upstream_connect_failure", 1)
            p.note_failure(self.fail_reason)
            self.uleg = None
            self.cleg.peer = None
            sink.release()
            self.early.clear()
            self.cleg.release("early")
            self._answer_failed(now())
            if self.cleg.eof:
                self._end()
            else:
                self._deadline(FAIL_LINGER)
            return
        finally:
            self._connector = None
        up = self.uleg
        assert up is not None and up.transport is not None  # _open connected it
        if self.ending:  # the client went away meanwhile
            up.close()
            return
        for data in self.early:
            up.write(data)
        self.early.clear()
        self.early_bytes = 0
        self._up = up.transport
        self.open = True
        sink.release()
        tap = self.tap
        if isinstance(tap, RemotingTap):  # from now on pairing reports to the proxy's sink directly
            tap.pairing.sink = self.proxy.sink
            tap.lite = True
            self._defer_decoding(tap)
        self.cleg.release("early")
        if self.cleg.eof:
            self._half_close_upstream()

    # -- bytes -----------------------------------------------------------------------------
    def client_data(self, data: bytes) -> None:
        """Client bytes (the transport's callback): forwarded first, then decoded, recorded."""
        ts = now()
        tap = self.tap
        if tap is None:  # a transparent connection: its first bytes tell
            found = recognise(data, True)
            tap = self._make_tap(found[0] if found is not None else REMOTING)
        if self.open:
            try:
                self._up.write(data)
            except (OSError, RuntimeError):  # closed under us: seen by the upstream leg
                self.open = False
            if self._later_c is not None:
                self.proxy.defer(self._later_c, data, ts)
            else:
                tap.from_client(data, ts)
            if self.rec is not None:
                self.rec.data(True, data, ts)
            return
        self._catch_up()
        tap.from_client(data, ts)
        if self.rec is not None:
            self.rec.data(True, data, ts)
        if self.fail_reason is not None:
            self._answer_failed(ts)
        elif not self.ending and not self._up_gone:  # the upstream connection is still being made
            self.early.append(data)
            self.early_bytes += len(data)
            if self.early_bytes >= EARLY_LIMIT:
                self.cleg.hold("early")

    def server_data(self, data: bytes) -> None:
        """Upstream bytes: whole frames go on before they are decoded; a route answer is
        held back, rewritten, then sent (reading the upstream pauses meanwhile)."""
        if self._s2c_queue is not None:
            self._s2c_queue.append(data)
            return
        ts = now()
        if self.rec is not None:
            self.rec.data(False, data, ts)
        tap = self.tap
        if tap is None:  # a transparent connection whose server spoke first
            tap = self._make_tap(REMOTING)
        cleg = self.cleg
        out = tap.server_fast(data)
        if out is not None:
            if out:
                cleg.write(out)
            if self._later_s is not None:
                self.proxy.defer(self._later_s, data, ts)
                return
            out = tap.server_decoded(data, ts)
            if out:
                cleg.write(out)
            return
        self._catch_up()
        pieces = tap.from_server(data, ts)
        for i, piece in enumerate(pieces):
            if not isinstance(piece, bytes):  # a route answer to rewrite
                uleg = self.uleg
                assert uleg is not None  # these bytes came on it
                self._s2c_queue = []
                uleg.hold("rewrite")
                self._rewriter = asyncio.ensure_future(self._rewrite(pieces[i:]))
                return
            cleg.write(piece)

    def _catch_up(self) -> None:
        """Before the tap is used directly: decode what this session deferred (the proxy's
        queue is in arrival order, so all of it)."""
        if self._later_c is not None and self.proxy.deferred_bytes:
            self.proxy.drain()

    async def _rewrite(self, pieces: Sequence[bytes | RouteAnswer | GrpcRouteAnswer]) -> None:
        try:
            for piece in pieces:
                if not isinstance(piece, bytes):
                    piece = await self.proxy.rewrite(piece, self.listener.listen)
                self.cleg.write(piece)
        finally:
            self._rewriter = None
            queue, self._s2c_queue = self._s2c_queue or [], None
            if self.uleg is not None:
                self.uleg.release("rewrite")
        for i, data in enumerate(queue):
            self.server_data(data)
            if self._s2c_queue is not None:  # another rewrite began: the rest waits for it
                self._s2c_queue[:0] = queue[i + 1:]
                return
        if self._upstream_end is not None:
            self._upstream_ended(self._upstream_end)

    def _answer_failed(self, ts: float) -> None:
        """SYSTEM_ERROR answers (or a GOAWAY) for what waits on the lost upstream."""
        if self.tap is None or self.cleg.lost:
            return
        self._catch_up()
        out = self.tap.failure(self.fail_reason or "upstream unavailable", ts)
        if out:
            self.proxy.stats.tcp("proxy_error_answers", 1)
            if self.rec is not None:
                self.rec.data(False, out, ts)
            self.cleg.write(out)

    # -- ends ---------------------------------------------------------------------------------
    def leg_eof(self, leg: Leg) -> bool:
        if leg.client:
            if self.open:
                self._half_close_upstream()
            elif self.fail_reason is not None:
                self._end()
            return True  # keep the client's receiving side open for the answers
        if not self._up_gone:
            self._up_gone, self.open = True, False
            self.proxy.stats.tcp("upstream_closed", 1)
            self._upstream_ended(f"rmqsniff proxy: upstream {endpoint_text(self.upstream)} closed the connection")
        return True

    def _half_close_upstream(self) -> None:
        """The client is done sending: let the upstream finish answering, then close."""
        leg = self.uleg
        assert leg is not None  # the upstream connection is open
        t = leg.transport
        if t is not None and not leg.lost and t.can_write_eof():
            with contextlib.suppress(OSError, RuntimeError):
                t.write_eof()
        self._deadline(self.proxy.config.drain_timeout)

    def _deadline(self, seconds: float) -> None:
        """End the session in ``seconds`` (unless it ends before)."""
        if self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(seconds, self._end)

    def leg_lost(self, leg: Leg, exc: Exception | None) -> None:
        if leg.client:
            self.ending = True
            if self._connector is not None:
                self._connector.cancel()
            if self.uleg is not None:
                self.uleg.close()
        elif not self._up_gone and not self.ending:
            self._up_gone, self.open = True, False
            up = endpoint_text(self.upstream)
            if exc is not None:
                self.proxy.stats.tcp("upstream_reset", 1)
                why = getattr(exc, "strerror", None) or exc
                self._upstream_ended(f"rmqsniff proxy: upstream {up} reset the connection ({why})")
            else:
                self.proxy.stats.tcp("upstream_closed", 1)
                self._upstream_ended(f"rmqsniff proxy: upstream {up} closed the connection")
        if self.cleg.lost and (self.uleg is None or self.uleg.lost or self.uleg.transport is None):
            self._finish()

    def _upstream_ended(self, reason: str) -> None:
        """The upstream is gone: answer what waits on it (unless the client already
        finished sending, or is gone), then close the client."""
        if self._s2c_queue is not None:  # a rewrite is still being sent: after it
            self._upstream_end = reason
            return
        self._upstream_end = None
        self.open = False
        if not self.cleg.eof and not self.cleg.lost and not self.ending:
            self.fail_reason = reason
            self._answer_failed(now())
        self._end()

    def _end(self) -> None:
        """Close both legs (flushing what they hold, briefly)."""
        self.ending = True
        self.open = False
        self.cleg.close()
        if self.uleg is not None:
            self.uleg.close()

    def abort(self) -> None:
        """Stop now (the proxy stops): pending requests end unanswered."""
        self.ending = True
        if self._connector is not None:
            self._connector.cancel()
        if self._rewriter is not None:
            self._rewriter.cancel()
        self.cleg.abort()
        if self.uleg is not None:
            self.uleg.abort()
        if self.cleg.transport is None or self.cleg.lost:
            self._finish()

    def _finish(self) -> None:
        if self.done is None or self.done.done():
            return
        ts = now()
        if self._rewriter is not None:
            self._rewriter.cancel()
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        assert self.sink is not None  # made with ``done`` (client_made)
        self.sink.release()
        if self.tap is not None:
            self._catch_up()
            self.tap.close()
        if self.rec is not None:
            self.rec.close(ts)
        self.proxy._sessions.discard(self)
        self.done.set_result(None)


_TAP_MAKERS = {REMOTING: Session._remoting_tap, GRPC_PROTOCOL: Session._grpc_tap}
"""The protocols the proxy taps, and how it makes a session's tap for each."""
