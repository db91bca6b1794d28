"""``-w``: the proxied traffic as a pcapng of synthesised TCP/IP packets.

Each proxied connection is written as one TCP connection from the client's address
to the upstream's, carrying the client's bytes and the upstream's bytes as they
came from the upstream (route answers before rewriting), plus the proxy's own
failure answers: what ``rmqsniff read``/``stats``, the TUI and replay expect.
"""
from __future__ import annotations

from typing import BinaryIO

from rmqsniff.capwriter import CaptureWriter, TcpSession

from .config import Endpoint


class Recorder:
    """One pcapng file shared by every proxied connection (event-loop thread only)."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.f: BinaryIO = open(path, "wb")  # noqa: SIM115 - closed by close()
        self.w = CaptureWriter(self.f, "pcapng")
        self.error: str | None = None
        self.packets = 0

    def open(self, client: Endpoint, server: Endpoint, ts: float) -> RecordedConnection:
        return RecordedConnection(self, TcpSession(self.w, client, server), ts)

    def _do(self, fn, *args) -> None:
        if self.error is not None:
            return
        try:
            fn(*args)
        except (OSError, ValueError) as e:
            self.error = f"recording to {self.path} stopped: {e}"

    def flush(self) -> None:
        self._do(self.f.flush)

    def close(self) -> None:
        if not self.f.closed:
            self._do(self.f.flush)
            self.f.close()


class RecordedConnection:
    """One connection in the recording: handshake at open, segments, FIN at close."""

    __slots__ = ("rec", "tcp", "closed")

    def __init__(self, rec: Recorder, tcp: TcpSession, ts: float) -> None:
        self.rec = rec
        self.tcp = tcp
        self.closed = False
        rec._do(tcp.handshake, ts)

    def data(self, from_client: bool, data: bytes, ts: float) -> None:
        if data and not self.closed:
            self.rec._do(self.tcp.send, ts, from_client, data)

    def close(self, ts: float) -> None:
        if not self.closed:
            self.closed = True
            self.rec._do(self.tcp.close, ts)
