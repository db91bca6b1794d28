"""One proxied connection: two pumps with backpressure, the protocol tap on the way,
the recording, and a prompt, well-formed failure when the upstream is down or dies."""
from __future__ import annotations

import asyncio
import contextlib
import time
from typing import TYPE_CHECKING

from rmqsniff.model import Connection, Exchange
from rmqsniff.stats import CLASSIFIERS

from .config import GRPC, TRANSPARENT, Endpoint, endpoint_text
from .grpc import GrpcTap
from .remoting import RemotingTap

if TYPE_CHECKING:
    from .server import Listener, Proxy

CHUNK = 64 * 1024
EARLY_LIMIT = 1024 * 1024  # client bytes held while the upstream connection is being made
FAIL_LINGER = 1.0  # after a failed connect, requests still arriving are answered for this long
HTTP2_PREFACE = b"PRI * HTTP/2.0"
_PENDING_OF = {"send_message_v1": "send_message", "send_message_v2": "send_message",
               "pop_message": "pop_message", "get_topic_route": "get_topic_route"}
_SEND_BATCH = 320


def now() -> float:
    """Wall-clock time at microsecond resolution: the recording's, so that stats computed
    from the recording see exactly the timestamps the proxy's own stats saw."""
    return round(time.time() * 1e6) * 1e-6


def pending_kind(ex: Exchange) -> str | None:
    """Which ``*_pending`` gauge a request waiting for its upstream belongs to."""
    cmd = ex.request.command
    cl = CLASSIFIERS.get(ex.protocol)
    if cl is None:
        return None
    if ex.protocol == "remoting" and cmd.code == _SEND_BATCH:
        return "send_message"
    return _PENDING_OF.get(cl.envoy_counter.get(cmd.code, ""))


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


class Session:
    """A client connection and its upstream connection."""

    def __init__(self, proxy: Proxy, listener: Listener, reader: asyncio.StreamReader,
                 writer: asyncio.StreamWriter, upstream: Endpoint, conn_id: int) -> None:
        self.proxy = proxy
        self.listener = listener
        self.creader, self.cwriter = reader, writer
        self.ureader: asyncio.StreamReader | None = None
        self.uwriter: asyncio.StreamWriter | None = None
        self.upstream = upstream
        peer = writer.get_extra_info("peername") or ("0.0.0.0", 0)
        self.client: Endpoint = (peer[0], peer[1])
        self.conn = Connection(conn_id, self.client, upstream, now(), "syn")
        self.sink = _SessionSink(proxy.sink, proxy.stats)
        self.tap = None
        if listener.kind != TRANSPARENT:
            self._make_tap(GRPC if listener.kind == GRPC else "remoting")
        self.rec = proxy.recorder.open(self.client, upstream, self.conn.first_ts) if proxy.recorder else None
        self.early: list[bytes] = []
        self.early_bytes = 0
        self.settled = asyncio.Event()  # the upstream connection was made or failed
        self.fail_reason: str | None = None
        # fast path: once a pump switches to it, its reader's feed_data is replaced by a
        # callback that forwards (and then decodes) in the transport's own callback, with no
        # event-loop hop; the pump then only waits for the end (_ends[direction])
        self._ends: dict[str, asyncio.Future] = {}
        self._holds: dict[str, asyncio.Future] = {}  # a direction whose source reading is paused
        self._closed = False

    # -- helpers -------------------------------------------------------------------
    def _make_tap(self, protocol: str) -> None:
        p = self.proxy
        rewrite = p.config.rewrite_routes and self.listener.kind != TRANSPARENT
        if protocol == GRPC:
            self.tap = GrpcTap(self.conn, self.sink, p.stats, rewrite_routes=rewrite)
        else:
            self.tap = RemotingTap(self.conn, self.sink, p.stats, rewrite_routes=rewrite,
                                   max_frame=p.config.max_frame)

    def _to_client(self, data: bytes, ts: float, record: bool) -> None:
        if not data:
            return
        if record and self.rec is not None:
            self.rec.data(False, data, ts)
        if not self.cwriter.is_closing():
            self.cwriter.write(data)

    def _answer_failed(self, ts: float) -> None:
        """SYSTEM_ERROR answers (or a GOAWAY) for what waits on the lost upstream."""
        if self.tap is None:
            return
        out = self.tap.failure(self.fail_reason or "upstream unavailable", ts)
        if out:
            self.proxy.stats.tcp("proxy_error_answers", 1)
            self._to_client(out, ts, record=True)

    # -- the connection ------------------------------------------------------------------
    async def run(self) -> None:
        c2s = asyncio.ensure_future(self._c2s())
        s2c: asyncio.Future | None = None
        try:
            if await self._connect():
                s2c = asyncio.ensure_future(self._s2c())
                await self._supervise(c2s, s2c)
            else:
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(asyncio.shield(c2s), FAIL_LINGER)
        finally:
            for t in (c2s, s2c):
                if t is not None and not t.done():
                    t.cancel()
            await self._finish()

    async def _connect(self) -> bool:
        p = self.proxy
        host, port = self.upstream
        try:
            self.ureader, self.uwriter = await asyncio.wait_for(
                asyncio.open_connection(host, port, limit=CHUNK), p.config.connect_timeout)
        except (OSError, asyncio.TimeoutError) as e:
            why = "timed out" if isinstance(e, asyncio.TimeoutError) else (e.strerror or str(e))
            self.fail_reason = f"rmqsniff proxy: cannot connect to upstream {endpoint_text(self.upstream)}: {why}"
            p.stats.tcp("upstream_connect_failure", 1)
            p.note_failure(self.fail_reason)
            self._answer_failed(now())
            self.sink.release()
            self.settled.set()
            return False
        uw = self.uwriter
        for data in self.early:
            uw.write(data)
        self.early.clear()
        self.early_bytes = 0
        self.sink.release()
        self.settled.set()
        try:
            await uw.drain()
        except OSError:
            pass  # seen again by the pumps
        return True

    async def _c2s(self) -> str:
        """Client -> upstream; returns ``"eof"``, ``"reset"`` or ``"upstream"`` (write failed)."""
        reader = self.creader
        while True:
            if self.uwriter is not None and self.fail_reason is None and self._can_go_fast(reader):
                how, what = await self._go_fast("c2s", reader, self._client_data)
                if how == "eof":
                    return "eof"
                return "reset" if how == "exc" else what
            try:
                data = await reader.read(CHUNK)
            except OSError:
                return "reset"
            if not data:
                return "eof"
            ts = now()
            if self.tap is None:
                self._make_tap(GRPC if data.startswith(HTTP2_PREFACE[:len(data)]) else "remoting")
            uw = self.uwriter
            if uw is not None and self.fail_reason is None:
                # forward first: decoding and recording are then off the request's path (the
                # answer cannot be handled before this returns: one thread)
                try:
                    uw.write(data)
                except OSError:
                    return "upstream"
                self.tap.from_client(data, ts)
                if self.rec is not None:
                    self.rec.data(True, data, ts)
                try:
                    await uw.drain()
                except OSError:
                    return "upstream"
                continue
            self.tap.from_client(data, ts)
            if self.rec is not None:
                self.rec.data(True, data, ts)
            if self.fail_reason is not None:
                self._answer_failed(ts)
                continue
            self.early.append(data)  # the upstream connection is still being made
            self.early_bytes += len(data)
            if self.early_bytes >= EARLY_LIMIT:
                await self.settled.wait()

    async def _s2c(self) -> str | None:
        """Upstream -> client; returns why the upstream ended, or None when the client went away."""
        reader, cw = self.ureader, self.cwriter
        up = endpoint_text(self.upstream)
        while True:
            if self._can_go_fast(reader):
                how, what = await self._go_fast("s2c", reader, self._server_data)
                if how == "stop":
                    return what
                if how == "eof":
                    self.proxy.stats.tcp("upstream_closed", 1)
                    return f"rmqsniff proxy: upstream {up} closed the connection"
                self.proxy.stats.tcp("upstream_reset", 1)
                return f"rmqsniff proxy: upstream {up} reset the connection ({getattr(what, 'strerror', None) or what})"
            try:
                data = await reader.read(CHUNK)
            except OSError as e:
                self.proxy.stats.tcp("upstream_reset", 1)
                return f"rmqsniff proxy: upstream {up} reset the connection ({e.strerror or e})"
            if not data:
                self.proxy.stats.tcp("upstream_closed", 1)
                return f"rmqsniff proxy: upstream {up} closed the connection"
            ts = now()
            if self.rec is not None:
                self.rec.data(False, data, ts)
            if self.tap is None:
                self._make_tap("remoting")
            for piece in self.tap.from_server(data, ts):
                if not isinstance(piece, bytes):
                    piece = await self.proxy.rewrite(piece, self.listener.listen)
                cw.write(piece)
            try:
                await cw.drain()
            except OSError:
                return None

    # -- the fast path ---------------------------------------------------------------------
    @staticmethod
    def _can_go_fast(reader: asyncio.StreamReader) -> bool:
        """Nothing of this reader is waiting to be handled by its pump (order is kept)."""
        return not getattr(reader, "_buffer", True) and not reader.at_eof() and reader.exception() is None \
            and getattr(reader, "_transport", None) is not None

    async def _go_fast(self, name: str, reader: asyncio.StreamReader, on_data) -> tuple[str, object]:
        """Hand the reader's data to ``on_data`` from now on; returns how the direction ended:
        ``("eof", None)``, ``("exc", exception)`` or ``("stop", result)`` (see :meth:`_stop`)."""
        end = asyncio.get_running_loop().create_future()
        self._ends[name] = end
        feed_eof, set_exception = reader.feed_eof, reader.set_exception

        def eof() -> None:
            feed_eof()
            if not end.done():
                end.set_result(("eof", None))

        def exc(e: BaseException) -> None:
            set_exception(e)
            if not end.done():
                end.set_result(("exc", e))

        reader.feed_data, reader.feed_eof, reader.set_exception = on_data, eof, exc
        return await end

    def _stop(self, name: str, result) -> None:
        end = self._ends.get(name)
        if end is not None and not end.done():
            end.set_result(("stop", result))

    def _hold(self, name: str, source: asyncio.StreamWriter, work) -> None:
        """Stop reading ``source`` until ``work`` (a coroutine: drain the other side) is done."""
        with contextlib.suppress(Exception):
            source.transport.pause_reading()
        self._holds[name] = asyncio.ensure_future(self._held(name, source, work))

    async def _held(self, name: str, source: asyncio.StreamWriter, work) -> None:
        try:
            ok = await work
        except (OSError, RuntimeError):
            ok = False
        finally:
            self._holds.pop(name, None)
        if not ok:
            self._stop(name, "upstream" if name == "c2s" else None)
        elif not self._closed:
            with contextlib.suppress(Exception):
                source.transport.resume_reading()

    @staticmethod
    async def _drained(writer: asyncio.StreamWriter) -> bool:
        await writer.drain()
        return True

    def _client_data(self, data: bytes) -> None:
        """Client bytes in the fast path (the transport's callback)."""
        if self._closed or not data:
            return
        ts = now()
        if self.tap is None:
            self._make_tap(GRPC if data.startswith(HTTP2_PREFACE[:len(data)]) else "remoting")
        uw = self.uwriter
        try:
            uw.transport.write(data)
        except (OSError, RuntimeError):
            self._stop("c2s", "upstream")
            return
        self.tap.from_client(data, ts)
        if self.rec is not None:
            self.rec.data(True, data, ts)
        if "c2s" not in self._holds and (uw.transport.is_closing() or getattr(uw._protocol, "_paused", False)):
            self._hold("c2s", self.cwriter, self._drained(uw))

    def _server_data(self, data: bytes) -> None:
        """Upstream bytes in the fast path: whole frames go on before they are decoded."""
        if self._closed or not data:
            return
        ts = now()
        if self.rec is not None:
            self.rec.data(False, data, ts)
        if self.tap is None:
            self._make_tap("remoting")
        tap, cw = self.tap, self.cwriter
        ct = cw.transport
        try:
            fast = getattr(tap, "server_fast", None)
            out = fast(data) if fast is not None else None
            if out is not None:
                if out:
                    ct.write(out)
                out = tap.server_decoded(data, ts)
                if out:
                    ct.write(out)
            else:
                pieces = tap.from_server(data, ts)
                if not all(isinstance(p, bytes) for p in pieces):  # a route answer to rewrite
                    self._hold("s2c", self.uwriter, self._rewrite_and_send(pieces))
                    return
                for p in pieces:
                    ct.write(p)
        except (OSError, RuntimeError):  # the client is gone
            self._stop("s2c", None)
            return
        if "s2c" not in self._holds and (ct.is_closing() or getattr(cw._protocol, "_paused", False)):
            self._hold("s2c", self.uwriter, self._drained(cw))

    async def _rewrite_and_send(self, pieces: list) -> bool:
        cw = self.cwriter
        for piece in pieces:
            if not isinstance(piece, bytes):
                piece = await self.proxy.rewrite(piece, self.listener.listen)
            cw.write(piece)
        await cw.drain()
        return True

    async def _supervise(self, c2s: asyncio.Future, s2c: asyncio.Future) -> None:
        done, _ = await asyncio.wait({c2s, s2c}, return_when=asyncio.FIRST_COMPLETED)
        if c2s in done and c2s.result() == "eof" and s2c not in done:
            # the client is done sending: let the upstream finish answering, then close
            with contextlib.suppress(OSError, RuntimeError):
                if self.uwriter.can_write_eof():
                    self.uwriter.write_eof()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(asyncio.shield(s2c), self.proxy.config.drain_timeout)
            return
        reason = None
        if c2s in done and c2s.result() == "upstream":
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(asyncio.shield(s2c), 1.0)
            reason = f"rmqsniff proxy: upstream {endpoint_text(self.upstream)} stopped accepting data"
        if s2c.done() and not s2c.cancelled():
            reason = s2c.result()
            if reason is None:  # the client went away while we wrote to it
                return
        if reason is not None and not (c2s.done() and c2s.result() == "reset"):
            self.fail_reason = reason
            self._answer_failed(now())
            with contextlib.suppress(OSError, asyncio.TimeoutError):
                await asyncio.wait_for(self.cwriter.drain(), 1.0)

    async def _finish(self) -> None:
        ts = now()
        self._closed = True
        for t in list(self._holds.values()):
            t.cancel()
        self.sink.release()
        if self.tap is not None:
            self.tap.close()
        if self.rec is not None:
            self.rec.close(ts)
        for w in (self.cwriter, self.uwriter):
            if w is None:
                continue
            with contextlib.suppress(Exception):
                w.close()
        for w in (self.cwriter, self.uwriter):
            if w is None:
                continue
            with contextlib.suppress(Exception):
                await asyncio.wait_for(w.wait_closed(), 1.0)
