"""A minimal asyncio remoting client: one TCP connection, renumbered opaques, pending answers."""
from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from dissectors.remoting.codec import FrameError, decode_frame, encode
from dissectors.remoting.codes import REQUEST_CODE_NOT_SUPPORTED
from dissectors.remoting.command import FLAG_ONEWAY, FLAG_RESPONSE, RemotingCommand
from rmqsniff.model import Endpoint

MAX_FRAME = 16 * 1024 * 1024


class Client(asyncio.Protocol):
    """Send requests with fresh opaques; answers resolve futures with ``(command, monotonic ts, size)``.

    Requests the server sends (CHECK_TRANSACTION_STATE, NOTIFY_CONSUMER_IDS_CHANGED, ...)
    go to ``on_request``; one that expects an answer gets REQUEST_CODE_NOT_SUPPORTED.
    """

    def __init__(self, on_request: Callable[[RemotingCommand], None] | None = None) -> None:
        self.on_request = on_request
        self.transport: asyncio.Transport | None = None
        self.pending: dict[int, asyncio.Future] = {}
        self.buf = bytearray()
        self.next_opaque = 1
        self.closed: asyncio.Future | None = None
        self.error: str | None = None
        self._can_write: asyncio.Event | None = None
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
        buf = self.buf
        buf += data
        now = time.monotonic()
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
            size = end - pos
            pos = end
            if cmd.flag & FLAG_RESPONSE:
                fut = self.pending.pop(cmd.opaque, None)
                if fut is not None and not fut.done():
                    fut.set_result((cmd, now, size))
            else:
                self._server_request(cmd)
        if pos:
            del buf[:pos]

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
        for fut in self.pending.values():
            if not fut.done():
                fut.set_exception(ConnectionError(self.error))
        self.pending.clear()
        if self.closed is not None and not self.closed.done():
            self.closed.set_result(None)
        if self.transport is not None and not self.transport.is_closing():
            self.transport.close()

    # -- sending ---------------------------------------------------------------------------
    def send(self, cmd: RemotingCommand) -> tuple[asyncio.Future | None, int]:
        """Give ``cmd`` the next opaque and write it; returns (answer future or None for oneway,
        frame size). Raises ConnectionError when the connection is gone."""
        if self.error is not None or self.transport is None or self.transport.is_closing():
            raise ConnectionError(self.error or "not connected")
        cmd.opaque = self.next_opaque
        self.next_opaque = (self.next_opaque + 1) & 0x7FFFFFFF or 1
        frame = encode(cmd)
        fut = None
        if not cmd.flag & FLAG_ONEWAY:
            fut = asyncio.get_running_loop().create_future()
            self.pending[cmd.opaque] = fut
        self.transport.write(frame)
        return fut, len(frame)

    async def writable(self) -> None:
        """Wait while the kernel buffer is full (backpressure)."""
        if not self._can_write.is_set():
            await self._can_write.wait()

    async def request(self, cmd: RemotingCommand, timeout: float = 3.0) -> RemotingCommand:
        fut, _ = self.send(cmd)
        cmd_, _ts, _size = await asyncio.wait_for(fut, timeout)
        return cmd_

    def close(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.close()
