"""A minimal asyncio gRPC client over HTTP/2 (the ``h2`` state machine) for replay.

One connection per replayed gRPC session; each call is a stream whose request messages
are raw protobuf bytes (already rewritten) and whose answers are collected raw: response
headers, every gRPC message (with its arrival time) and the trailers. ``h2`` does the
HTTP/2 framing, HPACK and flow control; this module only moves bytes and keeps futures.
"""
from __future__ import annotations

import asyncio
import contextlib
import gzip
import ssl
import struct
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field

import h2.config
import h2.connection
import h2.events
import h2.exceptions
import h2.settings

from rmqsniff.model import Endpoint

CANCEL = 8
MAX_MESSAGE = 64 * 1024 * 1024
MAX_KEPT = 1024  # response messages kept per call (a long-lived stream's later ones only counted)
WINDOW = 4 * 1024 * 1024
# headers the client writes itself (HTTP/2 pseudo-headers, gRPC transport headers)
OWN_HEADERS = frozenset({":method", ":scheme", ":path", ":authority", "te", "content-type",
                         "grpc-encoding", "grpc-accept-encoding", "content-length"})
_LEN = struct.Struct(">I")


def frame_message(data: bytes) -> bytes:
    """One uncompressed length-prefixed gRPC message."""
    return b"\x00" + _LEN.pack(len(data)) + data


@dataclass(slots=True)
class Call:
    """One replayed gRPC call (HTTP/2 stream)."""

    stream_id: int
    sent_at: float
    size: int = 0  # request bytes written (header fields + DATA)
    resp_size: int = 0
    headers: list[tuple[str, str]] = field(default_factory=list)
    trailers: list[tuple[str, str]] = field(default_factory=list)
    messages: list[tuple[float, bytes]] = field(default_factory=list)  # (monotonic ts, protobuf bytes)
    first: asyncio.Future | None = None  # first response message (or the end) arrived
    done: asyncio.Future | None = None  # the call ended: grpc-status or an error text
    on_message: Callable[[bytes], None] | None = None
    encoding: str = "identity"
    error: str | None = None
    dropped: int = 0  # response messages not kept (MAX_KEPT)
    _buf: bytearray = field(default_factory=bytearray)

    @property
    def grpc_status(self) -> int | None:
        for k, v in (*self.trailers, *self.headers):
            if k == "grpc-status":
                try:
                    return int(v)
                except ValueError:
                    return None
        return None

    @property
    def grpc_message(self) -> str | None:
        return next((v for k, v in (*self.trailers, *self.headers) if k == "grpc-message"), None)


class GrpcClient(asyncio.Protocol):
    """HTTP/2 (prior knowledge, plaintext) client connection carrying replayed calls."""

    def __init__(self, authority: str, scheme: str = "http") -> None:
        self.authority = authority
        self.scheme = scheme  # "https" over TLS
        cfg = h2.config.H2Configuration(client_side=True, header_encoding="utf-8",
                                        validate_inbound_headers=False)
        self.h2 = h2.connection.H2Connection(cfg)
        self.transport: asyncio.Transport | None = None
        self.calls: dict[int, Call] = {}
        self.pending: dict[int, bytearray] = {}  # stream -> bytes waiting for flow-control window
        self.ending: set[int] = set()  # streams to half-close once their pending bytes are out
        self.error: str | None = None
        self.local: Endpoint | None = None

    @classmethod
    async def connect(cls, ep: Endpoint, timeout: float = 3.0, tls: ssl.SSLContext | None = None,
                      server_hostname: str | None = None) -> GrpcClient:
        """Connect in plaintext (HTTP/2 prior knowledge), or over TLS with ``tls`` (its ALPN
        should offer ``h2``)."""
        loop = asyncio.get_running_loop()
        host = f"[{ep[0]}]" if ":" in ep[0] else ep[0]
        scheme = "https" if tls is not None else "http"
        _, proto = await asyncio.wait_for(
            loop.create_connection(lambda: cls(f"{host}:{ep[1]}", scheme), ep[0], ep[1], ssl=tls,
                                   server_hostname=(server_hostname or ep[0]) if tls is not None else None), timeout)
        return proto

    # -- asyncio.Protocol ---------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        sock = transport.get_extra_info("sockname")
        self.local = (sock[0], sock[1]) if sock else None
        self.h2.local_settings = h2.settings.Settings(client=True, initial_values={
            h2.settings.SettingCodes.ENABLE_PUSH: 0, h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: WINDOW})
        self.h2.initiate_connection()
        self.h2.increment_flow_control_window(WINDOW)
        self._flush()

    def data_received(self, data: bytes) -> None:
        try:
            events = self.h2.receive_data(data)
        except h2.exceptions.ProtocolError as e:
            self._fail(f"HTTP/2 protocol error from the server: {e}")
            return
        now = time.monotonic()
        for ev in events:  # (h2's event classes do not subclass one another: isinstance = type is)
            if isinstance(ev, h2.events.DataReceived):
                self._data(ev, now)
            elif isinstance(ev, h2.events.ResponseReceived):
                self._headers(ev.stream_id, ev.headers, False)
            elif isinstance(ev, h2.events.TrailersReceived):
                self._headers(ev.stream_id, ev.headers, True)
            elif isinstance(ev, h2.events.StreamEnded):
                self._end(ev.stream_id, None)
            elif isinstance(ev, h2.events.StreamReset):
                self._end(ev.stream_id, f"stream reset by the server (HTTP/2 error {int(ev.error_code)})")
            elif isinstance(ev, h2.events.WindowUpdated):
                for sid in list(self.pending):
                    self._send_pending(sid)
            elif isinstance(ev, h2.events.ConnectionTerminated):
                assert ev.error_code is not None  # h2 fills it in from the GOAWAY frame
                self._fail(f"GOAWAY from the server (HTTP/2 error {int(ev.error_code)})")
        self._flush()

    def connection_lost(self, exc: Exception | None) -> None:
        self._fail(self.error or (f"connection lost: {exc}" if exc else "connection closed by the server"))

    # -- events ----------------------------------------------------------------------------
    def _headers(self, sid: int, headers, trailers: bool) -> None:
        call = self.calls.get(sid)
        if call is None:
            return
        hs = [(str(k), str(v)) for k, v in headers]
        call.resp_size += sum(len(k) + len(v) for k, v in hs)
        if trailers:
            call.trailers = hs
        else:
            call.headers = hs
            call.encoding = next((v for k, v in hs if k == "grpc-encoding"), "identity")

    def _data(self, ev: h2.events.DataReceived, now: float) -> None:
        n = ev.flow_controlled_length
        if n:
            self.h2.acknowledge_received_data(n, ev.stream_id)
        call = self.calls.get(ev.stream_id)
        if call is None:
            return
        call.resp_size += len(ev.data)
        buf = call._buf
        buf += ev.data
        while len(buf) >= 5:
            length = _LEN.unpack_from(buf, 1)[0]
            if length > MAX_MESSAGE:
                call.error = f"gRPC message of {length} bytes from the server"
                self._reset(ev.stream_id)
                return
            if len(buf) < 5 + length:
                break
            flag, body = buf[0], bytes(buf[5:5 + length])
            del buf[:5 + length]
            if flag & 1:
                try:
                    body = gzip.decompress(body) if call.encoding == "gzip" else zlib.decompress(body)
                except (OSError, zlib.error) as e:
                    call.error = f"undecodable compressed message ({e})"
                    continue
            if len(call.messages) < MAX_KEPT:
                call.messages.append((now, body))
            else:
                call.dropped += 1
            if call.on_message is not None:
                call.on_message(body)
            if call.first is not None and not call.first.done():
                call.first.set_result(now)

    def _end(self, sid: int, error: str | None) -> None:
        call = self.calls.pop(sid, None)
        self.pending.pop(sid, None)
        self.ending.discard(sid)
        if call is None:
            return
        call.error = call.error or error
        now = time.monotonic()
        if call.first is not None and not call.first.done():
            call.first.set_result(now)
        if call.done is not None and not call.done.done():
            call.done.set_result(now)

    def _fail(self, why: str) -> None:
        if self.error is None:
            self.error = why
        for sid in list(self.calls):
            self._end(sid, self.error)
        if self.transport is not None and not self.transport.is_closing():
            self.transport.close()

    # -- sending ---------------------------------------------------------------------------
    def start(self, path: str, headers: list[tuple[str, str]], messages: list[bytes], end: bool) -> Call:
        """Open a stream: headers, then ``messages`` (raw protobuf), half-closed when ``end``.
        Raises ConnectionError when the connection is gone."""
        if self.error is not None or self.transport is None or self.transport.is_closing():
            raise ConnectionError(self.error or "not connected")
        loop = asyncio.get_running_loop()
        sid = self.h2.get_next_available_stream_id()
        hs = [(":method", "POST"), (":scheme", self.scheme), (":path", path), (":authority", self.authority),
              ("te", "trailers"), ("content-type", "application/grpc"), ("grpc-accept-encoding", "identity"),
              *((k, v) for k, v in headers if k not in OWN_HEADERS and not k.startswith(":"))]
        call = Call(sid, time.monotonic(), first=loop.create_future(), done=loop.create_future())
        call.size = sum(len(k) + len(v) for k, v in hs)
        self.calls[sid] = call
        try:
            self.h2.send_headers(sid, hs, end_stream=end and not messages)
        except h2.exceptions.H2Error as e:
            self.calls.pop(sid, None)
            raise ConnectionError(f"cannot start a call: {e}") from None
        for m in messages:
            self.send(call, m)
        if end and messages:
            self.end(call)
        self._flush()
        return call

    def send(self, call: Call, message: bytes) -> None:
        """One more request message on an open call."""
        data = frame_message(message)
        call.size += len(data)
        self.pending.setdefault(call.stream_id, bytearray()).extend(data)
        self._send_pending(call.stream_id)
        self._flush()

    def end(self, call: Call) -> None:
        """Half-close the call (END_STREAM) once what it has to send is out."""
        self.ending.add(call.stream_id)
        self._send_pending(call.stream_id)
        self._flush()

    def cancel(self, call: Call) -> None:
        """RST_STREAM(CANCEL), as clients end a Telemetry stream."""
        if call.stream_id in self.calls:
            self._reset(call.stream_id)
            self._end(call.stream_id, None)
            self._flush()

    def _reset(self, sid: int) -> None:
        with contextlib.suppress(h2.exceptions.H2Error):
            self.h2.reset_stream(sid, CANCEL)

    def _send_pending(self, sid: int) -> None:
        buf = self.pending.get(sid)
        try:
            while buf:
                n = min(len(buf), self.h2.local_flow_control_window(sid), self.h2.max_outbound_frame_size)
                if n <= 0:
                    return
                self.h2.send_data(sid, bytes(buf[:n]))
                del buf[:n]
            self.pending.pop(sid, None)
            if sid in self.ending:
                self.ending.discard(sid)
                self.h2.end_stream(sid)
        except h2.exceptions.H2Error as e:  # the stream ended meanwhile (server answered early)
            self.pending.pop(sid, None)
            self.ending.discard(sid)
            call = self.calls.get(sid)
            if call is not None and call.error is None and not call.trailers:
                call.error = f"cannot send: {e}"

    def _flush(self) -> None:
        out = self.h2.data_to_send()
        if out and self.transport is not None and not self.transport.is_closing():
            self.transport.write(out)

    def close(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            try:
                self.h2.close_connection()
                self._flush()
            except h2.exceptions.H2Error:
                pass
            self.transport.close()
