"""Accepting connections on a listening socket without asyncio's server, so that accept
errors are the proxy's to handle: out of file descriptors or buffers (EMFILE, ENFILE,
ENOBUFS, ENOMEM) pauses accepting for a while (:data:`BACKOFF_FIRST` doubling up to
:data:`BACKOFF_MAX`) and is reported to ``on_error``, never as a traceback; clients wait in
the kernel's backlog meanwhile.  Errors about one connection that died in the backlog
(ECONNABORTED and the network errors accept(2) passes on) skip that connection only.
"""
from __future__ import annotations

import asyncio
import contextlib
import errno
import socket
from collections.abc import Callable

BACKOFF_FIRST = 0.1  # seconds accepting pauses after an accept error ...
BACKOFF_MAX = 1.0  # ... doubling up to this while the errors go on
ACCEPT_BATCH = 64  # connections accepted per readiness event: other sockets get their turn
SKIP_ERRNOS = frozenset({errno.ECONNABORTED, errno.EPROTO, errno.ENETDOWN, errno.ENOPROTOOPT, errno.EHOSTDOWN,
                         errno.EHOSTUNREACH, errno.EOPNOTSUPP, errno.ENETUNREACH, errno.EPERM, errno.EINTR})
"""accept(2) errors of one connection, not of the listener (Linux passes network errors on)."""


def error_name(e: OSError) -> str:
    """``EMFILE`` for an OSError with that errno (``OSError`` when it has none)."""
    return errno.errorcode.get(e.errno or 0, type(e).__name__)


class Acceptor:
    """Accepts connections on ``sock`` (listening, non-blocking) for as long as it is open:
    ``on_socket`` gets each connection (non-blocking), ``on_error`` each error that paused
    accepting.  Closing it closes the socket."""

    def __init__(self, sock: socket.socket, on_socket: Callable[[socket.socket], None],
                 on_error: Callable[[OSError], None]) -> None:
        self.sock = sock
        self.sockets = (sock,)
        self.on_socket = on_socket
        self.on_error = on_error
        self.errors = 0
        self._loop = asyncio.get_running_loop()
        self._delay = BACKOFF_FIRST
        self._retry: asyncio.TimerHandle | None = None
        self._closed = False
        self._loop.add_reader(sock.fileno(), self._accept)

    def _accept(self) -> None:
        for _ in range(ACCEPT_BATCH):
            try:
                conn, _peer = self.sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as e:
                if e.errno in SKIP_ERRNOS:
                    continue
                self.errors += 1
                self._pause()
                self.on_error(e)
                return
            self._delay = BACKOFF_FIRST
            conn.setblocking(False)
            self.on_socket(conn)

    def _pause(self) -> None:
        self._loop.remove_reader(self.sock.fileno())
        self._retry = self._loop.call_later(self._delay, self._resume)
        self._delay = min(self._delay * 2, BACKOFF_MAX)

    def _resume(self) -> None:
        self._retry = None
        if not self._closed:
            self._loop.add_reader(self.sock.fileno(), self._accept)

    @property
    def paused(self) -> bool:
        """Whether accepting waits out an error now."""
        return self._retry is not None

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._retry is not None:
            self._retry.cancel()
            self._retry = None
        with contextlib.suppress(ValueError, OSError):  # ValueError: the socket is closed already
            self._loop.remove_reader(self.sock.fileno())
        self.sock.close()
