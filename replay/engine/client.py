"""A minimal asyncio remoting client: one TCP connection, renumbered opaques, pending answers.

Answers are dispatched from ``data_received`` to a per-request callback (no Task or Future
per request on the fast path); timeouts are found by one sweep per connection, not a
timer per request.
"""
from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from dissectors.remoting.codes import REQUEST_CODE_NOT_SUPPORTED
from dissectors.remoting.command import FLAG_ONEWAY, FLAG_RESPONSE, RemotingCommand
from dissectors.remoting.frame import FrameError, decode_frame, encode
from rmqsniff.model import Endpoint

MAX_FRAME = 16 * 1024 * 1024
SWEEP = 0.05  # seconds between timeout sweeps of a connection with requests pending
TIMED_OUT = "timeout"

Answer = Callable[[RemotingCommand | None, float, int, str | None], None]
"""``(answer or None, monotonic ts, frame size, None or why there is no answer)``."""


class Client(asyncio.Protocol):
    """Send requests with fresh opaques; each answer goes to its request's :data:`Answer`
    callback (``send`` wraps one in a future resolved with ``(command, monotonic ts, size)``).

    Requests the server sends (CHECK_TRANSACTION_STATE, NOTIFY_CONSUMER_IDS_CHANGED, ...)
    go to ``on_request``; one that expects an answer gets REQUEST_CODE_NOT_SUPPORTED.
    """

    def __init__(self, on_request: Callable[[RemotingCommand], None] | None = None) -> None:
        self.on_request = on_request
        self.transport: asyncio.Transport | None = None
        self.pending: dict[int, tuple[float, Answer]] = {}  # opaque -> (deadline, callback)
        self._sweeping: asyncio.TimerHandle | None = None
        self.buf = bytearray()
        self.next_opaque = 1
        self.closed: asyncio.Future | None = None
        self.error: str | None = None
        self._can_write = asyncio.Event()  # (set once connected: connection_made makes a fresh one)
        self.local: Endpoint | None = None

    @classmethod
    async def connect(cls, ep: Endpoint, timeout: float = 3.0,
                      on_request: Callable[[RemotingCommand], None] | None = None) -> Client:
        loop = asyncio.get_running_loop()
        _, proto = await asyncio.wait_for(
            loop.create_connection(lambda: cls(on_request), ep[0], ep[1]), timeout)
        return proto

    # -- asyncio.Protocol ----------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        loop = asyncio.get_running_loop()
        self.closed = loop.create_future()
        self._can_write = asyncio.Event()
        self._can_write.set()
        sock = transport.get_extra_info("sockname")
        self.local = (sock[0], sock[1]) if sock else None

    def pause_writing(self) -> None:
        self._can_write.clear()

    def resume_writing(self) -> None:
        self._can_write.set()

    def data_received(self, data: bytes) -> None:
        now = time.monotonic()
        buf = self.buf
        if not buf and len(data) >= 8 and int.from_bytes(data[:4], "big") + 4 == len(data) <= MAX_FRAME + 4:
            try:  # the usual case: exactly one answer, decoded without copying
                cmd = decode_frame(data)
            except FrameError as e:
                self._fail(f"undecodable frame from the server: {e}")
                return
            self._dispatch(cmd, now, len(data))
            return
        buf += data
        pos = 0
        n = len(buf)
        while n - pos >= 4:
            length = int.from_bytes(buf[pos:pos + 4], "big")
            if length < 4 or length > MAX_FRAME:
                self._fail(f"bad frame length {length} from the server")
                return
            end = pos + 4 + length
            if end > n:
                break
            try:
                cmd = decode_frame(bytes(buf[pos:end]))
            except FrameError as e:
                self._fail(f"undecodable frame from the server: {e}")
                return
            self._dispatch(cmd, now, end - pos)
            pos = end
        if pos:
            del buf[:pos]

    def _dispatch(self, cmd: RemotingCommand, now: float, size: int) -> None:
        if cmd.flag & FLAG_RESPONSE:
            entry = self.pending.pop(cmd.opaque, None)
            if entry is not None:
                _call(entry[1], cmd, now, size, None)
        else:
            self._server_request(cmd)

    def _server_request(self, cmd: RemotingCommand) -> None:
        if self.on_request is not None:
            self.on_request(cmd)
        if not cmd.flag & FLAG_ONEWAY and self.transport is not None:
            self.transport.write(encode(RemotingCommand(
                REQUEST_CODE_NOT_SUPPORTED, FLAG_RESPONSE, cmd.opaque, remark="replay client")))

    def connection_lost(self, exc: Exception | None) -> None:
        self._fail(self.error or (f"connection lost: {exc}" if exc else "connection closed by the server"))

    def _fail(self, why: str) -> None:
        if self.error is None:
            self.error = why
        pending, self.pending = self.pending, {}
        now = time.monotonic()
        for _deadline, cb in pending.values():
            _call(cb, None, now, 0, self.error)
        if self._sweeping is not None:
            self._sweeping.cancel()
        if self.closed is not None and not self.closed.done():
            self.closed.set_result(None)
        if self.transport is not None and not self.transport.is_closing():
            self.transport.close()

    # -- sending ---------------------------------------------------------------------------
    def take_opaque(self) -> int:
        """The opaque for the next request. Raises ConnectionError when the connection is gone."""
        if self.error is not None or self.transport is None or self.transport.is_closing():
            raise ConnectionError(self.error or "not connected")
        o = self.next_opaque
        self.next_opaque = (o + 1) & 0x7FFFFFFF or 1
        return o

    def write(self, frame: bytes, opaque: int, cb: Answer | None, timeout: float | None = None) -> None:
        """Write an encoded request carrying ``opaque`` (from :meth:`take_opaque`); ``cb`` gets
        its answer (None for oneway), or ``TIMED_OUT`` after ``timeout`` seconds."""
        if cb is not None:
            deadline = time.monotonic() + timeout if timeout is not None else float("inf")
            self.pending[opaque] = (deadline, cb)
            if timeout is not None and self._sweeping is None:
                self._sweeping = asyncio.get_running_loop().call_later(SWEEP, self._sweep)
        assert self.transport is not None  # take_opaque() checked the connection
        self.transport.write(frame)

    def _sweep(self) -> None:
        self._sweeping = None
        if not self.pending:
            return
        now = time.monotonic()
        late = [o for o, (deadline, _cb) in self.pending.items() if deadline <= now]
        for o in late:
            _call(self.pending.pop(o)[1], None, now, 0, TIMED_OUT)
        if any(d != float("inf") for d, _cb in self.pending.values()):
            self._sweeping = asyncio.get_running_loop().call_later(SWEEP, self._sweep)

    def send(self, cmd: RemotingCommand) -> tuple[asyncio.Future | None, int]:
        """Give ``cmd`` the next opaque and write it; returns (answer future or None for oneway,
        frame size). Raises ConnectionError when the connection is gone."""
        cmd.opaque = self.take_opaque()
        frame = encode(cmd)
        if cmd.flag & FLAG_ONEWAY:
            self.write(frame, cmd.opaque, None)
            return None, len(frame)
        fut = asyncio.get_running_loop().create_future()

        def resolve(resp: RemotingCommand | None, ts: float, size: int, why: str | None) -> None:
            if not fut.done():
                if why is None:
                    fut.set_result((resp, ts, size))
                else:
                    fut.set_exception(asyncio.TimeoutError() if why == TIMED_OUT else ConnectionError(why))
        self.write(frame, cmd.opaque, resolve)
        return fut, len(frame)

    async def writable(self) -> None:
        """Wait while the kernel buffer is full (backpressure)."""
        if not self._can_write.is_set():
            await self._can_write.wait()

    async def request(self, cmd: RemotingCommand, timeout: float = 3.0) -> RemotingCommand:
        fut, _ = self.send(cmd)
        assert fut is not None, "request() needs a command that is answered (not oneway)"
        cmd_, _ts, _size = await asyncio.wait_for(fut, timeout)
        return cmd_

    def close(self) -> None:
        if self._sweeping is not None:
            self._sweeping.cancel()
            self._sweeping = None
        if self.transport is not None and not self.transport.is_closing():
            self.transport.close()


def _call(cb: Answer, resp: RemotingCommand | None, ts: float, size: int, why: str | None) -> None:
    """Run an answer callback; a failing one is reported like a failing loop callback, and the
    connection goes on."""
    try:
        cb(resp, ts, size, why)
    except Exception as e:  # noqa: BLE001 - one request's bookkeeping must not stop the others
        asyncio.get_running_loop().call_exception_handler(
            {"message": f"replay answer callback failed: {e!r}", "exception": e})
